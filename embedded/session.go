package embedded

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/embedded/ledger"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/snapshot"
)

// session is one session's live state. It reaches its host only through
// deps. Locks, in order: turnMu (one snapshot, rollback, pause or destroy
// at a time), fsMu (file tools share it; a snapshot or rollback holds it
// exclusively), sbMu (sandbox start and stop), mu (state fields, held
// briefly, never across I/O). watches has a lock of its own, a leaf:
// nothing else is taken while it is held.
type session struct {
	deps   *sessionDeps // everything it uses of its host
	id     string
	volume string
	rec    ledger.SessionRecord
	cfg    environment.SessionConfig

	turnMu sync.Mutex
	fsMu   sync.RWMutex

	mu          sync.Mutex
	state       environment.SessionState
	vol         snapshot.Volume
	sb          container.Sandbox
	inflight    int
	idle        *sync.Cond // signalled when inflight drops to 0
	rollingBack bool
	closing     bool
	// hibernated: Hibernate saved the session to disk (state paused, no
	// sandbox); Resume restores it (hibernate.go).
	hibernated bool
	// mismatch, if set, says why this host must not run the session's
	// commands (it was created on another runtime).
	mismatch string
	// quota and autoPause: quota.go and idle.go.
	quota     quotaState
	autoPause idleState
	// watches: the file API's directory watches (files_watch.go).
	watches watchSet

	sbMu sync.Mutex

	// portMu serializes changes of rec.Ports (ports.go); taken before
	// mu, never with turnMu or sbMu held.
	portMu sync.Mutex

	// procs are the session's processes (proctable.go; its own locks,
	// never taken with mu held).
	procs *procTable

	life   context.Context // canceled on Destroy and on host shutdown
	cancel context.CancelFunc
}

func newSession(deps *sessionDeps, rec ledger.SessionRecord, vol snapshot.Volume) *session {
	var cfg environment.SessionConfig
	_ = json.Unmarshal(rec.Config, &cfg)
	s := &session{deps: deps, id: rec.ID, volume: rec.Volume, rec: rec, cfg: cfg, vol: vol,
		state: environment.SessionState(rec.State), hibernated: rec.Hibernated}
	s.idle = sync.NewCond(&s.mu)
	s.procs = newProcTable(deps.maxProcs, deps.maxEndedProcs, deps.procOutputBytes)
	s.life, s.cancel = context.WithCancel(context.Background())
	return s
}

func (s *session) info() SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	last, _ := s.deps.ledger.NextTurn(s.id)
	info := SessionInfo{ID: s.id, State: s.state, CreatedAt: s.rec.CreatedAt, ParentSession: s.rec.ParentSession,
		ParentSnapshot: s.rec.ParentSnapshot, LastTurn: max(last-1, 0), Path: workspacePath(s.vol.Path, s.rec.RootTree),
		Root:       s.rootPath(),
		IdlePaused: s.autoPause.paused, DiskQuotaBytes: s.quota.limit, DiskUsedBytes: s.quota.used,
		Limits: limitsInfo(s.limits(), s.quota.limit), Image: s.cfg.Image, Labels: maps.Clone(s.cfg.Labels),
		Network: s.network(), Ports: s.portsLocked(), Hibernated: s.hibernated, SnapshotMemory: s.cfg.SnapshotMemory}
	if img := s.rec.Image; img != nil {
		info.WorkDir, info.User = img.WorkDir, img.User
	}
	return info
}

// rootPath is the host path of the session's root tree ("" for an
// older session's volume, which is its workspace). Called with s.mu held.
func (s *session) rootPath() string {
	if s.rec.RootTree {
		return s.vol.Path
	}
	return ""
}

func (s *session) currentState() environment.SessionState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

func (s *session) notActive() error {
	return fmt.Errorf("%w: session %s is %s", environment.ErrNotActive, s.id, s.state)
}

// exclusiveLocked refuses, with s.mu held, an operation that needs the
// session in one of states with no tool call running (hibernate,
// restart): a session of another runtime (mismatch), another state, or
// calls in flight (ErrBusy).
func (s *session) exclusiveLocked(states ...environment.SessionState) error {
	switch {
	case s.mismatch != "":
		return fmt.Errorf("%w: session %s: %s", environment.ErrNotActive, s.id, s.mismatch)
	case !slices.Contains(states, s.state):
		return s.notActive()
	case s.inflight > 0:
		return fmt.Errorf("%w: session %s has %d tool call(s) running", environment.ErrBusy, s.id, s.inflight)
	}
	return nil
}

// begin admits a tool call; the returned func ends it.
func (s *session) begin() (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closing:
		return nil, fmt.Errorf("%w: session %s: host shutting down", environment.ErrClosed, s.id)
	case s.mismatch != "":
		return nil, fmt.Errorf("%w: session %s: %s", environment.ErrNotActive, s.id, s.mismatch)
	case s.state != environment.StateActive:
		return nil, s.notActive()
	case s.rollingBack:
		return nil, fmt.Errorf("%w: session %s is rolling back", environment.ErrBusy, s.id)
	}
	s.inflight++
	return func() {
		s.mu.Lock()
		s.inflight--
		if s.inflight == 0 {
			s.idle.Broadcast()
		}
		s.mu.Unlock()
	}, nil
}

