package server

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
	"github.com/turnbox/turnbox/remote/internal/wire"
)

// handler implements the generated SandboxServiceHandler over the
// server's host: each RPC decodes its request, calls the host and encodes
// the answer. Errors become Connect errors with an ErrorInfo detail naming
// the environment sentinels they match (wire.ToConnectError). A call on a
// destroyed or unknown session is both environment.ErrNotActive and
// environment.ErrSessionNotFound, except GetSession, AttachSession and
// DestroySession, which report ErrSessionNotFound alone; its code is
// NotFound on every method.
type handler struct {
	s *Server
}

var _ turnboxv1connect.SandboxServiceHandler = handler{}

// unary calls fn with the request's message and wraps the outcome.
func unary[Req, Res any](ctx context.Context, r *connect.Request[Req], fn func(context.Context, *Req) (*Res, error)) (*connect.Response[Res], error) {
	res, err := fn(ctx, r.Msg)
	if err != nil {
		return nil, wire.ToConnectError(err)
	}
	return connect.NewResponse(res), nil
}

// session returns an environment bound to session id. An unknown id gives
// an error matching ErrNotActive and ErrSessionNotFound, as a session
// destroyed under an embedded.Environment does.
func (h handler) session(id string) (*embedded.Environment, error) {
	env := h.s.host.NewEnvironment()
	if err := env.AttachSession(id); err != nil {
		if errors.Is(err, environment.ErrSessionNotFound) {
			return nil, unknownSession{err}
		}
		return nil, err
	}
	return env, nil
}

// unknownSession is a session lookup's ErrSessionNotFound that also
// matches ErrNotActive, with the lookup's message ("session not found:
// ...") alone.
type unknownSession struct{ error }

// Unwrap returns the lookup's error and ErrNotActive.
func (e unknownSession) Unwrap() []error { return []error{e.error, environment.ErrNotActive} }

// info reports a session.
func (h handler) info(id string) (*turnboxv1.Session, error) {
	i, err := h.s.host.Session(id)
	if err != nil {
		return nil, err
	}
	s := sessionToProto(i)
	if i.Network.Mode.Rank() > 0 {
		s.NetworkStats = h.networkStats(id)
	}
	return s, nil
}

// created reports a session just created for a caller, or destroys it
// when the caller went away before learning about it.
func (h handler) created(ctx context.Context, env environment.Environment) (*turnboxv1.Session, error) {
	if ctx.Err() != nil {
		_ = env.Destroy(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("remote server: caller went away; session discarded: %w", context.Cause(ctx))
	}
	return h.info(env.(environment.SessionIDer).SessionID())
}

// sessionToProto converts a host's session report for the wire.
func sessionToProto(i embedded.SessionInfo) *turnboxv1.Session {
	return &turnboxv1.Session{
		Id:             i.ID,
		State:          wire.StateToProto[i.State],
		CreatedAt:      timestamppb.New(i.CreatedAt),
		ParentSession:  i.ParentSession,
		ParentSnapshot: i.ParentSnapshot,
		LastTurn:       int64(i.LastTurn),
		Limits:         wire.LimitsToProto(i.Limits),
		Image:          i.Image,
		Labels:         i.Labels,
		WorkDir:        i.WorkDir,
		User:           i.User,
		Network:        &turnboxv1.NetworkPolicy{Mode: string(i.Network.Mode), Allow: i.Network.Allow},
		Ports:          wire.PortsToProto(i.Ports),
		SnapshotMemory: i.SnapshotMemory,
		Hibernated:     i.Hibernated,
	}
}

// CreateSession implements turnboxv1connect.SandboxServiceHandler.
func (h handler) CreateSession(ctx context.Context, r *connect.Request[turnboxv1.CreateSessionRequest]) (*connect.Response[turnboxv1.CreateSessionResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.CreateSessionRequest) (*turnboxv1.CreateSessionResponse, error) {
		caps := h.s.host.Capabilities()
		if b := req.GetRequiredStorageBackend(); b != "" && b != caps.Storage {
			return nil, fmt.Errorf("%w: the host stores sessions on %s, not %s", environment.ErrCapabilityNotSupported, caps.Storage, b)
		}
		if rt := req.GetRequiredContainerRuntime(); rt != "" && rt != string(caps.Isolation) {
			return nil, fmt.Errorf("%w: the host runs sessions on %s, not %s", environment.ErrCapabilityNotSupported, caps.Isolation, rt)
		}
		cfg, err := wire.SessionConfigFromProto(req.GetConfig())
		if err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		env, err := h.s.host.CreateSession(ctx, cfg)
		if err != nil {
			return nil, err
		}
		s, err := h.created(ctx, env)
		if err != nil {
			return nil, err
		}
		return &turnboxv1.CreateSessionResponse{Session: s}, nil
	})
}

