package embedded

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/embedded/ledger"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/snapshot"
)

// Host owns the sessions of one machine: their workspaces on one storage
// backend, their sandboxes on one container runtime, and the ledger that
// lets a restarted host recover them. Safe for concurrent use.
type Host struct {
	cfg     Config
	log     *slog.Logger
	storage snapshot.Backend
	runtime container.Runtime
	ledger  *ledger.Ledger
	caps    environment.Capabilities
	metrics *metrics
	pool    *pool // nil unless Config.PoolSize > 0
	calls   *toolCalls
	deps    *sessionDeps // what sessions get of the host
	net     *hostNetwork // nil: sessions get loopback only

	mu          sync.Mutex
	sessions    map[string]*session // live (not destroyed) sessions
	closed      bool
	ownsData    bool // storage opened by NewHost: closed by Close
	ownsRuntime bool // runtime made by NewHost: closed by Close
}

// NewHost opens (or recovers) a host on cfg.StateDir. Sessions recorded in
// the ledger come back with their workspaces and snapshots; sandboxes left
// by a crashed host are reaped, and each session's sandbox is started again
// on first use. Volumes and snapshots the ledger does not know (a crash
// between creating an artifact and recording it) are deleted.
func NewHost(ctx context.Context, cfg Config) (*Host, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	h := &Host{cfg: cfg, log: cfg.Logger, sessions: map[string]*session{}}
	h.metrics = newMetrics(h)
	h.calls = newToolCalls(cfg.ToolCallCacheEntries, cfg.ToolCallCacheBytes, h.metrics.reg)
	lg, err := ledger.Open(filepath.Join(cfg.StateDir, "ledger.db"))
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	h.ledger = lg
	if h.storage = cfg.Storage; h.storage == nil {
		if h.storage, err = openStorage(ctx, &h.cfg, lg); err != nil {
			lg.Close()
			return nil, err
		}
		h.ownsData = true
	}
	if h.runtime = cfg.Runtime; h.runtime == nil {
		h.ownsRuntime = true
		if h.runtime, err = openRuntime(&h.cfg); err != nil {
			lg.Close()
			if h.ownsData {
				h.storage.Close()
			}
			return nil, err
		}
	}
	h.caps = environment.Capabilities{
		Snapshots:         true,
		Rollback:          true,
		Fork:              true,
		Pause:             runtimeCanPause(h.runtime),
		StreamingProgress: true,
		Files:             true,
		Isolation:         environment.IsolationKind(h.runtime.Kind()),
		Storage:           h.storage.Kind(),
		WritableRoot:      h.runtime.Kind() != string(ContainerRuntimeNone),
		// Every runtime's sandboxes are container.ProcessStarters; one
		// that is not makes process calls fail with
		// ErrCapabilityNotSupported.
		Processes: true,
		PTY:       true,
		// Likewise container.PortDialers (ports.go).
		Ports: true,
	}
	h.caps.MemorySnapshots = runtimeHasMemory(h.runtime)
	if h.net, err = openHostNetwork(ctx, &h.cfg, h.runtime.Kind()); err != nil {
		h.log.Warn("sessions get loopback only", "err", err)
	}
	if h.cfg.Network.Mode.Rank() > 0 && h.net == nil {
		h.Close(ctx)
		return nil, fmt.Errorf("embedded: Config.Network mode %q: the %s runtime gives sessions loopback only (%w)", h.cfg.Network.Mode, h.runtime.Kind(), environment.ErrCapabilityNotSupported)
	}
	h.caps.NetworkCeiling = h.net.ceiling(h.cfg.NetworkCeiling)
	h.setDefaultLimits()
	if h.cfg.DiskQuotaBytes > 0 && quotaer(h.storage) == nil {
		h.Close(ctx)
		return nil, fmt.Errorf("embedded: Config.DiskQuotaBytes is set but the %s storage backend cannot keep a quota (%w)", h.storage.Kind(), environment.ErrCapabilityNotSupported)
	}
	h.deps = h.newSessionDeps()
	if err := h.recover(ctx); err != nil {
		h.Close(ctx)
		return nil, err
	}
	if err := h.ensureDefaultImageVolume(ctx); err != nil {
		h.Close(ctx)
		return nil, err
	}
	if cfg.PoolSize > 0 {
		if _, err := h.imagePath(""); err != nil {
			h.Close(ctx)
			return nil, fmt.Errorf("embedded: Config.PoolSize needs the default image: %w", err)
		}
		// Pooled sandboxes' network class follows the default policy.
		h.pool = newPool(h.deps, cfg.PoolSize, h.cfg.Network.Mode.Rank() > 0 && h.net != nil)
	}
	return h, nil
}

