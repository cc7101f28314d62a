// Package gvisor runs sandboxes with gVisor's runsc (platform systrap).
//
// Each sandbox is one runsc sandbox started with `runsc run --detach` from
// an OCI bundle under the runtime's root. Its init is the turnbox agent
// (cmd/turnbox-agent, bind-mounted read-only at AgentPath), whose stdin
// and stdout are pipes held by the host; every Exec goes through the agent
// (package container/agent), so a command costs a fork+exec inside the
// sandbox, not a runsc process.
//
// Filesystem: the root is Spec.RootFS under an in-memory overlay (the host
// directory is never written; writes outside /workspace vanish at Stop).
// Start refuses a RootFS without the mount points of
// rootfs.MountpointDirs and rootfs.MountpointFiles, which runsc would
// otherwise create in the host directory.
// The workspace's PARENT directory is bind-mounted read-write at
// VolumeMount and /workspace is a symlink the agent creates to the
// workspace inside it. A snapshot backend's rollback renames a new tree
// into place at the workspace path; gVisor revalidates bind mounts
// (--file-access-mounts=shared, its default), so the next command sees
// the new tree at once. Processes whose cwd is in the old tree keep it:
// callers KillAll as part of a rollback.
//
// With Spec.Root the bound directory is the parent of the session's own
// root tree, and the agent (-root) runs every command chrooted into it,
// with /proc, /dev and /sys bind-mounted there by the agent, which alone
// holds CAP_SYS_ADMIN (see agent.WithRoot); the image is then only the
// agent's root.
//
// Network: none (loopback only) unless Spec.Network is NetworkHost, or
// NetworkNamespace: the sandbox runs in the namespace at Spec.NetNS with
// gVisor's netstack over its interfaces (see WithNamespaceNetwork).
// Limits: CPU and memory go to the spec's linux.resources and runsc
// applies them to the sandbox's cgroup (a per-root parent/<id> in every
// hierarchy). Memory is enforced by the agent: gVisor's own cgroupfs
// enforces no memory limit, and the host's OOM killer, acting on the
// cgroup of the whole sandbox, can only kill the Sentry (the sandbox
// dies). So the agent measures its commands' resident memory while they
// run and kills the largest command past Limits.MemoryBytes (reported as
// ExitStatus.OOMKilled; the sandbox lives), and the host cgroup's limit
// is Limits.MemoryBytes plus a headroom (a quarter, at least 256 MiB) as
// a backstop. Pids are limited inside: the agent confines commands to a
// child of gVisor's own pids cgroup and sets RLIMIT_NPROC to Pids + 64,
// which (unlike gVisor's pids cgroup) counts zombies; it keeps
// CAP_SYS_RESOURCE for itself and starts commands without it. Pause and Resume ask gVisor's kernel to stop and restart
// every task through the sandbox's control socket (the call `runsc pause`
// makes, without a process start); WithCgroupFreezer(true) freezes the
// cgroup instead, for comparison only. Stop and Reap remove the
// sandbox's runsc state, cgroups and bundle.
//
// Memory snapshots: Sandbox.SnapshotMemory (container.MemorySnapshotter)
// pauses the kernel, saves the sandbox with `runsc checkpoint
// --leave-running` and lets the caller snapshot the files while it is
// still frozen; Runtime.Restore (container.Restorer) starts a new
// sandbox from such an image with `runsc restore`, over new agent pipes
// (agent.NewRestoredClient). Only with NetworkNone. See
// docs/isolation.md, "Memory snapshots (gVisor)".
package gvisor
