package embedded

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/embedded/ledger"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/snapshot"
)

// Turns: a session's snapshots (one per completed turn, numbered by the
// ledger), their retention, and rollback to any of them.

// snapshot quiesces the session (file tools finish, the sandbox is frozen
// where the runtime can), snapshots the volume as the next turn, thaws, and
// records the snapshot in the ledger.
func (s *session) snapshot(ctx context.Context, name string) (*environment.SnapshotInfo, error) {
	if err := environment.ValidateSnapshotName(name); err != nil {
		return nil, err
	}
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	if st := s.currentState(); st != environment.StateActive && st != environment.StatePaused {
		return nil, s.notActive()
	}
	if s.cfg.SnapshotMemory {
		// A memory snapshot needs the sandbox running: an idle-paused
		// one is thawed first.
		if err := s.wakeLocked(ctx); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	state, sb, idlePaused := s.state, s.sb, s.autoPause.paused
	s.mu.Unlock()
	if err := s.totalAdmit(ctx); err != nil {
		return nil, err
	}
	turn, err := s.deps.ledger.NextTurn(s.id)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	bname := ledger.BackendSnapshotName(turn)
	start := time.Now()
	var snap snapshot.Snapshot
	var memBytes int64
	ms := s.memorySandbox(state, sb)
	if ms != nil {
		if snap, memBytes, err = s.snapshotMemory(ctx, ms, memSnapshotName(turn), bname); err != nil {
			return nil, err
		}
	} else if snap, err = s.snapshotFiles(ctx, state, sb, idlePaused, bname); err != nil {
		return nil, err
	}
	rec := ledger.SnapshotRecord{Session: s.id, Turn: turn, Name: name, Volume: s.volume, BackendName: bname,
		CreatedAt: snap.CreatedAt.UTC(), SizeBytes: snap.SizeBytes, Memory: ms != nil, MemoryBytes: memBytes}
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = time.Now().UTC()
	}
	if err := s.deps.ledger.AddSnapshot(rec); err != nil {
		_ = s.deps.storage.DestroySnapshot(context.WithoutCancel(ctx), s.volume, bname)
		if rec.Memory {
			s.deps.mem.remove(s.deps.mem.snapshotDir(rec))
		}
		return nil, fmt.Errorf("embedded: recording snapshot: %w", err)
	}
	rec.ID = ledger.SnapshotID(s.id, turn)
	s.deps.log.Debug("snapshot", "session", s.id, "turn", turn, "memory", rec.Memory, "took", time.Since(start))
	s.deps.metrics.observe("snapshot", start)
	s.prune(ctx)
	return toInfo(rec), nil
}

// snapshotFiles takes the backend snapshot bname of the session's files,
// the sandbox frozen around it if something in it could be writing.
// Called with turnMu held.
func (s *session) snapshotFiles(ctx context.Context, state environment.SessionState, sb container.Sandbox, idlePaused bool, bname string) (snapshot.Snapshot, error) {
	s.fsMu.Lock()
	freezeStart := time.Now()
	// An idle-paused sandbox is frozen already and stays so.
	froze := state == environment.StateActive && sb != nil && s.deps.canPause && !idlePaused && s.freeze(ctx, sb)
	snap, err := s.deps.storage.Snapshot(ctx, s.volume, bname)
	thawed := !froze || s.thaw(ctx, sb)
	frozeFor := time.Since(freezeStart)
	s.fsMu.Unlock()
	if !thawed {
		// Frozen for good: stop it; the next call starts a new sandbox.
		if serr := s.stopSandbox(ctx); serr != nil {
			s.deps.log.Error("stopping a sandbox that could not be thawed", "session", s.id, "err", serr)
		}
	}
	s.deps.metrics.freeze.Observe(frozeFor.Seconds())
	if err != nil {
		return snap, fmt.Errorf("embedded: snapshot of %s: %w", s.id, storageError(err))
	}
	return snap, nil
}

// freeze stops sb's processes for a snapshot if something in it could be
// writing, and reports whether it did. Between turns nothing usually runs
// (file tools are drained by fsMu), and a freeze then costs time for
// nothing. Each step is bounded: an agent that does not answer the idle
// query in time (starved by a fork bomb, or hostile) counts as busy, and
// a sandbox that cannot be frozen in time is snapshotted live.
func (s *session) freeze(ctx context.Context, sb container.Sandbox) bool {
	if ic, ok := sb.(container.IdleChecker); ok {
		ictx, cancel := context.WithTimeout(ctx, idleQueryTimeout)
		idle, err := ic.Idle(ictx)
		cancel()
		if err == nil && idle {
			return false
		}
		if err != nil {
			s.deps.log.Warn("no answer to the idle query; freezing the sandbox anyway", "session", s.id, "err", err)
		}
	}
	fctx, cancel := context.WithTimeout(ctx, freezeTimeout)
	defer cancel()
	if err := sb.Pause(fctx); err != nil {
		s.deps.log.Warn("could not freeze the sandbox for a snapshot; taking it live", "session", s.id, "err", err)
		return false
	}
	return true
}

