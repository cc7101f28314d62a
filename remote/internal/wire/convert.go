// Package wire converts between the environment types and the generated
// turnbox.v1 messages, and between the environment's sentinel errors and
// Connect errors. The client (package remote) and the server
// (remote/server) share it; it imports nothing of the host.
package wire

import (
	"fmt"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
)

// Conversions between the environment types and the wire types. Decoding
// (from the wire) validates what the environment types cannot express;
// the host validates the rest.

// StateToProto maps session states to their wire values.
var StateToProto = map[environment.SessionState]turnboxv1.SessionState{
	environment.StateCreating:   turnboxv1.SessionState_SESSION_STATE_CREATING,
	environment.StateActive:     turnboxv1.SessionState_SESSION_STATE_ACTIVE,
	environment.StatePaused:     turnboxv1.SessionState_SESSION_STATE_PAUSED,
	environment.StateDestroying: turnboxv1.SessionState_SESSION_STATE_DESTROYING,
	environment.StateDestroyed:  turnboxv1.SessionState_SESSION_STATE_DESTROYED,
	environment.StateFailed:     turnboxv1.SessionState_SESSION_STATE_FAILED,
}

// StateFromProto converts a wire session state; an unknown value is
// StateFailed.
func StateFromProto(s turnboxv1.SessionState) environment.SessionState {
	for k, v := range StateToProto {
		if v == s {
			return k
		}
	}
	return environment.StateFailed
}

// SessionConfigToProto converts a session config for the wire.
func SessionConfigToProto(c environment.SessionConfig) *turnboxv1.SessionConfig {
	out := &turnboxv1.SessionConfig{
		SessionId:      c.SessionID,
		Image:          c.Image,
		FromSnapshot:   c.FromSnapshot,
		Env:            c.Env,
		Labels:         c.Labels,
		MaxOutputBytes: int64(c.MaxOutputBytes),
		Limits:         LimitsToProto(c.Limits),
		ReadOnlyRoot:   c.ReadOnlyRoot,
		SnapshotMemory: c.SnapshotMemory,
	}
	if c.Network.Mode != "" || len(c.Network.Allow) > 0 {
		out.Network = &turnboxv1.NetworkPolicy{Mode: string(c.Network.Mode), Allow: c.Network.Allow}
	}
	if c.ToolTimeout != 0 {
		out.ToolTimeout = durationpb.New(c.ToolTimeout)
	}
	return out
}

// SessionConfigFromProto converts a session config from the wire and
// checks it (environment.SessionConfig.Validate).
func SessionConfigFromProto(c *turnboxv1.SessionConfig) (environment.SessionConfig, error) {
	out := environment.SessionConfig{
		SessionID:      c.GetSessionId(),
		Image:          c.GetImage(),
		FromSnapshot:   c.GetFromSnapshot(),
		Env:            c.GetEnv(),
		Labels:         c.GetLabels(),
		Limits:         LimitsFromProto(c.GetLimits()),
		ReadOnlyRoot:   c.GetReadOnlyRoot(),
		SnapshotMemory: c.GetSnapshotMemory(),
		Network:        environment.NetworkPolicy{Mode: environment.NetworkMode(c.GetNetwork().GetMode()), Allow: c.GetNetwork().GetAllow()},
	}
	if err := out.Limits.Validate(); err != nil {
		return out, err
	}
	if n := c.GetMaxOutputBytes(); n < 0 || n > int64(^uint32(0)>>1) {
		return out, fmt.Errorf("%w: max_output_bytes %d out of range", environment.ErrInvalidArgument, n)
	} else {
		out.MaxOutputBytes = int(n)
	}
	if d := c.GetToolTimeout(); d != nil {
		if err := d.CheckValid(); err != nil {
			return out, fmt.Errorf("%w: tool_timeout: %v", environment.ErrInvalidArgument, err)
		}
		out.ToolTimeout = d.AsDuration()
	}
	return out, out.Validate()
}

// ToolRequestToProto converts a tool request for the wire: its input as
// arguments (a JSON object) when that carries it exactly, else as bytes.
func ToolRequestToProto(r environment.ToolRequest) *turnboxv1.ToolRequest {
	out := &turnboxv1.ToolRequest{
		ToolCallId: r.ToolCallID,
		ToolName:   r.ToolName,
		Snapshot:   r.Snapshot,
	}
	if args, ok := ArgumentsFromJSON(r.Input); ok {
		out.Arguments = args
	} else {
		out.Input = r.Input
	}
	return out
}

