package embedded

import (
	"context"
	"fmt"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/embedded/ledger"
	"github.com/turnbox/turnbox/environment"
)

// Hibernation: Hibernate saves a session's sandbox (memory image and a
// backend snapshot of its files, taken at one instant, both named
// hibernateName) and stops it; the ledger records the session paused
// and hibernated before Hibernate returns. Resume rolls the files back
// to that snapshot (the sandbox ran on for a moment after the image was
// taken, and its files must match the image's instant), restores the
// sandbox from the image and deletes both. A host that opens on the
// state dir keeps a hibernated session paused and hibernated; a crash
// before the ledger recorded it leaves the session active, and recovery
// deletes the image and the snapshot.

var _ environment.Hibernator = (*Environment)(nil)

// Hibernate implements environment.Hibernator (Capabilities.MemorySnapshots;
// sessions with network mode none). It refuses (ErrBusy) while a tool
// call runs. Processes the session started come back on Resume, but the
// process API lists none of them afterwards.
func (e *Environment) Hibernate(ctx context.Context) error {
	s, err := e.session()
	if err != nil {
		return err
	}
	return timed(s, "hibernate", func() error { return s.hibernate(ctx) })
}

// hibernate is Environment.Hibernate.
func (s *session) hibernate(ctx context.Context) error {
	if !s.deps.memory {
		return fmt.Errorf("%w: hibernate on the %s runtime", environment.ErrCapabilityNotSupported, s.deps.runtime.Kind())
	}
	if s.cfg.Network.Mode.Rank() > 0 {
		return fmt.Errorf("%w: hibernate a session with network %q (the runtime cannot restore it)", environment.ErrCapabilityNotSupported, s.cfg.Network.Mode)
	}
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	s.mu.Lock()
	err := s.exclusiveLocked(environment.StateActive)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := s.wakeLocked(ctx); err != nil {
		return err
	}
	sb, err := s.sandbox(ctx)
	if err != nil {
		return err
	}
	ms, ok := sb.(container.MemorySnapshotter)
	if !ok {
		return fmt.Errorf("%w: the %s sandbox cannot save its memory", environment.ErrCapabilityNotSupported, s.deps.runtime.Kind())
	}
	_ = unlessGone(s.deps.storage.DestroySnapshot(ctx, s.volume, hibernateName)) // a failed try's
	if _, _, err := s.snapshotMemory(ctx, ms, hibernateName, hibernateName); err != nil {
		return err
	}
	if err := s.deps.ledger.UpdateSession(s.id, func(r *ledger.SessionRecord) error {
		r.State, r.Hibernated = string(environment.StatePaused), true
		return nil
	}); err != nil {
		s.dropHibernation(ctx)
		return fmt.Errorf("embedded: recording the hibernation of %s: %w", s.id, err)
	}
	s.mu.Lock()
	s.state, s.hibernated = environment.StatePaused, true
	s.mu.Unlock()
	s.procs.killing("killed: session hibernated (the process runs again after Resume, without its handle)")
	if err := s.stopSandbox(ctx); err != nil {
		s.deps.log.Error("stopping the sandbox of a hibernated session", "session", s.id, "err", err)
	}
	s.deps.log.Info("session hibernated", "session", s.id)
	return nil
}

// unhibernate is Resume of a hibernated session. Called with turnMu
// held. On failure the session stays hibernated (Resume may be tried
// again).
func (s *session) unhibernate(ctx context.Context) error {
	if err := s.rollbackVolume(ctx, hibernateName, false); err != nil {
		return fmt.Errorf("embedded: resuming %s: restoring its files: %w", s.id, err)
	}
	if err := s.restoreSandbox(ctx, s.deps.mem.dir(s.id, hibernateName)); err != nil {
		return fmt.Errorf("embedded: resuming %s: %w", s.id, err)
	}
	if err := s.deps.ledger.UpdateSession(s.id, func(r *ledger.SessionRecord) error {
		r.State, r.Hibernated = string(environment.StateActive), false
		return nil
	}); err != nil {
		_ = s.stopSandbox(ctx)
		return fmt.Errorf("embedded: recording the resume of %s: %w", s.id, err)
	}
	s.mu.Lock()
	s.state, s.hibernated = environment.StateActive, false
	s.mu.Unlock()
	s.dropHibernation(ctx)
	s.touch()
	s.deps.log.Info("hibernated session resumed", "session", s.id)
	return nil
}

// dropHibernation deletes what Hibernate saved.
func (s *session) dropHibernation(ctx context.Context) {
	s.deps.mem.remove(s.deps.mem.dir(s.id, hibernateName))
	if err := unlessGone(s.deps.storage.DestroySnapshot(context.WithoutCancel(ctx), s.volume, hibernateName)); err != nil {
		s.deps.log.Error("deleting the hibernation snapshot", "session", s.id, "err", err)
	}
}
