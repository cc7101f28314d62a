package embedded

import (
	"context"
	"fmt"
	"strconv"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/snapshot"
)

// Resource limits. The host's limits (Config.Limits, Config.DiskQuotaBytes,
// with the Default* constants for zero fields) are every session's
// defaults and ceilings: a SessionConfig.Limits field lowers its own limit
// and is refused above the host's. A session's limits are kept in its
// config in the ledger, so they survive a restart; a fork takes the
// limits of the config it is created with, and its parent's disk quota
// unless that config sets one.

// setDefaultLimits resolves the host's disk limit (which depends on the
// backend) and reports the host's limits in Capabilities.
func (h *Host) setDefaultLimits() {
	switch {
	case h.cfg.DiskQuotaBytes < 0:
		h.cfg.DiskQuotaBytes = 0
	case h.cfg.DiskQuotaBytes == 0 && quotaEnforced(h.storage):
		h.cfg.DiskQuotaBytes = DefaultDiskBytes
	}
	h.caps.Limits = limitsInfo(h.cfg.Limits, h.cfg.DiskQuotaBytes)
	h.caps.LimitsEnforced = h.caps.Isolation != environment.IsolationNone
}

// limitsInfo is the environment form of sandbox limits and a disk quota.
func limitsInfo(l container.Limits, disk int64) environment.Limits {
	return environment.Limits{MemoryBytes: l.MemoryBytes, CPUs: l.CPUs, Pids: l.Pids, DiskBytes: disk}
}

// checkLimits refuses a session's limits that are negative or above the
// host's.
func (h *Host) checkLimits(l environment.Limits) error {
	if err := l.Validate(); err != nil {
		return err
	}
	host := h.caps.Limits
	above := func(what string, v, max float64) error {
		if v > 0 && max > 0 && v > max {
			return fmt.Errorf("%w: %s limit %s is above the host's %s", environment.ErrInvalidArgument, what,
				strconv.FormatFloat(v, 'f', -1, 64), strconv.FormatFloat(max, 'f', -1, 64))
		}
		return nil
	}
	for _, err := range []error{
		above("memory", float64(l.MemoryBytes), float64(host.MemoryBytes)),
		above("CPU", l.CPUs, host.CPUs),
		above("pids", float64(l.Pids), float64(host.Pids)),
		above("disk", float64(l.DiskBytes), float64(host.DiskBytes)),
	} {
		if err != nil {
			return err
		}
	}
	if l.DiskBytes > 0 && quotaer(h.storage) == nil {
		return fmt.Errorf("%w: the %s storage backend cannot keep a disk limit", environment.ErrCapabilityNotSupported, h.storage.Kind())
	}
	return nil
}

// limits is the session's sandbox limits: its config's where set and
// below the host's (which a restart may have lowered), else the host's.
func (s *session) limits() container.Limits {
	l, own := s.deps.limits, s.cfg.Limits
	return container.Limits{
		MemoryBytes: lower(l.MemoryBytes, own.MemoryBytes),
		CPUs:        lower(l.CPUs, own.CPUs),
		Pids:        lower(l.Pids, own.Pids),
	}
}

// lower is the smaller of a host limit and a session's (0: unset or
// unlimited).
func lower[T int64 | float64](host, own T) T {
	if own > 0 && (host == 0 || own < host) {
		return own
	}
	return host
}

// Disk limits count snapshots. The kernel quota (or the host's check on
// localdisk, see quota.go) bounds the live tree; what snapshots pin is
// counted by the backend's snapshot.TotalUsager, checked before every
// snapshot: a session whose tree and snapshots together take more than
// its disk limit cannot take another snapshot (TurnComplete,
// CreateSnapshot and tool calls that ask for one fail with
// ErrLimitExceeded) until it is back under (deleting files frees what no
// snapshot pins; retention pruning frees old snapshots; Rollback and
// tool calls still work). A snapshot pins nothing when it is taken (it
// shares every block with the tree); data becomes pinned as the tree
// changes after it, by at most the tree's own quota. So a session holds
// at most about twice its limit, and other sessions are not affected.
// Where the backend's quota itself counts what snapshots pin
// (snapshot.PinCharger: btrfs with simple quotas) the kernel holds the
// whole session to its limit and no check is made: a snapshot takes no
// space, and writes fail at the limit until snapshots are deleted.

// totalAdmit measures the session's tree and snapshots (with their
// memory images, which live beside the backend) before a snapshot and
// refuses it when they take more than the session's disk limit.
// Called with turnMu held.
func (s *session) totalAdmit(ctx context.Context) error {
	if pc, ok := s.deps.storage.(snapshot.PinCharger); ok && pc.QuotaChargesPins() {
		return nil
	}
	tu, ok := s.deps.storage.(snapshot.TotalUsager)
	s.mu.Lock()
	limit := s.quota.limit
	s.mu.Unlock()
	if !ok || limit <= 0 {
		return nil
	}
	used, err := tu.TotalUsage(ctx, s.volume)
	if err != nil {
		return fmt.Errorf("embedded: measuring the disk usage of %s: %w", s.id, err)
	}
	used += s.imageBytes()
	if used > limit {
		s.deps.metrics.quotaExceeded.Inc()
		return s.overTotalError(used, limit)
	}
	return nil
}

// overTotalError is the error of a call refused because the session's
// tree and snapshots take more than its disk limit.
func (s *session) overTotalError(used, limit int64) error {
	return fmt.Errorf("%w: session %s: its workspace and snapshots (with their memory images) take %d bytes, over its disk quota of %d; delete files, or snapshots (DeleteSnapshot) to free what they pin",
		environment.ErrLimitExceeded, s.id, used, limit)
}
