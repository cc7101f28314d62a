package remote

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
	"github.com/turnbox/turnbox/remote/internal/wire"
)

// ProcessServiceProvider is implemented by the clients NewClient returns:
// beside SandboxService they carry a client of turnbox.v1.ProcessService
// on the same server, connection and options. A NativeSandboxEnvironment
// made with such a client implements environment.ProcessRunner through it;
// with any other client its process calls fail with
// environment.ErrCapabilityNotSupported and Capabilities reports no
// Processes.
type ProcessServiceProvider interface {
	ProcessService() turnboxv1connect.ProcessServiceClient
}

// ProcessService implements ProcessServiceProvider.
func (c *serviceClient) ProcessService() turnboxv1connect.ProcessServiceClient { return c.procs }

var _ environment.ProcessRunner = (*NativeSandboxEnvironment)(nil)

// procs returns the bound session's id and the process client.
func (e *NativeSandboxEnvironment) procs() (string, turnboxv1connect.ProcessServiceClient, error) {
	p, ok := e.service.(ProcessServiceProvider)
	if !ok {
		return "", nil, fmt.Errorf("%w: this client has no ProcessService (make it with remote.NewClient)", environment.ErrCapabilityNotSupported)
	}
	id, err := e.bound()
	if err != nil {
		return "", nil, err
	}
	return id, p.ProcessService(), nil
}

// maskProcesses clears the process capabilities when this environment's
// client cannot reach ProcessService.
func (e *NativeSandboxEnvironment) maskProcesses(c *environment.Capabilities) {
	if _, ok := e.service.(ProcessServiceProvider); !ok {
		c.Processes, c.PTY = false, false
	}
}

// StartProcess implements environment.ProcessRunner in one unary call.
func (e *NativeSandboxEnvironment) StartProcess(ctx context.Context, cfg environment.ProcessConfig) (*environment.ProcessInfo, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	id, pc, err := e.procs()
	if err != nil {
		return nil, err
	}
	resp, err := call(ctx, "StartProcess", pc.StartProcess, &turnboxv1.StartProcessRequest{SessionId: id, Config: wire.ProcessConfigToProto(cfg)})
	if err != nil {
		return nil, err
	}
	info := wire.ProcessInfoFromProto(resp.GetProcess())
	return &info, nil
}

// StartAndFollow starts a process and follows its output in one round
// trip: onStart gets its info (the pid) first, then fn gets every event as
// AttachProcess from offset 0 gives them. It returns nil after the exit
// event, ctx.Err() when ctx ends (the process runs on), or fn's error.
func (e *NativeSandboxEnvironment) StartAndFollow(ctx context.Context, cfg environment.ProcessConfig, onStart func(environment.ProcessInfo), fn func(environment.ProcessEvent) error) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	id, pc, err := e.procs()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := pc.StartAndFollow(ctx, connect.NewRequest(&turnboxv1.StartAndFollowRequest{SessionId: id, Config: wire.ProcessConfigToProto(cfg)}))
	if err != nil {
		return fromConnectError(ctx, "StartAndFollow", err)
	}
	defer st.Close()
	return follow(ctx, "StartAndFollow", st.Receive, st.Err, func() (*turnboxv1.ProcessEvent, error) {
		if s := st.Msg().GetStarted(); s != nil && onStart != nil {
			onStart(wire.ProcessInfoFromProto(s))
		}
		return st.Msg().GetEvent(), nil
	}, fn)
}

// errNoExit: a process stream that ended cleanly before the exit event.
var errNoExit = connect.NewError(connect.CodeUnavailable, errors.New("process stream ended before the process's exit"))

// follow reads a process stream until its exit event, giving fn every
// output and dropped event (keepalives are skipped).
func follow(ctx context.Context, procedure string, receive func() bool, streamErr func() error, next func() (*turnboxv1.ProcessEvent, error), fn func(environment.ProcessEvent) error) error {
	for receive() {
		pe, _ := next()
		if pe == nil {
			continue
		}
		ev, ok := wire.ProcessEventFromProto(pe)
		if !ok {
			continue
		}
		if err := fn(ev); err != nil {
			return err
		}
		if ev.Exit != nil {
			return nil
		}
	}
	if err := streamErr(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fromConnectError(ctx, procedure, err)
	}
	return fromConnectError(ctx, procedure, errNoExit)
}

