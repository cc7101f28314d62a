//go:build cgo

package btrfs

/*
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The ioctls below are the ones github.com/containerd/btrfs/v2 does not
// offer, or offers at a cost this package cannot pay on a hot path: its
// SubvolDelete walks the whole tree looking for nested subvolumes before
// deleting (tens of milliseconds on a 10,000-file workspace), and its
// SubvolInfo searches the whole root tree and does not return the creation
// time.

// destroySubvol deletes the subvolume at path with one
// BTRFS_IOC_SNAP_DESTROY on its parent directory. It does not recurse: a
// subvolume holding nested subvolumes fails with ENOTEMPTY. The kernel
// unlinks the subvolume at once and frees its extents in the background
// (the cleaner thread); no transaction commit is waited for.
func destroySubvol(path string) error {
	dir, name := filepath.Split(filepath.Clean(path))
	var args C.struct_btrfs_ioctl_vol_args
	if len(name) == 0 || len(name) > C.BTRFS_PATH_NAME_MAX {
		return fmt.Errorf("destroy subvolume %s: bad name", path)
	}
	for i := 0; i < len(name); i++ {
		args.name[i] = C.char(name[i])
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(C.BTRFS_IOC_SNAP_DESTROY), uintptr(unsafe.Pointer(&args))); errno != 0 {
		return &os.PathError{Op: "btrfs subvolume delete", Path: path, Err: errno}
	}
	return nil
}

// subvolInfo is what BTRFS_IOC_GET_SUBVOL_INFO tells about one subvolume.
type subvolInfo struct {
	// id is the subvolume's tree id. The kernel allocates ids above every
	// existing one, so among living subvolumes a higher id is newer.
	id uint64
	// created is the subvolume's otime, set by the kernel when the
	// snapshot was made. It comes from the coarse real-time clock
	// (current_time), so it can be up to one timer tick (4 ms at HZ=250)
	// earlier than a time.Now read just before the ioctl.
	created time.Time
}

// getSubvolInfo reads a subvolume's id and creation time
// (BTRFS_IOC_GET_SUBVOL_INFO, Linux 4.18+). path must be the subvolume's
// top directory.
func getSubvolInfo(path string) (subvolInfo, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return subvolInfo{}, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var args C.struct_btrfs_ioctl_get_subvol_info_args
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(C.BTRFS_IOC_GET_SUBVOL_INFO), uintptr(unsafe.Pointer(&args))); errno != 0 {
		return subvolInfo{}, &os.PathError{Op: "btrfs subvolume info", Path: path, Err: errno}
	}
	return subvolInfo{
		id:      uint64(args.treeid),
		created: time.Unix(int64(args.otime.sec), int64(args.otime.nsec)),
	}, nil
}

// syncFS commits the current btrfs transaction of the filesystem holding
// path (BTRFS_IOC_SYNC: flush delalloc, commit, wait for the superblock).
func syncFS(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(C.BTRFS_IOC_SYNC), 0); errno != 0 {
		return &os.PathError{Op: "btrfs filesystem sync", Path: path, Err: errno}
	}
	return nil
}

// isSubvolRoot reports whether fi is the top directory of a subvolume
// (btrfs gives every subvolume's root directory inode number 256).
func isSubvolRoot(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && fi.IsDir() && st.Ino == C.BTRFS_FIRST_FREE_OBJECTID
}

var errNotBtrfs = errors.New("not on a btrfs filesystem")

// checkBtrfs returns errNotBtrfs unless path is on btrfs.
func checkBtrfs(path string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	if uint32(st.Type) != unix.BTRFS_SUPER_MAGIC {
		return fmt.Errorf("%s: %w (filesystem magic %#x)", path, errNotBtrfs, uint32(st.Type))
	}
	return nil
}

// rootItemExists reports whether the root tree still holds the ROOT_ITEM
// of subvolume id (BTRFS_IOC_TREE_SEARCH). A deleted subvolume keeps its
// root item until the kernel's cleaner thread has freed all its blocks.
func rootItemExists(fsPath string, id uint64) (bool, error) {
	fd, err := unix.Open(fsPath, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, &os.PathError{Op: "open", Path: fsPath, Err: err}
	}
	defer unix.Close(fd)
	var args C.struct_btrfs_ioctl_search_args
	args.key.tree_id = C.BTRFS_ROOT_TREE_OBJECTID
	args.key.min_objectid = C.__u64(id)
	args.key.max_objectid = C.__u64(id)
	args.key.min_type = C.BTRFS_ROOT_ITEM_KEY
	args.key.max_type = C.BTRFS_ROOT_ITEM_KEY
	args.key.min_offset = 0
	args.key.max_offset = ^C.__u64(0)
	args.key.min_transid = 0
	args.key.max_transid = ^C.__u64(0)
	args.key.nr_items = 1
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(C.BTRFS_IOC_TREE_SEARCH), uintptr(unsafe.Pointer(&args))); errno != 0 {
		return false, &os.PathError{Op: "btrfs tree search", Path: fsPath, Err: errno}
	}
	return args.key.nr_items > 0, nil
}
