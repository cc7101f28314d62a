package remote

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
	"github.com/turnbox/turnbox/remote/internal/wire"
)

// StorageBackend names the storage backend a server's host keeps sessions
// on, as the host reports it (environment.Capabilities.Storage).
type StorageBackend string

// ContainerRuntime names the container runtime a server's host runs
// sessions on, as the host reports it (environment.Capabilities.Isolation).
type ContainerRuntime string

// Storage backends and container runtimes a NativeSandboxConfig can ask
// for. The values are the names the host uses (package embedded's
// StorageBackend and ContainerRuntime constants).
const (
	StorageBackendZFS       StorageBackend   = "zfs"
	StorageBackendLocalDisk StorageBackend   = "localdisk"
	StorageBackendBtrfs     StorageBackend   = "btrfs"
	ContainerRuntimeGVisor  ContainerRuntime = "gvisor"
	ContainerRuntimeNone    ContainerRuntime = "none"
	ContainerRuntimeRunc    ContainerRuntime = "runc"
)

// NativeSandboxConfig says which storage backend and container runtime the
// sessions of a NativeSandboxEnvironment must run on. The server's host
// decides both; Create fails with environment.ErrCapabilityNotSupported
// when the host runs something else. An empty field accepts whatever the
// host runs.
type NativeSandboxConfig struct {
	StorageBackend   StorageBackend
	ContainerRuntime ContainerRuntime
}

// DefaultConfig returns a config that accepts whatever storage backend and
// container runtime the server's host runs (both fields empty). Set the
// fields, e.g. to StorageBackendZFS and ContainerRuntimeGVisor, to make
// Create refuse a host that does not match.
func DefaultConfig() NativeSandboxConfig { return NativeSandboxConfig{} }

// callTimeout bounds the calls made by methods that take no context
// (AttachSession, State, Capabilities).
const callTimeout = 30 * time.Second

// NativeSandboxEnvironment is the environment.Environment of one session
// on a turnbox server, driven through the generated ConnectRPC client of
// turnbox.v1.SandboxService (turnboxv1connect.SandboxServiceClient, as
// NewClient returns it). It translates between the environment types and
// the wire messages, and turns the server's errors back into the
// environment sentinels. It also implements environment.Forker,
// TurnCompleter, SnapshotLister, SnapshotDeleter, SessionIDer and, with a
// client made by NewClient, environment.ProcessRunner (process.go) and
// FileSystem (files.go).
//
// Concurrency: the server holds the session's state, so every method may
// be called from any goroutine. The environment itself keeps only its
// session id (set once by Create or AttachSession, claimed with an atomic
// flag so that a second bind fails with environment.ErrAlreadyBound
// instead of racing), a destroyed flag set by Destroy (after which State
// reports environment.StateDestroyed without asking a server that no
// longer knows the session), and the server's capabilities, fetched once
// under capsOnce, its only lock.
type NativeSandboxEnvironment struct {
	service turnboxv1connect.SandboxServiceClient
	config  NativeSandboxConfig
	logger  *slog.Logger

	binding   atomic.Bool            // claimed by the first Create/AttachSession
	sessionID atomic.Pointer[string] // set once the bind succeeds
	destroyed atomic.Bool            // set once Destroy succeeds
	caps      atomic.Pointer[environment.Capabilities]
	capsOnce  sync.Mutex // serializes the first Capabilities fetch
}

var (
	_ environment.Environment     = (*NativeSandboxEnvironment)(nil)
	_ environment.Forker          = (*NativeSandboxEnvironment)(nil)
	_ environment.TurnCompleter   = (*NativeSandboxEnvironment)(nil)
	_ environment.SnapshotLister  = (*NativeSandboxEnvironment)(nil)
	_ environment.SessionIDer     = (*NativeSandboxEnvironment)(nil)
	_ environment.SnapshotDeleter = (*NativeSandboxEnvironment)(nil)
	_ environment.Hibernator      = (*NativeSandboxEnvironment)(nil)
)

// NewNativeSandboxEnvironment returns an environment, not yet bound to a
// session, whose calls go to service (usually NewClient's; any client made
// with turnboxv1connect.NewSandboxServiceClient works, without NewClient's
// retries). A nil logger means slog.Default().
func NewNativeSandboxEnvironment(service turnboxv1connect.SandboxServiceClient, config NativeSandboxConfig, logger *slog.Logger) *NativeSandboxEnvironment {
	if logger == nil {
		logger = slog.Default()
	}
	return &NativeSandboxEnvironment{service: service, config: config, logger: logger}
}

// SessionID implements environment.SessionIDer: the bound session's id, ""
// when unbound.
func (e *NativeSandboxEnvironment) SessionID() string {
	if p := e.sessionID.Load(); p != nil {
		return *p
	}
	return ""
}

