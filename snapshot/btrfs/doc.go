// Package btrfs is the snapshot.Backend on btrfs: every volume is a
// subvolume, every snapshot a read-only btrfs snapshot, rollback and clone
// are writable snapshots, all made with the kernel's btrfs ioctls
// (through github.com/containerd/btrfs/v2 and a few direct ones) without
// starting a process.
//
// Layout under the root given to New:
//
//	volumes/<volume>/workspace     the volume's subvolume (Volume.Path)
//	volumes/<volume>/.rollback-*   a rollback in progress (sibling of Path)
//	volumes/.trash-*               an old tree replaced by a rollback, being deleted
//	snapshots/<volume>/<name>      read-only snapshots
//
// Names starting with '.' can never be volume or snapshot names, so work
// in progress never collides with data, and New removes whatever a crash
// left behind.
//
// Costs: a snapshot (and a clone, and the snapshot inside a rollback) is
// one transaction commit, whose floor is the device's flush latency; it
// does not grow with the number of files. Deleting a subvolume unlinks it
// at once and the kernel frees its blocks in the background, but the
// ioctl first evicts the subvolume's cached inodes, which costs time in
// proportion to the files recently used; Rollback therefore deletes the
// old tree in the background.
//
// The filesystem must be mounted with -o flushoncommit, which makes every
// transaction commit, and so every snapshot, include all data written
// before it: without it a file being written during a snapshot can show
// zeros at its end in the snapshot. New refuses such a filesystem unless
// given WithoutFlushOnCommit.
//
// Quotas (snapshot.Quotaer) are qgroup max_rfer limits on the workspace
// subvolumes; the first one enables quotas on the filesystem, which then
// also gives Volume and Snapshot a SizeBytes (see quota_linux.go).
//
// The package needs cgo and the kernel's uapi headers (linux/btrfs.h, from
// Debian's linux-libc-dev) to build, and root (CAP_SYS_ADMIN) at run time
// to delete subvolumes. On other systems New returns an error wrapping
// snapshot.ErrUnsupported.
//
// Subpackage btrfstest mounts a throwaway loop-device btrfs filesystem for
// tests and holds the benchmark bodies.
package btrfs
