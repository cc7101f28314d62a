package remote

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
)

// Conversions between the environment types and the wire types. Decoding
// (from the wire) validates what the environment types cannot express;
// the host validates the rest.

var stateToProto = map[environment.SessionState]turnboxv1.SessionState{
	environment.StateCreating:   turnboxv1.SessionState_SESSION_STATE_CREATING,
	environment.StateActive:     turnboxv1.SessionState_SESSION_STATE_ACTIVE,
	environment.StatePaused:     turnboxv1.SessionState_SESSION_STATE_PAUSED,
	environment.StateDestroying: turnboxv1.SessionState_SESSION_STATE_DESTROYING,
	environment.StateDestroyed:  turnboxv1.SessionState_SESSION_STATE_DESTROYED,
	environment.StateFailed:     turnboxv1.SessionState_SESSION_STATE_FAILED,
}

// stateFromProto converts a wire session state; an unknown value is
// StateFailed.
func stateFromProto(s turnboxv1.SessionState) environment.SessionState {
	for k, v := range stateToProto {
		if v == s {
			return k
		}
	}
	return environment.StateFailed
}

func sessionToProto(i embedded.SessionInfo) *turnboxv1.Session {
	return &turnboxv1.Session{
		Id:             i.ID,
		State:          stateToProto[i.State],
		CreatedAt:      timestamppb.New(i.CreatedAt),
		ParentSession:  i.ParentSession,
		ParentSnapshot: i.ParentSnapshot,
		LastTurn:       int64(i.LastTurn),
		Limits:         limitsToProto(i.Limits),
	}
}

// sessionConfigToProto converts a session config for the wire.
func sessionConfigToProto(c environment.SessionConfig) *turnboxv1.SessionConfig {
	out := &turnboxv1.SessionConfig{
		SessionId:      c.SessionID,
		Image:          c.Image,
		FromSnapshot:   c.FromSnapshot,
		Env:            c.Env,
		Labels:         c.Labels,
		MaxOutputBytes: int64(c.MaxOutputBytes),
		Limits:         limitsToProto(c.Limits),
	}
	if c.ToolTimeout != 0 {
		out.ToolTimeout = durationpb.New(c.ToolTimeout)
	}
	return out
}

