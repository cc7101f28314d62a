// Package runc is the runc runtime of package container: one container per
// sandbox, created through libcontainer (the Go library inside runc; no
// runc binary is run), whose init process is the turnbox agent
// (cmd/turnbox-agent). Exec, KillAll and Ping go to the agent over the
// container's stdin and stdout (package container/agent), so a command is
// a fork+exec inside the running container, not a new runc process.
//
// # Setting up a binary
//
// libcontainer starts a container by re-executing the current binary as
// "init" inside the new namespaces. A binary that imports this package
// must therefore
//
//   - call Init as the first statement of main (and a test binary first
//     thing in TestMain); New fails with container.ErrRuntimeMissing if
//     Init was never called;
//   - be built with cgo (CGO_ENABLED=1, gcc and libc6-dev): importing this
//     package links libcontainer/nsenter, a C constructor that joins the
//     namespaces before the Go runtime starts;
//   - for the default seccomp filter, be built with -tags seccomp against
//     libseccomp (apt libseccomp-dev, pkg-config). Without the tag
//     sandboxes run without a seccomp filter (SeccompAvailable reports
//     which); the other protections are the same.
//
// Importing the package also locks the main goroutine to the main thread
// (an init function): libcontainer joins each new container's mount
// namespace on a helper thread that it leaves to die with its goroutine,
// and only the main thread cannot die, so a helper that ran there would
// keep the process's main thread (and /proc/self) inside that container
// for good. Start returns only once no thread of the process is in the
// new sandbox's namespaces, and fails if the main thread left the host's.
//
// The agent itself is a separate static binary (cmd/turnbox-agent; `make
// build` builds it), found through WithAgent, $TURNBOX_AGENT, next to the
// executable or on PATH.
//
// # What a sandbox looks like
//
// The container's root is a per-sandbox skeleton directory under the
// runtime's root, made read-only, holding read-only bind mounts of the
// image's top-level entries (Spec.RootFS is shared and never written).
// /dev (minimal devices, /dev/pts, /dev/shm), /tmp and /run are fresh
// tmpfs; /proc and a read-only /sys are mounted with the usual masked and
// read-only paths. The agent binary is bound read-only at AgentPath.
//
// The workspace's PARENT directory is bound read-write at VolumeDir and
// /workspace is a symlink to VolumeDir/<base name of Spec.Workspace>. A
// snapshot backend's rollback renames a restored tree into place at the
// workspace path; the next command sees the new tree at once, without a
// restart. (A process whose working directory is the old tree keeps it:
// rollback calls KillAll.) getcwd(2) inside /workspace answers with the
// path under VolumeDir; Exec sets PWD so shells show /workspace.
//
// Processes run as root of new mount, pid, ipc, uts and network
// namespaces (network: loopback only; NetworkHost shares the host's;
// NetworkNamespace joins the one bind-mounted at Spec.NetNS), with
// a reduced capability set (no CAP_SYS_ADMIN, CAP_NET_RAW, CAP_MKNOD, ...),
// no_new_privs, a seccomp deny-list when available, RLIMIT_CORE 0, and
// Spec.Limits as cgroup limits: CPU quota, memory (and memory+swap when
// swap is accounted), pids. There is no user namespace: root in the
// sandbox owns the files it writes to the workspace as host root.
//
// Cgroups are made with the cgroup v1 manager on hybrid hosts (v2 on
// unified ones): libcontainer's cgroup is "<parent>/<id>/sandbox", with
// <parent> "/turnbox/<hash of root>" by default (see WithCgroupParent).
// CPU and memory limits are set on it. The pids limit is set one level up,
// on "<parent>/<id>", as Limits.Pids plus a reserve of 64 for the agent;
// the container's own pids cgroup is bound read-write at
// /sys/fs/cgroup/pids and the agent (-pids-limit) confines commands to
// Limits.Pids in a child cgroup there, so a fork bomb cannot starve the
// agent, and the sandbox cannot raise the limit that binds it. Pause and
// Resume use the freezer; a command killed by SIGKILL while the memory
// cgroup's OOM-kill counter moved is reported as ExitStatus.OOMKilled.
//
// # State and recovery
//
// libcontainer keeps each container's state under <root>/state/<id>; the
// skeleton is <root>/roots/<id>. No mount is made in the host's mount
// namespace, so a crashed host leaves only processes, cgroups and these
// directories behind; List finds them (also by their cgroups) and Reap
// kills and removes them.
package runc
