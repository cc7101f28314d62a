// Package snapshot is turnbox's storage layer: the Backend interface over
// copy-on-write filesystems (volumes, snapshots, rollback to any snapshot,
// clone). It knows volumes and snapshots by name only; which session and
// turn a snapshot belongs to is the business of embedded/ledger.
//
// Backends may also implement Quotaer, an optional per-volume space limit
// (btrfs and zfs enforce it in the kernel; localdisk only records it).
//
// Backends live in subpackages: localdisk (works anywhere: reflink where the
// filesystem has it, else a copy), btrfs (subvolume ioctls) and the zfs
// package's backend; snapshot/backends opens one by name. Every backend
// passes the shared suite in snapshot/snapshottest.
package snapshot
