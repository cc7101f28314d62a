// Package embedded is turnbox's in-process sandbox host: link it into a
// single-host agent runtime and drive sessions with direct calls, no RPC
// hop.
//
// A Host owns the sessions of one machine: each session's workspace is a
// volume on one storage backend (localdisk, btrfs, zfs), its commands run in
// one long-lived sandbox on one container runtime (gvisor, runc, none), and
// a bbolt ledger under Config.StateDir records sessions and snapshots so a
// host restarted on the same directory (even after SIGKILL) recovers them.
// An Environment binds one session and implements environment.Environment
// plus Forker, TurnCompleter, SnapshotLister and SessionIDer.
//
// # Semantics
//
//   - Tool calls: bash runs in the sandbox (sh -c, or bash where the image
//     has it); file tools (read_file, write_file, edit_file, list_files,
//     grep) run on the host side of the volume, every path resolved by the
//     kernel with openat2(RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS). Output is
//     streamed to onProgress and capped; a cut is reported with Truncated
//     and a notice at the end of Content. A timeout kills the command's
//     whole process tree.
//   - Snapshots (CreateSnapshot, TurnComplete, ToolRequest.Snapshot):
//     numbered turns. The session is quiesced first: file tools finish and
//     the sandbox is frozen (where the runtime can) for the duration of the
//     backend's snapshot only. A snapshot is recorded in the ledger before
//     the call returns.
//   - Rollback to any snapshot: refused with ErrBusy while a tool call
//     runs; otherwise every process in the sandbox is killed (no process
//     started after the snapshot survives; background servers must be
//     started again), the volume is restored, and newer snapshots are kept
//     so a later Rollback can go forward again.
//   - Fork: a new session from any snapshot, sharing blocks copy-on-write
//     where the backend can; independent thereafter.
//   - Pause freezes the sandbox for real; tool calls fail with ErrNotActive
//     until Resume.
//   - Idle pause (Config.IdlePause): a session with no tool call for that
//     long has its sandbox frozen the same way, but stays active: the next
//     tool call, Rollback, Pause or RestartSession thaws it first, with no
//     error. A snapshot of an idle-paused session leaves it frozen.
//     Host.Session reports IdlePaused.
//   - A sandbox that exits on its own (crashed, its processes killed from
//     outside) makes its session failed at once: State reports failed and
//     tool calls fail with ErrNotActive. Resume or Host.RestartSession
//     starts a new sandbox on the same workspace (files and snapshots are
//     kept; processes are not); Destroy deletes the session. A failed
//     session stays failed across a host restart until one of them.
//   - Resource limits (Config.Limits, SessionConfig.Limits, see
//     limits.go): memory, CPU and pids default to DefaultMemoryBytes,
//     DefaultCPUs and DefaultPids; a session may only lower the host's.
//     A command past the memory limit is killed and reported
//     (ToolResponse.OOMKilled); the session lives on.
//   - Disk quota (Config.DiskQuotaBytes, Host.SetDiskQuota,
//     SessionConfig.Limits.DiskBytes; DefaultDiskBytes on btrfs and zfs):
//     bounds the workspace's live tree, and the tree with its snapshots
//     before each snapshot (over it, no snapshot). btrfs and zfs enforce
//     it in the kernel; localdisk only records it and the host measures
//     the workspace after each bash, write_file and edit_file call (a bash
//     command can overshoot; while over, write_file and edit_file are
//     refused). A call that hits the quota fails with an error wrapping
//     ErrLimitExceeded; for bash the ToolResponse (IsError, with a notice)
//     is returned with it. The session stays usable: deleting files or a
//     Rollback to a smaller snapshot makes room. Forks keep their
//     parent's per-session quota.
//   - Host.Close drains tool calls, stops sandboxes and leaves all data in
//     place. Only Destroy deletes a session's data.
package embedded
