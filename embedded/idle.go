package embedded

import (
	"context"
	"fmt"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/environment"
)

// Idle auto-pause (Config.IdlePause). A session whose last tool call
// ended IdlePause ago, with none running, has its sandbox frozen for real
// (the runtime's Pause, as Environment.Pause does). The session stays
// active: the next tool call, Rollback, Pause or RestartSession thaws it
// first (a snapshot needs no thaw: the frozen sandbox cannot be writing,
// and it stays frozen). Unlike an explicit Pause, callers see no error.
// Hosts whose runtime cannot pause (Capabilities.Pause false) never
// auto-pause.

// idleState is a session's auto-pause bookkeeping, guarded by session.mu.
type idleState struct {
	timer  *time.Timer
	last   time.Time // when the session was last used
	paused bool      // the sandbox is frozen by auto-pause
}

// idlePauseOn reports whether the host auto-pauses idle sessions.
func (h *Host) idlePauseOn() bool { return h.cfg.IdlePause > 0 && h.caps.Pause }

// touch records use of the session and (re)arms its idle timer.
func (s *session) touch() {
	if !s.h.idlePauseOn() {
		return
	}
	d := s.h.cfg.IdlePause
	s.mu.Lock()
	defer s.mu.Unlock()
	s.autoPause.last = time.Now()
	if s.autoPause.timer == nil {
		s.autoPause.timer = time.AfterFunc(d, s.idleFire)
	} else {
		s.autoPause.timer.Reset(d)
	}
}

// rearmLocked fires the idle timer again after d. Called with s.mu held.
func (s *session) rearmLocked(d time.Duration) {
	if s.autoPause.timer != nil && s.life.Err() == nil {
		s.autoPause.timer.Reset(d)
	}
}

// idleFire runs when the idle timer expires: it freezes the sandbox if the
// session is still idle, else re-arms for the rest of the interval.
func (s *session) idleFire() {
	if s.life.Err() != nil {
		return
	}
	d := s.h.cfg.IdlePause
	s.mu.Lock()
	if s.inflight > 0 {
		s.rearmLocked(d) // a call runs: not idle
		s.mu.Unlock()
		return
	}
	if wait := d - time.Since(s.autoPause.last); wait > 0 {
		s.rearmLocked(wait)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	// A snapshot, rollback, pause or destroy in progress: try again later.
	if !s.turnMu.TryLock() {
		s.mu.Lock()
		s.rearmLocked(d / 4)
		s.mu.Unlock()
		return
	}
	defer s.turnMu.Unlock()
	s.mu.Lock()
	sb := s.sb
	switch {
	case s.inflight > 0, s.state != environment.StateActive, s.autoPause.paused, s.closing, s.rollingBack,
		sb == nil, s.mismatch != "", time.Since(s.autoPause.last) < d:
		s.mu.Unlock()
		return
	}
	select {
	case <-sb.Done():
		s.mu.Unlock()
		return // died; the watcher marks the session failed
	default:
	}
	// Set before the freeze: a call admitted from now on sees the flag
	// and waits (on turnMu) to thaw the sandbox.
	s.autoPause.paused = true
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(s.life, freezeTimeout)
	defer cancel()
	start := time.Now()
	if err := sb.Pause(ctx); err != nil {
		s.mu.Lock()
		s.autoPause.paused = false
		s.rearmLocked(d)
		s.mu.Unlock()
		s.h.log.Warn("idle pause failed; will retry", "session", s.id, "err", err)
		return
	}
	s.h.metrics.idlePauses.Inc()
	s.h.log.Debug("session idle: sandbox paused", "session", s.id, "idle_for", time.Since(s.autoPause.last), "took", time.Since(start))
}

// wake thaws a sandbox frozen by idle pause. Called by operations that
// need a running sandbox; a no-op otherwise.
func (s *session) wake(ctx context.Context) error {
	if !s.idlePaused() {
		return nil
	}
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	return s.wakeLocked(ctx)
}

func (s *session) idlePaused() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.autoPause.paused
}

// wakeLocked is wake with turnMu held.
func (s *session) wakeLocked(ctx context.Context) error {
	s.mu.Lock()
	paused, sb := s.autoPause.paused, s.sb
	s.mu.Unlock()
	if !paused {
		return nil
	}
	if sb != nil {
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, freezeTimeout)
		err := sb.Resume(rctx)
		cancel()
		if err != nil {
			return fmt.Errorf("embedded: resuming the idle-paused sandbox of %s: %w", s.id, err)
		}
		s.h.metrics.observe("idle_resume", start)
	}
	s.mu.Lock()
	s.autoPause.paused = false
	s.mu.Unlock()
	s.h.metrics.idleResumes.Inc()
	s.touch()
	return nil
}

// takeIdlePause turns an idle pause into an explicit one (Pause on an
// idle-paused session: the sandbox is frozen already).
func (s *session) takeIdlePause() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.autoPause.paused
	s.autoPause.paused = false
	return p
}

// stopIdle stops the idle timer (destroy, shutdown).
func (s *session) stopIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.autoPause.timer != nil {
		s.autoPause.timer.Stop()
	}
}

// watchSandbox marks the session failed when sb exits on its own (not by
// stopSandbox, destroy or shutdown): its processes were killed from
// outside, it crashed, or its agent died.
func (s *session) watchSandbox(sb container.Sandbox) {
	select {
	case <-sb.Done():
	case <-s.life.Done():
		return
	}
	s.mu.Lock()
	current, st := s.sb == sb, s.state
	s.mu.Unlock()
	if !current || s.life.Err() != nil {
		return
	}
	s.h.metrics.sandboxDeaths.Inc()
	if st != environment.StateActive && st != environment.StatePaused {
		return
	}
	s.h.log.Error("sandbox died; session failed (Resume or Host.RestartSession starts a new sandbox, Destroy deletes the session)", "session", s.id, "err", sb.Err())
	s.setState(environment.StateFailed)
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

func (s *session) restart(ctx context.Context) error {
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	s.mu.Lock()
	switch {
	case s.closing:
		s.mu.Unlock()
		return fmt.Errorf("%w: session %s: host shutting down", environment.ErrClosed, s.id)
	case s.mismatch != "":
		s.mu.Unlock()
		return fmt.Errorf("%w: session %s: %s", environment.ErrNotActive, s.id, s.mismatch)
	case s.state != environment.StateActive && s.state != environment.StateFailed:
		s.mu.Unlock()
		return s.notActive()
	case s.inflight > 0:
		n := s.inflight
		s.mu.Unlock()
		return fmt.Errorf("%w: session %s has %d tool call(s) running", environment.ErrBusy, s.id, n)
	}
	s.mu.Unlock()
	// Thaw an idle-paused sandbox so that it stops like a running one
	// (best effort: a dead one cannot be thawed, and is stopped anyway).
	_ = s.wakeLocked(ctx)
	if err := s.stopSandbox(ctx); err != nil {
		s.h.log.Warn("stopping the old sandbox before a restart", "session", s.id, "err", err)
	}
	if err := s.ensureSandbox(ctx); err != nil {
		return err
	}
	if s.currentState() != environment.StateActive {
		s.setState(environment.StateActive)
	}
	s.h.log.Info("session restarted", "session", s.id)
	s.touch()
	return nil
}