// thaw resumes sb after a snapshot, within freezeTimeout even if ctx was
// cancelled meanwhile, and reports whether it did.
func (s *session) thaw(ctx context.Context, sb container.Sandbox) bool {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), freezeTimeout)
	defer cancel()
	if err := sb.Resume(rctx); err != nil {
		s.deps.log.Error("thawing the sandbox after a snapshot", "session", s.id, "err", err)
		return false
	}
	return true
}

func toInfo(r ledger.SnapshotRecord) *environment.SnapshotInfo {
	return &environment.SnapshotInfo{ID: r.ID, SessionID: r.Session, Name: r.Name, Turn: r.Turn, CreatedAt: r.CreatedAt,
		SizeBytes: r.SizeBytes, Memory: r.Memory, MemoryBytes: r.MemoryBytes}
}

// prune applies the host's retention policy. Called with turnMu held.
func (s *session) prune(ctx context.Context) {
	old, err := s.deps.ledger.Prunable(s.id, s.deps.retention)
	if err != nil {
		s.deps.log.Error("retention", "session", s.id, "err", err)
		return
	}
	for _, r := range old {
		if err := s.dropSnapshot(ctx, r); err != nil {
			s.deps.log.Error("retention: destroying snapshot", "snapshot", r.ID, "err", err)
		}
	}
}

// dropSnapshot destroys the snapshot r in storage (one already gone is
// fine) and then forgets it. Called with turnMu held.
func (s *session) dropSnapshot(ctx context.Context, r ledger.SnapshotRecord) error {
	if err := unlessGone(s.deps.storage.DestroySnapshot(ctx, s.volume, r.BackendName)); err != nil {
		return err
	}
	if err := s.deps.ledger.DeleteSnapshot(r.ID); err != nil {
		return err
	}
	if r.Memory {
		s.deps.mem.remove(s.deps.mem.snapshotDir(r))
	}
	return nil
}

// reconcileSnapshots deletes backend snapshots that have no ledger record
// (a crash after the backend made them, before the ledger recorded them)
// and drops records whose snapshot is gone.
func (s *session) reconcileSnapshots(ctx context.Context) error {
	recs, err := s.deps.ledger.Snapshots(s.id)
	if err != nil {
		return err
	}
	if s.state == environment.StateFailed {
		return nil
	}
	snaps, err := s.deps.storage.Snapshots(ctx, s.volume)
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
			s.deps.log.Error("snapshot recorded in the ledger is missing from storage", "session", s.id, "snapshot", r.ID)
			_ = s.deps.ledger.DeleteSnapshot(r.ID)
		}
	}
	for _, sn := range snaps {
		if sn.Name == hibernateName && !s.hibernated {
			s.deps.log.Warn("deleting the snapshot of a hibernation that did not complete", "session", s.id)
			_ = s.deps.storage.DestroySnapshot(ctx, s.volume, sn.Name)
		}
		if !inLedger[sn.Name] && strings.HasPrefix(sn.Name, "turn-") {
			s.deps.log.Warn("deleting unrecorded snapshot (left by a crash)", "session", s.id, "snapshot", sn.Name)
			_ = s.deps.storage.DestroySnapshot(ctx, s.volume, sn.Name)
		}
	}
	return nil
}

// ownSnapshot returns the ledger record of snapshotID, which must be one
// of the session's snapshots (else ErrSnapshotNotFound; ErrInvalidArgument
// for a malformed id).
func (s *session) ownSnapshot(snapshotID string) (ledger.SnapshotRecord, error) {
	if err := environment.ValidateSnapshotID(snapshotID); err != nil {
		return ledger.SnapshotRecord{}, err
	}
	rec, err := s.deps.ledger.Snapshot(snapshotID)
	if err != nil || rec.Session != s.id {
		return ledger.SnapshotRecord{}, fmt.Errorf("%w: %q is not a snapshot of session %s", environment.ErrSnapshotNotFound, snapshotID, s.id)
	}
	return rec, nil
}

// deleteSnapshot deletes the session's snapshot snapshotID.
func (s *session) deleteSnapshot(ctx context.Context, snapshotID string) error {
	rec, err := s.ownSnapshot(snapshotID)
	if err != nil {
		return err
	}
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	if st := s.currentState(); st == environment.StateDestroyed || st == environment.StateFailed {
		return fmt.Errorf("%w: session %s is %s", environment.ErrNotActive, s.id, st)
	}
	if err := s.dropSnapshot(ctx, rec); err != nil {
		return fmt.Errorf("embedded: deleting snapshot %s: %w", snapshotID, err)
	}
	return nil
}