// GetSession implements turnboxv1connect.SandboxServiceHandler.
func (h handler) GetSession(ctx context.Context, r *connect.Request[turnboxv1.GetSessionRequest]) (*connect.Response[turnboxv1.GetSessionResponse], error) {
	return unary(ctx, r, func(_ context.Context, req *turnboxv1.GetSessionRequest) (*turnboxv1.GetSessionResponse, error) {
		s, err := h.info(req.GetSessionId())
		if err != nil {
			return nil, err
		}
		return &turnboxv1.GetSessionResponse{Session: s}, nil
	})
}

// ListSessions implements turnboxv1connect.SandboxServiceHandler.
func (h handler) ListSessions(ctx context.Context, r *connect.Request[turnboxv1.ListSessionsRequest]) (*connect.Response[turnboxv1.ListSessionsResponse], error) {
	return unary(ctx, r, func(context.Context, *turnboxv1.ListSessionsRequest) (*turnboxv1.ListSessionsResponse, error) {
		infos := h.s.host.Sessions()
		out := &turnboxv1.ListSessionsResponse{Sessions: make([]*turnboxv1.Session, 0, len(infos))}
		for _, i := range infos {
			out.Sessions = append(out.Sessions, sessionToProto(i))
		}
		return out, nil
	})
}

// AttachSession implements turnboxv1connect.SandboxServiceHandler.
func (h handler) AttachSession(ctx context.Context, r *connect.Request[turnboxv1.AttachSessionRequest]) (*connect.Response[turnboxv1.AttachSessionResponse], error) {
	return unary(ctx, r, func(_ context.Context, req *turnboxv1.AttachSessionRequest) (*turnboxv1.AttachSessionResponse, error) {
		s, err := h.info(req.GetSessionId())
		if err != nil {
			return nil, err
		}
		return &turnboxv1.AttachSessionResponse{Session: s}, nil
	})
}

// onSession runs fn on the environment of session id: the body of every
// call on one existing session.
func onSession[Res any](h handler, id string, fn func(*embedded.Environment) (*Res, error)) (*Res, error) {
	env, err := h.session(id)
	if err != nil {
		return nil, err
	}
	return fn(env)
}

// PauseSession implements turnboxv1connect.SandboxServiceHandler.
func (h handler) PauseSession(ctx context.Context, r *connect.Request[turnboxv1.PauseSessionRequest]) (*connect.Response[turnboxv1.PauseSessionResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.PauseSessionRequest) (*turnboxv1.PauseSessionResponse, error) {
		return onSession(h, req.GetSessionId(), func(env *embedded.Environment) (*turnboxv1.PauseSessionResponse, error) {
			return &turnboxv1.PauseSessionResponse{}, env.Pause(ctx)
		})
	})
}

// HibernateSession implements turnboxv1connect.SandboxServiceHandler.
func (h handler) HibernateSession(ctx context.Context, r *connect.Request[turnboxv1.HibernateSessionRequest]) (*connect.Response[turnboxv1.HibernateSessionResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.HibernateSessionRequest) (*turnboxv1.HibernateSessionResponse, error) {
		return onSession(h, req.GetSessionId(), func(env *embedded.Environment) (*turnboxv1.HibernateSessionResponse, error) {
			hb, ok := any(env).(environment.Hibernator)
			if !ok {
				return nil, fmt.Errorf("%w: hibernation on this host", environment.ErrCapabilityNotSupported)
			}
			return &turnboxv1.HibernateSessionResponse{}, hb.Hibernate(ctx)
		})
	})
}

// ResumeSession implements turnboxv1connect.SandboxServiceHandler.
func (h handler) ResumeSession(ctx context.Context, r *connect.Request[turnboxv1.ResumeSessionRequest]) (*connect.Response[turnboxv1.ResumeSessionResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.ResumeSessionRequest) (*turnboxv1.ResumeSessionResponse, error) {
		return onSession(h, req.GetSessionId(), func(env *embedded.Environment) (*turnboxv1.ResumeSessionResponse, error) {
			return &turnboxv1.ResumeSessionResponse{}, env.Resume(ctx)
		})
	})
}

// DestroySession implements turnboxv1connect.SandboxServiceHandler.
func (h handler) DestroySession(ctx context.Context, r *connect.Request[turnboxv1.DestroySessionRequest]) (*connect.Response[turnboxv1.DestroySessionResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.DestroySessionRequest) (*turnboxv1.DestroySessionResponse, error) {
		env := h.s.host.NewEnvironment()
		if err := env.AttachSession(req.GetSessionId()); err != nil {
			return nil, err
		}
		return &turnboxv1.DestroySessionResponse{}, env.Destroy(ctx)
	})
}