// bind claims the environment for one Create or AttachSession; fn returns
// the session id. A failed fn leaves the environment unbound.
func (e *NativeSandboxEnvironment) bind(fn func() (string, error)) error {
	if !e.binding.CompareAndSwap(false, true) {
		return fmt.Errorf("%w: to session %q", environment.ErrAlreadyBound, e.SessionID())
	}
	id, err := fn()
	if err != nil {
		e.binding.Store(false)
		return err
	}
	e.sessionID.Store(&id)
	return nil
}

// bound returns the session id for a call on the session: ErrNotBound
// before a bind, ErrNotActive (and ErrSessionNotFound) after Destroy.
func (e *NativeSandboxEnvironment) bound() (string, error) {
	id := e.SessionID()
	if id == "" {
		return "", environment.ErrNotBound
	}
	if e.destroyed.Load() {
		return "", fmt.Errorf("%w: session %s was destroyed (%w)", environment.ErrNotActive, id, environment.ErrSessionNotFound)
	}
	return id, nil
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newSessionID makes a random session id (80 bits), so that a Create whose
// outcome is unknown (the connection broke) can be cleaned up by id.
func newSessionID() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	return "s-" + idEncoding.EncodeToString(b)
}

// Create creates a session on the server from config and binds the
// environment to it. If config.SessionID is empty the client chooses a
// random id; should the call then fail without an answer from the server
// (broken connection, canceled context), the client destroys that id so no
// half-created session is left behind.
func (e *NativeSandboxEnvironment) Create(ctx context.Context, config environment.SessionConfig) error {
	return e.bind(func() (string, error) {
		generated := config.SessionID == ""
		if generated {
			config.SessionID = newSessionID()
		}
		resp, err := call(ctx, "CreateSession", e.service.CreateSession, &turnboxv1.CreateSessionRequest{
			Config:                   wire.SessionConfigToProto(config),
			RequiredStorageBackend:   string(e.config.StorageBackend),
			RequiredContainerRuntime: string(e.config.ContainerRuntime),
		})
		if err != nil {
			if generated && outcomeUnknown(err) {
				e.discard(config.SessionID)
			}
			return "", err
		}
		e.logger.Debug("turnbox session created", "session", resp.GetSession().GetId())
		return resp.GetSession().GetId(), nil
	})
}

// outcomeUnknown reports whether a failed call may have taken effect on the
// server anyway: it failed without a service error.
func outcomeUnknown(err error) bool {
	for _, s := range wire.Sentinels {
		if errors.Is(err, s.Err) {
			return false
		}
	}
	return !errors.Is(err, ErrUnauthenticated)
}

// discard destroys a session whose creation this client gave up on.
func (e *NativeSandboxEnvironment) discard(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_, err := call(ctx, "DestroySession", e.service.DestroySession, &turnboxv1.DestroySessionRequest{SessionId: id})
	if err != nil && !errors.Is(err, environment.ErrSessionNotFound) {
		e.logger.Warn("turnbox: could not discard a session whose creation failed", "session", id, "err", err)
	}
}

// AttachSession binds this environment to an existing sandbox session. This
// is used when the orchestrator has already provisioned the sandbox and only
// tool execution needs to be wired into an agent session.
func (e *NativeSandboxEnvironment) AttachSession(sessionID string) error {
	return e.bind(func() (string, error) {
		if err := environment.ValidateID(sessionID); err != nil {
			return "", err
		}
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		if _, err := call(ctx, "AttachSession", e.service.AttachSession, &turnboxv1.AttachSessionRequest{SessionId: sessionID}); err != nil {
			return "", err
		}
		return sessionID, nil
	})
}

// Pause freezes the session's sandbox; tool calls fail with
// environment.ErrNotActive until Resume.
func (e *NativeSandboxEnvironment) Pause(ctx context.Context) error {
	id, err := e.bound()
	if err != nil {
		return err
	}
	_, err = call(ctx, "PauseSession", e.service.PauseSession, &turnboxv1.PauseSessionRequest{SessionId: id})
	return err
}

// Resume thaws a paused session.
func (e *NativeSandboxEnvironment) Resume(ctx context.Context) error {
	id, err := e.bound()
	if err != nil {
		return err
	}
	_, err = call(ctx, "ResumeSession", e.service.ResumeSession, &turnboxv1.ResumeSessionRequest{SessionId: id})
	return err
}

// Hibernate implements environment.Hibernator: the server pauses the
// session to disk (Capabilities.MemorySnapshots); Resume brings its
// processes back, also after the server restarted.
func (e *NativeSandboxEnvironment) Hibernate(ctx context.Context) error {
	id, err := e.bound()
	if err != nil {
		return err
	}
	_, err = call(ctx, "HibernateSession", e.service.HibernateSession, &turnboxv1.HibernateSessionRequest{SessionId: id})
	return err
}

