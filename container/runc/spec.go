package runc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/seccomp"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/turnbox/turnbox/container"
)

// Paths inside a sandbox.
const (
	// AgentPath is where the agent binary is bind-mounted (read-only).
	AgentPath = "/.turnbox/agent"
	// VolumeDir is where the workspace's parent directory is bind-mounted
	// (read-write). container.WorkspaceDir is a symlink to
	// VolumeDir/<base name of Spec.Workspace>, so a tree renamed into place
	// on the host (a rollback) shows at once in the sandbox.
	VolumeDir = "/.turnbox/vol"
)

// defaultPath is the PATH of the agent and, unless Spec.Env sets one, of
// every command.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// capabilities is the capability set of every sandbox process: Docker's
// default set without CAP_NET_RAW, CAP_MKNOD, CAP_AUDIT_WRITE and
// CAP_SETFCAP. Root in the sandbox can still own, chmod and kill its own
// files and processes; it cannot mount, load modules, trace the host,
// change the clock or use raw sockets.
var capabilities = []string{
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_FOWNER",
	"CAP_FSETID",
	"CAP_KILL",
	"CAP_SETGID",
	"CAP_SETUID",
	"CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT",
}

// deniedSyscalls fail with EPERM under the default seccomp profile (when
// the binary is built with the seccomp tag). Most are already refused for
// lack of a capability; the filter is a second wall and also covers calls
// no capability guards (userfaultfd, keyctl, perf_event_open, bpf, ...).
var deniedSyscalls = []string{
	"acct", "add_key", "bpf", "clock_adjtime", "clock_settime",
	"create_module", "delete_module", "finit_module", "fsconfig",
	"fsmount", "fsopen", "fspick", "get_kernel_syms",
	"init_module", "ioperm", "iopl", "kcmp", "kexec_file_load",
	"kexec_load", "keyctl", "lookup_dcookie", "mount",
	"mount_setattr", "move_mount", "name_to_handle_at",
	"nfsservctl", "open_by_handle_at", "open_tree", "perf_event_open",
	"pivot_root", "process_vm_readv", "process_vm_writev",
	"query_module", "quotactl", "reboot", "request_key",
	"setns", "settimeofday", "stime", "swapoff", "swapon", "sysfs",
	"_sysctl", "syslog", "umount", "umount2", "unshare", "uselib",
	"userfaultfd", "ustat", "vm86", "vm86old",
}

// SeccompAvailable reports whether this binary was built with seccomp
// support (the "seccomp" build tag and libseccomp). Without it sandboxes
// run without a seccomp filter.
func SeccompAvailable() bool { return seccomp.Enabled }

// skeletonSkip are top-level entries of an image that the skeleton
// provides itself instead of binding them from the image.
var skeletonSkip = map[string]bool{
	"dev": true, "proc": true, "sys": true, "tmp": true, "run": true,
	"workspace": true, ".turnbox": true,
}