// execute runs one tool call on the host, which makes it idempotent by
// tool call id. A response whose caller went away while the tool ran is an
// error: it may have raced the cancellation and is not trusted to be whole.
func (h handler) execute(ctx context.Context, sessionID string, pr *turnboxv1.ToolRequest, onProgress func(environment.ToolProgress)) (*turnboxv1.ToolResponse, error) {
	req, err := wire.ToolRequestFromProto(pr)
	if err != nil {
		return nil, err
	}
	return onSession(h, sessionID, func(env *embedded.Environment) (*turnboxv1.ToolResponse, error) {
		resp, err := env.ExecuteTool(ctx, req, onProgress)
		if err != nil {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("tool call canceled: %w", context.Cause(ctx))
		}
		return wire.ToolResponseToProto(resp), nil
	})
}

// ExecuteTool implements turnboxv1connect.SandboxServiceHandler.
func (h handler) ExecuteTool(ctx context.Context, r *connect.Request[turnboxv1.ExecuteToolRequest]) (*connect.Response[turnboxv1.ExecuteToolResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.ExecuteToolRequest) (*turnboxv1.ExecuteToolResponse, error) {
		resp, err := h.execute(ctx, req.GetSessionId(), req.GetRequest(), nil)
		if err != nil {
			return nil, err
		}
		return &turnboxv1.ExecuteToolResponse{Response: resp}, nil
	})
}

// ExecuteToolStream sends progress events as the tool produces them (a
// UTF-8 sequence split between chunks is sent whole, wire.ProgressEncoder),
// keepalives on quiet stretches, then the response.
func (h handler) ExecuteToolStream(ctx context.Context, r *connect.Request[turnboxv1.ExecuteToolStreamRequest], stream *connect.ServerStream[turnboxv1.ExecuteToolStreamResponse]) error {
	var (
		mu      sync.Mutex
		sendErr error
		last    = time.Now()
	)
	send := func(ev *turnboxv1.ExecuteToolStreamResponse) error {
		mu.Lock()
		defer mu.Unlock()
		if sendErr == nil {
			sendErr = stream.Send(ev)
			last = time.Now()
		}
		return sendErr
	}
	quiet := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return time.Since(last) >= h.s.keepAlive/2
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { h.keepAlive(stop, quiet, send) })
	var enc wire.ProgressEncoder
	resp, err := h.execute(ctx, r.Msg.GetSessionId(), r.Msg.GetRequest(), func(p environment.ToolProgress) {
		if ev := enc.Encode(p); ev != nil {
			_ = send(progressEvent(ev))
		}
	})
	close(stop)
	wg.Wait()
	for _, ev := range enc.Flush(r.Msg.GetRequest().GetToolCallId()) {
		_ = send(progressEvent(ev))
	}
	if err != nil {
		return wire.ToConnectError(err)
	}
	return send(&turnboxv1.ExecuteToolStreamResponse{Event: &turnboxv1.ExecuteToolStreamResponse_Response{Response: resp}})
}

// progressEvent wraps a progress event for ExecuteToolStream.
func progressEvent(p *turnboxv1.ToolProgress) *turnboxv1.ExecuteToolStreamResponse {
	return &turnboxv1.ExecuteToolStreamResponse{Event: &turnboxv1.ExecuteToolStreamResponse_Progress{Progress: p}}
}

// keepAlive sends a keepalive event whenever the stream was quiet for
// about the keepalive interval, until stop is closed.
func (h handler) keepAlive(stop <-chan struct{}, quiet func() bool, send func(*turnboxv1.ExecuteToolStreamResponse) error) {
	keepAliveLoop(h.s.keepAlive, stop, quiet, func() {
		_ = send(&turnboxv1.ExecuteToolStreamResponse{Event: &turnboxv1.ExecuteToolStreamResponse_Keepalive{Keepalive: &turnboxv1.KeepAlive{}}})
	})
}

// TurnComplete implements turnboxv1connect.SandboxServiceHandler.
func (h handler) TurnComplete(ctx context.Context, r *connect.Request[turnboxv1.TurnCompleteRequest]) (*connect.Response[turnboxv1.TurnCompleteResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.TurnCompleteRequest) (*turnboxv1.TurnCompleteResponse, error) {
		return onSession(h, req.GetSessionId(), func(env *embedded.Environment) (*turnboxv1.TurnCompleteResponse, error) {
			info, err := env.TurnComplete(ctx, req.GetLabel())
			if err != nil {
				return nil, err
			}
			return &turnboxv1.TurnCompleteResponse{Snapshot: wire.SnapshotToProto(info)}, nil
		})
	})
}

