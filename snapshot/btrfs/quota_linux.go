//go:build cgo

package btrfs

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/snapshot"
)

// Quotas are btrfs quota groups (qgroups). Every subvolume has a level-0
// qgroup (0/<subvolume id>) once quotas are enabled on the filesystem.
// Quotas are enabled on the whole filesystem (BTRFS_IOC_QUOTA_CTL) by the
// first SetQuota with a limit, and stay enabled. Which kind decides what a
// volume's quota is:
//
//   - Simple quotas (Linux 6.7+; what SetQuota enables): the kernel charges
//     each extent to the subvolume that wrote it, for as long as the extent
//     exists anywhere, at no cost beyond the write itself. A volume's quota
//     is a level-1 qgroup (1/<id of its first workspace subvolume>) holding
//     every workspace subvolume the volume has had (Rollback adds the new
//     tree before it takes Path). Its count is everything the volume's
//     workspaces wrote that still exists: the live tree plus what its
//     snapshots pin. The kernel refuses writes past its limit (EDQUOT), so
//     a session cannot grow by its quota every turn; destroying snapshots
//     frees quota, rolling back alone does not. Data a clone shares with
//     its source stays charged to the source. Snapshots write nothing, so
//     their own qgroups stay empty and Snapshot.SizeBytes is 0.
//   - Full qgroups (a filesystem where someone enabled them, or a kernel
//     without simple quotas): a volume's quota is the max_rfer limit of its
//     workspace subvolume's level-0 qgroup (what the live tree references),
//     and snapshots report their exclusive bytes. Full accounting walks the
//     back references of every changed extent at each transaction commit:
//     measured here it made Snapshot ~4x slower (1,000 files: 7.5 ms
//     against 1.9 ms) and Rollback with a background delete ~10x slower.

var (
	_ snapshot.Quotaer     = (*Backend)(nil)
	_ snapshot.PinCharger  = (*Backend)(nil)
	_ snapshot.TotalUsager = (*Backend)(nil)
)

// SetQuota limits volume to limitBytes (0 removes the limit): with simple
// quotas, everything its workspaces wrote that still exists (its tree and
// what its snapshots pin); with full qgroups, what its workspace
// subvolume references. The first limit enables quotas on the filesystem
// (simple ones where the kernel has them; full ones, after the kernel's
// initial rescan, where it does not). The limit follows the volume across
// Rollback; clones start without one.
func (b *Backend) SetQuota(ctx context.Context, volume string, limitBytes int64) error {
	if err := snapshot.ValidateQuota(limitBytes); err != nil {
		return err
	}
	if err := b.begin(ctx, volume); err != nil {
		return err
	}
	defer b.locks.Lock(volume)()
	path := b.volumePath(volume)
	if _, err := os.Lstat(path); err != nil {
		return fmt.Errorf("btrfs: quota of %s: %w", volume, mapErr(err))
	}
	if limitBytes == 0 && !b.quotasOn() {
		return nil
	}
	if err := b.enableQuotas(); err != nil {
		return fmt.Errorf("btrfs: quota of %s: %w", volume, mapErr(err))
	}
	lim := uint64(limitBytes)
	if limitBytes == 0 {
		lim = clearLimit
	}
	info, err := getSubvolInfo(path)
	if err != nil {
		return fmt.Errorf("btrfs: quota of %s: %w", volume, mapErr(err))
	}
	target := info.id
	if b.simple.Load() {
		if target, err = b.volumeGroup(info.id, limitBytes > 0); err != nil || target == 0 {
			return wrapQuotaErr(volume, err)
		}
	}
	return wrapQuotaErr(volume, setQgroupLimit(b.root, target, lim))
}

// wrapQuotaErr is err (nil stays nil) as SetQuota and Quota report it.
func wrapQuotaErr(volume string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("btrfs: quota of %s: %w", volume, mapErr(err))
}

// Quota reports volume's limit and usage as the kernel's qgroup
// accounting knows them (see SetQuota for what is counted). Full qgroups
// update the numbers at each transaction commit (every Snapshot, and
// every 30 s by default), so they lag recent writes; simple quotas count
// a write once it is allocated. Without quotas on the filesystem both
// are 0.
func (b *Backend) Quota(ctx context.Context, volume string) (snapshot.Quota, error) {
	if err := b.begin(ctx, volume); err != nil {
		return snapshot.Quota{}, err
	}
	info, err := getSubvolInfo(b.volumePath(volume))
	if err != nil {
		return snapshot.Quota{}, wrapQuotaErr(volume, err)
	}
	var q snapshot.Quota
	if !b.quotasOn() {
		return q, nil
	}
	target := info.id
	if b.simple.Load() {
		group, err := b.volumeGroup(info.id, false)
		if err != nil {
			return snapshot.Quota{}, wrapQuotaErr(volume, err)
		}
		if group != 0 {
			target = group
		}
	}
	qi, err := readQgroup(b.root, target)
	if err != nil {
		return snapshot.Quota{}, wrapQuotaErr(volume, err)
	}
	q.UsedBytes = int64(qi.rfer)
	if qi.limited {
		q.LimitBytes = int64(qi.maxRfer)
	}
	return q, nil
}

// QuotaEnforced returns true: the kernel refuses writes past a qgroup
// limit with EDQUOT.
func (b *Backend) QuotaEnforced() bool { return true }

// QuotaChargesPins reports whether quotas are simple ones, which charge
// a volume for the data its snapshots pin (see SetQuota). Before the
// first SetQuota it reports what SetQuota would enable.
func (b *Backend) QuotaChargesPins() bool {
	if b.quotasOn() {
		return b.simple.Load()
	}
	return simpleQuotasSupported()
}

