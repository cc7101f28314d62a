package embedded

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container"
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
	ledger  *snapshot.Ledger
	caps    environment.Capabilities
	metrics *metrics
	pool    *pool // nil unless Config.PoolSize > 0
	calls   *toolCalls

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
	ledger, err := snapshot.OpenLedger(filepath.Join(cfg.StateDir, "ledger.db"))
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	h.ledger = ledger
	if h.storage = cfg.Storage; h.storage == nil {
		if h.storage, err = openStorage(ctx, &h.cfg); err != nil {
			ledger.Close()
			return nil, err
		}
		h.ownsData = true
	}
	if h.runtime = cfg.Runtime; h.runtime == nil {
		h.ownsRuntime = true
		if h.runtime, err = openRuntime(ctx, &h.cfg); err != nil {
			ledger.Close()
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
		Isolation:         environment.IsolationKind(h.runtime.Kind()),
		Storage:           h.storage.Kind(),
	}
	h.setDefaultLimits()
	if h.cfg.DiskQuotaBytes > 0 && h.quotaer() == nil {
		h.Close(ctx)
		return nil, fmt.Errorf("embedded: Config.DiskQuotaBytes is set but the %s storage backend cannot keep a quota (%w)", h.storage.Kind(), environment.ErrCapabilityNotSupported)
	}
	if err := h.recover(ctx); err != nil {
		h.Close(ctx)
		return nil, err
	}
	if cfg.PoolSize > 0 {
		if _, err := h.imagePath(""); err != nil {
			h.Close(ctx)
			return nil, fmt.Errorf("embedded: Config.PoolSize needs the default image: %w", err)
		}
		h.pool = newPool(h, cfg.PoolSize)
	}
	return h, nil
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
		vol, ok := haveVol[rec.Volume]
		if !ok {
			if rec.State == string(environment.StateCreating) {
				// Crashed before the volume existed: nothing to recover.
				_ = h.ledger.DeleteSession(rec.ID)
				continue
			}
			h.log.Error("session's volume is missing; marking it failed", "session", rec.ID, "volume", rec.Volume)
			rec.State = string(environment.StateFailed)
		}
		s := h.newSession(rec, vol)
		if rec.Runtime != "" && rec.Runtime != h.runtime.Kind() {
			// Never run a session created under isolation on a weaker
			// runtime (or any other one) without the operator choosing it.
			s.mismatch = fmt.Sprintf("created on the %s runtime but this host runs %s; open the host with runtime %s to use it (its data is intact)",
				rec.Runtime, h.runtime.Kind(), rec.Runtime)
			h.log.Error("session belongs to another runtime; its tool calls are refused", "session", rec.ID, "session_runtime", rec.Runtime, "host_runtime", h.runtime.Kind())
		}
		if s.state == environment.StateCreating || s.state == environment.StateDestroying {
			// Crashed mid-create (the volume exists: finish) or mid-destroy
			// (finish destroying).
			if s.state == environment.StateDestroying {
				h.finishDestroy(ctx, s)
				continue
			}
			s.state = environment.StateActive
			_ = h.ledger.UpdateSession(rec.ID, func(r *snapshot.SessionRecord) error { r.State = string(s.state); return nil })
		}
		if err := h.reconcileSnapshots(ctx, s); err != nil {
			h.log.Error("reconciling snapshots", "session", rec.ID, "err", err)
		}
		if s.state != environment.StateFailed {
			// Re-applied only if the configuration changed it.
			if err := h.applyQuota(ctx, s, false); err != nil {
				h.log.Error("applying the disk quota", "session", rec.ID, "err", err)
			}
		}
		h.sessions[rec.ID] = s
		s.touch()
	}
	for _, v := range vols {
		if !known[v.Name] {
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
	if len(recs) > 0 {
		h.log.Info("recovered sessions", "count", len(h.sessions))
	}
	return nil
}

// reconcileSnapshots deletes backend snapshots that have no ledger record
// (a crash after the backend made them, before the ledger recorded them)
// and drops records whose snapshot is gone.
func (h *Host) reconcileSnapshots(ctx context.Context, s *session) error {
	recs, err := h.ledger.Snapshots(s.id)
	if err != nil {
		return err
	}
	if s.state == environment.StateFailed {
		return nil
	}
	snaps, err := h.storage.Snapshots(ctx, s.volume)
	if err != nil {
		return err
	}
	inBackend := map[string]bool{}
	for _, sn := range snaps {
		inBackend[sn.Name] = true
	}
	inLedger := map[string]bool{}
	for _, r := range recs {
		inLedger[r.BackendName] = true
		if !inBackend[r.BackendName] {
			h.log.Error("snapshot recorded in the ledger is missing from storage", "session", s.id, "snapshot", r.ID)
			_ = h.ledger.DeleteSnapshot(r.ID)
		}
	}
	for _, sn := range snaps {
		if !inLedger[sn.Name] && strings.HasPrefix(sn.Name, "turn-") {
			h.log.Warn("deleting unrecorded snapshot (left by a crash)", "session", s.id, "snapshot", sn.Name)
			_ = h.storage.DestroySnapshot(ctx, s.volume, sn.Name)
		}
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
	// IdlePaused: the session is active but its sandbox is frozen by
	// Config.IdlePause; the next call thaws it.
	IdlePaused bool `json:"idle_paused,omitempty"`
	// DiskQuotaBytes is the session's disk quota (0: none).
	DiskQuotaBytes int64 `json:"disk_quota_bytes,omitempty"`
	// DiskUsedBytes is the workspace's usage at the host's last measure
	// (localdisk quotas only; 0 when not measured).
	DiskUsedBytes int64 `json:"disk_used_bytes,omitempty"`
	// Limits are the session's effective limits (zero fields: unlimited;
	// DiskBytes is DiskQuotaBytes). The none runtime does not enforce
	// memory, CPU and pids (Capabilities.LimitsEnforced).
	Limits environment.Limits `json:"limits"`
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
	s, err := h.createSession(ctx, cfg, "")
	if err != nil {
		return nil, err
	}
	return &Environment{host: h, id: s.id}, nil
}

// Fork creates a new session whose workspace starts as snapshotID (of any
// session), sharing storage copy-on-write where the backend can.
func (h *Host) Fork(ctx context.Context, snapshotID string, cfg environment.SessionConfig) (*Environment, error) {
	cfg.FromSnapshot = snapshotID
	s, err := h.createSession(ctx, cfg, snapshotID)
	if err != nil {
		return nil, err
	}
	return &Environment{host: h, id: s.id}, nil
}

func (h *Host) createSession(ctx context.Context, cfg environment.SessionConfig, _ string) (s *session, err error) {
	start := time.Now()
	defer func() {
		if err == nil {
			op := "create"
			if cfg.FromSnapshot != "" {
				op = "fork"
			}
			h.metrics.observe(op, start)
		}
	}()
	// Every input is checked, and the image found in the image store,
	// before anything is recorded or written.
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, err := h.imagePath(cfg.Image); err != nil {
		return nil, err
	}
	if cfg.SessionID == "" {
		cfg.SessionID = newID()
	}
	if err := h.checkLimits(cfg.Limits); err != nil {
		return nil, err
	}
	var parent snapshot.SnapshotRecord
	if cfg.FromSnapshot != "" {
		var err error
		if parent, err = h.ledger.Snapshot(cfg.FromSnapshot); err != nil {
			return nil, fmt.Errorf("%w: %q: %v", environment.ErrSnapshotNotFound, cfg.FromSnapshot, err)
		}
	}
	id := cfg.SessionID
	// A fork keeps its parent's own disk quota, if it has one.
	var parentQuota *int64
	if parent.Session != "" {
		if prec, err := h.ledger.Session(parent.Session); err == nil && prec.DiskQuotaBytes != nil {
			q := *prec.DiskQuotaBytes
			parentQuota = &q
		}
	}

	// A pooled sandbox brings its own volume, which the session keeps.
	// (Claimed before h.mu: a claim may discard a dead sandbox, slowly.)
	var pooled *pooled
	volume := id
	if h.poolable(cfg) {
		if pooled = h.pool.claim(); pooled != nil {
			volume = pooled.vol.Name
		}
	}
	// Reserve the id so concurrent creates of the same id cannot race.
	h.mu.Lock()
	var refused error
	switch {
	case h.closed:
		refused = environment.ErrClosed
	case h.sessions[id] != nil:
		refused = fmt.Errorf("%w: session %q", environment.ErrAlreadyExists, id)
	case h.cfg.MaxSessions > 0 && len(h.sessions) >= h.cfg.MaxSessions:
		refused = fmt.Errorf("%w: the host already has its maximum of %d sessions", environment.ErrLimitExceeded, h.cfg.MaxSessions)
	}
	if refused != nil {
		h.mu.Unlock()
		if pooled != nil {
			h.pool.giveBack(pooled)
		}
		return nil, refused
	}
	if cfg.Limits.DiskBytes > 0 {
		d := cfg.Limits.DiskBytes
		parentQuota = &d
	}
	cfgJSON, _ := json.Marshal(cfg)
	rec := snapshot.SessionRecord{
		ID: id, Volume: volume, Backend: h.storage.Kind(), Runtime: h.runtime.Kind(),
		State: string(environment.StateCreating), Config: cfgJSON,
		ParentSession: parent.Session, ParentSnapshot: cfg.FromSnapshot, CreatedAt: time.Now().UTC(),
		DiskQuotaBytes: parentQuota,
	}
	s = h.newSession(rec, snapshot.Volume{})
	h.sessions[id] = s
	h.mu.Unlock()

	fail := func(err error) (*session, error) {
		h.mu.Lock()
		delete(h.sessions, id)
		h.mu.Unlock()
		return nil, err
	}
	// Record first (state creating), then make the volume: a crash in
	// between leaves a record without a volume, which recovery drops.
	if err := h.ledger.PutSession(rec); err != nil {
		if pooled != nil {
			h.pool.giveBack(pooled)
		}
		if errors.Is(err, snapshot.ErrExists) {
			return fail(fmt.Errorf("%w: session %q", environment.ErrAlreadyExists, id))
		}
		return fail(fmt.Errorf("embedded: recording session: %w", err))
	}
	var vol snapshot.Volume
	switch {
	case pooled != nil && cfg.FromSnapshot != "":
		// A fork: the pooled volume takes the snapshot in place, where
		// the pooled sandbox sees it.
		vol = pooled.vol
		if err = h.storage.(snapshot.Replacer).ReplaceVolume(ctx, volume, parent.Volume, parent.BackendName); err != nil {
			_ = h.ledger.DeleteSession(id)
			h.pool.discard(pooled)
			if errors.Is(err, snapshot.ErrNoSpace) {
				return fail(fmt.Errorf("%w: creating the workspace: %v", environment.ErrLimitExceeded, err))
			}
			return fail(fmt.Errorf("embedded: filling the fork's workspace: %w", err))
		}
	case pooled != nil:
		vol = pooled.vol
	case cfg.FromSnapshot != "":
		vol, err = h.storage.CloneVolume(ctx, volume, parent.Volume, parent.BackendName)
	default:
		vol, err = h.storage.CreateVolume(ctx, volume)
	}
	if err != nil {
		_ = h.ledger.DeleteSession(id)
		if errors.Is(err, snapshot.ErrExists) {
			return fail(fmt.Errorf("%w: a volume named %q exists", environment.ErrAlreadyExists, volume))
		}
		if errors.Is(err, snapshot.ErrNoSpace) {
			return fail(fmt.Errorf("%w: creating the workspace: %v", environment.ErrLimitExceeded, err))
		}
		return fail(fmt.Errorf("embedded: creating volume: %w", err))
	}
	s.mu.Lock()
	s.vol = vol
	if pooled != nil {
		s.sb = pooled.sb
		go s.watchSandbox(pooled.sb)
	}
	s.mu.Unlock()
	undo := func(err error) (*session, error) {
		_ = s.stopSandbox(context.WithoutCancel(ctx))
		_ = h.storage.DestroyVolume(context.WithoutCancel(ctx), volume)
		_ = h.ledger.DeleteSession(id)
		return fail(err)
	}
	if err := h.applyQuota(ctx, s, false); err != nil {
		return undo(err)
	}
	if err := s.ensureSandbox(ctx); err != nil {
		return undo(err)
	}
	if err := h.ledger.UpdateSession(id, func(r *snapshot.SessionRecord) error {
		r.State = string(environment.StateActive)
		return nil
	}); err != nil {
		return undo(fmt.Errorf("embedded: recording session: %w", err))
	}
	s.mu.Lock()
	s.state = environment.StateActive
	s.mu.Unlock()
	s.touch()
	h.log.Info("session created", "session", id, "from_snapshot", cfg.FromSnapshot, "pooled", pooled != nil, "took", time.Since(start))
	return s, nil
}

// finishDestroy deletes a session's data and record. Used by Destroy and by
// recovery of a destroy interrupted by a crash.
func (h *Host) finishDestroy(ctx context.Context, s *session) error {
	if err := h.storage.DestroyVolume(ctx, s.volume); err != nil && !errors.Is(err, snapshot.ErrNotFound) {
		return fmt.Errorf("embedded: destroying volume of %s: %w", s.id, err)
	}
	if err := h.ledger.DeleteSession(s.id); err != nil {
		return fmt.Errorf("embedded: deleting ledger record of %s: %w", s.id, err)
	}
	h.mu.Lock()
	if h.sessions[s.id] == s {
		delete(h.sessions, s.id)
	}
	h.mu.Unlock()
	return nil
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
	if h.ownsData {
		errs = append(errs, h.storage.Close())
	}
	if c, ok := h.runtime.(interface{ Close() error }); ok && h.ownsRuntime {
		errs = append(errs, c.Close())
	}
	errs = append(errs, h.ledger.Close())
	return errors.Join(errs...)
}

// ImagePath returns the root filesystem directory of image name ("" for
// the host's default image); "" on the none runtime, which uses none. name
// is a name (environment.ValidateImageName), never a path: the image is the
// directory of that name directly in Config.ImagesDir, and a symlink there
// is refused. The error wraps environment.ErrInvalidArgument.
func (h *Host) ImagePath(name string) (string, error) { return h.imagePath(name) }

func (h *Host) imagePath(name string) (string, error) {
	if name == "" {
		name = h.cfg.DefaultImage
	}
	if name == "" && h.runtime.Kind() == string(ContainerRuntimeNone) {
		return "", nil
	}
	if name == "" {
		return "", fmt.Errorf("%w: no image given and the host has no default image", environment.ErrInvalidArgument)
	}
	if err := environment.ValidateImageName(name); err != nil {
		return "", err
	}
	if h.runtime.Kind() == string(ContainerRuntimeNone) {
		return "", nil
	}
	if err := checkImageDir(h.cfg.ImagesDir, name); err != nil {
		return "", fmt.Errorf("%w: image %q: %v (build one with `turnbox image build busybox`)", environment.ErrInvalidArgument, name, err)
	}
	return filepath.Join(h.cfg.ImagesDir, name), nil
}

// checkImageDir checks, through descriptors, that name is a real directory
// directly in the image store: not a symlink, not through one, not a
// magic link.
func checkImageDir(store, name string) error {
	sfd, err := unix.Open(store, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening the image store %s: %w", store, err)
	}
	defer unix.Close(sfd)
	fd, err := unix.Openat2(sfd, name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return fmt.Errorf("not a directory in %s: %w", store, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("not a directory in %s", store)
	}
	return nil
}