// ToolRequestFromProto converts a tool request from the wire. A missing
// request, or one that sets both or neither of input and arguments, is
// ErrInvalidArgument; the input's JSON is checked by the host.
func ToolRequestFromProto(r *turnboxv1.ToolRequest) (environment.ToolRequest, error) {
	if r == nil {
		return environment.ToolRequest{}, fmt.Errorf("%w: missing tool request", environment.ErrInvalidArgument)
	}
	// Checked here too, so that a bad id is refused before the host.
	if err := environment.ValidateToolCallID(r.GetToolCallId()); err != nil {
		return environment.ToolRequest{}, err
	}
	input, err := toolInput(r)
	if err != nil {
		return environment.ToolRequest{}, err
	}
	return environment.ToolRequest{
		ToolCallID: r.GetToolCallId(),
		ToolName:   r.GetToolName(),
		Input:      input,
		Snapshot:   r.GetSnapshot(),
	}, nil
}

// ToolResponseToProto converts a tool response for the wire: content
// that is valid UTF-8 goes in output, other content in content.
func ToolResponseToProto(r *environment.ToolResponse) *turnboxv1.ToolResponse {
	if r == nil {
		return nil
	}
	out := &turnboxv1.ToolResponse{
		ToolCallId: r.ToolCallID,
		ExitCode:   int32(r.ExitCode),
		IsError:    r.IsError,
		TimedOut:   r.TimedOut,
		Truncated:  r.Truncated,
		Duration:   durationpb.New(r.Duration),
		SnapshotId: r.SnapshotID,
		OomKilled:  r.OOMKilled,
		Pid:        int32(r.PID),
	}
	if utf8.ValidString(r.Content) {
		out.Output = r.Content
	} else {
		out.Content = []byte(r.Content)
	}
	return out
}

// ToolResponseFromProto converts a tool response from the wire.
func ToolResponseFromProto(r *turnboxv1.ToolResponse) *environment.ToolResponse {
	if r == nil {
		return nil
	}
	return &environment.ToolResponse{
		ToolCallID: r.GetToolCallId(),
		Content:    textOf(r.GetOutput(), r.GetContent()),
		ExitCode:   int(r.GetExitCode()),
		IsError:    r.GetIsError(),
		TimedOut:   r.GetTimedOut(),
		Truncated:  r.GetTruncated(),
		Duration:   r.GetDuration().AsDuration(),
		SnapshotID: r.GetSnapshotId(),
		OOMKilled:  r.GetOomKilled(),
		PID:        int(r.GetPid()),
	}
}

// textOf returns a tool's output from the wire: the bytes field when set,
// else the text field.
func textOf(text string, raw []byte) string {
	if len(raw) > 0 {
		return string(raw)
	}
	return text
}

// ToolProgressToProto converts a progress event for the wire: data that is
// valid UTF-8 goes in output, other data in data. A stream whose chunks may
// split a UTF-8 sequence is converted with a ProgressEncoder.
func ToolProgressToProto(p environment.ToolProgress) *turnboxv1.ToolProgress {
	out := &turnboxv1.ToolProgress{ToolCallId: p.ToolCallID}
	out.Output, out.Data = textOrBytes(p.Data)
	switch p.Stream {
	case environment.StreamStdout:
		out.Stream = turnboxv1.OutputStream_OUTPUT_STREAM_STDOUT
	case environment.StreamStderr:
		out.Stream = turnboxv1.OutputStream_OUTPUT_STREAM_STDERR
	}
	return out
}

// ToolProgressFromProto converts a progress event from the wire.
func ToolProgressFromProto(p *turnboxv1.ToolProgress) environment.ToolProgress {
	out := environment.ToolProgress{ToolCallID: p.GetToolCallId(), Data: p.GetData()}
	if len(out.Data) == 0 && p.GetOutput() != "" {
		out.Data = []byte(p.GetOutput())
	}
	switch p.GetStream() {
	case turnboxv1.OutputStream_OUTPUT_STREAM_STDOUT:
		out.Stream = environment.StreamStdout
	case turnboxv1.OutputStream_OUTPUT_STREAM_STDERR:
		out.Stream = environment.StreamStderr
	}
	return out
}

// SnapshotToProto converts snapshot metadata for the wire.
func SnapshotToProto(s *environment.SnapshotInfo) *turnboxv1.SnapshotInfo {
	if s == nil {
		return nil
	}
	return &turnboxv1.SnapshotInfo{
		Id:          s.ID,
		SessionId:   s.SessionID,
		Name:        s.Name,
		Turn:        int64(s.Turn),
		CreatedAt:   timestamppb.New(s.CreatedAt),
		SizeBytes:   s.SizeBytes,
		Memory:      s.Memory,
		MemoryBytes: s.MemoryBytes,
	}
}

