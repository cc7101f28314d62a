//go:build cgo

package btrfs

/*
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
*/
import "C"

import (
	"encoding/binary"
	"errors"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The qgroup ioctls and quota tree reads behind quota_linux.go.

const (
	// quotaCtlEnableFull and quotaCtlEnableSimple are the
	// BTRFS_IOC_QUOTA_CTL commands enabling full qgroups and simple quotas
	// (BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA, Linux 6.7, newer than the
	// headers this builds against).
	quotaCtlEnableFull   = C.BTRFS_QUOTA_CTL_ENABLE
	quotaCtlEnableSimple = 4
	// statusFlagSimpleMode is BTRFS_QGROUP_STATUS_FLAG_SIMPLE_MODE.
	statusFlagSimpleMode = 1 << 3
	// level1 is the level part of a level-1 qgroup id (1/<n>).
	level1 = 1 << 48
	// clearLimit is the kernel's value for "remove this limit".
	clearLimit = ^uint64(0)
)

// simpleQuotasSupported reports whether the kernel has simple quotas.
func simpleQuotasSupported() bool {
	_, err := os.Stat("/sys/fs/btrfs/features/simple_quota")
	return err == nil
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
func quotaCtl(path string, cmd uint64) error {
	var args C.struct_btrfs_ioctl_quota_ctl_args
	args.cmd = C.__u64(cmd)
	return ioctl(path, uintptr(C.BTRFS_IOC_QUOTA_CTL), unsafe.Pointer(&args), "btrfs quota enable")
}

// rescanWait waits for a running quota rescan to finish.
func rescanWait(path string) error {
	return ioctl(path, uintptr(C.BTRFS_IOC_QUOTA_RESCAN_WAIT), nil, "btrfs quota rescan wait")
}

// setQgroupLimit sets the max_rfer limit of qgroup id (a level-0 id is
// the subvolume's); clearLimit removes it. The ioctl goes through fsPath,
// a directory outside the subvolume: the kernel starts its transaction on
// the descriptor's subvolume and charges that subvolume's qgroup for it,
// which fails with EDQUOT when that qgroup is over its limit, exactly when
// a limit must be raised or removed.
func setQgroupLimit(fsPath string, id uint64, maxRfer uint64) error {
	var args C.struct_btrfs_ioctl_qgroup_limit_args
	args.qgroupid = C.__u64(id)
	args.lim.flags = C.BTRFS_QGROUP_LIMIT_MAX_RFER
	args.lim.max_rfer = C.__u64(maxRfer)
	return ioctl(fsPath, uintptr(C.BTRFS_IOC_QGROUP_LIMIT), unsafe.Pointer(&args), "btrfs qgroup limit")
}

// createQgroup creates qgroup id; deleteQgroup deletes it.
func createQgroup(fsPath string, id uint64) error { return qgroupCreate(fsPath, id, 1) }
func deleteQgroup(fsPath string, id uint64) error { return qgroupCreate(fsPath, id, 0) }

func qgroupCreate(fsPath string, id uint64, create uint64) error {
	var args C.struct_btrfs_ioctl_qgroup_create_args
	args.create = C.__u64(create)
	args.qgroupid = C.__u64(id)
	return ioctl(fsPath, uintptr(C.BTRFS_IOC_QGROUP_CREATE), unsafe.Pointer(&args), "btrfs qgroup create")
}

// assignQgroup makes qgroup child a member of parent; unassignQgroup
// undoes it.
func assignQgroup(fsPath string, child, parent uint64) error {
	return qgroupAssign(fsPath, child, parent, 1)
}
func unassignQgroup(fsPath string, child, parent uint64) error {
	return qgroupAssign(fsPath, child, parent, 0)
}

func qgroupAssign(fsPath string, child, parent, assign uint64) error {
	var args C.struct_btrfs_ioctl_qgroup_assign_args
	args.assign = C.__u64(assign)
	args.src = C.__u64(child)
	args.dst = C.__u64(parent)
	return ioctl(fsPath, uintptr(C.BTRFS_IOC_QGROUP_ASSIGN), unsafe.Pointer(&args), "btrfs qgroup assign")
}

// qgroup is what the quota tree says about one qgroup.
type qgroup struct {
	rfer, excl uint64
	limited    bool // a max_rfer limit is set
	maxRfer    uint64
}

// readQgroup reads the info and limit items of qgroup id from the quota
// tree (BTRFS_IOC_TREE_SEARCH). A qgroup with no items yet (a subvolume
// made in the running transaction) reads as zeros.
func readQgroup(fsPath string, id uint64) (qgroup, error) {
	var q qgroup
	err := searchQuotaTree(fsPath, 0, C.BTRFS_QGROUP_INFO_KEY, id, id, func(_ uint64, item []byte) {
		// generation, rfer, rfer_cmpr, excl, excl_cmpr (__le64 each)
		if len(item) >= 40 {
			q.rfer = binary.LittleEndian.Uint64(item[8:])
			q.excl = binary.LittleEndian.Uint64(item[24:])
		}
	})
	if err != nil {
		return q, err
	}
	err = searchQuotaTree(fsPath, 0, C.BTRFS_QGROUP_LIMIT_KEY, id, id, func(_ uint64, item []byte) {
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

// quotaStatus reports whether the filesystem holding path has quotas on
// (a quota tree with a status item) and whether they are simple ones.
func quotaStatus(path string) (on, simple bool, err error) {
	err = searchQuotaTree(path, 0, C.BTRFS_QGROUP_STATUS_KEY, 0, 0, func(_ uint64, item []byte) {
		on = true
		// version, generation, flags, rescan (__le64 each)
		if len(item) >= 24 {
			simple = binary.LittleEndian.Uint64(item[16:])&statusFlagSimpleMode != 0
		}
	})
	if errors.Is(err, unix.ENOENT) {
		return false, false, nil
	}
	return on, simple, err
}

// parentGroup returns the first level-1 qgroup that qgroup id is a member
// of, or 0. (A relation is stored twice: (child, RELATION, parent) and
// (parent, RELATION, child).)
func parentGroup(fsPath string, id uint64) (uint64, error) {
	var parent uint64
	err := searchQuotaTree(fsPath, id, C.BTRFS_QGROUP_RELATION_KEY, level1, 2*level1-1, func(off uint64, _ []byte) {
		if parent == 0 {
			parent = off
		}
	})
	return parent, err
}

// childGroups returns the level-0 members of qgroup group.
func childGroups(fsPath string, group uint64) []uint64 {
	var kids []uint64
	_ = searchQuotaTree(fsPath, group, C.BTRFS_QGROUP_RELATION_KEY, 0, level1-1, func(off uint64, _ []byte) {
		kids = append(kids, off)
	})
	return kids
}

// searchQuotaTree calls fn with the offset and item of each quota tree
// item whose key is (objectid, typ, off) with minOff <= off <= maxOff.
// (The kernel's search bounds are whole keys compared in order; with
// objectid and type fixed, the range holds exactly those keys.)
func searchQuotaTree(fsPath string, objectid uint64, typ uint32, minOff, maxOff uint64, fn func(off uint64, item []byte)) error {
	var args C.struct_btrfs_ioctl_search_args
	args.key.tree_id = C.BTRFS_QUOTA_TREE_OBJECTID
	args.key.min_objectid = C.__u64(objectid)
	args.key.max_objectid = C.__u64(objectid)
	args.key.min_type = C.__u32(typ)
	args.key.max_type = C.__u32(typ)
	args.key.min_offset = C.__u64(minOff)
	args.key.max_offset = C.__u64(maxOff)
	args.key.min_transid = 0
	args.key.max_transid = ^C.__u64(0)
	args.key.nr_items = 4096
	if err := ioctl(fsPath, uintptr(C.BTRFS_IOC_TREE_SEARCH), unsafe.Pointer(&args), "btrfs tree search"); err != nil {
		return err
	}
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&args.buf[0])), len(args.buf))
	var h C.struct_btrfs_ioctl_search_header
	hdr := int(unsafe.Sizeof(h))
	for i, pos := 0, 0; i < int(args.key.nr_items) && pos+hdr <= len(buf); i++ {
		h = *(*C.struct_btrfs_ioctl_search_header)(unsafe.Pointer(&buf[pos]))
		end := pos + hdr + int(h.len)
		if end > len(buf) {
			break
		}
		if uint64(h.objectid) == objectid && uint32(h._type) == typ && uint64(h.offset) >= minOff && uint64(h.offset) <= maxOff {
			fn(uint64(h.offset), buf[pos+hdr:end])
		}
		pos = end
	}
	return nil
}
