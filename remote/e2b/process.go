package e2b

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/environment"
	processpb "github.com/turnbox/turnbox/remote/gen/envd/process"
	"github.com/turnbox/turnbox/remote/gen/envd/process/processpbconnect"
)

// Headers of envd's process calls.
const (
	// keepAliveHeader asks for keepalive events on a quiet stream every
	// so many seconds.
	keepAliveHeader = "Keepalive-Ping-Interval"
	// timeoutHeader is the Connect protocol's call timeout; on Start it
	// also bounds the process, as in envd.
	timeoutHeader = "Connect-Timeout-Ms"
)

// maxOutputChunk bounds the output one data event carries.
const maxOutputChunk = 32 << 10

// mountProcess registers envd's process.Process service on mux.
func (s *Server) mountProcess(mux *http.ServeMux) {
	mux.Handle(processpbconnect.NewProcessHandler(&processService{s: s}, s.connectOptions()...))
}

// processService serves process.Process over the environment's
// ProcessRunner of the request's sandbox. It keeps no state: every
// process lives in the session's process table, so a process outlives
// the call that started it and any call of the sandbox can follow it.
type processService struct{ s *Server }

var _ processpbconnect.ProcessHandler = (*processService)(nil)

// Start implements processpbconnect.ProcessHandler: it starts the process
// and follows it from its first byte of output.
func (p *processService) Start(ctx context.Context, req *connect.Request[processpb.StartRequest], stream *connect.ServerStream[processpb.StartResponse]) error {
	env, err := p.s.sandbox(ctx)
	if err != nil {
		return connectError(err)
	}
	cfg, err := p.s.startConfig(ctx, env, req)
	if err != nil {
		return connectError(err)
	}
	info, err := env.StartProcess(ctx, cfg)
	if err != nil {
		return connectError(err)
	}
	send := func(ev *processpb.ProcessEvent) error { return stream.Send(&processpb.StartResponse{Event: ev}) }
	if err := send(startEvent(info.PID)); err != nil {
		return err
	}
	return p.s.follow(ctx, env, info.PID, 0, req.Header(), send)
}

// Connect implements processpbconnect.ProcessHandler: it follows a
// running process from its current output on.
func (p *processService) Connect(ctx context.Context, req *connect.Request[processpb.ConnectRequest], stream *connect.ServerStream[processpb.ConnectResponse]) error {
	env, err := p.s.sandbox(ctx)
	if err != nil {
		return connectError(err)
	}
	info, err := findProcess(ctx, env, req.Msg.GetProcess())
	if err != nil {
		return connectError(err)
	}
	send := func(ev *processpb.ProcessEvent) error { return stream.Send(&processpb.ConnectResponse{Event: ev}) }
	if err := send(startEvent(info.PID)); err != nil {
		return err
	}
	return p.s.follow(ctx, env, info.PID, info.OutputBytes, req.Header(), send)
}

// List implements processpbconnect.ProcessHandler: the running processes
// (ended ones are left out, as envd forgets them).
func (p *processService) List(ctx context.Context, _ *connect.Request[processpb.ListRequest]) (*connect.Response[processpb.ListResponse], error) {
	env, err := p.s.sandbox(ctx)
	if err != nil {
		return nil, connectError(err)
	}
	procs, err := env.ListProcesses(ctx)
	if err != nil {
		return nil, connectError(err)
	}
	out := &processpb.ListResponse{}
	for _, pi := range procs {
		if pi.Exit != nil || len(pi.Args) == 0 {
			continue
		}
		info := &processpb.ProcessInfo{
			Config: &processpb.ProcessConfig{Cmd: pi.Args[0], Args: pi.Args[1:]},
			Pid:    uint32(pi.PID),
		}
		if pi.Tag != "" {
			info.Tag = &pi.Tag
		}
		out.Processes = append(out.Processes, info)
	}
	return connect.NewResponse(out), nil
}

