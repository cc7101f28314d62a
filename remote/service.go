package remote

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
)

// SandboxService is the RPC-level API of a turnbox host: the calls of
// turnbox.v1.SandboxService on the generated message types. NewClient
// implements it over ConnectRPC and NewLocalService over an in-process
// embedded.Host, so NativeSandboxEnvironment works with or without the
// network.
//
// Errors wrap the sentinel errors of package environment (test them with
// errors.Is) on both implementations; a call on a destroyed or unknown
// session is both environment.ErrNotActive and environment.ErrSessionNotFound,
// except GetSession, AttachSession and DestroySession, which report
// ErrSessionNotFound alone. Returned messages are shared: do not modify them.
type SandboxService interface {
	// CreateSession creates a session. If ctx ends before the call
	// returns, no session is left behind.
	CreateSession(ctx context.Context, req *turnboxv1.CreateSessionRequest) (*turnboxv1.CreateSessionResponse, error)
	// GetSession reports one session.
	GetSession(ctx context.Context, req *turnboxv1.GetSessionRequest) (*turnboxv1.GetSessionResponse, error)
	// ListSessions lists the host's sessions, sorted by id.
	ListSessions(ctx context.Context, req *turnboxv1.ListSessionsRequest) (*turnboxv1.ListSessionsResponse, error)
	// AttachSession checks that a session exists and reports it.
	AttachSession(ctx context.Context, req *turnboxv1.AttachSessionRequest) (*turnboxv1.AttachSessionResponse, error)
	// PauseSession freezes a session's sandbox.
	PauseSession(ctx context.Context, req *turnboxv1.PauseSessionRequest) (*turnboxv1.PauseSessionResponse, error)
	// ResumeSession thaws a paused session.
	ResumeSession(ctx context.Context, req *turnboxv1.ResumeSessionRequest) (*turnboxv1.ResumeSessionResponse, error)
	// DestroySession deletes a session and its data.
	DestroySession(ctx context.Context, req *turnboxv1.DestroySessionRequest) (*turnboxv1.DestroySessionResponse, error)
	// ExecuteTool runs one tool call, idempotently by (session, tool call
	// id): a call repeating the id of an earlier one that finished returns
	// the earlier response without running again, and one racing it waits
	// for it. Only finished calls count: a call that failed, or was
	// canceled or killed before its tool finished (client cancel, deadline,
	// shutdown, sandbox death), is not remembered, and its id runs again.
	ExecuteTool(ctx context.Context, req *turnboxv1.ExecuteToolRequest) (*turnboxv1.ExecuteToolResponse, error)
	// ExecuteToolStream is ExecuteTool with progress: onProgress (if not
	// nil) receives output while the tool runs, never concurrently with
	// itself and never after ExecuteToolStream returns.
	ExecuteToolStream(ctx context.Context, req *turnboxv1.ExecuteToolStreamRequest, onProgress func(*turnboxv1.ToolProgress)) (*turnboxv1.ToolResponse, error)
	// TurnComplete snapshots the workspace as the session's next turn.
	TurnComplete(ctx context.Context, req *turnboxv1.TurnCompleteRequest) (*turnboxv1.TurnCompleteResponse, error)
	// CreateSnapshot records the workspace as a new, named snapshot.
	CreateSnapshot(ctx context.Context, req *turnboxv1.CreateSnapshotRequest) (*turnboxv1.CreateSnapshotResponse, error)
	// ListSnapshots lists a session's snapshots, oldest first.
	ListSnapshots(ctx context.Context, req *turnboxv1.ListSnapshotsRequest) (*turnboxv1.ListSnapshotsResponse, error)
	// Rollback makes a session's workspace equal to one of its snapshots.
	Rollback(ctx context.Context, req *turnboxv1.RollbackRequest) (*turnboxv1.RollbackResponse, error)
	// Fork creates a new session from a snapshot of a session. If ctx
	// ends before the call returns, no session is left behind.
	Fork(ctx context.Context, req *turnboxv1.ForkRequest) (*turnboxv1.ForkResponse, error)
	// Health reports whether the host serves.
	Health(ctx context.Context, req *turnboxv1.HealthRequest) (*turnboxv1.HealthResponse, error)
	// Capabilities reports what the host's sessions can do.
	Capabilities(ctx context.Context, req *turnboxv1.CapabilitiesRequest) (*turnboxv1.CapabilitiesResponse, error)
}

// NewLocalService returns a SandboxService that calls host in process, with
// the same semantics as a server over host (idempotent tool calls included)
// and no serialization.
func NewLocalService(host *embedded.Host) SandboxService {
	return newLocalService(host, defaultCacheEntries, defaultCacheBytes)
}

// localService implements SandboxService over an embedded.Host. The server
// serves one, so local and remote callers see the same behaviour.
type localService struct {
	host    *embedded.Host
	calls   *callCache
	onDedup func() // called when a tool call is answered from the cache
}

var _ SandboxService = (*localService)(nil)

func newLocalService(host *embedded.Host, entries int, bytes int64) *localService {
	return &localService{host: host, calls: newCallCache(entries, bytes)}
}

