package embedded

import (
	"context"

	"github.com/turnbox/turnbox/snapshot"
)

// ZFS volumes are mounts of their own, and two of the backend's operations
// mount a different dataset at a volume's path: a rollback (clone-and-swap,
// which keeps the newer snapshots) and the destruction of a session its
// forks were cloned from (their clones are promoted, which remounts them).
// A sandbox with its own mount namespace keeps the mount it started with:
// gVisor never sees host mount changes, and runc's copy of a private host
// mount receives no propagation. Such sandboxes are restarted around those
// operations. The none runtime's commands are host processes and see the
// new mount; btrfs and localdisk swap directories, not mounts.

// rollbackRestartsSandbox reports whether sandboxes must be restarted
// around a rollback or the promotion of a fork's clone.
func (h *Host) rollbackRestartsSandbox() bool {
	ms, ok := h.storage.(snapshot.MountSwapper)
	return ok && ms.SwapsMounts() && h.runtime.Kind() != string(ContainerRuntimeNone)
}

// stopForkSandboxes stops the sandboxes of the sessions forked from
// session id before its volume is destroyed: the backend promotes their
// clones, and a dataset still mounted in a sandbox's namespace is busy
// (zfs-fuse then leaves the fork unmounted). A stopped sandbox starts
// again on the session's next tool call; a command running in a fork at
// that moment is killed.
func (h *Host) stopForkSandboxes(ctx context.Context, id string) {
	if !h.rollbackRestartsSandbox() {
		return
	}
	h.mu.Lock()
	var forks []*session
	for _, o := range h.sessions {
		if o.rec.ParentSession == id {
			forks = append(forks, o)
		}
	}
	h.mu.Unlock()
	for _, f := range forks {
		if err := f.stopSandbox(ctx); err != nil {
			h.log.Warn("stopping a fork's sandbox before its parent's volume is destroyed", "session", f.id, "parent", id, "err", err)
		}
	}
}
