package embedded

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/turnbox/turnbox/embedded/ledger"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/snapshot"
)

// Disk quotas. A session's quota bounds what its workspace's live tree
// uses, set through the storage backend's snapshot.Quotaer, and what the
// tree and its snapshots use together, checked before each snapshot (see
// limits.go):
//
//   - btrfs and zfs enforce it in the kernel (qgroup limit, refquota): a
//     write past it fails with EDQUOT inside the sandbox and in the file
//     tools. write_file and edit_file then return an error wrapping
//     environment.ErrLimitExceeded (the file is unchanged: they write a
//     temporary file and rename it). A bash command that failed and whose
//     output carries EDQUOT's message ("Disk quota exceeded") returns its
//     ToolResponse, marked IsError with a notice, together with an error
//     wrapping ErrLimitExceeded. Deleting files works at the limit.
//   - localdisk only records it: the host measures the workspace (a walk
//     of the tree) after every bash, write_file and edit_file call. A bash
//     call that left the workspace over the quota returns as above; it is
//     not stopped while it runs, so it can overshoot. While over,
//     write_file and edit_file are refused up front, and so is a
//     write_file whose content would take the workspace over; bash still
//     runs (so files can be deleted) and every call re-measures.
//
// Rollback to a snapshot under the quota makes room again on every
// backend whose quota counts only the live tree; where it also counts
// what snapshots pin (btrfs with simple quotas, snapshot.PinCharger),
// deleting snapshots does (DeleteSnapshot). The quota follows the session
// across rollbacks. Forks get
// their parent's per-session quota, or the host's default.

// quotaState is a session's quota bookkeeping, guarded by session.mu.
type quotaState struct {
	limit   int64 // applied to the backend (0: none)
	used    int64 // at the last measure
	over    bool  // the last measure found the workspace over limit
	checked bool  // used and over are known (localdisk)
}

// quotaRemedy says how to make room under a session's disk quota on b.
func quotaRemedy(b snapshot.Backend) string {
	if pc, ok := b.(snapshot.PinCharger); ok && pc.QuotaChargesPins() {
		return "the quota counts what the session's snapshots hold too: delete snapshots (DeleteSnapshot) or files that no snapshot holds, or roll back"
	}
	return "delete files or roll back to an earlier snapshot"
}

// quotaer returns b's Quotaer, or nil.
func quotaer(b snapshot.Backend) snapshot.Quotaer {
	q, _ := b.(snapshot.Quotaer)
	return q
}

// wantQuota is the quota a session's record asks for: its own, else the
// host's default.
func (s *session) wantQuota(rec ledger.SessionRecord) int64 {
	if rec.DiskQuotaBytes != nil {
		return *rec.DiskQuotaBytes
	}
	return s.deps.diskQuota
}

// applyQuota gives the backend the session's quota (when it differs from
// what was applied last, or force) and records it in the ledger.
func (s *session) applyQuota(ctx context.Context, force bool) error {
	rec, err := s.deps.ledger.Session(s.id)
	if err != nil {
		return fmt.Errorf("embedded: reading session %s: %w", s.id, err)
	}
	want := s.wantQuota(rec)
	if want == rec.AppliedDiskQuota && !force {
		s.mu.Lock()
		s.quota.limit = want
		s.mu.Unlock()
		return nil
	}
	q := quotaer(s.deps.storage)
	if q == nil {
		if want == 0 {
			return nil
		}
		return fmt.Errorf("%w: the %s storage backend cannot keep a disk quota", environment.ErrCapabilityNotSupported, s.deps.storage.Kind())
	}
	if err := q.SetQuota(ctx, s.volume, want); err != nil {
		return fmt.Errorf("embedded: setting the disk quota of %s: %w", s.id, err)
	}
	if err := s.deps.ledger.UpdateSession(s.id, func(r *ledger.SessionRecord) error {
		r.AppliedDiskQuota = want
		return nil
	}); err != nil {
		return fmt.Errorf("embedded: recording the disk quota of %s: %w", s.id, err)
	}
	s.mu.Lock()
	s.quota = quotaState{limit: want}
	s.mu.Unlock()
	return nil
}

