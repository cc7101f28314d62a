package embedded

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/embedded/ledger"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/snapshot"
)

// Memory snapshots and hibernation (docs/storage.md, "Memory
// snapshots"): a session with SessionConfig.SnapshotMemory saves its
// sandbox's memory with its files at each snapshot; Rollback and Fork to
// such a snapshot restore the sandbox from it; Hibernate saves the
// sandbox and stops it, Resume restores it.

// runtimeHasMemory reports whether rt's sandboxes can be saved and
// restored (gvisor: its sandboxes are container.MemorySnapshotters).
// runc has no working checkpoint (CRIU) on our machines, none isolates
// nothing.
func runtimeHasMemory(rt container.Runtime) bool {
	_, ok := rt.(container.Restorer)
	return ok && rt.Kind() == string(ContainerRuntimeGVisor)
}

// checkMemory settles a new session's SnapshotMemory: a fork keeps its
// parent's choice (a fork of a memory snapshot always has it), and it
// needs the runtime's support and a session without a network.
func (c *creation) checkMemory(parentCfg *environment.SessionConfig) error {
	if c.parent.Memory || (parentCfg != nil && parentCfg.SnapshotMemory) {
		c.cfg.SnapshotMemory = true
	}
	if !c.cfg.SnapshotMemory {
		return nil
	}
	if !c.h.caps.MemorySnapshots {
		return fmt.Errorf("%w: memory snapshots on the %s runtime (gvisor only: runc has no working checkpoint on these machines, none isolates nothing)", environment.ErrCapabilityNotSupported, c.h.runtime.Kind())
	}
	if c.cfg.Network.Mode.Rank() > 0 {
		return fmt.Errorf("%w: memory snapshots need network mode %q (the runtime cannot restore a sandbox with a network of its own), not %q", environment.ErrInvalidArgument, environment.NetworkNone, c.cfg.Network.Mode)
	}
	return nil
}

// memorySandbox returns sb as a MemorySnapshotter when the session's
// next snapshot holds its memory: the session chose it, is active, and
// its sandbox runs. Otherwise (none started yet, or it died; or a paused
// session) the snapshot is of files only.
func (s *session) memorySandbox(state environment.SessionState, sb container.Sandbox) container.MemorySnapshotter {
	if !s.cfg.SnapshotMemory || state != environment.StateActive || sb == nil {
		return nil
	}
	select {
	case <-sb.Done():
		return nil
	default:
	}
	ms, _ := sb.(container.MemorySnapshotter)
	return ms
}

// snapshotMemory takes the backend snapshot bname inside a memory
// snapshot of ms written to the image directory name: one instant for
// both. It returns the backend snapshot and the image's size. On error
// nothing is left (image nor backend snapshot). Called with turnMu held.
func (s *session) snapshotMemory(ctx context.Context, ms container.MemorySnapshotter, name, bname string) (snapshot.Snapshot, int64, error) {
	var snap snapshot.Snapshot
	dir, err := s.deps.mem.prepare(s.id, name)
	if err != nil {
		return snap, 0, err
	}
	made := false
	s.fsMu.Lock()
	start := time.Now()
	err = ms.SnapshotMemory(ctx, dir, func(ctx context.Context) error {
		var err error
		if snap, err = s.deps.storage.Snapshot(ctx, s.volume, bname); err != nil {
			return storageError(err)
		}
		made = true
		return nil
	})
	s.deps.metrics.freeze.Observe(time.Since(start).Seconds())
	s.fsMu.Unlock()
	var size int64
	if err == nil {
		size, err = seal(dir)
	} else if made {
		// The files were taken, so the failure came after them: the
		// thaw. A sandbox left frozen is stopped; the next call starts
		// a new one.
		s.procs.killing("killed: the sandbox could not be thawed after a memory snapshot")
		if serr := s.stopSandbox(ctx); serr != nil {
			s.deps.log.Error("stopping a sandbox after a failed memory snapshot", "session", s.id, "err", serr)
		}
	}
	if err != nil {
		s.deps.mem.remove(dir)
		if made {
			_ = s.deps.storage.DestroySnapshot(context.WithoutCancel(ctx), s.volume, bname)
		}
		if errors.Is(err, container.ErrUnsupported) {
			err = fmt.Errorf("%w: %w", environment.ErrCapabilityNotSupported, err)
		}
		return snap, 0, fmt.Errorf("embedded: memory snapshot of %s: %w", s.id, err)
	}
	return snap, size, nil
}