// TotalUsage reports what volume and its snapshots take together. With
// simple quotas it is the volume's quota count (exact: one read). With
// full qgroups it is the workspace's referenced bytes plus each
// snapshot's exclusive bytes, as of the last transaction commit; it
// undercounts data that only two or more snapshots share. Without quotas
// on the filesystem it is 0.
func (b *Backend) TotalUsage(ctx context.Context, volume string) (int64, error) {
	if b.simple.Load() {
		q, err := b.Quota(ctx, volume)
		return q.UsedBytes, err
	}
	return snapshot.SumUsage(ctx, b, volume)
}

// quotasOn reports whether quotas are enabled on the filesystem, checking
// the kernel once and remembering a yes (and which kind).
func (b *Backend) quotasOn() bool {
	if b.quotas.Load() {
		return true
	}
	on, simple, err := quotaStatus(b.root)
	if err == nil && on {
		b.simple.Store(simple)
		b.quotas.Store(true)
	}
	return on
}

// enableQuotas turns quotas on (once): simple ones where the kernel has
// them, else full ones, waiting for the rescan that computes every
// existing subvolume's usage. (Simple quotas count only what is written
// after they are enabled.)
func (b *Backend) enableQuotas() error {
	b.quotaMu.Lock()
	defer b.quotaMu.Unlock()
	if b.quotasOn() {
		return nil
	}
	err := quotaCtl(b.root, quotaCtlEnableSimple)
	if err == nil {
		// Simple quotas skip extents from before the generation that
		// enabled them, when charged and when freed alike: commit, so that
		// no write after this call shares that generation.
		if err := syncFS(b.root); err != nil {
			return err
		}
	} else if errors.Is(err, unix.EINVAL) {
		if err := quotaCtl(b.root, quotaCtlEnableFull); err != nil {
			return err
		}
		if err := rescanWait(b.root); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if !b.quotasOn() {
		return errors.New("btrfs: quotas did not turn on")
	}
	return nil
}

// volumeGroup returns the level-1 qgroup holding the workspace subvolume
// id (simple quotas), or 0 if it has none and create is false. With
// create, a volume without one gets 1/id, with id in it.
func (b *Backend) volumeGroup(id uint64, create bool) (uint64, error) {
	group, err := parentGroup(b.root, id)
	if err != nil || group != 0 || !create {
		return group, err
	}
	group = level1 | id
	if err := createQgroup(b.root, group); err != nil && !errors.Is(err, unix.EEXIST) {
		return 0, err
	}
	if err := assignQgroup(b.root, id, group); err != nil && !errors.Is(err, unix.EEXIST) {
		return 0, err
	}
	return group, nil
}

// carryQuota gives the subvolume at dst, about to replace the volume's
// workspace at src, the volume's quota, so that there is no moment
// without it: with simple quotas dst joins src's level-1 qgroup; with
// full qgroups it gets src's max_rfer limit (or none). The kernel gives a
// new snapshot its source's limit, which for a rollback is the limit the
// volume had when the snapshot was taken, not the current one.
func (b *Backend) carryQuota(src, dst string) error {
	if !b.quotasOn() {
		return nil
	}
	info, err := getSubvolInfo(src)
	if err != nil {
		return err
	}
	dinfo, err := getSubvolInfo(dst)
	if err != nil {
		return err
	}
	if b.simple.Load() {
		group, err := parentGroup(b.root, info.id)
		if err != nil || group == 0 {
			return err
		}
		return assignQgroup(b.root, dinfo.id, group)
	}
	qi, err := readQgroup(b.root, info.id)
	if err != nil {
		return err
	}
	lim := clearLimit
	if qi.limited {
		lim = qi.maxRfer
	}
	return setQgroupLimit(b.root, dinfo.id, lim)
}

// clearInheritedLimit removes the limit the kernel copied into a clone
// from its source snapshot (full qgroups: the source volume's limit at
// the time of the snapshot): clones start without a quota. Simple quotas
// keep limits on level-1 qgroups, which clones do not join.
func (b *Backend) clearInheritedLimit(dst string) error {
	if !b.quotasOn() || b.simple.Load() {
		return nil
	}
	info, err := getSubvolInfo(dst)
	if err != nil {
		return err
	}
	return setQgroupLimit(b.root, info.id, clearLimit)
}

// groupOf returns the level-1 qgroup of the volume whose workspace is
// subvolume id (simple quotas), or 0.
func (b *Backend) groupOf(id uint64) uint64 {
	if !b.quotasOn() || !b.simple.Load() {
		return 0
	}
	group, _ := parentGroup(b.root, id)
	return group
}

// dropGroup removes the level-1 qgroup (0: none) of a destroyed volume
// once its subvolumes are gone: the relations to its members, then the
// qgroup. Best effort: a qgroup left behind costs a few bytes of the
// quota tree and nothing else.
func (b *Backend) dropGroup(group uint64) {
	if group == 0 {
		return
	}
	for _, child := range childGroups(b.root, group) {
		_ = unassignQgroup(b.root, child, group)
	}
	_ = deleteQgroup(b.root, group)
}

// sizes returns the referenced and exclusive bytes of subvolume id's
// qgroup, or zeros when quotas are off.
func (b *Backend) sizes(id uint64) (rfer, excl int64) {
	if !b.quotasOn() {
		return 0, 0
	}
	qi, err := readQgroup(b.root, id)
	if err != nil {
		return 0, 0
	}
	return int64(qi.rfer), int64(qi.excl)
}

// snapSize is the SizeBytes of the snapshot subvolume id: its exclusive
// bytes under full qgroups, 0 under simple quotas or none.
func (b *Backend) snapSize(id uint64) int64 {
	if b.simple.Load() {
		return 0
	}
	_, excl := b.sizes(id)
	return excl
}