// buildSkeleton makes dir the sandbox's root directory: for each top-level
// entry of the image a mount point (bound read-only to the image's entry
// by the returned mounts) or a copy of its symlink, plus the sandbox's own
// entries: /workspace (a symlink into the volume mount) and /.turnbox.
//
// The image is shared by sessions and must not change, and libcontainer
// creates missing mount points in the root it is given; a per-session
// skeleton keeps those writes (and the /workspace symlink, which cannot be
// a mount because rollback renames the tree) out of the image. The
// skeleton lives on the host, holds no data and is made read-only inside
// the sandbox.
func buildSkeleton(dir, image, workspace, agent string) ([]specs.Mount, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(image)
	if err != nil {
		return nil, fmt.Errorf("%w: reading root filesystem: %v", container.ErrInvalidSpec, err)
	}
	var mounts []specs.Mount
	for _, e := range entries {
		name := e.Name()
		if skeletonSkip[name] {
			continue
		}
		src := filepath.Join(image, name)
		dst := filepath.Join(dir, name)
		switch t := e.Type(); {
		case t&fs.ModeSymlink != 0:
			target, err := os.Readlink(src)
			if err != nil {
				return nil, err
			}
			if err := os.Symlink(target, dst); err != nil {
				return nil, err
			}
			continue
		case t.IsDir():
			if err := os.Mkdir(dst, 0o755); err != nil {
				return nil, err
			}
		case t.IsRegular():
			if err := os.WriteFile(dst, nil, 0o644); err != nil {
				return nil, err
			}
		default:
			continue // sockets, devices, fifos: not part of an image
		}
		mounts = append(mounts, specs.Mount{
			Destination: "/" + name,
			Type:        "bind",
			Source:      src,
			Options:     []string{"rbind", "ro"},
		})
	}
	for _, d := range []string{"dev", "proc", "sys", "tmp", "run", ".turnbox", ".turnbox/vol"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, ".turnbox/agent"), nil, 0o755); err != nil {
		return nil, err
	}
	link := path.Join(VolumeDir, filepath.Base(workspace))
	if err := os.Symlink(link, filepath.Join(dir, "workspace")); err != nil {
		return nil, err
	}
	mounts = append(mounts,
		specs.Mount{Destination: AgentPath, Type: "bind", Source: agent,
			Options: []string{"bind", "ro", "nosuid", "nodev"}},
		specs.Mount{Destination: VolumeDir, Type: "bind", Source: filepath.Dir(workspace),
			Options: []string{"rbind", "rw", "nosuid", "nodev"}},
	)
	return mounts, nil
}

// ociSpec returns the OCI runtime spec of a sandbox whose skeleton root is
// skel and whose extra mounts are binds (from buildSkeleton).
// pidsCgroup, if not empty, is the host directory of the container's pids
// cgroup, bound into the sandbox for the agent (see Runtime.pidsSetup).
func ociSpec(s container.Spec, skel, cgroupPath, pidsCgroup string, binds []specs.Mount, withSeccomp bool) *specs.Spec {
	env := []string{defaultPath, "HOME=/root", "TERM=dumb"}
	env = append(env, s.Env...)
	caps, denied := privileges(s)
	spec := &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: skel, Readonly: true},
		Process: &specs.Process{
			Args:            []string{AgentPath},
			Env:             env,
			Cwd:             "/",
			NoNewPrivileges: true,
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits: []specs.POSIXRlimit{
				{Type: "RLIMIT_NOFILE", Hard: nofile(), Soft: nofile()},
				{Type: "RLIMIT_CORE", Hard: 0, Soft: 0},
			},
		},
		Hostname: "turnbox",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc",
				Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs",
				Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts",
				Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm",
				Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs",
				Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs",
				Options: tmpfsOptions(s.Limits.MemoryBytes)},
			{Destination: "/run", Type: "tmpfs", Source: "tmpfs",
				Options: []string{"nosuid", "nodev", "mode=755", "size=65536k"}},
		},
		Linux: &specs.Linux{
			CgroupsPath: cgroupPath,
			Resources:   resources(s.Limits),
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
			},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
				"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
				"/proc/sched_debug", "/sys/firmware", "/proc/scsi",
				"/sys/devices/virtual/powercap",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
				"/proc/sysrq-trigger",
			},
		},
	}
	switch s.Network {
	case container.NetworkHost:
	case container.NetworkNamespace:
		// Join the namespace the host made (container/netns), with its
		// interfaces, addresses and routes.
		spec.Linux.Namespaces = append(spec.Linux.Namespaces,
			specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: s.NetNS})
	default:
		spec.Linux.Namespaces = append(spec.Linux.Namespaces,
			specs.LinuxNamespace{Type: specs.NetworkNamespace})
	}
	spec.Mounts = append(spec.Mounts, binds...)
	if pidsCgroup != "" {
		// The container's own pids cgroup, writable, for the agent to make
		// its command cgroup in; the limit that binds the sandbox is on the
		// parent, which is not visible. The tmpfs under it is made
		// read-only after the bind (ReadonlyPaths).
		spec.Mounts = append(spec.Mounts,
			specs.Mount{Destination: "/sys/fs/cgroup", Type: "tmpfs", Source: "cgroup",
				Options: []string{"nosuid", "noexec", "nodev", "mode=755", "size=64k"}},
			specs.Mount{Destination: "/sys/fs/cgroup/pids", Type: "bind", Source: pidsCgroup,
				Options: []string{"rbind", "rw", "nosuid", "noexec", "nodev"}},
		)
		spec.Linux.ReadonlyPaths = append(spec.Linux.ReadonlyPaths, "/sys/fs/cgroup")
	}
	if withSeccomp {
		spec.Linux.Seccomp = &specs.LinuxSeccomp{
			DefaultAction: specs.ActAllow,
			Syscalls: []specs.LinuxSyscall{{
				Names:    denied,
				Action:   specs.ActErrno,
				ErrnoRet: ptr(uint(1)), // EPERM
			}},
		}
	}
	return spec
}