// session returns an environment bound to session id. An unknown id gives
// an error matching ErrNotActive and ErrSessionNotFound, as a session
// destroyed under an embedded.Environment does.
func (l *localService) session(id string) (*embedded.Environment, error) {
	env := l.host.NewEnvironment()
	if err := env.AttachSession(id); err != nil {
		if errors.Is(err, environment.ErrSessionNotFound) {
			return nil, fmt.Errorf("%w: %w", environment.ErrNotActive, err)
		}
		return nil, err
	}
	return env, nil
}

// info reports a session the caller just created or changed.
func (l *localService) info(id string) (*turnboxv1.Session, error) {
	i, err := l.host.Session(id)
	if err != nil {
		return nil, err
	}
	return sessionToProto(i), nil
}

// abandon destroys a session created for a caller that went away before
// learning about it, and returns the caller's error.
func (l *localService) abandon(ctx context.Context, env environment.Environment) error {
	_ = env.Destroy(context.WithoutCancel(ctx))
	return fmt.Errorf("remote: caller went away; session discarded: %w", context.Cause(ctx))
}

func (l *localService) CreateSession(ctx context.Context, req *turnboxv1.CreateSessionRequest) (*turnboxv1.CreateSessionResponse, error) {
	caps := l.host.Capabilities()
	if b := req.GetRequiredStorageBackend(); b != "" && b != caps.Storage {
		return nil, fmt.Errorf("%w: the host stores sessions on %s, not %s", environment.ErrCapabilityNotSupported, caps.Storage, b)
	}
	if r := req.GetRequiredContainerRuntime(); r != "" && r != string(caps.Isolation) {
		return nil, fmt.Errorf("%w: the host runs sessions on %s, not %s", environment.ErrCapabilityNotSupported, caps.Isolation, r)
	}
	cfg, err := sessionConfigFromProto(req.GetConfig())
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	env, err := l.host.CreateSession(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, l.abandon(ctx, env)
	}
	l.calls.dropSession(env.SessionID())
	s, err := l.info(env.SessionID())
	if err != nil {
		return nil, err
	}
	return &turnboxv1.CreateSessionResponse{Session: s}, nil
}

func (l *localService) GetSession(_ context.Context, req *turnboxv1.GetSessionRequest) (*turnboxv1.GetSessionResponse, error) {
	s, err := l.info(req.GetSessionId())
	if err != nil {
		return nil, err
	}
	return &turnboxv1.GetSessionResponse{Session: s}, nil
}

func (l *localService) ListSessions(context.Context, *turnboxv1.ListSessionsRequest) (*turnboxv1.ListSessionsResponse, error) {
	infos := l.host.Sessions()
	out := &turnboxv1.ListSessionsResponse{Sessions: make([]*turnboxv1.Session, 0, len(infos))}
	for _, i := range infos {
		out.Sessions = append(out.Sessions, sessionToProto(i))
	}
	return out, nil
}

func (l *localService) AttachSession(_ context.Context, req *turnboxv1.AttachSessionRequest) (*turnboxv1.AttachSessionResponse, error) {
	s, err := l.info(req.GetSessionId())
	if err != nil {
		return nil, err
	}
	return &turnboxv1.AttachSessionResponse{Session: s}, nil
}

func (l *localService) PauseSession(ctx context.Context, req *turnboxv1.PauseSessionRequest) (*turnboxv1.PauseSessionResponse, error) {
	env, err := l.session(req.GetSessionId())
	if err != nil {
		return nil, err
	}
	if err := env.Pause(ctx); err != nil {
		return nil, err
	}
	return &turnboxv1.PauseSessionResponse{}, nil
}

func (l *localService) ResumeSession(ctx context.Context, req *turnboxv1.ResumeSessionRequest) (*turnboxv1.ResumeSessionResponse, error) {
	env, err := l.session(req.GetSessionId())
	if err != nil {
		return nil, err
	}
	if err := env.Resume(ctx); err != nil {
		return nil, err
	}
	return &turnboxv1.ResumeSessionResponse{}, nil
}

func (l *localService) DestroySession(ctx context.Context, req *turnboxv1.DestroySessionRequest) (*turnboxv1.DestroySessionResponse, error) {
	env := l.host.NewEnvironment()
	if err := env.AttachSession(req.GetSessionId()); err != nil {
		return nil, err
	}
	if err := env.Destroy(ctx); err != nil {
		return nil, err
	}
	l.calls.dropSession(req.GetSessionId())
	return &turnboxv1.DestroySessionResponse{}, nil
}

func (l *localService) ExecuteTool(ctx context.Context, req *turnboxv1.ExecuteToolRequest) (*turnboxv1.ExecuteToolResponse, error) {
	resp, err := l.execute(ctx, req.GetSessionId(), req.GetRequest(), nil)
	if err != nil {
		return nil, err
	}
	return &turnboxv1.ExecuteToolResponse{Response: resp}, nil
}

func (l *localService) ExecuteToolStream(ctx context.Context, req *turnboxv1.ExecuteToolStreamRequest, onProgress func(*turnboxv1.ToolProgress)) (*turnboxv1.ToolResponse, error) {
	return l.execute(ctx, req.GetSessionId(), req.GetRequest(), onProgress)
}