// sessionConfigFromProto converts a session config from the wire and
// checks it (environment.SessionConfig.Validate).
func sessionConfigFromProto(c *turnboxv1.SessionConfig) (environment.SessionConfig, error) {
	out := environment.SessionConfig{
		SessionID:    c.GetSessionId(),
		Image:        c.GetImage(),
		FromSnapshot: c.GetFromSnapshot(),
		Env:          c.GetEnv(),
		Labels:       c.GetLabels(),
		Limits:       limitsFromProto(c.GetLimits()),
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

// toolRequestToProto converts a tool request for the wire.
func toolRequestToProto(r environment.ToolRequest) *turnboxv1.ToolRequest {
	return &turnboxv1.ToolRequest{
		ToolCallId: r.ToolCallID,
		ToolName:   r.ToolName,
		Input:      r.Input,
		Snapshot:   r.Snapshot,
	}
}

// toolRequestFromProto converts a tool request from the wire. A missing
// request is ErrInvalidArgument; the input's JSON is checked by the host.
func toolRequestFromProto(r *turnboxv1.ToolRequest) (environment.ToolRequest, error) {
	if r == nil {
		return environment.ToolRequest{}, fmt.Errorf("%w: missing tool request", environment.ErrInvalidArgument)
	}
	// Checked before the id keys the idempotency cache.
	if err := environment.ValidateToolCallID(r.GetToolCallId()); err != nil {
		return environment.ToolRequest{}, err
	}
	return environment.ToolRequest{
		ToolCallID: r.GetToolCallId(),
		ToolName:   r.GetToolName(),
		Input:      r.GetInput(),
		Snapshot:   r.GetSnapshot(),
	}, nil
}

// toolResponseToProto converts a tool response for the wire.
func toolResponseToProto(r *environment.ToolResponse) *turnboxv1.ToolResponse {
	if r == nil {
		return nil
	}
	return &turnboxv1.ToolResponse{
		ToolCallId: r.ToolCallID,
		Content:    []byte(r.Content),
		ExitCode:   int32(r.ExitCode),
		IsError:    r.IsError,
		TimedOut:   r.TimedOut,
		Truncated:  r.Truncated,
		Duration:   durationpb.New(r.Duration),
		SnapshotId: r.SnapshotID,
		OomKilled:  r.OOMKilled,
	}
}

// toolResponseFromProto converts a tool response from the wire.
func toolResponseFromProto(r *turnboxv1.ToolResponse) *environment.ToolResponse {
	if r == nil {
		return nil
	}
	return &environment.ToolResponse{
		ToolCallID: r.GetToolCallId(),
		Content:    string(r.GetContent()),
		ExitCode:   int(r.GetExitCode()),
		IsError:    r.GetIsError(),
		TimedOut:   r.GetTimedOut(),
		Truncated:  r.GetTruncated(),
		Duration:   r.GetDuration().AsDuration(),
		SnapshotID: r.GetSnapshotId(),
		OOMKilled:  r.GetOomKilled(),
	}
}

// toolProgressToProto converts a progress event for the wire.
func toolProgressToProto(p environment.ToolProgress) *turnboxv1.ToolProgress {
	out := &turnboxv1.ToolProgress{ToolCallId: p.ToolCallID, Data: p.Data}
	switch p.Stream {
	case environment.StreamStdout:
		out.Stream = turnboxv1.OutputStream_OUTPUT_STREAM_STDOUT
	case environment.StreamStderr:
		out.Stream = turnboxv1.OutputStream_OUTPUT_STREAM_STDERR
	}
	return out
}

// toolProgressFromProto converts a progress event from the wire.
func toolProgressFromProto(p *turnboxv1.ToolProgress) environment.ToolProgress {
	out := environment.ToolProgress{ToolCallID: p.GetToolCallId(), Data: p.GetData()}
	switch p.GetStream() {
	case turnboxv1.OutputStream_OUTPUT_STREAM_STDOUT:
		out.Stream = environment.StreamStdout
	case turnboxv1.OutputStream_OUTPUT_STREAM_STDERR:
		out.Stream = environment.StreamStderr
	}
	return out
}

// snapshotToProto converts snapshot metadata for the wire.
func snapshotToProto(s *environment.SnapshotInfo) *turnboxv1.SnapshotInfo {
	if s == nil {
		return nil
	}
	return &turnboxv1.SnapshotInfo{
		Id:        s.ID,
		SessionId: s.SessionID,
		Name:      s.Name,
		Turn:      int64(s.Turn),
		CreatedAt: timestamppb.New(s.CreatedAt),
		SizeBytes: s.SizeBytes,
	}
}

// snapshotFromProto converts snapshot metadata from the wire.
func snapshotFromProto(s *turnboxv1.SnapshotInfo) *environment.SnapshotInfo {
	if s == nil {
		return nil
	}
	var created time.Time
	if s.GetCreatedAt() != nil {
		created = s.GetCreatedAt().AsTime()
	}
	return &environment.SnapshotInfo{
		ID:        s.GetId(),
		SessionID: s.GetSessionId(),
		Name:      s.GetName(),
		Turn:      int(s.GetTurn()),
		CreatedAt: created,
		SizeBytes: s.GetSizeBytes(),
	}
}

// capabilitiesToProto converts capabilities for the wire.
func capabilitiesToProto(c environment.Capabilities) *turnboxv1.Capabilities {
	return &turnboxv1.Capabilities{
		Snapshots:         c.Snapshots,
		Rollback:          c.Rollback,
		Fork:              c.Fork,
		Pause:             c.Pause,
		StreamingProgress: c.StreamingProgress,
		Isolation:         string(c.Isolation),
		Storage:           c.Storage,
		Limits:            limitsToProto(c.Limits),
		LimitsEnforced:    c.LimitsEnforced,
	}
}

// capabilitiesFromProto converts capabilities from the wire.
func capabilitiesFromProto(c *turnboxv1.Capabilities) environment.Capabilities {
	return environment.Capabilities{
		Snapshots:         c.GetSnapshots(),
		Rollback:          c.GetRollback(),
		Fork:              c.GetFork(),
		Pause:             c.GetPause(),
		StreamingProgress: c.GetStreamingProgress(),
		Isolation:         environment.IsolationKind(c.GetIsolation()),
		Storage:           c.GetStorage(),
		Limits:            limitsFromProto(c.GetLimits()),
		LimitsEnforced:    c.GetLimitsEnforced(),
	}
}

// limitsToProto converts limits for the wire (nil for no limits).
func limitsToProto(l environment.Limits) *turnboxv1.Limits {
	if l == (environment.Limits{}) {
		return nil
	}
	return &turnboxv1.Limits{MemoryBytes: l.MemoryBytes, Cpus: l.CPUs, Pids: l.Pids, DiskBytes: l.DiskBytes}
}

// limitsFromProto converts limits from the wire (nil: none set).
func limitsFromProto(l *turnboxv1.Limits) environment.Limits {
	return environment.Limits{MemoryBytes: l.GetMemoryBytes(), CPUs: l.GetCpus(), Pids: l.GetPids(), DiskBytes: l.GetDiskBytes()}
}