// Destroy deletes the session and its data on the server. Destroying a
// destroyed session (through this or another environment) is a no-op.
// Afterwards State reports environment.StateDestroyed without a call.
func (e *NativeSandboxEnvironment) Destroy(ctx context.Context) error {
	id := e.SessionID()
	if id == "" {
		return environment.ErrNotBound
	}
	if e.destroyed.Load() {
		return nil
	}
	_, err := call(ctx, "DestroySession", e.service.DestroySession, &turnboxv1.DestroySessionRequest{SessionId: id})
	if err != nil && !errors.Is(err, environment.ErrSessionNotFound) {
		return err
	}
	e.destroyed.Store(true)
	return nil
}

// ExecuteTool runs one tool call on the server. With onProgress set it
// uses the streaming RPC and calls onProgress with output as it arrives
// (from the calling goroutine); without, the unary one. The call is
// idempotent by req.ToolCallID: the client retries it when the server is
// unreachable, and the server runs it at most once.
func (e *NativeSandboxEnvironment) ExecuteTool(ctx context.Context, req environment.ToolRequest, onProgress func(environment.ToolProgress)) (*environment.ToolResponse, error) {
	id, err := e.bound()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if onProgress == nil {
		resp, err := call(ctx, "ExecuteTool", e.service.ExecuteTool, &turnboxv1.ExecuteToolRequest{SessionId: id, Request: wire.ToolRequestToProto(req)})
		if err != nil {
			return nil, err
		}
		return wire.ToolResponseFromProto(resp.GetResponse()), nil
	}
	resp, err := e.stream(ctx, &turnboxv1.ExecuteToolStreamRequest{SessionId: id, Request: wire.ToolRequestToProto(req)}, onProgress)
	if err != nil {
		return nil, fromConnectError(ctx, "ExecuteToolStream", err)
	}
	return wire.ToolResponseFromProto(resp), nil
}

// errNoResponse: a stream that ended cleanly without its response event.
var errNoResponse = connect.NewError(connect.CodeUnavailable, errors.New("stream ended without a response"))

// stream reads an ExecuteToolStream's events: progress goes to onProgress,
// keepalives are dropped, the response ends the call.
func (e *NativeSandboxEnvironment) stream(ctx context.Context, req *turnboxv1.ExecuteToolStreamRequest, onProgress func(environment.ToolProgress)) (*turnboxv1.ToolResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := e.service.ExecuteToolStream(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	defer st.Close()
	var final *turnboxv1.ToolResponse
	for st.Receive() {
		switch ev := st.Msg().GetEvent().(type) {
		case *turnboxv1.ExecuteToolStreamResponse_Progress:
			if final == nil {
				onProgress(wire.ToolProgressFromProto(ev.Progress))
			}
		case *turnboxv1.ExecuteToolStreamResponse_Response:
			final = ev.Response
		}
	}
	if err := st.Err(); err != nil {
		return nil, err
	}
	if final == nil {
		return nil, errNoResponse
	}
	return final, nil
}

// call makes one unary call of procedure and turns its error into one
// matching the environment sentinels the server named.
func call[Req, Res any](ctx context.Context, procedure string, fn func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), req *Req) (*Res, error) {
	resp, err := fn(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, fromConnectError(ctx, procedure, err)
	}
	return resp.Msg, nil
}