// SnapshotFromProto converts snapshot metadata from the wire.
func SnapshotFromProto(s *turnboxv1.SnapshotInfo) *environment.SnapshotInfo {
	if s == nil {
		return nil
	}
	var created time.Time
	if s.GetCreatedAt() != nil {
		created = s.GetCreatedAt().AsTime()
	}
	return &environment.SnapshotInfo{
		ID:          s.GetId(),
		SessionID:   s.GetSessionId(),
		Name:        s.GetName(),
		Turn:        int(s.GetTurn()),
		CreatedAt:   created,
		SizeBytes:   s.GetSizeBytes(),
		Memory:      s.GetMemory(),
		MemoryBytes: s.GetMemoryBytes(),
	}
}

// CapabilitiesToProto converts capabilities for the wire.
func CapabilitiesToProto(c environment.Capabilities) *turnboxv1.Capabilities {
	return &turnboxv1.Capabilities{
		Snapshots:         c.Snapshots,
		Rollback:          c.Rollback,
		Fork:              c.Fork,
		Pause:             c.Pause,
		StreamingProgress: c.StreamingProgress,
		Isolation:         string(c.Isolation),
		Storage:           c.Storage,
		Limits:            LimitsToProto(c.Limits),
		LimitsEnforced:    c.LimitsEnforced,
		WritableRoot:      c.WritableRoot,
		Processes:         c.Processes,
		Pty:               c.PTY,
		Files:             c.Files,
		NetworkCeiling:    string(c.NetworkCeiling),
		Ports:             c.Ports,
		MemorySnapshots:   c.MemorySnapshots,
	}
}

// CapabilitiesFromProto converts capabilities from the wire.
func CapabilitiesFromProto(c *turnboxv1.Capabilities) environment.Capabilities {
	return environment.Capabilities{
		Snapshots:         c.GetSnapshots(),
		Rollback:          c.GetRollback(),
		Fork:              c.GetFork(),
		Pause:             c.GetPause(),
		StreamingProgress: c.GetStreamingProgress(),
		Isolation:         environment.IsolationKind(c.GetIsolation()),
		Storage:           c.GetStorage(),
		Limits:            LimitsFromProto(c.GetLimits()),
		LimitsEnforced:    c.GetLimitsEnforced(),
		WritableRoot:      c.GetWritableRoot(),
		Processes:         c.GetProcesses(),
		PTY:               c.GetPty(),
		Files:             c.GetFiles(),
		NetworkCeiling:    environment.NetworkMode(c.GetNetworkCeiling()),
		Ports:             c.GetPorts(),
		MemorySnapshots:   c.GetMemorySnapshots(),
	}
}

// LimitsToProto converts limits for the wire (nil for no limits).
func LimitsToProto(l environment.Limits) *turnboxv1.Limits {
	if l == (environment.Limits{}) {
		return nil
	}
	return &turnboxv1.Limits{MemoryBytes: l.MemoryBytes, Cpus: l.CPUs, Pids: l.Pids, DiskBytes: l.DiskBytes}
}

// LimitsFromProto converts limits from the wire (nil: none set).
func LimitsFromProto(l *turnboxv1.Limits) environment.Limits {
	return environment.Limits{MemoryBytes: l.GetMemoryBytes(), CPUs: l.GetCpus(), Pids: l.GetPids(), DiskBytes: l.GetDiskBytes()}
}

// PortsToProto converts a session's published ports for the wire.
func PortsToProto(ports []environment.PublishedPort) []*turnboxv1.PublishedPort {
	if len(ports) == 0 {
		return nil
	}
	out := make([]*turnboxv1.PublishedPort, len(ports))
	for i, p := range ports {
		out[i] = &turnboxv1.PublishedPort{Port: int32(p.Port), Public: p.Public}
	}
	return out
}

// PortsFromProto converts published ports from the wire.
func PortsFromProto(ports []*turnboxv1.PublishedPort) []environment.PublishedPort {
	if len(ports) == 0 {
		return nil
	}
	out := make([]environment.PublishedPort, len(ports))
	for i, p := range ports {
		out[i] = environment.PublishedPort{Port: int(p.GetPort()), Public: p.GetPublic()}
	}
	return out
}