// newSessionDeps builds what the host's sessions use of it. Called once
// the storage, runtime and limits are settled.
func (h *Host) newSessionDeps() *sessionDeps {
	var idlePause time.Duration
	if h.caps.Pause {
		idlePause = h.cfg.IdlePause
	}
	return &sessionDeps{
		storage: h.storage, runtime: h.runtime, ledger: h.ledger, metrics: h.metrics, log: h.log,
		images:    images{dir: h.cfg.ImagesDir, def: h.cfg.DefaultImage, none: h.runtime.Kind() == string(ContainerRuntimeNone)},
		imageVols: &imageVolumes{storage: h.storage, log: h.log},
		net:       h.net,
		mem:       memStore{root: filepath.Join(h.cfg.StateDir, "memory"), log: h.log},
		sessionSettings: sessionSettings{
			canPause: h.caps.Pause, memory: h.caps.MemorySnapshots, remountRestarts: h.rollbackRestartsSandbox(), idlePause: idlePause,
			toolTimeout: h.cfg.ToolTimeout, maxToolTimeout: h.cfg.MaxToolTimeout, maxOutputBytes: h.cfg.MaxOutputBytes,
			limits: h.cfg.Limits, diskQuota: h.cfg.DiskQuotaBytes, retention: h.cfg.Retention,
			maxProcs: h.cfg.MaxProcesses, maxEndedProcs: h.cfg.MaxEndedProcesses, procOutputBytes: h.cfg.ProcessOutputBytes,
		},
		stopForks: h.stopForkSandboxes,
		forget:    h.forget,
	}
}

// pauseProber is implemented by runtimes that know up front whether their
// sandboxes can be frozen.
type pauseProber interface{ CgroupsEnabled() bool }

func runtimeCanPause(rt container.Runtime) bool {
	if p, ok := rt.(pauseProber); ok {
		return p.CgroupsEnabled()
	}
	return rt.Kind() != string(ContainerRuntimeNone)
}

// recover rebuilds the in-memory sessions from the ledger and reconciles
// the ledger, the backend and the runtime.
func (h *Host) recover(ctx context.Context) error {
	recs, err := h.ledger.Sessions()
	if err != nil {
		return fmt.Errorf("embedded: reading ledger: %w", err)
	}
	vols, err := h.storage.Volumes(ctx)
	if err != nil {
		return fmt.Errorf("embedded: listing volumes: %w", err)
	}
	haveVol := map[string]snapshot.Volume{}
	for _, v := range vols {
		haveVol[v.Name] = v
	}
	known := map[string]bool{}
	for _, rec := range recs {
		known[rec.Volume] = true
		mismatch := h.mismatch(rec)
		vol, ok := haveVol[rec.Volume]
		if !ok {
			if mismatch == "" && rec.State == string(environment.StateCreating) {
				// Crashed before the volume existed: nothing to recover.
				_ = h.ledger.DeleteSession(rec.ID)
				continue
			}
			if mismatch == "" {
				h.log.Error("session's volume is missing; marking it failed", "session", rec.ID, "volume", rec.Volume)
			}
			rec.State = string(environment.StateFailed)
		}
		s := newSession(h.deps, rec, vol)
		if mismatch != "" {
			s.mismatch = mismatch
			h.log.Warn("session belongs to another runtime or storage backend; its calls are refused", "session", rec.ID, "why", mismatch)
		}
		if s.state == environment.StateCreating || s.state == environment.StateDestroying {
			// Crashed mid-create (the volume exists: finish) or mid-destroy
			// (finish destroying).
			if s.state == environment.StateDestroying {
				_ = s.finishDestroy(ctx)
				continue
			}
			s.state = environment.StateActive
			_ = h.ledger.UpdateSession(rec.ID, func(r *ledger.SessionRecord) error { r.State = string(s.state); return nil })
		}
		if err := s.reconcileSnapshots(ctx); err != nil {
			h.log.Error("reconciling snapshots", "session", rec.ID, "err", err)
		}
		if s.state != environment.StateFailed {
			// Re-applied only if the configuration changed it.
			if err := s.applyQuota(ctx, false); err != nil {
				h.log.Error("applying the disk quota", "session", rec.ID, "err", err)
			}
		}
		h.sessions[rec.ID] = s
		s.touch()
	}
	for _, v := range vols {
		if !known[v.Name] && !isImageVolume(v.Name) {
			h.log.Warn("deleting volume with no session in the ledger (left by a crash during create)", "volume", v.Name)
			if err := h.storage.DestroyVolume(ctx, v.Name); err != nil {
				h.log.Error("deleting orphaned volume", "volume", v.Name, "err", err)
			}
		}
	}
	// Every sandbox of an earlier process is an orphan: its agent's pipes
	// died with that process. Sessions start a fresh one on first use.
	if err := h.runtime.Reap(ctx); err != nil {
		h.log.Error("reaping orphaned sandboxes", "err", err)
	}
	// After the reap: a checkpoint the dead process started writes its
	// image until its sandbox is gone.
	h.gcMemory()
	if len(recs) > 0 {
		h.log.Info("recovered sessions", "count", len(h.sessions))
	}
	return nil
}

