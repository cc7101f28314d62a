package server

import (
	"context"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
	"github.com/turnbox/turnbox/remote/internal/wire"
)

// ProcessServiceHandler returns the path and handler of
// turnbox.v1.ProcessService, with the same auth, limits and metrics as
// ServiceHandler, to mount on a mux (Handler mounts it).
func (s *Server) ProcessServiceHandler() (string, http.Handler) {
	path, h := turnboxv1connect.NewProcessServiceHandler(procHandler{handler{s: s}}, s.handlerOptions()...)
	return path, s.rpcHTTP(h)
}

// procHandler implements the generated ProcessServiceHandler over the
// server's host (embedded.Environment's ProcessRunner).
type procHandler struct {
	handler
}

var _ turnboxv1connect.ProcessServiceHandler = procHandler{}

// lockedStream serializes a server stream's sends between the body and
// the keepalive goroutine, and remembers when it last sent.
type lockedStream[T any] struct {
	mu   sync.Mutex
	send func(*T) error
	err  error
	last time.Time
}

func (l *lockedStream[T]) Send(ev *T) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = l.send(ev)
		l.last = time.Now()
	}
	return l.err
}

func (l *lockedStream[T]) quiet(d time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Since(l.last) >= d
}

// withKeepAlive runs body with a send that is safe beside keepalives,
// which are sent whenever the stream was quiet for about the server's
// keepalive interval.
func withKeepAlive[T any](s *Server, send func(*T) error, keepalive func() *T, body func(send func(*T) error) error) error {
	ls := &lockedStream[T]{send: send, last: time.Now()}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		keepAliveLoop(s.keepAlive, stop, func() bool { return ls.quiet(s.keepAlive / 2) }, func() { _ = ls.Send(keepalive()) })
	})
	err := body(ls.Send)
	close(stop)
	wg.Wait()
	return err
}

// keepAliveLoop calls ping every interval while quiet says so, until
// stop is closed.
func keepAliveLoop(interval time.Duration, stop <-chan struct{}, quiet func() bool, ping func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if quiet() {
				ping()
			}
		}
	}
}

// onProcs runs fn on the process runner of session id.
func onProcs[Res any](h procHandler, id string, fn func(environment.ProcessRunner) (*Res, error)) (*Res, error) {
	return onSession(h.handler, id, func(env *embedded.Environment) (*Res, error) { return fn(env) })
}

// StartProcess implements turnboxv1connect.ProcessServiceHandler.
func (h procHandler) StartProcess(ctx context.Context, r *connect.Request[turnboxv1.StartProcessRequest]) (*connect.Response[turnboxv1.StartProcessResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.StartProcessRequest) (*turnboxv1.StartProcessResponse, error) {
		cfg, err := wire.ProcessConfigFromProto(req.GetConfig())
		if err != nil {
			return nil, err
		}
		return onProcs(h, req.GetSessionId(), func(pr environment.ProcessRunner) (*turnboxv1.StartProcessResponse, error) {
			info, err := pr.StartProcess(ctx, cfg)
			if err != nil {
				return nil, err
			}
			return &turnboxv1.StartProcessResponse{Process: wire.ProcessInfoToProto(*info)}, nil
		})
	})
}

// StartAndFollow implements turnboxv1connect.ProcessServiceHandler: the
// start, then the attach from offset 0, on one stream.
func (h procHandler) StartAndFollow(ctx context.Context, r *connect.Request[turnboxv1.StartAndFollowRequest], stream *connect.ServerStream[turnboxv1.StartAndFollowResponse]) error {
	cfg, err := wire.ProcessConfigFromProto(r.Msg.GetConfig())
	if err != nil {
		return wire.ToConnectError(err)
	}
	env, err := h.session(r.Msg.GetSessionId())
	if err != nil {
		return wire.ToConnectError(err)
	}
	info, err := env.StartProcess(ctx, cfg)
	if err != nil {
		return wire.ToConnectError(err)
	}
	if err := stream.Send(&turnboxv1.StartAndFollowResponse{Started: wire.ProcessInfoToProto(*info)}); err != nil {
		return err
	}
	keepalive := func() *turnboxv1.StartAndFollowResponse {
		return &turnboxv1.StartAndFollowResponse{Event: &turnboxv1.ProcessEvent{Event: &turnboxv1.ProcessEvent_Keepalive{Keepalive: &turnboxv1.KeepAlive{}}}}
	}
	return withKeepAlive(h.s, stream.Send, keepalive, func(send func(*turnboxv1.StartAndFollowResponse) error) error {
		return wire.ToConnectError(env.AttachProcess(ctx, info.PID, 0, func(ev environment.ProcessEvent) error {
			return send(&turnboxv1.StartAndFollowResponse{Event: wire.ProcessEventToProto(ev)})
		}))
	})
}

