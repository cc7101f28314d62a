//go:build cgo

package btrfs

/*
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
*/
import "C"

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/snapshot"
)

// Quotas are btrfs quota groups (qgroups). Every subvolume has a level-0
// qgroup (0/<subvolume id>) once quotas are enabled on the filesystem; a
// volume's quota is the max_rfer limit of its workspace subvolume's
// qgroup, so the kernel refuses writes that would make the subvolume
// reference more than the limit (EDQUOT). Snapshots are other subvolumes
// with their own qgroups and do not count.
//
// Quotas are enabled on the whole filesystem (BTRFS_IOC_QUOTA_CTL) by the
// first SetQuota with a limit, and stay enabled: full qgroup accounting
// costs work at every transaction commit (back-reference walks of changed
// extents) and makes deleting large subvolumes slower, so a filesystem
// without quotas pays nothing. Simple quotas (Linux 6.7+) are cheaper but
// charge shared extents to the subvolume that first wrote them, so a
// rollback's fresh subvolume would start at zero whatever it holds; they
// are not used.

var _ snapshot.Quotaer = (*Backend)(nil)

// clearLimit is the kernel's value for "remove this limit".
const clearLimit = ^uint64(0)

// SetQuota limits volume's workspace subvolume to limitBytes of referenced
// data (0 removes the limit). The first limit enables quotas on the
// filesystem and waits for the kernel's initial rescan. The limit follows
// the volume across Rollback (the new subvolume gets it before it
// replaces the old one); clones start without one. (The kernel copies a
// subvolume's limit into its snapshots; on read-only snapshots it has no
// effect, and the backend overrides it on the writable ones it makes.)
func (b *Backend) SetQuota(ctx context.Context, volume string, limitBytes int64) error {
	if err := snapshot.ValidateQuota(limitBytes); err != nil {
		return err
	}
	if err := b.begin(ctx, volume); err != nil {
		return err
	}
	defer b.locks.lock(volume)()
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
	if err := setQgroupLimit(b.root, info.id, lim); err != nil {
		return fmt.Errorf("btrfs: quota of %s: %w", volume, mapErr(err))
	}
	return nil
}