func (s *session) snapshots() ([]environment.SnapshotInfo, error) {
	recs, err := s.deps.ledger.Snapshots(s.id)
	if err != nil {
		return nil, err
	}
	out := make([]environment.SnapshotInfo, 0, len(recs))
	for _, r := range recs {
		out = append(out, *toInfo(r))
	}
	return out, nil
}

// rollback restores snapshotID and kills every process of the sandbox, so
// the next tool call sees exactly the snapshot's tree and no process
// started after the snapshot survives. It refuses (ErrBusy) while a tool
// call runs rather than cancel the caller's work.
func (s *session) rollback(ctx context.Context, snapshotID string) error {
	rec, err := s.ownSnapshot(snapshotID)
	if err != nil {
		return err
	}
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	if err := s.beginRollback(); err != nil {
		return err
	}
	defer func() {
		s.mu.Lock()
		s.rollingBack = false
		s.mu.Unlock()
	}()
	// An idle-paused sandbox is thawed first: its processes are killed
	// below, and the next call needs it running.
	if err := s.wakeLocked(ctx); err != nil {
		return err
	}
	defer s.quotaAfterRollback(context.WithoutCancel(ctx))
	if rec.Memory {
		return s.rollbackMemory(ctx, rec)
	}
	s.mu.Lock()
	sb := s.sb
	s.mu.Unlock()
	// A backend whose rollback mounts another filesystem at the volume
	// path (ZFS clone-and-swap) changes nothing a sandbox with its own
	// mount namespace sees: it keeps the old mount. Such a sandbox is
	// stopped before the rollback and started again after it.
	restart := sb != nil && s.deps.remountRestarts
	s.procs.killing("killed by rollback to " + snapshotID)
	switch {
	case restart:
		if err := s.stopSandbox(ctx); err != nil {
			return fmt.Errorf("embedded: rollback of %s: stopping the sandbox: %w", s.id, err)
		}
	case sb != nil:
		var err error
		if restart, err = s.killAll(ctx, sb); err != nil {
			return fmt.Errorf("embedded: rollback of %s: %w", s.id, err)
		}
	}
	if err := s.rollbackVolume(ctx, rec.BackendName, sb != nil && !restart); err != nil {
		return fmt.Errorf("embedded: rollback of %s to %s: %w", s.id, snapshotID, err)
	} else if sb != nil {
		restart = restart || s.currentSandbox() == nil
	}
	// Volume.Path is stable across Rollback (the backend contract): a
	// sandbox that shares the host's view sees the restored tree at once.
	if restart {
		// Started now, so that the rollback returns a session ready to
		// run tools, as on the other backends.
		if _, err := s.sandbox(ctx); err != nil {
			return fmt.Errorf("embedded: rollback of %s: the filesystem is restored but the sandbox did not start again: %w", s.id, err)
		}
	}
	return nil
}

// beginRollback holds tool calls off for a rollback (rollingBack; the
// caller clears it), or refuses one that cannot start now.
func (s *session) beginRollback() error {
	s.mu.Lock()
	switch {
	case s.state != environment.StateActive:
		s.mu.Unlock()
		return s.notActive()
	case s.inflight > 0:
		n := s.inflight
		s.mu.Unlock()
		return fmt.Errorf("%w: session %s has %d tool call(s) running; wait for them or cancel them before rolling back", environment.ErrBusy, s.id, n)
	}
	s.rollingBack = true
	s.mu.Unlock()
	s.endWatches()
	return nil
}

// rollbackVolume rolls the volume back to the backend snapshot bname
// with file tools held off. If the backend finds the workspace tampered
// with after its exchange (something in a running sandbox, its agent
// being the only process left, changed the workspace's directory in the
// instant the backend had it unsealed) and running says a sandbox is up,
// the sandbox is stopped, so that nothing can race the next try, and the
// rollback made again; the caller starts a new sandbox. Called with
// turnMu held.
func (s *session) rollbackVolume(ctx context.Context, bname string, running bool) error {
	s.fsMu.Lock()
	err := s.deps.storage.Rollback(ctx, s.volume, bname)
	s.fsMu.Unlock()
	if errors.Is(err, snapshot.ErrTampered) && running {
		s.deps.log.Warn("the sandbox tampered with its workspace during a rollback; restarting it", "session", s.id, "err", err)
		if err := s.stopSandbox(ctx); err != nil {
			return fmt.Errorf("stopping a sandbox that tampered with its workspace: %w", err)
		}
		s.fsMu.Lock()
		err = s.deps.storage.Rollback(ctx, s.volume, bname)
		s.fsMu.Unlock()
	}
	return storageError(err)
}