// restoreSandbox starts the session's sandbox from the memory image in
// dir, in place of a running one (stopped first). The process table
// starts empty: the image's processes run again, but the host has no
// handle to them (their output streams are not reattached).
func (s *session) restoreSandbox(ctx context.Context, dir string) error {
	s.procs.killing("killed: the sandbox was restored from a memory image")
	if err := s.stopSandbox(ctx); err != nil {
		return fmt.Errorf("stopping the sandbox before a restore: %w", err)
	}
	if _, err := s.sandboxFrom(ctx, dir); err != nil {
		return err
	}
	return nil
}

// rollbackMemory is rollback to a snapshot with memory: the sandbox is
// stopped, the files restored, and a sandbox restored from the
// snapshot's image. Called with turnMu held and tool calls held off.
func (s *session) rollbackMemory(ctx context.Context, rec ledger.SnapshotRecord) error {
	s.procs.killing("killed by rollback to " + rec.ID + " (its processes come back instead)")
	if err := s.stopSandbox(ctx); err != nil {
		return fmt.Errorf("embedded: rollback of %s: stopping the sandbox: %w", s.id, err)
	}
	if err := s.rollbackVolume(ctx, rec.BackendName, false); err != nil {
		return fmt.Errorf("embedded: rollback of %s to %s: %w", s.id, rec.ID, err)
	}
	if err := s.restoreSandbox(ctx, s.deps.mem.snapshotDir(rec)); err != nil {
		return fmt.Errorf("embedded: rollback of %s: the files are restored but the sandbox's memory is not: %w", s.id, err)
	}
	return nil
}

// restoreFork starts a fork's sandbox from its parent snapshot's image,
// with the parent's turnMu held (if the parent still lives) so that the
// image is not pruned meanwhile. Lock order: the parent's turnMu before
// the fork's sbMu and mu (nothing takes a fork's lock and then its
// parent's).
func (c *creation) restoreFork() error {
	if parent, err := c.h.lookup(c.parent.Session); err == nil {
		parent.turnMu.Lock()
		defer parent.turnMu.Unlock()
	}
	if _, err := c.h.ledger.Snapshot(c.cfg.FromSnapshot); err != nil {
		return fmt.Errorf("%w: %s was deleted", environment.ErrSnapshotNotFound, c.cfg.FromSnapshot)
	}
	if _, err := c.s.sandboxFrom(c.ctx, c.h.deps.mem.snapshotDir(c.parent)); err != nil {
		return fmt.Errorf("embedded: fork %s: restoring %s: %w", c.s.id, c.cfg.FromSnapshot, err)
	}
	return nil
}

// isHibernated reports whether Hibernate saved the session to disk.
func (s *session) isHibernated() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hibernated
}

// gcMemory deletes the memory images that no snapshot record or
// hibernated session names (recovery; crashes leave them).
func (h *Host) gcMemory() {
	keep := map[string]bool{}
	for id, s := range h.sessions {
		if s.hibernated {
			keep[keepKey(id, hibernateName)] = true
		}
		recs, err := h.ledger.Snapshots(id)
		if err != nil {
			h.log.Error("memory images: reading snapshots; keeping the session's", "session", id, "err", err)
			return
		}
		for _, r := range recs {
			if r.Memory {
				keep[turnKey(r)] = true
			}
		}
	}
	h.deps.mem.gc(keep)
}

// imageBytes is the size of the memory images of the session's
// snapshots, as recorded; the disk limit counts it (totalAdmit).
func (s *session) imageBytes() int64 {
	recs, err := s.deps.ledger.Snapshots(s.id)
	if err != nil {
		return 0
	}
	var n int64
	for _, r := range recs {
		n += r.MemoryBytes
	}
	return n
}