// SetDiskQuota sets one session's disk quota in bytes (0: none),
// overriding Config.DiskQuotaBytes for it; the setting is kept in the
// ledger and survives restarts. A quota below the current usage is
// accepted: nothing is deleted, and writes that grow the workspace fail
// until it is back under. Errors: ErrSessionNotFound, ErrInvalidArgument
// (negative), ErrCapabilityNotSupported (a backend without quotas).
func (h *Host) SetDiskQuota(ctx context.Context, sessionID string, bytes int64) error {
	if bytes < 0 {
		return fmt.Errorf("%w: disk quota %d: want 0 (none) or a positive number of bytes", environment.ErrInvalidArgument, bytes)
	}
	s, err := h.lookup(sessionID)
	if err != nil {
		return err
	}
	if bytes > 0 && quotaer(h.storage) == nil {
		return fmt.Errorf("%w: the %s storage backend cannot keep a disk quota", environment.ErrCapabilityNotSupported, h.storage.Kind())
	}
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	if err := h.ledger.UpdateSession(s.id, func(r *ledger.SessionRecord) error {
		r.DiskQuotaBytes = &bytes
		return nil
	}); err != nil {
		return fmt.Errorf("embedded: recording the disk quota of %s: %w", s.id, err)
	}
	if err := s.applyQuota(ctx, true); err != nil {
		return err
	}
	h.log.Info("disk quota set", "session", s.id, "bytes", bytes)
	return nil
}

// quotaRecorded reports whether the session has a quota the host must
// enforce itself (the backend only records it).
func (s *session) quotaRecorded() (limit int64, ok bool) {
	s.mu.Lock()
	limit = s.quota.limit
	s.mu.Unlock()
	return limit, limit > 0 && !quotaEnforced(s.deps.storage)
}

// quotaEnforced reports whether b's kernel enforces quotas.
func quotaEnforced(b snapshot.Backend) bool {
	q := quotaer(b)
	return q != nil && q.QuotaEnforced()
}

// measure reads the workspace's usage and updates the session's quota
// state. Only for backends that record quotas.
func (s *session) measure(ctx context.Context) (snapshot.Quota, error) {
	q, err := quotaer(s.deps.storage).Quota(ctx, s.volume)
	if err != nil {
		return q, err
	}
	s.mu.Lock()
	s.quota.used, s.quota.over, s.quota.checked = q.UsedBytes, q.UsedBytes > s.quota.limit, true
	s.mu.Unlock()
	return q, nil
}

// overQuotaError is the error of a call refused or reported for the quota.
func (s *session) overQuotaError(used, limit int64) error {
	return fmt.Errorf("%w: session %s: the workspace is over its disk quota (%d of %d bytes used); %s",
		environment.ErrLimitExceeded, s.id, used, limit, quotaRemedy(s.deps.storage))
}

// quotaAdmit refuses a write_file or edit_file on a session over a quota
// the host enforces itself, and a write_file that would take it over.
func (s *session) quotaAdmit(ctx context.Context, params environment.ToolParams) error {
	var grow int64
	switch p := params.(type) {
	case environment.WriteFileParams:
		grow = int64(len(p.Content))
	case environment.EditFileParams:
		grow = max(int64(len(p.NewString)-len(p.OldString)), 0)
	default:
		return nil
	}
	limit, ok := s.quotaRecorded()
	if !ok {
		return nil
	}
	s.mu.Lock()
	used, over, checked := s.quota.used, s.quota.over, s.quota.checked
	s.mu.Unlock()
	if !checked {
		q, err := s.measure(ctx)
		if err != nil {
			return fmt.Errorf("embedded: measuring the workspace of %s: %w", s.id, err)
		}
		used, over = q.UsedBytes, q.UsedBytes > limit
	}
	if over || used+grow > limit {
		s.deps.metrics.quotaExceeded.Inc()
		if !over {
			return fmt.Errorf("%w: session %s: writing %d bytes would take the workspace over its disk quota (%d of %d bytes used); %s",
				environment.ErrLimitExceeded, s.id, grow, used, limit, quotaRemedy(s.deps.storage))
		}
		return s.overQuotaError(used, limit)
	}
	return nil
}