// execute runs one tool call through the idempotency cache. Only calls
// that finished are cached: an error, including a call canceled or killed
// before its tool finished, is returned to its caller and forgotten, so a
// retry with the same tool call id runs the tool again.
func (l *localService) execute(ctx context.Context, sessionID string, pr *turnboxv1.ToolRequest, onProgress func(*turnboxv1.ToolProgress)) (*turnboxv1.ToolResponse, error) {
	req, err := toolRequestFromProto(pr)
	if err != nil {
		return nil, err
	}
	env, err := l.session(sessionID)
	if err != nil {
		return nil, err
	}
	run := func() (*turnboxv1.ToolResponse, error) {
		var progress func(environment.ToolProgress)
		if onProgress != nil {
			progress = func(p environment.ToolProgress) { onProgress(toolProgressToProto(p)) }
		}
		resp, err := env.ExecuteTool(ctx, req, progress)
		if err != nil {
			return nil, err
		}
		if ctx.Err() != nil {
			// The caller went away while the tool ran: the host
			// cancels a command cut short, but a response that
			// raced the end of ctx is not trusted to be whole.
			return nil, fmt.Errorf("tool call canceled: %w", context.Cause(ctx))
		}
		return toolResponseToProto(resp), nil
	}
	if req.ToolCallID == "" {
		return run()
	}
	resp, dedup, err := l.calls.do(ctx, callKey{sessionID, req.ToolCallID}, fingerprint(pr), run)
	if dedup && l.onDedup != nil {
		l.onDedup()
	}
	return resp, err
}

// fingerprint identifies a tool call's content, to refuse a tool call id
// reused for a different call.
func fingerprint(r *turnboxv1.ToolRequest) [32]byte {
	h := sha256.New()
	h.Write([]byte(r.GetToolName()))
	h.Write([]byte{0})
	if r.GetSnapshot() {
		h.Write([]byte{1})
	} else {
		h.Write([]byte{0})
	}
	h.Write(r.GetInput())
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func (l *localService) TurnComplete(ctx context.Context, req *turnboxv1.TurnCompleteRequest) (*turnboxv1.TurnCompleteResponse, error) {
	env, err := l.session(req.GetSessionId())
	if err != nil {
		return nil, err
	}
	info, err := env.TurnComplete(ctx, req.GetLabel())
	if err != nil {
		return nil, err
	}
	return &turnboxv1.TurnCompleteResponse{Snapshot: snapshotToProto(info)}, nil
}

func (l *localService) CreateSnapshot(ctx context.Context, req *turnboxv1.CreateSnapshotRequest) (*turnboxv1.CreateSnapshotResponse, error) {
	env, err := l.session(req.GetSessionId())
	if err != nil {
		return nil, err
	}
	info, err := env.CreateSnapshot(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &turnboxv1.CreateSnapshotResponse{Snapshot: snapshotToProto(info)}, nil
}

func (l *localService) ListSnapshots(ctx context.Context, req *turnboxv1.ListSnapshotsRequest) (*turnboxv1.ListSnapshotsResponse, error) {
	env, err := l.session(req.GetSessionId())
	if err != nil {
		return nil, err
	}
	snaps, err := env.ListSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	out := &turnboxv1.ListSnapshotsResponse{Snapshots: make([]*turnboxv1.SnapshotInfo, 0, len(snaps))}
	for i := range snaps {
		out.Snapshots = append(out.Snapshots, snapshotToProto(&snaps[i]))
	}
	return out, nil
}

func (l *localService) Rollback(ctx context.Context, req *turnboxv1.RollbackRequest) (*turnboxv1.RollbackResponse, error) {
	env, err := l.session(req.GetSessionId())
	if err != nil {
		return nil, err
	}
	if err := env.Rollback(ctx, req.GetSnapshotId()); err != nil {
		return nil, err
	}
	return &turnboxv1.RollbackResponse{}, nil
}

func (l *localService) Fork(ctx context.Context, req *turnboxv1.ForkRequest) (*turnboxv1.ForkResponse, error) {
	env, err := l.session(req.GetSessionId())
	if err != nil {
		return nil, err
	}
	cfg, err := sessionConfigFromProto(req.GetConfig())
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
	if ctx.Err() != nil {
		return nil, l.abandon(ctx, child)
	}
	id := child.(environment.SessionIDer).SessionID()
	l.calls.dropSession(id)
	s, err := l.info(id)
	if err != nil {
		return nil, err
	}
	return &turnboxv1.ForkResponse{Session: s}, nil
}

func (l *localService) Health(context.Context, *turnboxv1.HealthRequest) (*turnboxv1.HealthResponse, error) {
	return &turnboxv1.HealthResponse{Status: "SERVING", Version: version()}, nil
}

func (l *localService) Capabilities(context.Context, *turnboxv1.CapabilitiesRequest) (*turnboxv1.CapabilitiesResponse, error) {
	return &turnboxv1.CapabilitiesResponse{Capabilities: capabilitiesToProto(l.host.Capabilities())}, nil
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