// privileges returns the capabilities of a sandbox's processes and the
// system calls its seccomp filter denies. With its own root (Spec.Root)
// the agent also holds CAP_SYS_ADMIN, to bind-mount /proc, /dev and /sys
// into the session's root, and mount(2) is allowed; commands start
// without CAP_SYS_ADMIN in any set (agent.WithRoot), so mount stays
// refused to them, and unshare, which could give it back in a user
// namespace, stays denied.
func privileges(s container.Spec) (caps, denied []string) {
	caps = append([]string(nil), capabilities...)
	if s.Root == "" {
		return caps, deniedSyscalls
	}
	caps = append(caps, "CAP_SYS_ADMIN")
	denied = slices.DeleteFunc(slices.Clone(deniedSyscalls), func(n string) bool { return n == "mount" })
	return caps, denied
}

// nofile is the sandbox's open-file limit: 1<<20, or the host's hard
// limit if lower (raising it needs CAP_SYS_RESOURCE).
func nofile() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Max < 1<<20 {
		return rl.Max
	}
	return 1 << 20
}

func tmpfsOptions(memory int64) []string {
	o := []string{"nosuid", "nodev", "mode=1777"}
	if memory > 0 {
		o = append(o, "size="+strconv.FormatInt(memory, 10))
	}
	return o
}

// cpuPeriod is the CFS period used for CPU quotas (100 ms).
const cpuPeriod = 100000

func resources(l container.Limits) *specs.LinuxResources {
	r := &specs.LinuxResources{}
	if l.CPUs > 0 {
		q := int64(l.CPUs * cpuPeriod)
		if q < 1000 {
			q = 1000 // the kernel's minimum quota is 1 ms
		}
		r.CPU = &specs.LinuxCPU{Quota: &q, Period: ptr(uint64(cpuPeriod))}
	}
	if l.MemoryBytes > 0 {
		m := l.MemoryBytes
		r.Memory = &specs.LinuxMemory{Limit: &m}
		if swapAccounting() {
			r.Memory.Swap = &m // memory+swap = memory: no swap
		}
	}
	// The pids limit is set on the container cgroup's parent (pidsSetup).
	return r
}

func ptr[T any](v T) *T { return &v }

// swapAccounting reports whether the v1 memory controller accounts swap
// (memory.memsw.*); setting a swap limit fails without it.
func swapAccounting() bool {
	_, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
	return err == nil
}

// libcontainerConfig converts an OCI spec to libcontainer's config.
func libcontainerConfig(id string, spec *specs.Spec) (*configs.Config, error) {
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		CgroupName:   id,
		Spec:         spec,
		NoNewKeyring: false,
	})
	if err != nil {
		return nil, fmt.Errorf("runc: building container config: %w", err)
	}
	if cfg.Cgroups == nil {
		return nil, errors.New("runc: no cgroup config")
	}
	return cfg, nil
}