// SendInput implements processpbconnect.ProcessHandler.
func (p *processService) SendInput(ctx context.Context, req *connect.Request[processpb.SendInputRequest]) (*connect.Response[processpb.SendInputResponse], error) {
	data, err := inputData(req.Msg.GetInput())
	if err != nil {
		return nil, connectError(err)
	}
	err = p.s.control(ctx, req.Msg.GetProcess(), func(env environment.ProcessRunner, pid int) error {
		return env.SendInput(ctx, pid, data)
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&processpb.SendInputResponse{}), nil
}

// StreamInput implements processpbconnect.ProcessHandler: a start event
// naming the process, then input events, each sent as it arrives.
func (p *processService) StreamInput(ctx context.Context, stream *connect.ClientStream[processpb.StreamInputRequest]) (*connect.Response[processpb.StreamInputResponse], error) {
	env, err := p.s.sandbox(ctx)
	if err != nil {
		return nil, connectError(err)
	}
	pid := 0
	for stream.Receive() {
		switch ev := stream.Msg().GetEvent().(type) {
		case *processpb.StreamInputRequest_Start:
			if pid != 0 {
				return nil, invalidArgument("stream input: a second start event")
			}
			info, err := findProcess(ctx, env, ev.Start.GetProcess())
			if err != nil {
				return nil, connectError(err)
			}
			pid = info.PID
		case *processpb.StreamInputRequest_Data:
			if pid == 0 {
				return nil, invalidArgument("stream input: data before the start event")
			}
			data, err := inputData(ev.Data.GetInput())
			if err != nil {
				return nil, connectError(err)
			}
			if err := env.SendInput(ctx, pid, data); err != nil {
				return nil, connectError(err)
			}
		case *processpb.StreamInputRequest_Keepalive:
		default:
			return nil, invalidArgument("stream input: an event of no known kind")
		}
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	return connect.NewResponse(&processpb.StreamInputResponse{}), nil
}

// SendSignal implements processpbconnect.ProcessHandler: SIGTERM or
// SIGKILL.
func (p *processService) SendSignal(ctx context.Context, req *connect.Request[processpb.SendSignalRequest]) (*connect.Response[processpb.SendSignalResponse], error) {
	var sig syscall.Signal
	switch req.Msg.GetSignal() {
	case processpb.Signal_SIGNAL_SIGTERM:
		sig = syscall.SIGTERM
	case processpb.Signal_SIGNAL_SIGKILL:
		sig = syscall.SIGKILL
	default:
		return nil, invalidArgument(fmt.Sprintf("signal %v: only SIGTERM and SIGKILL can be sent", req.Msg.GetSignal()))
	}
	err := p.s.control(ctx, req.Msg.GetProcess(), func(env environment.ProcessRunner, pid int) error {
		return env.SignalProcess(ctx, pid, int(sig))
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&processpb.SendSignalResponse{}), nil
}

// CloseStdin implements processpbconnect.ProcessHandler.
func (p *processService) CloseStdin(ctx context.Context, req *connect.Request[processpb.CloseStdinRequest]) (*connect.Response[processpb.CloseStdinResponse], error) {
	err := p.s.control(ctx, req.Msg.GetProcess(), func(env environment.ProcessRunner, pid int) error {
		return env.CloseInput(ctx, pid)
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&processpb.CloseStdinResponse{}), nil
}

// Update implements processpbconnect.ProcessHandler: it resizes the
// process's terminal.
func (p *processService) Update(ctx context.Context, req *connect.Request[processpb.UpdateRequest]) (*connect.Response[processpb.UpdateResponse], error) {
	if req.Msg.Pty == nil {
		return nil, invalidArgument("update: no pty size given")
	}
	size, err := termSize(req.Msg.GetPty().GetSize())
	if err != nil {
		return nil, connectError(err)
	}
	err = p.s.control(ctx, req.Msg.GetProcess(), func(env environment.ProcessRunner, pid int) error {
		return env.ResizeProcess(ctx, pid, size)
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&processpb.UpdateResponse{}), nil
}

// control runs fn on the running process sel names in the request's
// sandbox; its error is a *connect.Error.
func (s *Server) control(ctx context.Context, sel *processpb.ProcessSelector, fn func(env environment.ProcessRunner, pid int) error) error {
	env, err := s.sandbox(ctx)
	if err != nil {
		return connectError(err)
	}
	info, err := findProcess(ctx, env, sel)
	if err != nil {
		return connectError(err)
	}
	return connectError(fn(env, info.PID))
}

// invalidArgument is a Connect InvalidArgument error with msg.
func invalidArgument(msg string) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%w: %s", environment.ErrInvalidArgument, msg))
}

// findProcess finds the running process sel names: by pid, or by tag
// (the newest running process with that tag). An ended or unknown one is
// ErrProcessNotFound, as envd forgets ended processes.
func findProcess(ctx context.Context, env environment.ProcessRunner, sel *processpb.ProcessSelector) (*environment.ProcessInfo, error) {
	var match func(environment.ProcessInfo) bool
	var what string
	switch v := sel.GetSelector().(type) {
	case *processpb.ProcessSelector_Pid:
		match = func(pi environment.ProcessInfo) bool { return pi.PID == int(v.Pid) }
		what = fmt.Sprintf("pid %d", v.Pid)
	case *processpb.ProcessSelector_Tag:
		if v.Tag == "" {
			return nil, fmt.Errorf("%w: empty process tag", environment.ErrInvalidArgument)
		}
		match = func(pi environment.ProcessInfo) bool { return pi.Tag == v.Tag }
		what = fmt.Sprintf("tag %q", v.Tag)
	default:
		return nil, fmt.Errorf("%w: no process selector (pid or tag)", environment.ErrInvalidArgument)
	}
	procs, err := env.ListProcesses(ctx)
	if err != nil {
		return nil, err
	}
	for i := len(procs) - 1; i >= 0; i-- {
		if procs[i].Exit == nil && match(procs[i]) {
			return &procs[i], nil
		}
	}
	return nil, fmt.Errorf("%w: no running process with %s", environment.ErrProcessNotFound, what)
}

// inputData is the bytes of in (standard input or terminal input).
func inputData(in *processpb.ProcessInput) ([]byte, error) {
	var data []byte
	switch v := in.GetInput().(type) {
	case *processpb.ProcessInput_Stdin:
		data = v.Stdin
	case *processpb.ProcessInput_Pty:
		data = v.Pty
	default:
		return nil, fmt.Errorf("%w: no input (stdin or pty)", environment.ErrInvalidArgument)
	}
	if len(data) > environment.MaxProcessInputBytes {
		return nil, fmt.Errorf("%w: %d bytes of input in one message, at most %d", environment.ErrInvalidArgument, len(data), environment.MaxProcessInputBytes)
	}
	return data, nil
}

// termSize converts a PTY size of the wire (ProcessConfig's bounds apply).
func termSize(sz *processpb.PTY_Size) (environment.TermSize, error) {
	if sz == nil {
		return environment.TermSize{}, fmt.Errorf("%w: no terminal size", environment.ErrInvalidArgument)
	}
	const most = 10000
	if sz.GetRows() > most || sz.GetCols() > most {
		return environment.TermSize{}, fmt.Errorf("%w: terminal size %dx%d: rows and cols must be 1 to %d", environment.ErrInvalidArgument, sz.GetRows(), sz.GetCols(), most)
	}
	size := environment.TermSize{Rows: uint16(sz.GetRows()), Cols: uint16(sz.GetCols())}
	return size, size.Validate()
}

// startConfig turns a Start request into the process to start: its
// command and environment, as the request's user (checked against the
// sandbox's accounts), in cwd resolved against that user's home, bounded
// by the call's Connect-Timeout-Ms.
func (s *Server) startConfig(ctx context.Context, fsys environment.FileSystem, req *connect.Request[processpb.StartRequest]) (environment.ProcessConfig, error) {
	msg := req.Msg
	pc := msg.GetProcess()
	if pc.GetCmd() == "" {
		return environment.ProcessConfig{}, fmt.Errorf("%w: process.cmd is required", environment.ErrInvalidArgument)
	}
	acct, err := s.processAccount(ctx, fsys, req.Header())
	if err != nil {
		return environment.ProcessConfig{}, err
	}
	cfg := environment.ProcessConfig{
		Args: append([]string{pc.GetCmd()}, pc.GetArgs()...),
		Env:  pc.GetEnvs(),
		Cwd:  resolvePath(acct.Home, pc.GetCwd()),
		User: acct.Name,
		Tag:  msg.GetTag(),
		// As envd: standard input stays open unless asked otherwise.
		Stdin:   msg.Stdin == nil || msg.GetStdin(),
		Timeout: s.callTimeout(req.Header()),
	}
	if msg.Pty != nil {
		size, err := termSize(msg.GetPty().GetSize())
		if err != nil {
			return environment.ProcessConfig{}, err
		}
		cfg.PTY = &size
	}
	return cfg, cfg.Validate()
}

// processAccount is the account a Start request runs as. On a host whose
// runtime is none there is no sandbox root (and no sandbox /etc/passwd):
// processes run as the host process's user, in the workspace as home.
func (s *Server) processAccount(ctx context.Context, fsys environment.FileSystem, h http.Header) (account, error) {
	name, err := requestUser(h)
	if err != nil {
		return account{}, err
	}
	if s.host.Capabilities().Isolation == environment.IsolationNone {
		return account{Home: container.WorkspaceDir}, nil
	}
	return lookupAccount(ctx, fsys, name)
}

// callTimeout is a call's Connect-Timeout-Ms (0 when absent or not
// positive), at most the server's longest sandbox lifetime.
func (s *Server) callTimeout(h http.Header) time.Duration {
	ms, err := strconv.ParseInt(h.Get(timeoutHeader), 10, 64)
	if err != nil || ms <= 0 {
		return 0
	}
	if ms >= s.maxTTL.Milliseconds() {
		return s.maxTTL
	}
	return time.Duration(ms) * time.Millisecond
}

// keepAliveInterval is how often a followed process's quiet stream sends
// a keepalive: the request's Keepalive-Ping-Interval (seconds), at most
// the server's interval.
func (s *Server) keepAliveInterval(h http.Header) time.Duration {
	sec, err := strconv.ParseInt(h.Get(keepAliveHeader), 10, 64)
	if err != nil || sec <= 0 || sec >= int64(s.keepAlive/time.Second) {
		return s.keepAlive
	}
	return time.Duration(sec) * time.Second
}