// Quota reports volume's limit and the referenced bytes of its workspace
// subvolume, as the kernel's qgroup accounting knows them: the numbers
// are updated at each transaction commit (every Snapshot, and every 30 s
// by default), so they lag recent writes. Without quotas on the
// filesystem both are 0.
func (b *Backend) Quota(ctx context.Context, volume string) (snapshot.Quota, error) {
	if err := b.begin(ctx, volume); err != nil {
		return snapshot.Quota{}, err
	}
	info, err := getSubvolInfo(b.volumePath(volume))
	if err != nil {
		return snapshot.Quota{}, fmt.Errorf("btrfs: quota of %s: %w", volume, mapErr(err))
	}
	var q snapshot.Quota
	if !b.quotasOn() {
		return q, nil
	}
	qi, err := readQgroup(b.root, info.id)
	if err != nil {
		return snapshot.Quota{}, fmt.Errorf("btrfs: quota of %s: %w", volume, mapErr(err))
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

// quotasOn reports whether quotas are enabled on the filesystem, checking
// the kernel once and remembering a yes.
func (b *Backend) quotasOn() bool {
	if b.quotas.Load() {
		return true
	}
	on, err := quotasEnabled(b.root)
	if err == nil && on {
		b.quotas.Store(true)
	}
	return on
}

// enableQuotas turns quotas on (once) and waits for the rescan that
// computes every existing subvolume's usage.
func (b *Backend) enableQuotas() error {
	b.quotaMu.Lock()
	defer b.quotaMu.Unlock()
	if b.quotasOn() {
		return nil
	}
	if err := quotaCtl(b.root, C.BTRFS_QUOTA_CTL_ENABLE); err != nil {
		return err
	}
	if err := rescanWait(b.root); err != nil {
		return err
	}
	b.quotas.Store(true)
	return nil
}

// copyLimit gives the subvolume at dst the referenced-bytes limit of the
// subvolume at src, or none if src has none. Used by Rollback: the kernel
// gives a new snapshot its source's limit, which for a rollback is the
// limit the volume had when the snapshot was taken, not the current one.
func (b *Backend) copyLimit(src, dst string) error {
	if !b.quotasOn() {
		return nil
	}
	info, err := getSubvolInfo(src)
	if err != nil {
		return err
	}
	qi, err := readQgroup(b.root, info.id)
	if err != nil {
		return err
	}
	lim := clearLimit
	if qi.limited {
		lim = qi.maxRfer
	}
	dinfo, err := getSubvolInfo(dst)
	if err != nil {
		return err
	}
	return setQgroupLimit(b.root, dinfo.id, lim)
}

// clearInheritedLimit removes the limit the kernel copied into a clone
// from its source snapshot (which has the source volume's limit at the
// time of the snapshot): clones start without a quota.
func (b *Backend) clearInheritedLimit(dst string) error {
	if !b.quotasOn() {
		return nil
	}
	info, err := getSubvolInfo(dst)
	if err != nil {
		return err
	}
	return setQgroupLimit(b.root, info.id, clearLimit)
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

func ioctl(path string, req uintptr, arg unsafe.Pointer, what string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); errno != 0 {
		return &os.PathError{Op: what, Path: path, Err: errno}
	}
	return nil
}

// quotaCtl runs BTRFS_IOC_QUOTA_CTL with cmd on the filesystem holding
// path.
func quotaCtl(path string, cmd C.__u64) error {
	var args C.struct_btrfs_ioctl_quota_ctl_args
	args.cmd = cmd
	return ioctl(path, uintptr(C.BTRFS_IOC_QUOTA_CTL), unsafe.Pointer(&args), "btrfs quota enable")
}

// rescanWait waits for a running quota rescan to finish.
func rescanWait(path string) error {
	return ioctl(path, uintptr(C.BTRFS_IOC_QUOTA_RESCAN_WAIT), nil, "btrfs quota rescan wait")
}

// setQgroupLimit sets the max_rfer limit of qgroup 0/id; clearLimit
// removes it. The ioctl goes through fsPath, a directory outside the
// subvolume: the kernel starts its transaction on the descriptor's
// subvolume and charges that subvolume's qgroup for it, which fails with
// EDQUOT when that qgroup is over its limit, exactly when a limit must
// be raised or removed.
func setQgroupLimit(fsPath string, id uint64, maxRfer uint64) error {
	var args C.struct_btrfs_ioctl_qgroup_limit_args
	args.qgroupid = C.__u64(id)
	args.lim.flags = C.BTRFS_QGROUP_LIMIT_MAX_RFER
	args.lim.max_rfer = C.__u64(maxRfer)
	return ioctl(fsPath, uintptr(C.BTRFS_IOC_QGROUP_LIMIT), unsafe.Pointer(&args), "btrfs qgroup limit")
}

// qgroup is what the quota tree says about one level-0 qgroup.
type qgroup struct {
	rfer, excl uint64
	limited    bool // a max_rfer limit is set
	maxRfer    uint64
}

// readQgroup reads the info and limit items of qgroup 0/id from the quota
// tree (BTRFS_IOC_TREE_SEARCH). A qgroup with no items yet (a subvolume
// made in the running transaction) reads as zeros.
func readQgroup(fsPath string, id uint64) (qgroup, error) {
	var q qgroup
	err := searchQuotaTree(fsPath, C.BTRFS_QGROUP_INFO_KEY, id, func(item []byte) {
		// generation, rfer, rfer_cmpr, excl, excl_cmpr (__le64 each)
		if len(item) >= 40 {
			q.rfer = binary.LittleEndian.Uint64(item[8:])
			q.excl = binary.LittleEndian.Uint64(item[24:])
		}
	})
	if err != nil {
		return q, err
	}
	err = searchQuotaTree(fsPath, C.BTRFS_QGROUP_LIMIT_KEY, id, func(item []byte) {
		// flags, max_rfer, max_excl, rsv_rfer, rsv_excl
		if len(item) >= 16 {
			flags := binary.LittleEndian.Uint64(item[0:])
			if flags&C.BTRFS_QGROUP_LIMIT_MAX_RFER != 0 {
				q.limited = true
				q.maxRfer = binary.LittleEndian.Uint64(item[8:])
			}
		}
	})
	return q, err
}

// quotasEnabled reports whether the filesystem holding path has a quota
// tree with a status item (quotas on).
func quotasEnabled(path string) (bool, error) {
	found := false
	err := searchQuotaTree(path, C.BTRFS_QGROUP_STATUS_KEY, 0, func([]byte) { found = true })
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	return found, err
}

// searchQuotaTree calls fn with the item of the quota tree whose key is
// exactly (0, typ, off), if there is one. (The kernel's search bounds are
// whole keys compared in order, so only an exact key is a safe range.)
func searchQuotaTree(fsPath string, typ uint32, off uint64, fn func(item []byte)) error {
	var args C.struct_btrfs_ioctl_search_args
	args.key.tree_id = C.BTRFS_QUOTA_TREE_OBJECTID
	args.key.min_objectid = 0
	args.key.max_objectid = 0
	args.key.min_type = C.__u32(typ)
	args.key.max_type = C.__u32(typ)
	args.key.min_offset = C.__u64(off)
	args.key.max_offset = C.__u64(off)
	args.key.min_transid = 0
	args.key.max_transid = ^C.__u64(0)
	args.key.nr_items = 1
	if err := ioctl(fsPath, uintptr(C.BTRFS_IOC_TREE_SEARCH), unsafe.Pointer(&args), "btrfs tree search"); err != nil {
		return err
	}
	if args.key.nr_items == 0 {
		return nil
	}
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&args.buf[0])), len(args.buf))
	var h C.struct_btrfs_ioctl_search_header
	hdr := int(unsafe.Sizeof(h))
	h = *(*C.struct_btrfs_ioctl_search_header)(unsafe.Pointer(&buf[0]))
	if uint32(h._type) != typ || uint64(h.offset) != off || hdr+int(h.len) > len(buf) {
		return nil
	}
	fn(buf[hdr : hdr+int(h.len)])
	return nil
}

var _ snapshot.TotalUsager = (*Backend)(nil)

// TotalUsage reports the referenced bytes of volume's workspace
// subvolume plus each snapshot's exclusive bytes, as of the last
// transaction commit (every Snapshot commits one; it does not commit, so
// that a check before each snapshot costs no extra flush). Without
// quotas on the filesystem it is 0. It undercounts data that only two or more
// snapshots share (no snapshot holds it exclusively); a level-1 qgroup
// holding the volume's subvolumes would count it.
func (b *Backend) TotalUsage(ctx context.Context, volume string) (int64, error) {
	return snapshot.SumUsage(ctx, b, volume)
}