// Capabilities reports what sessions on this host can do.
func (h *Host) Capabilities() environment.Capabilities { return h.caps }

// Storage returns the host's storage backend.
func (h *Host) Storage() snapshot.Backend { return h.storage }

// Runtime returns the host's container runtime.
func (h *Host) Runtime() container.Runtime { return h.runtime }

// NewEnvironment returns an Environment not yet bound to a session; bind it
// with Create or AttachSession.
func (h *Host) NewEnvironment() *Environment { return &Environment{host: h} }

// SessionInfo summarizes a session.
type SessionInfo struct {
	ID             string                   `json:"id"`
	State          environment.SessionState `json:"state"`
	CreatedAt      time.Time                `json:"created_at"`
	ParentSession  string                   `json:"parent_session,omitempty"`
	ParentSnapshot string                   `json:"parent_snapshot,omitempty"`
	LastTurn       int                      `json:"last_turn"`
	Path           string                   `json:"path"`
	// Root is the host path of the session's root tree, which holds the
	// workspace (Path) as its directory "workspace"; "" for sessions of
	// older hosts, whose volume is the workspace.
	Root string `json:"root,omitempty"`
	// IdlePaused: the session is active but its sandbox is frozen by
	// Config.IdlePause; the next call thaws it.
	IdlePaused bool `json:"idle_paused,omitempty"`
	// Hibernated: the session (paused) was saved to disk by Hibernate,
	// its sandbox stopped; Resume restores it.
	Hibernated bool `json:"hibernated,omitempty"`
	// SnapshotMemory: the session's snapshots hold its processes
	// (SessionConfig.SnapshotMemory, as settled at create).
	SnapshotMemory bool `json:"snapshot_memory,omitempty"`
	// DiskQuotaBytes is the session's disk quota (0: none).
	DiskQuotaBytes int64 `json:"disk_quota_bytes,omitempty"`
	// DiskUsedBytes is the workspace's usage at the host's last measure
	// (localdisk quotas only; 0 when not measured).
	DiskUsedBytes int64 `json:"disk_used_bytes,omitempty"`
	// Limits are the session's effective limits (zero fields: unlimited;
	// DiskBytes is DiskQuotaBytes). The none runtime does not enforce
	// memory, CPU and pids (Capabilities.LimitsEnforced).
	Limits environment.Limits `json:"limits"`
	// Image is the image the session was made from as its config named
	// it ("" for the host's default image).
	Image string `json:"image,omitempty"`
	// Labels are the session's labels (SessionConfig.Labels; a copy).
	Labels map[string]string `json:"labels,omitempty"`
	// Network is the session's effective network policy (its config's,
	// its parent's or the host's default, as recorded at create).
	Network environment.NetworkPolicy `json:"network"`
	// Ports are the ports the session publishes, by port.
	Ports []environment.PublishedPort `json:"ports,omitempty"`
	// WorkDir is the directory, absolute in the sandbox, where commands
	// that name none start, from the image's WORKDIR; "" for the
	// workspace (/workspace).
	WorkDir string `json:"work_dir,omitempty"`
	// User is the user commands that name none run as, from the image's
	// USER (a name, uid or uid:gid); "" for root.
	User string `json:"user,omitempty"`
}

