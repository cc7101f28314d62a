// Package zfs is turnbox's OpenZFS layer: datasets, snapshots, clones,
// rollback, rename, promote, destroy (including deferred destroy), user
// holds, user properties and space accounting behind one small Driver
// interface, and a snapshot.Backend built on it.
//
// # Drivers
//
// NewCommandDriver runs the zfs command (the default). It sticks to syntax
// both OpenZFS and zfs-fuse 0.7 accept: parsable output comes from
// `zfs get -H -p` (zfs-fuse's `zfs list` has no -p, which is also why
// github.com/mistifyio/go-zfs, built on `zfs list -Hp`, is not used);
// properties are passed with -o at create/clone/snapshot time so they land
// atomically. Failures are *CommandError values carrying the command line
// and stderr and unwrapping to the sentinels. zfs-fuse cannot do user
// holds (its `zfs hold` needs a Python helper that is not shipped):
// ErrUnsupported there.
//
// NewLZCDriver (build tag libzfs_core, cgo, Linux) calls libzfs_core in
// process: lzc_create, lzc_snapshot, lzc_clone, lzc_rollback_to,
// lzc_destroy_snaps, lzc_destroy, lzc_rename, lzc_promote, lzc_exists,
// lzc_hold, lzc_release, lzc_get_holds. libzfs is used where lzc has no
// call: mounting after create/clone, unmounting before destroy, setting
// properties (mountpoint changes remount) and reading them (Get walks the
// datasets with libzfs's iterators and returns them in the command's
// order). A recursive destroy is one lzc_destroy_snaps and lzc_destroy per
// filesystem; only renaming a filesystem, and a recursive destroy the
// kernel refuses in process, use the command. It needs kernel OpenZFS (/dev/zfs);
// scripts/fetch-libzfs-dev.sh fetches the headers and libraries to build it.
//
// Names are validated in Go before they reach ZFS (ValidateDataset,
// ValidateSnapshot). The sentinel errors are the snapshot package's own
// values, so errors.Is works with either package's names.
//
// # Backend layout
//
// NewBackend(ctx, driver, parent, mountRoot) owns the dataset parent
// (mountpoint=none). A volume V is a container dataset parent/V (unmounted;
// names over 64 bytes are replaced by "_h" + a hash so full ZFS names stay
// within 255 bytes) holding one or more generation datasets parent/V/g1,
// parent/V/g2, ... The newest generation is the active one, mounted at
// Volume.Path = mountRoot/V/workspace; the others have mountpoint=none.
// A volume made while a spare container was ready lives in that container
// instead, parent/_s<16 hex digits> (see WithSpareContainers: it saves a
// ZFS transaction per new volume); its name is in its generations'
// turnbox:volume property either way.
// The directory mountRoot/V holds nothing but the workspace mount point.
// Snapshots are ZFS snapshots of generations, short name = the snapshot's
// name (hashed if too long), with user properties turnbox:snapshot (the
// name) and turnbox:created (Unix ns); generations carry turnbox:volume and
// turnbox:created. A restarted host rediscovers everything with one
// `zfs get -r` of the parent, and repairs an interrupted swap (the newest
// generation is mounted at Path, all others unmounted) or an interrupted
// DestroyVolume (turnbox:destroying on the container).
//
// # Rollback: in place or clone-and-swap
//
// ZFS can only roll a filesystem back to its newest snapshot without
// destroying the newer ones. So:
//
//   - Rollback to the newest snapshot of the active generation is an
//     in-place `zfs rollback` (lzc_rollback_to): one ZFS call.
//   - Rollback to any other snapshot S (older, or on an older generation)
//     is clone-and-swap: the active generation is unmounted
//     (mountpoint=none), S is cloned as a new generation g<n+1> mounted at
//     Path. Every snapshot of every generation stays where it is and stays
//     listed under the volume, so rolling "forward" again is the same
//     operation. If the clone fails (e.g. ENOSPC) the old generation is
//     mounted again: the content is unchanged.
//
// Snapshot order is generation order, then creation order within a
// generation: once a generation is swapped out it never gets new snapshots.
//
// Sandboxes see a swap because Path is a mount point inside mountRoot/V:
// bind the parent directory mountRoot/V recursively with slave (or shared)
// propagation, so the new mount appears in the sandbox; a handle on the
// parent directory already sees it (path lookup crosses the new mount).
//
// Space: a clone costs nothing until written. A swapped-out generation
// keeps its blocks while it has snapshots; what was written to it after its
// newest snapshot (content the rollback discarded) stays allocated until
// the generation goes. A swapped-out generation without snapshots is
// destroyed right away (in the background, off the rollback's latency;
// Close and cross-volume calls wait for it), and one whose last snapshot is
// destroyed is destroyed with it.
//
// # Destroying snapshots and volumes
//
// DestroySnapshot destroys the ZFS snapshot, unless clones depend on it (a
// later generation made by a rollback to it, or another volume cloned from
// it): then it is renamed to a hidden name ("_x...", never a valid
// snapshot name) and marked for deferred destruction (zfs destroy -d), so
// ZFS frees it when its last clone goes. It disappears from Snapshots at
// once, and its name can be reused.
//
// DestroyVolume of a volume no other was cloned from locks only that
// volume: other volumes' operations go on meanwhile, and a caller waiting
// for the destroyed volume gets ErrNotFound. Otherwise it holds the whole
// backend, because promotions move snapshots between volumes.
//
// DestroyVolume destroys a volume's generations and snapshots with one
// channel program (lzc_channel_program, or `zfs program` for the command
// driver): one transaction group for the mark and every dataset, instead
// of one per dataset. Where channel programs are missing (zfs-fuse) or the
// program stops part-way, it goes on one dataset at a time.
//
// DestroyVolume leaves volumes cloned from it intact: each such clone is
// promoted (zfs promote) until no dataset outside the volume depends on
// it. The snapshots a promotion moves into the clone are first renamed to
// hidden names, so they neither collide with nor show up as the clone's
// snapshots, and are destroyed (or deferred) once nothing depends on them.
// The volume's generations are then destroyed, clones before origins,
// without ever using `destroy -R`.
//
// # zfs-fuse
//
// zfstest starts zfs-fuse when the kernel has no ZFS, so the suite runs on
// ordinary build machines. zfs-fuse keeps a stale root-directory inode
// after an in-place rollback (mode and mtime of the workspace root do not
// roll back); on FUSE mounts the backend records the root's attributes in
// each snapshot (turnbox:rootattr) and re-applies them after an in-place
// rollback. Kernel OpenZFS does not need this and never gets the property.
//
// The backend assumes it is the only writer under its parent dataset; two
// processes must not open the same parent at once.
package zfs
