// Package guard keeps a volume's directory out of a sandbox's reach.
//
// A backend gives each volume a Path whose parent directory belongs to that
// volume alone; isolated runtimes bind that parent read-write into the
// sandbox so that a rollback, which renames a new tree into place at Path,
// shows at once without a sandbox restart. Whatever a sandbox can write is
// attacker-controlled: without more, one command could rename the
// workspace away and put a symlink to the host's / (or to another
// session's workspace) in its place, and any host code that later named
// Path would follow it.
//
// guard closes that in two layers:
//
//   - Seal makes the parent directory immutable (FS_IMMUTABLE_FL, what
//     chattr +i sets). Nothing without CAP_LINUX_IMMUTABLE, which no
//     sandbox has, can then add, remove or rename an entry in it; files
//     inside the workspace stay writable. A backend lifts the flag only
//     for its own changes, with Unsealed, and only for the syscall that
//     needs it.
//   - OpenDir opens the workspace relative to a descriptor of the parent,
//     refusing symlinks and anything that is not a directory, and Same
//     compares what it found with what the backend made. A change that
//     raced a backend's window is noticed: the backend answers with
//     snapshot.ErrTampered and names no path through it.
//
// SealSupported probes whether a filesystem can hold the flag (ext4, xfs,
// btrfs and tmpfs can; FUSE filesystems usually cannot) and whether this
// process may set it (CAP_LINUX_IMMUTABLE): hosts that run isolated
// sandboxes refuse storage that fails the probe.
package guard