// ListProcesses implements environment.ProcessRunner.
func (e *NativeSandboxEnvironment) ListProcesses(ctx context.Context) ([]environment.ProcessInfo, error) {
	id, pc, err := e.procs()
	if err != nil {
		return nil, err
	}
	resp, err := call(ctx, "ListProcesses", pc.ListProcesses, &turnboxv1.ListProcessesRequest{SessionId: id})
	if err != nil {
		return nil, err
	}
	out := make([]environment.ProcessInfo, 0, len(resp.GetProcesses()))
	for _, p := range resp.GetProcesses() {
		out = append(out, wire.ProcessInfoFromProto(p))
	}
	return out, nil
}

// AttachProcess implements environment.ProcessRunner over one server
// stream (keepalives keep it open on quiet stretches).
func (e *NativeSandboxEnvironment) AttachProcess(ctx context.Context, pid int, offset int64, fn func(environment.ProcessEvent) error) error {
	if offset < 0 {
		return fmt.Errorf("%w: negative offset %d", environment.ErrInvalidArgument, offset)
	}
	id, pc, err := e.procs()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := pc.AttachProcess(ctx, connect.NewRequest(&turnboxv1.AttachProcessRequest{SessionId: id, Pid: int32(pid), Offset: offset}))
	if err != nil {
		return fromConnectError(ctx, "AttachProcess", err)
	}
	defer st.Close()
	return follow(ctx, "AttachProcess", st.Receive, st.Err, func() (*turnboxv1.ProcessEvent, error) {
		return st.Msg().GetEvent(), nil
	}, fn)
}

// SendInput implements environment.ProcessRunner.
func (e *NativeSandboxEnvironment) SendInput(ctx context.Context, pid int, data []byte) error {
	if len(data) > environment.MaxProcessInputBytes {
		return fmt.Errorf("%w: %d bytes of input, at most %d", environment.ErrInvalidArgument, len(data), environment.MaxProcessInputBytes)
	}
	id, pc, err := e.procs()
	if err != nil {
		return err
	}
	_, err = call(ctx, "SendInput", pc.SendInput, &turnboxv1.SendInputRequest{SessionId: id, Pid: int32(pid), Data: data})
	return err
}

// CloseInput implements environment.ProcessRunner.
func (e *NativeSandboxEnvironment) CloseInput(ctx context.Context, pid int) error {
	id, pc, err := e.procs()
	if err != nil {
		return err
	}
	_, err = call(ctx, "CloseInput", pc.CloseInput, &turnboxv1.CloseInputRequest{SessionId: id, Pid: int32(pid)})
	return err
}

// SignalProcess implements environment.ProcessRunner.
func (e *NativeSandboxEnvironment) SignalProcess(ctx context.Context, pid int, sig int) error {
	if err := environment.ValidateSignal(sig); err != nil {
		return err
	}
	id, pc, err := e.procs()
	if err != nil {
		return err
	}
	_, err = call(ctx, "SignalProcess", pc.SignalProcess, &turnboxv1.SignalProcessRequest{SessionId: id, Pid: int32(pid), Signal: int32(sig)})
	return err
}

// ResizeProcess implements environment.ProcessRunner.
func (e *NativeSandboxEnvironment) ResizeProcess(ctx context.Context, pid int, size environment.TermSize) error {
	if err := size.Validate(); err != nil {
		return err
	}
	id, pc, err := e.procs()
	if err != nil {
		return err
	}
	_, err = call(ctx, "ResizeProcess", pc.ResizeProcess, &turnboxv1.ResizeProcessRequest{SessionId: id, Pid: int32(pid), Size: wire.TermSizeToProto(&size)})
	return err
}

// WaitProcess implements environment.ProcessRunner. A wait longer than
// the server's request bound is made of several calls.
func (e *NativeSandboxEnvironment) WaitProcess(ctx context.Context, pid int) (*environment.ProcessExit, error) {
	id, pc, err := e.procs()
	if err != nil {
		return nil, err
	}
	for {
		resp, err := call(ctx, "WaitProcess", pc.WaitProcess, &turnboxv1.WaitProcessRequest{SessionId: id, Pid: int32(pid)})
		if err == nil {
			return wire.ProcessExitFromProto(resp.GetExit()), nil
		}
		if ctx.Err() != nil || connect.CodeOf(err) != connect.CodeDeadlineExceeded {
			return nil, err
		}
	}
}