// State queries the server for the current session state. After Destroy(),
// returns StateDestroyed without querying (the session is deleted
// server-side).
//
// Before a bind it is environment.StateUnbound; a session the server no
// longer knows is StateDestroyed; when the server cannot be asked, State
// logs the error and reports environment.StateFailed.
func (e *NativeSandboxEnvironment) State() environment.SessionState {
	id := e.SessionID()
	if id == "" {
		return environment.StateUnbound
	}
	if e.destroyed.Load() {
		return environment.StateDestroyed
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := call(ctx, "GetSession", e.service.GetSession, &turnboxv1.GetSessionRequest{SessionId: id})
	if errors.Is(err, environment.ErrSessionNotFound) {
		return environment.StateDestroyed
	}
	if err != nil {
		e.logger.Warn("turnbox: reading session state", "session", id, "err", err)
		return environment.StateFailed
	}
	return wire.StateFromProto(resp.GetSession().GetState())
}

// Capabilities reports what the server's sessions can do. It asks the
// server once and remembers the answer; if the server cannot be reached it
// reports no abilities beyond the configured storage (and asks again next
// time).
func (e *NativeSandboxEnvironment) Capabilities() environment.Capabilities {
	if c := e.caps.Load(); c != nil {
		return *c
	}
	e.capsOnce.Lock()
	defer e.capsOnce.Unlock()
	if c := e.caps.Load(); c != nil {
		return *c
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := call(ctx, "Capabilities", e.service.Capabilities, &turnboxv1.CapabilitiesRequest{})
	if err != nil {
		e.logger.Warn("turnbox: reading capabilities", "err", err)
		return environment.Capabilities{
			Isolation: environment.IsolationKind(e.config.ContainerRuntime),
			Storage:   string(e.config.StorageBackend),
		}
	}
	c := wire.CapabilitiesFromProto(resp.GetCapabilities())
	e.maskProcesses(&c)
	c.Files = c.Files && e.hasFiles()
	e.caps.Store(&c)
	return c
}

// CreateSnapshot records the workspace as a new snapshot labelled name
// (numbered as the session's next turn) and returns it.
func (e *NativeSandboxEnvironment) CreateSnapshot(ctx context.Context, name string) (*environment.SnapshotInfo, error) {
	id, err := e.bound()
	if err != nil {
		return nil, err
	}
	resp, err := call(ctx, "CreateSnapshot", e.service.CreateSnapshot, &turnboxv1.CreateSnapshotRequest{SessionId: id, Name: name})
	if err != nil {
		return nil, err
	}
	return wire.SnapshotFromProto(resp.GetSnapshot()), nil
}

// TurnComplete implements environment.TurnCompleter.
func (e *NativeSandboxEnvironment) TurnComplete(ctx context.Context, label string) (*environment.SnapshotInfo, error) {
	id, err := e.bound()
	if err != nil {
		return nil, err
	}
	resp, err := call(ctx, "TurnComplete", e.service.TurnComplete, &turnboxv1.TurnCompleteRequest{SessionId: id, Label: label})
	if err != nil {
		return nil, err
	}
	return wire.SnapshotFromProto(resp.GetSnapshot()), nil
}

// ListSnapshots implements environment.SnapshotLister.
func (e *NativeSandboxEnvironment) ListSnapshots(ctx context.Context) ([]environment.SnapshotInfo, error) {
	id, err := e.bound()
	if err != nil {
		return nil, err
	}
	resp, err := call(ctx, "ListSnapshots", e.service.ListSnapshots, &turnboxv1.ListSnapshotsRequest{SessionId: id})
	if err != nil {
		return nil, err
	}
	out := make([]environment.SnapshotInfo, 0, len(resp.GetSnapshots()))
	for _, s := range resp.GetSnapshots() {
		out = append(out, *wire.SnapshotFromProto(s))
	}
	return out, nil
}

// Rollback makes the workspace equal to snapshot snapshotID of this
// session and resets the sandbox's processes. Newer snapshots survive.
func (e *NativeSandboxEnvironment) Rollback(ctx context.Context, snapshotID string) error {
	id, err := e.bound()
	if err != nil {
		return err
	}
	_, err = call(ctx, "Rollback", e.service.Rollback, &turnboxv1.RollbackRequest{SessionId: id, SnapshotId: snapshotID})
	return err
}

// DeleteSnapshot implements environment.SnapshotDeleter: it deletes
// snapshot snapshotID of this session on the server. It fails with
// environment.ErrSnapshotNotFound for an id that is not one of the
// session's snapshots and environment.ErrInvalidArgument for a malformed
// one. It is not retried: a retry of a delete that took effect would
// report the snapshot as not found.
func (e *NativeSandboxEnvironment) DeleteSnapshot(ctx context.Context, snapshotID string) error {
	id, err := e.bound()
	if err != nil {
		return err
	}
	_, err = call(ctx, "DeleteSnapshot", e.service.DeleteSnapshot, &turnboxv1.DeleteSnapshotRequest{SessionId: id, SnapshotId: snapshotID})
	return err
}

// Fork implements environment.Forker: a new session on the same server
// whose workspace starts as snapshotID (a snapshot of this session), and a
// NativeSandboxEnvironment bound to it. An empty config.SessionID is
// chosen by the client, as in Create.
func (e *NativeSandboxEnvironment) Fork(ctx context.Context, snapshotID string, config environment.SessionConfig) (environment.Environment, error) {
	id, err := e.bound()
	if err != nil {
		return nil, err
	}
	generated := config.SessionID == ""
	if generated {
		config.SessionID = newSessionID()
	}
	resp, err := call(ctx, "Fork", e.service.Fork, &turnboxv1.ForkRequest{SessionId: id, SnapshotId: snapshotID, Config: wire.SessionConfigToProto(config)})
	if err != nil {
		if generated && outcomeUnknown(err) {
			e.discard(config.SessionID)
		}
		return nil, err
	}
	child := NewNativeSandboxEnvironment(e.service, e.config, e.logger)
	childID := resp.GetSession().GetId()
	child.binding.Store(true)
	child.sessionID.Store(&childID)
	if c := e.caps.Load(); c != nil {
		child.caps.Store(c)
	}
	return child, nil
}