// AttachProcess implements turnboxv1connect.ProcessServiceHandler.
func (h procHandler) AttachProcess(ctx context.Context, r *connect.Request[turnboxv1.AttachProcessRequest], stream *connect.ServerStream[turnboxv1.AttachProcessResponse]) error {
	env, err := h.session(r.Msg.GetSessionId())
	if err != nil {
		return wire.ToConnectError(err)
	}
	keepalive := func() *turnboxv1.AttachProcessResponse {
		return &turnboxv1.AttachProcessResponse{Event: &turnboxv1.ProcessEvent{Event: &turnboxv1.ProcessEvent_Keepalive{Keepalive: &turnboxv1.KeepAlive{}}}}
	}
	return withKeepAlive(h.s, stream.Send, keepalive, func(send func(*turnboxv1.AttachProcessResponse) error) error {
		return wire.ToConnectError(env.AttachProcess(ctx, int(r.Msg.GetPid()), r.Msg.GetOffset(), func(ev environment.ProcessEvent) error {
			return send(&turnboxv1.AttachProcessResponse{Event: wire.ProcessEventToProto(ev)})
		}))
	})
}

// ListProcesses implements turnboxv1connect.ProcessServiceHandler.
func (h procHandler) ListProcesses(ctx context.Context, r *connect.Request[turnboxv1.ListProcessesRequest]) (*connect.Response[turnboxv1.ListProcessesResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.ListProcessesRequest) (*turnboxv1.ListProcessesResponse, error) {
		return onProcs(h, req.GetSessionId(), func(pr environment.ProcessRunner) (*turnboxv1.ListProcessesResponse, error) {
			list, err := pr.ListProcesses(ctx)
			if err != nil {
				return nil, err
			}
			out := &turnboxv1.ListProcessesResponse{Processes: make([]*turnboxv1.ProcessInfo, 0, len(list))}
			for _, p := range list {
				out.Processes = append(out.Processes, wire.ProcessInfoToProto(p))
			}
			return out, nil
		})
	})
}

// SendInput implements turnboxv1connect.ProcessServiceHandler.
func (h procHandler) SendInput(ctx context.Context, r *connect.Request[turnboxv1.SendInputRequest]) (*connect.Response[turnboxv1.SendInputResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.SendInputRequest) (*turnboxv1.SendInputResponse, error) {
		return onProcs(h, req.GetSessionId(), func(pr environment.ProcessRunner) (*turnboxv1.SendInputResponse, error) {
			return &turnboxv1.SendInputResponse{}, pr.SendInput(ctx, int(req.GetPid()), req.GetData())
		})
	})
}

// CloseInput implements turnboxv1connect.ProcessServiceHandler.
func (h procHandler) CloseInput(ctx context.Context, r *connect.Request[turnboxv1.CloseInputRequest]) (*connect.Response[turnboxv1.CloseInputResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.CloseInputRequest) (*turnboxv1.CloseInputResponse, error) {
		return onProcs(h, req.GetSessionId(), func(pr environment.ProcessRunner) (*turnboxv1.CloseInputResponse, error) {
			return &turnboxv1.CloseInputResponse{}, pr.CloseInput(ctx, int(req.GetPid()))
		})
	})
}

// SignalProcess implements turnboxv1connect.ProcessServiceHandler.
func (h procHandler) SignalProcess(ctx context.Context, r *connect.Request[turnboxv1.SignalProcessRequest]) (*connect.Response[turnboxv1.SignalProcessResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.SignalProcessRequest) (*turnboxv1.SignalProcessResponse, error) {
		return onProcs(h, req.GetSessionId(), func(pr environment.ProcessRunner) (*turnboxv1.SignalProcessResponse, error) {
			return &turnboxv1.SignalProcessResponse{}, pr.SignalProcess(ctx, int(req.GetPid()), int(req.GetSignal()))
		})
	})
}

// ResizeProcess implements turnboxv1connect.ProcessServiceHandler.
func (h procHandler) ResizeProcess(ctx context.Context, r *connect.Request[turnboxv1.ResizeProcessRequest]) (*connect.Response[turnboxv1.ResizeProcessResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.ResizeProcessRequest) (*turnboxv1.ResizeProcessResponse, error) {
		size, err := wire.TermSizeFromProto(req.GetSize())
		if err != nil {
			return nil, err
		}
		if size == nil {
			size = &environment.TermSize{}
		}
		return onProcs(h, req.GetSessionId(), func(pr environment.ProcessRunner) (*turnboxv1.ResizeProcessResponse, error) {
			return &turnboxv1.ResizeProcessResponse{}, pr.ResizeProcess(ctx, int(req.GetPid()), *size)
		})
	})
}

// WaitProcess implements turnboxv1connect.ProcessServiceHandler.
func (h procHandler) WaitProcess(ctx context.Context, r *connect.Request[turnboxv1.WaitProcessRequest]) (*connect.Response[turnboxv1.WaitProcessResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.WaitProcessRequest) (*turnboxv1.WaitProcessResponse, error) {
		return onProcs(h, req.GetSessionId(), func(pr environment.ProcessRunner) (*turnboxv1.WaitProcessResponse, error) {
			exit, err := pr.WaitProcess(ctx, int(req.GetPid()))
			if err != nil {
				return nil, err
			}
			return &turnboxv1.WaitProcessResponse{Exit: wire.ProcessExitToProto(exit)}, nil
		})
	})
}
