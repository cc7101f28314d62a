package embedded

import (
	"context"
	"fmt"
	"time"

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

// touch records use of the session and (re)arms its idle timer.
func (s *session) touch() {
	if s.deps.idlePause <= 0 {
		return
	}
	d := s.deps.idlePause
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
	d := s.deps.idlePause
	live := s.procs.live() // running processes keep a session awake
	s.mu.Lock()
	if s.inflight > 0 || live > 0 {
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
		s.deps.log.Warn("idle pause failed; will retry", "session", s.id, "err", err)
		return
	}
	s.deps.metrics.idlePauses.Inc()
	s.deps.log.Debug("session idle: sandbox paused", "session", s.id, "idle_for", time.Since(s.autoPause.last), "took", time.Since(start))
}

// beginAwake admits a call (begin) and wakes the session's sandbox if it
// was idle paused; end ends the call and restarts the idle clock.
func (s *session) beginAwake(ctx context.Context) (end func(), err error) {
	done, err := s.begin()
	if err != nil {
		return nil, err
	}
	if err := s.wake(ctx); err != nil {
		s.touch()
		done()
		return nil, err
	}
	return func() {
		s.touch()
		done()
	}, nil
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
		s.deps.metrics.observe("idle_resume", start)
	}
	s.mu.Lock()
	s.autoPause.paused = false
	s.mu.Unlock()
	s.deps.metrics.idleResumes.Inc()
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