// CreateSnapshot implements turnboxv1connect.SandboxServiceHandler.
func (h handler) CreateSnapshot(ctx context.Context, r *connect.Request[turnboxv1.CreateSnapshotRequest]) (*connect.Response[turnboxv1.CreateSnapshotResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.CreateSnapshotRequest) (*turnboxv1.CreateSnapshotResponse, error) {
		return onSession(h, req.GetSessionId(), func(env *embedded.Environment) (*turnboxv1.CreateSnapshotResponse, error) {
			info, err := env.CreateSnapshot(ctx, req.GetName())
			if err != nil {
				return nil, err
			}
			return &turnboxv1.CreateSnapshotResponse{Snapshot: wire.SnapshotToProto(info)}, nil
		})
	})
}

// ListSnapshots implements turnboxv1connect.SandboxServiceHandler.
func (h handler) ListSnapshots(ctx context.Context, r *connect.Request[turnboxv1.ListSnapshotsRequest]) (*connect.Response[turnboxv1.ListSnapshotsResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.ListSnapshotsRequest) (*turnboxv1.ListSnapshotsResponse, error) {
		return onSession(h, req.GetSessionId(), func(env *embedded.Environment) (*turnboxv1.ListSnapshotsResponse, error) {
			snaps, err := env.ListSnapshots(ctx)
			if err != nil {
				return nil, err
			}
			out := &turnboxv1.ListSnapshotsResponse{Snapshots: make([]*turnboxv1.SnapshotInfo, 0, len(snaps))}
			for i := range snaps {
				out.Snapshots = append(out.Snapshots, wire.SnapshotToProto(&snaps[i]))
			}
			return out, nil
		})
	})
}

// Rollback implements turnboxv1connect.SandboxServiceHandler.
func (h handler) Rollback(ctx context.Context, r *connect.Request[turnboxv1.RollbackRequest]) (*connect.Response[turnboxv1.RollbackResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.RollbackRequest) (*turnboxv1.RollbackResponse, error) {
		return onSession(h, req.GetSessionId(), func(env *embedded.Environment) (*turnboxv1.RollbackResponse, error) {
			return &turnboxv1.RollbackResponse{}, env.Rollback(ctx, req.GetSnapshotId())
		})
	})
}

// DeleteSnapshot implements turnboxv1connect.SandboxServiceHandler.
func (h handler) DeleteSnapshot(ctx context.Context, r *connect.Request[turnboxv1.DeleteSnapshotRequest]) (*connect.Response[turnboxv1.DeleteSnapshotResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.DeleteSnapshotRequest) (*turnboxv1.DeleteSnapshotResponse, error) {
		return onSession(h, req.GetSessionId(), func(env *embedded.Environment) (*turnboxv1.DeleteSnapshotResponse, error) {
			return &turnboxv1.DeleteSnapshotResponse{}, env.DeleteSnapshot(ctx, req.GetSnapshotId())
		})
	})
}

// Fork implements turnboxv1connect.SandboxServiceHandler.
func (h handler) Fork(ctx context.Context, r *connect.Request[turnboxv1.ForkRequest]) (*connect.Response[turnboxv1.ForkResponse], error) {
	return unary(ctx, r, func(ctx context.Context, req *turnboxv1.ForkRequest) (*turnboxv1.ForkResponse, error) {
		return onSession(h, req.GetSessionId(), func(env *embedded.Environment) (*turnboxv1.ForkResponse, error) {
			cfg, err := wire.SessionConfigFromProto(req.GetConfig())
			if err != nil {
				return nil, err
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			child, err := env.Fork(ctx, req.GetSnapshotId(), cfg)
			if err != nil {
				return nil, err
			}
			s, err := h.created(ctx, child)
			if err != nil {
				return nil, err
			}
			return &turnboxv1.ForkResponse{Session: s}, nil
		})
	})
}

// Health implements turnboxv1connect.SandboxServiceHandler.
func (h handler) Health(_ context.Context, _ *connect.Request[turnboxv1.HealthRequest]) (*connect.Response[turnboxv1.HealthResponse], error) {
	status := "SERVING"
	if h.s.draining.Load() {
		status = "NOT_SERVING"
	}
	return connect.NewResponse(&turnboxv1.HealthResponse{Status: status, Version: version()}), nil
}

// Capabilities implements turnboxv1connect.SandboxServiceHandler.
func (h handler) Capabilities(_ context.Context, _ *connect.Request[turnboxv1.CapabilitiesRequest]) (*connect.Response[turnboxv1.CapabilitiesResponse], error) {
	return connect.NewResponse(&turnboxv1.CapabilitiesResponse{Capabilities: wire.CapabilitiesToProto(h.s.host.Capabilities())}), nil
}

// version is the turnbox module's version, from the build info.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Path == "github.com/turnbox/turnbox" {
			return bi.Main.Version
		}
		for _, d := range bi.Deps {
			if d.Path == "github.com/turnbox/turnbox" {
				return d.Version
			}
		}
	}
	return "(devel)"
}