// Sessions lists the host's sessions, sorted by id.
func (h *Host) Sessions() []SessionInfo {
	h.mu.Lock()
	ss := make([]*session, 0, len(h.sessions))
	for _, s := range h.sessions {
		ss = append(ss, s)
	}
	h.mu.Unlock()
	out := make([]SessionInfo, 0, len(ss))
	for _, s := range ss {
		out = append(out, s.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Session returns one session's summary.
func (h *Host) Session(id string) (SessionInfo, error) {
	s, err := h.lookup(id)
	if err != nil {
		return SessionInfo{}, err
	}
	return s.info(), nil
}

// SessionConfig returns the configuration session id was created with (a
// copy; SessionID is the session's id). A fork made to continue the
// session elsewhere starts from it: its Env is not in SessionInfo, which
// lists and logs carry.
func (h *Host) SessionConfig(id string) (environment.SessionConfig, error) {
	s, err := h.lookup(id)
	if err != nil {
		return environment.SessionConfig{}, err
	}
	cfg := s.cfg
	cfg.SessionID = s.id
	cfg.Env = maps.Clone(cfg.Env)
	cfg.Labels = maps.Clone(cfg.Labels)
	return cfg, nil
}

func (h *Host) lookup(id string) (*session, error) {
	if err := environment.ValidateID(id); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.sessions[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", environment.ErrSessionNotFound, id)
	}
	return s, nil
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID makes a random session id: 80 bits, so ids do not collide across
// restarts or hosts.
func newID() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	return "s-" + idEncoding.EncodeToString(b)
}

func randUint32() uint32 { return mrand.Uint32() }

// CreateSession creates a session from cfg and returns an Environment
// bound to it.
func (h *Host) CreateSession(ctx context.Context, cfg environment.SessionConfig) (*Environment, error) {
	s, err := h.createSession(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &Environment{host: h, id: s.id}, nil
}

// Fork creates a new session whose workspace starts as snapshotID (of any
// session), sharing storage copy-on-write where the backend can.
func (h *Host) Fork(ctx context.Context, snapshotID string, cfg environment.SessionConfig) (*Environment, error) {
	cfg.FromSnapshot = snapshotID
	s, err := h.createSession(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &Environment{host: h, id: s.id}, nil
}

// forget removes the destroyed session s from the host.
func (h *Host) forget(s *session) {
	h.mu.Lock()
	if h.sessions[s.id] == s {
		delete(h.sessions, s.id)
	}
	h.mu.Unlock()
}

// Close stops intake, waits for running tool calls (until ctx is done, then
// cancels them), stops every sandbox and closes the ledger. Every session's
// data stays on disk: a host opened again on the same StateDir recovers
// them. Close never destroys a session.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	ss := make([]*session, 0, len(h.sessions))
	for _, s := range h.sessions {
		ss = append(ss, s)
	}
	h.mu.Unlock()
	var errs []error
	for _, s := range ss {
		if err := s.shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if h.pool != nil {
		h.pool.close()
	}
	errs = append(errs, h.net.close(context.WithoutCancel(ctx)))
	if h.ownsData {
		errs = append(errs, h.storage.Close())
	}
	if c, ok := h.runtime.(interface{ Close() error }); ok && h.ownsRuntime {
		errs = append(errs, c.Close())
	}
	errs = append(errs, h.ledger.Close())
	return errors.Join(errs...)
}

// RestartSession stops a session's sandbox, if it has one, and starts a
// new one on the same workspace. It is for a session that failed (its
// sandbox died: State is failed and tool calls fail with ErrNotActive)
// and works on an active one too (every process in the sandbox is
// killed). The workspace and snapshots are untouched; background
// processes are not restarted. It fails with ErrBusy while a tool call
// runs and with ErrNotActive on a paused or destroyed session. The
// session is active when it returns nil.
func (h *Host) RestartSession(ctx context.Context, sessionID string) error {
	s, err := h.lookup(sessionID)
	if err != nil {
		return err
	}
	return timed(s, "restart", func() error { return s.restart(ctx) })
}