// quotaMessage matches strerror(EDQUOT) as C libraries, Go, Python and
// Node spell it.
var quotaMessage = regexp.MustCompile(`(?i)disk quota exceeded|quota exceeded|EDQUOT`)

// quotaAfter checks a finished write-capable call against the quota (see
// the comment at the top of this file) and turns a hit into an error
// wrapping ErrLimitExceeded, keeping the response for bash.
func (s *session) quotaAfter(ctx context.Context, params environment.ToolParams, resp *environment.ToolResponse, err error) (*environment.ToolResponse, error) {
	_, isBash := params.(environment.BashParams)
	switch params.(type) {
	case environment.BashParams, environment.WriteFileParams, environment.EditFileParams:
	default:
		return resp, err
	}
	s.mu.Lock()
	limit := s.quota.limit
	s.mu.Unlock()
	if limit <= 0 {
		return resp, err
	}
	if errors.Is(err, environment.ErrLimitExceeded) {
		s.deps.metrics.quotaExceeded.Inc()
	}
	if _, recorded := s.quotaRecorded(); recorded {
		if err != nil && !errors.Is(err, environment.ErrLimitExceeded) {
			return resp, err
		}
		s.mu.Lock()
		prev, wasOver, known := s.quota.used, s.quota.over, s.quota.checked
		s.mu.Unlock()
		q, merr := s.measure(context.WithoutCancel(ctx))
		if merr != nil {
			s.deps.log.Error("measuring the workspace for its quota", "session", s.id, "err", merr)
			return resp, err
		}
		// A call that left the workspace over, and grew it (or took it
		// over), fails; one that only read or deleted does not.
		if !q.Exceeded() || err != nil || (known && wasOver && q.UsedBytes <= prev) {
			return resp, err
		}
		s.deps.metrics.quotaExceeded.Inc()
		qerr := s.overQuotaError(q.UsedBytes, limit)
		if isBash && resp != nil {
			s.markOverQuota(resp, qerr)
			return resp, qerr
		}
		// A file tool's write was admitted on an estimate and went over.
		return resp, qerr
	}
	// The kernel enforces it: a file tool's EDQUOT is an error already
	// (say which limit); a bash command that failed on it says so in its
	// output.
	if errors.Is(err, environment.ErrLimitExceeded) && !isBash {
		return resp, fmt.Errorf("%w (the session's disk quota is %d bytes; %s)", err, limit, quotaRemedy(s.deps.storage))
	}
	if isBash && err == nil && resp != nil && resp.IsError && quotaMessage.MatchString(resp.Content) {
		s.deps.metrics.quotaExceeded.Inc()
		qerr := fmt.Errorf("%w: session %s: a write in the command hit the workspace's disk quota of %d bytes; %s",
			environment.ErrLimitExceeded, s.id, limit, quotaRemedy(s.deps.storage))
		s.markOverQuota(resp, qerr)
		return resp, qerr
	}
	return resp, err
}

// markOverQuota marks a response as failed by the quota, with a notice at
// the end of its content (within the output cap, like the truncation
// notice).
func (s *session) markOverQuota(resp *environment.ToolResponse, err error) {
	resp.IsError = true
	notice := "\n[turnbox: " + err.Error() + "]"
	if keep := s.outputCap() - len(notice); len(resp.Content) > keep {
		resp.Content = resp.Content[:max(keep, 0)]
		resp.Truncated = true
	}
	resp.Content += notice
}

// quotaAfterRollback re-measures a session whose quota the host enforces
// itself: a rollback changes the workspace's size.
func (s *session) quotaAfterRollback(ctx context.Context) {
	if _, ok := s.quotaRecorded(); !ok {
		return
	}
	if _, err := s.measure(ctx); err != nil {
		s.mu.Lock()
		s.quota.checked = false
		s.mu.Unlock()
	}
}
