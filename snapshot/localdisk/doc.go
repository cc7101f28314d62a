// Package localdisk is turnbox's zero-setup snapshot.Backend: it works on
// any Linux filesystem. A volume is a plain directory and a snapshot is a
// full copy of it, made with reflinks (FICLONE) where the filesystem
// shares blocks (XFS with reflink=1, btrfs, bcachefs) and copied
// (copy_file_range, else read/write) elsewhere.
//
// Layout under the root passed to New:
//
//	volumes/<volume>/workspace/            Volume.Path (its parent belongs to the volume)
//	snapshots/<volume>/<snapshot>/tree/    the snapshot's copy
//	snapshots/<volume>/<snapshot>/meta.json  creation time, order, size
//	quotas/<volume>                        the volume's quota (SetQuota)
//
// The backend implements snapshot.Quotaer but only records quotas
// (QuotaEnforced is false): nothing in the filesystem stops a write, and
// Quota measures the tree with a walk like du. The caller enforces the
// limit (the embedded host checks after each writing tool call).
//
// Copies keep file contents, permission and set-id bits, owners (when
// running as root), modification times, symlinks (never followed), the
// hard-link structure within the tree, empty directories and special
// files (device nodes only with the privilege to make them), and extended
// attributes (user.*, ACLs, file capabilities) as far as the filesystem
// and privileges allow.
//
// A filesystem mounted inside a volume is not part of it: copies keep the
// mount point as an empty directory (as btrfs and zfs snapshots do), and
// Rollback and DestroyVolume fail with snapshot.ErrBusy rather than
// replace or delete a tree holding a mount.
//
// Every change is made under a temporary name and renamed into place:
// a snapshot is written to a temporary directory, fsynced and renamed, so
// it is durable and complete once Snapshot returns; Rollback copies the
// snapshot next to Path and exchanges the two with renameat2
// RENAME_EXCHANGE, so Path always names a complete tree, the directory
// holding it is never replaced (a sandbox binds that directory), and a
// failed rollback leaves the content as it was; CloneVolume
// builds the new volume aside and renames it in. Running out of space
// during a copy removes the partial copy and returns an error wrapping
// snapshot.ErrNoSpace. New removes whatever a crash left half-done.
//
// Each call on a volume holds that volume's lock for its duration (a
// snapshot of a large tree takes as long as the copy); calls on different
// volumes run in parallel. A root is locked (flock) by one Backend at a
// time.
package localdisk
