package zfs

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// fuseSuperMagic is statfs's f_type for FUSE filesystems (zfs-fuse).
const fuseSuperMagic = 0x65735546

// rootAttr returns "mode:uid:gid:mtime_ns" of dir if dir is on FUSE
// (zfs-fuse), else "".
//
// zfs-fuse 0.7 keeps the root directory's in-memory inode across an
// in-place rollback: files and entries are rolled back, but stat of the
// root keeps showing the pre-rollback mode and times until the daemon
// happens to reload it. The backend records the root's attributes in each
// snapshot taken on zfs-fuse and re-applies them after an in-place
// rollback (fixRootAttr). Kernel OpenZFS re-reads every inode on rollback
// and never needs this.
func rootAttr(dir string) string {
	var fs unix.Statfs_t
	if unix.Statfs(dir, &fs) != nil || fs.Type != fuseSuperMagic {
		return ""
	}
	var st unix.Stat_t
	if unix.Lstat(dir, &st) != nil {
		return ""
	}
	return fmt.Sprintf("%o:%d:%d:%d", st.Mode&0o7777, st.Uid, st.Gid, st.Mtim.Nano())
}

// fixRootAttr re-applies attributes recorded by rootAttr to dir where
// they differ.
func fixRootAttr(dir, attr string) error {
	var mode, uid, gid uint32
	var mtime int64
	if _, err := fmt.Sscanf(attr, "%o:%d:%d:%d", &mode, &uid, &gid, &mtime); err != nil {
		return nil // not ours; ignore
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return err
	}
	if st.Uid != uid || st.Gid != gid {
		if err := unix.Lchown(dir, int(uid), int(gid)); err != nil {
			return fmt.Errorf("restoring the root's owner: %w", err)
		}
	}
	if st.Mode&0o7777 != mode {
		if err := unix.Chmod(dir, mode); err != nil {
			return fmt.Errorf("restoring the root's mode: %w", err)
		}
	}
	if st.Mtim.Nano() != mtime {
		ts := []unix.Timespec{st.Atim, unix.NsecToTimespec(mtime)}
		if err := unix.UtimesNano(dir, ts); err != nil {
			return fmt.Errorf("restoring the root's mtime: %w", err)
		}
	}
	return nil
}
