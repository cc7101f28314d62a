package wire

import (
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
)

// TermSizeToProto converts a terminal size for the wire (nil for nil).
func TermSizeToProto(t *environment.TermSize) *turnboxv1.TermSize {
	if t == nil {
		return nil
	}
	return &turnboxv1.TermSize{Rows: uint32(t.Rows), Cols: uint32(t.Cols)}
}

// TermSizeFromProto converts a terminal size from the wire; a side past
// 65535 fails with ErrInvalidArgument (Validate checks the rest).
func TermSizeFromProto(t *turnboxv1.TermSize) (*environment.TermSize, error) {
	if t == nil {
		return nil, nil
	}
	if t.GetRows() > math.MaxUint16 || t.GetCols() > math.MaxUint16 {
		return nil, fmt.Errorf("%w: terminal size %dx%d", environment.ErrInvalidArgument, t.GetRows(), t.GetCols())
	}
	return &environment.TermSize{Rows: uint16(t.GetRows()), Cols: uint16(t.GetCols())}, nil
}

// ProcessConfigToProto converts a process configuration for the wire.
func ProcessConfigToProto(c environment.ProcessConfig) *turnboxv1.ProcessConfig {
	out := &turnboxv1.ProcessConfig{Args: c.Args, Command: c.Command, Env: c.Env, Cwd: c.Cwd, User: c.User,
		Tag: c.Tag, Pty: TermSizeToProto(c.PTY), Stdin: c.Stdin}
	if c.Timeout != 0 {
		out.Timeout = durationpb.New(c.Timeout)
	}
	return out
}

// ProcessConfigFromProto converts and validates a process configuration
// from the wire (errors wrap ErrInvalidArgument).
func ProcessConfigFromProto(c *turnboxv1.ProcessConfig) (environment.ProcessConfig, error) {
	pty, err := TermSizeFromProto(c.GetPty())
	if err != nil {
		return environment.ProcessConfig{}, err
	}
	var timeout time.Duration
	if d := c.GetTimeout(); d != nil {
		if err := d.CheckValid(); err != nil {
			return environment.ProcessConfig{}, fmt.Errorf("%w: timeout: %v", environment.ErrInvalidArgument, err)
		}
		timeout = d.AsDuration()
	}
	cfg := environment.ProcessConfig{Args: c.GetArgs(), Command: c.GetCommand(), Env: c.GetEnv(), Cwd: c.GetCwd(),
		User: c.GetUser(), Tag: c.GetTag(), PTY: pty, Stdin: c.GetStdin(), Timeout: timeout}
	return cfg, cfg.Validate()
}

// ProcessExitToProto converts a process's exit for the wire (nil for nil).
func ProcessExitToProto(e *environment.ProcessExit) *turnboxv1.ProcessExit {
	if e == nil {
		return nil
	}
	return &turnboxv1.ProcessExit{Code: int32(e.Code), Signal: int32(e.Signal), OomKilled: e.OOMKilled,
		TimedOut: e.TimedOut, Killed: e.Killed, Reason: e.Reason, EndedAt: timestamppb.New(e.EndedAt)}
}

// ProcessExitFromProto converts a process's exit from the wire.
func ProcessExitFromProto(e *turnboxv1.ProcessExit) *environment.ProcessExit {
	if e == nil {
		return nil
	}
	return &environment.ProcessExit{Code: int(e.GetCode()), Signal: int(e.GetSignal()), OOMKilled: e.GetOomKilled(),
		TimedOut: e.GetTimedOut(), Killed: e.GetKilled(), Reason: e.GetReason(), EndedAt: e.GetEndedAt().AsTime()}
}

// ProcessInfoToProto converts a process report for the wire.
func ProcessInfoToProto(i environment.ProcessInfo) *turnboxv1.ProcessInfo {
	return &turnboxv1.ProcessInfo{Pid: int32(i.PID), Tag: i.Tag, Args: i.Args, Pty: i.PTY,
		StartedAt: timestamppb.New(i.StartedAt), OutputBytes: i.OutputBytes, Exit: ProcessExitToProto(i.Exit)}
}

// ProcessInfoFromProto converts a process report from the wire.
func ProcessInfoFromProto(i *turnboxv1.ProcessInfo) environment.ProcessInfo {
	return environment.ProcessInfo{PID: int(i.GetPid()), Tag: i.GetTag(), Args: i.GetArgs(), PTY: i.GetPty(),
		StartedAt: i.GetStartedAt().AsTime(), OutputBytes: i.GetOutputBytes(), Exit: ProcessExitFromProto(i.GetExit())}
}

// ProcessEventToProto converts an attach event for the wire.
func ProcessEventToProto(ev environment.ProcessEvent) *turnboxv1.ProcessEvent {
	switch {
	case ev.Exit != nil:
		return &turnboxv1.ProcessEvent{Event: &turnboxv1.ProcessEvent_Exit{Exit: ProcessExitToProto(ev.Exit)}}
	case ev.Dropped > 0:
		return &turnboxv1.ProcessEvent{Event: &turnboxv1.ProcessEvent_Dropped{Dropped: &turnboxv1.ProcessDropped{Offset: ev.Offset, Bytes: ev.Dropped}}}
	}
	return &turnboxv1.ProcessEvent{Event: &turnboxv1.ProcessEvent_Output{Output: &turnboxv1.ProcessOutput{Offset: ev.Offset, Stream: ev.Stream, Data: ev.Data}}}
}

// ProcessEventFromProto converts an attach event from the wire; ok is
// false for a keepalive (or an event this client does not know).
func ProcessEventFromProto(ev *turnboxv1.ProcessEvent) (out environment.ProcessEvent, ok bool) {
	switch e := ev.GetEvent().(type) {
	case *turnboxv1.ProcessEvent_Output:
		return environment.ProcessEvent{Offset: e.Output.GetOffset(), Stream: e.Output.GetStream(), Data: e.Output.GetData()}, true
	case *turnboxv1.ProcessEvent_Dropped:
		return environment.ProcessEvent{Offset: e.Dropped.GetOffset(), Dropped: e.Dropped.GetBytes()}, true
	case *turnboxv1.ProcessEvent_Exit:
		return environment.ProcessEvent{Exit: ProcessExitFromProto(e.Exit)}, true
	}
	return environment.ProcessEvent{}, false
}