// waitIdle waits until no tool call runs. Callers have already stopped
// admission (state change under mu). If ctx ends first, running calls are
// canceled and waited for.
func (s *session) waitIdle(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() {
		s.cancel()
		s.mu.Lock()
		s.idle.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	s.mu.Lock()
	for s.inflight > 0 {
		s.idle.Wait()
	}
	s.mu.Unlock()
}

func (s *session) setState(st environment.SessionState) {
	s.mu.Lock()
	s.state = st
	s.mu.Unlock()
	if err := s.deps.ledger.UpdateSession(s.id, func(r *ledger.SessionRecord) error {
		r.State = string(st)
		return nil
	}); err != nil && st != environment.StateDestroyed {
		s.deps.log.Error("recording session state", "session", s.id, "state", st, "err", err)
	}
}

func (s *session) pause(ctx context.Context) error {
	if !s.deps.canPause {
		return fmt.Errorf("%w: pause on the %s runtime", environment.ErrCapabilityNotSupported, s.deps.runtime.Kind())
	}
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	s.mu.Lock()
	if s.state != environment.StateActive {
		s.mu.Unlock()
		return s.notActive()
	}
	s.mu.Unlock()
	if s.takeIdlePause() {
		// Frozen by idle pause already: it is now an explicit pause.
		s.setState(environment.StatePaused)
		return nil
	}
	sb, err := s.sandbox(ctx)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, freezeTimeout)
	defer cancel()
	if err := sb.Pause(pctx); err != nil {
		return fmt.Errorf("embedded: pausing %s: %w", s.id, err)
	}
	s.setState(environment.StatePaused)
	return nil
}

// resume thaws a paused session, restores a hibernated one, or restarts
// the sandbox of a failed one.
func (s *session) resume(ctx context.Context) error {
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	s.mu.Lock()
	state, sb := s.state, s.sb
	s.mu.Unlock()
	switch state {
	case environment.StatePaused:
		if s.isHibernated() {
			return s.unhibernate(ctx)
		}
		if !s.deps.canPause {
			return fmt.Errorf("%w: resume on the %s runtime", environment.ErrCapabilityNotSupported, s.deps.runtime.Kind())
		}
		if sb != nil {
			rctx, cancel := context.WithTimeout(ctx, freezeTimeout)
			err := sb.Resume(rctx)
			cancel()
			if err != nil {
				return fmt.Errorf("embedded: resuming %s: %w", s.id, err)
			}
		}
	case environment.StateFailed:
		_ = s.stopSandbox(ctx)
		if err := s.ensureSandbox(ctx); err != nil {
			return err
		}
	default:
		return s.notActive()
	}
	s.setState(environment.StateActive)
	s.touch()
	return nil
}

// destroy stops the sandbox and deletes the session's data. Running tool
// calls are canceled.
func (s *session) destroy(ctx context.Context) error {
	s.mu.Lock()
	if s.state == environment.StateDestroyed {
		s.mu.Unlock()
		return nil
	}
	already := s.state == environment.StateDestroying
	s.state = environment.StateDestroying
	s.mu.Unlock()
	if !already {
		s.setState(environment.StateDestroying)
	}
	s.cancel()
	s.stopIdle()
	s.waitIdle(ctx)
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	if s.currentState() == environment.StateDestroyed {
		return nil // a concurrent Destroy finished first
	}
	s.procs.killing("killed: session destroyed")
	if err := s.stopSandbox(ctx); err != nil {
		s.deps.log.Error("stopping sandbox", "session", s.id, "err", err)
	}
	s.deps.stopForks(ctx, s.id)
	s.deps.net.release(s.id)
	if err := s.finishDestroy(ctx); err != nil {
		s.setState(environment.StateFailed)
		return err
	}
	s.mu.Lock()
	s.state = environment.StateDestroyed
	s.mu.Unlock()
	s.deps.log.Info("session destroyed", "session", s.id)
	return nil
}

// finishDestroy deletes the session's data and record and has the host
// forget it. Used by destroy and by recovery of a destroy interrupted by a
// crash.
func (s *session) finishDestroy(ctx context.Context) error {
	if err := unlessGone(s.deps.storage.DestroyVolume(ctx, s.volume)); err != nil {
		return fmt.Errorf("embedded: destroying volume of %s: %w", s.id, err)
	}
	if err := s.deps.ledger.DeleteSession(s.id); err != nil {
		return fmt.Errorf("embedded: deleting ledger record of %s: %w", s.id, err)
	}
	s.deps.mem.removeSession(s.id)
	s.deps.forget(s)
	return nil
}

// shutdown is the host's Close for one session: stop admitting calls,
// drain, stop the sandbox, keep the data.
func (s *session) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.waitIdle(ctx)
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	s.cancel()
	s.stopIdle()
	s.procs.killing("killed: host shut down")
	return s.stopSandbox(context.WithoutCancel(ctx))
}
