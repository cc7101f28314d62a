package gvisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/agent"
	"github.com/turnbox/turnbox/container/agentbox"
	"github.com/turnbox/turnbox/container/cgroup"
	"github.com/turnbox/turnbox/container/rootfs"
)

// Sandbox is a running gVisor sandbox. It implements container.Sandbox,
// container.IdleChecker, container.StatusReporter and
// container.Checkpointer and container.MemorySnapshotter; Exec, KillAll, Idle and the status machine are
// agentbox.Sandbox's.
type Sandbox struct {
	*agentbox.Sandbox
	r         *Runtime
	workspace string // host path (Spec.VolumeTree); its directory is sealed while the sandbox lives
	network   container.Network
	pid       int      // runsc-sandbox process
	frz       *freezer // nil: the control socket (or the runsc CLI)
}

var (
	_ container.Sandbox           = (*Sandbox)(nil)
	_ container.Checkpointer      = (*Sandbox)(nil)
	_ container.MemorySnapshotter = (*Sandbox)(nil)
	_ container.IdleChecker       = (*Sandbox)(nil)
	_ container.PortDialer        = (*Sandbox)(nil)
)

func validate(spec container.Spec) error {
	if !idPattern.MatchString(spec.ID) {
		return fmt.Errorf("%w: id %q (want %s)", container.ErrInvalidSpec, spec.ID, idPattern)
	}
	if err := container.CheckIsolatedSpec(spec); err != nil {
		return err
	}
	// runsc creates a missing mount point in the root's host directory:
	// an image must bring its own, so a sandbox start never writes into
	// the image.
	if err := rootfs.CheckMountpoints(spec.RootFS); err != nil {
		return fmt.Errorf("%w: %v", container.ErrInvalidSpec, err)
	}
	return nil
}

// ociSpec builds the OCI runtime spec of a sandbox.
func (r *Runtime) ociSpec(spec container.Spec) *specs.Spec {
	ws := filepath.Clean(spec.VolumeTree())
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"TERM=dumb",
	}
	env = append(env, spec.Env...)
	caps := []string{
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
		"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
		"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
	}
	if spec.Limits.Pids > 0 {
		caps = append(caps, "CAP_SYS_RESOURCE") // the agent's only; see below
	}
	if spec.Root != "" {
		caps = append(caps, "CAP_SYS_ADMIN") // the agent's only (agent.WithRoot)
	}
	s := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			User: specs.User{UID: 0, GID: 0},
			Args: append([]string{AgentPath}, container.AgentRootArgs(spec, VolumeMount)...),
			Env:  env,
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1 << 20, Soft: 1 << 20}},
			NoNewPrivileges: true,
		},
		Root:     &specs.Root{Path: spec.RootFS, Readonly: false},
		Hostname: "turnbox",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: AgentPath, Type: "bind", Source: r.cfg.agent, Options: []string{"rbind", "ro"}},
			{Destination: VolumeMount, Type: "bind", Source: filepath.Dir(ws), Options: []string{"rbind", "rw"}},
		},
		Linux: &specs.Linux{
			CgroupsPath: r.cgroupPath(spec.ID),
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
			},
			Resources: resources(spec.Limits),
		},
	}
	if spec.Limits.Pids > 0 {
		// The agent enforces the limit on commands in gVisor's own pids
		// cgroup (mounted at /sys/fs/cgroup), leaving itself outside it.
		// That cgroup stops counting a process when it exits, not when
		// it is reaped, so the agent also sets RLIMIT_NPROC, which counts
		// zombies: it keeps CAP_SYS_RESOURCE (exempting its own threads)
		// and starts commands without it.
		s.Process.Args = append(s.Process.Args,
			"-pids-limit", strconv.FormatInt(spec.Limits.Pids, 10),
			"-nproc-limit", strconv.FormatInt(spec.Limits.Pids+zombieReserve, 10))
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup"})
	}
	if spec.Limits.MemoryBytes > 0 {
		// gVisor's cgroupfs enforces no memory limit, and at the host
		// cgroup's limit the host kills the sandbox: the agent enforces
		// the limit on commands, the host cgroup (see resources) is a
		// backstop above it.
		s.Process.Args = append(s.Process.Args, "-memory-limit", strconv.FormatInt(spec.Limits.MemoryBytes, 10))
	}
	switch spec.Network {
	case container.NetworkHost:
	case container.NetworkNamespace:
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: spec.NetNS})
	default:
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace})
	}
	return s
}

// zombieReserve is how many tasks beyond Limits.Pids the sandbox's
// RLIMIT_NPROC allows: the agent's own threads and exited processes not
// yet reaped by their parents.
const zombieReserve = 64

// memoryHeadroom is what the sandbox's host cgroup allows beyond
// Limits.MemoryBytes, which the agent enforces on commands: the Sentry's
// and gofer's own memory, the in-memory overlay of the root filesystem,
// and what a command allocates between two of the agent's measures.
func memoryHeadroom(limit int64) int64 { return max(limit/4, 256<<20) }

func resources(l container.Limits) *specs.LinuxResources {
	res := &specs.LinuxResources{}
	if l.CPUs > 0 {
		period := uint64(100000)
		quota := int64(l.CPUs * float64(period))
		if quota < 1000 {
			quota = 1000
		}
		res.CPU = &specs.LinuxCPU{Period: &period, Quota: &quota}
	}
	if l.MemoryBytes > 0 {
		m := l.MemoryBytes + memoryHeadroom(l.MemoryBytes)
		res.Memory = &specs.LinuxMemory{Limit: &m}
	}
	// Limits.Pids is not set on the host cgroup: there the sentry's
	// threads and systrap's stub processes are counted, which grow with
	// process churn inside the sandbox and would kill the sentry rather
	// than fail a fork. The agent enforces it in gVisor's pids cgroup.
	return res
}

// Start starts a sandbox: it writes the OCI bundle, runs `runsc run
// --detach` with the agent as init and waits until the agent answers.
func (r *Runtime) Start(ctx context.Context, spec container.Spec) (container.Sandbox, error) {
	sb, err := r.StartSandbox(ctx, spec)
	if err != nil {
		return nil, err // not a nil *Sandbox in a non-nil interface
	}
	return sb, nil
}

// StartSandbox is Start returning the concrete type.
func (r *Runtime) StartSandbox(ctx context.Context, spec container.Spec) (*Sandbox, error) {
	return r.launch(ctx, spec, "", 0)
}

// launch starts the sandbox of spec: from its image by `runsc run` when
// image is "", else from the checkpoint image by `runsc restore`, whose
// agent's client continues after request id lastID (see
// agent.NewRestoredClient). On failure nothing of the sandbox is left.
func (r *Runtime) launch(ctx context.Context, spec container.Spec, image string, lastID uint64) (_ *Sandbox, retErr error) {
	if spec.Network == "" {
		spec.Network = container.NetworkNone
	}
	if err := validate(spec); err != nil {
		return nil, err
	}
	if r.known(spec.ID) {
		return nil, fmt.Errorf("gvisor: sandbox %q already exists under %s", spec.ID, r.cfg.root)
	}
	if err := container.SealVolumeDir(spec.VolumeTree()); err != nil {
		return nil, fmt.Errorf("gvisor: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = container.UnsealVolumeDir(spec.VolumeTree())
		}
	}()
	bundle := filepath.Join(r.bundleDir, spec.ID)
	r.nsMu.RLock()
	err := os.MkdirAll(bundle, 0o700)
	r.nsMu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("gvisor: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = r.destroy(context.WithoutCancel(ctx), spec.ID)
		}
	}()
	cfg, err := json.MarshalIndent(r.ociSpec(spec), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("gvisor: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), cfg, 0o600); err != nil {
		return nil, fmt.Errorf("gvisor: %w", err)
	}
	cmd := []string{"run"}
	if image != "" {
		cmd = []string{"restore", "--background", "--image-path", image}
	}
	inW, outR, err := r.runDetached(ctx, spec, bundle, cmd)
	if err != nil {
		return nil, err
	}
	var client *agent.Client
	if image != "" {
		client = agent.NewRestoredClient(outR, inW, lastID)
	} else {
		client = agent.NewClient(outR, inW)
	}
	return r.attach(ctx, spec, bundle, client)
}

// attach makes the Sandbox of a sandbox runsc just started from bundle,
// whose agent client is client, and waits until the agent answers. The
// caller destroys the sandbox if it fails.
func (r *Runtime) attach(ctx context.Context, spec container.Spec, bundle string, client *agent.Client) (*Sandbox, error) {
	sb := &Sandbox{r: r, workspace: spec.VolumeTree(), network: spec.Network}
	// runsc wrote the sandbox process's pid (what `runsc state` reports)
	// before `run --detach` returned.
	if b, err := os.ReadFile(filepath.Join(bundle, "sandbox.pid")); err == nil {
		sb.pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if r.cfg.freezer && sb.pid > 0 {
		if f, err := findFreezer(sb.pid); err == nil {
			sb.frz = f
		}
	}
	sb.Sandbox = agentbox.New(Kind, spec.ID, client, agentbox.Ops{
		Freeze: sb.freeze, Teardown: sb.teardown, Lost: sb.lost, OwnRoot: spec.Root != "",
	})
	pctx, cancel := context.WithTimeout(ctx, r.cfg.startTimeout)
	defer cancel()
	if err := client.Ping(pctx); err != nil {
		if cerr := client.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w (connection: %w)", err, cerr)
		}
		client.Close()
		log, _ := os.ReadFile(filepath.Join(bundle, "agent.log"))
		return nil, fmt.Errorf("gvisor: agent in %s did not answer: %w; agent log: %s", spec.ID, err, strings.TrimSpace(lastLines(string(log), 10)))
	}
	if spec.Limits.MemoryBytes > 0 && sb.pid > 0 {
		if dir, _, err := cgroup.Dir(sb.pid, "memory", "memory.events"); err == nil {
			sb.SetMemoryCgroup(dir)
		}
	}
	if err := sb.Started(); err != nil {
		client.Close()
		return nil, err
	}
	return sb, nil
}

// runDetached runs `runsc <cmd> --detach` ("run" or "restore ...") for
// spec's bundle and returns the host ends of the agent's stdin and
// stdout. runsc donates its stdio to the sandbox on restore as on run:
// the restored agent's fds 0 and 1 are the new pipes.
func (r *Runtime) runDetached(ctx context.Context, spec container.Spec, bundle string, cmdArgs []string) (inW, outR *os.File, err error) {
	// The agent's stdin and stdout are pipes whose host ends we keep; its
	// stderr (diagnostics) goes to a log file. runsc gets *os.File stdio,
	// so exec.Cmd does not wait for copies after `run --detach` returns.
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("gvisor: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, nil, fmt.Errorf("gvisor: %w", err)
	}
	logf, err := os.OpenFile(filepath.Join(bundle, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return nil, nil, fmt.Errorf("gvisor: %w", err)
	}
	pidFile := filepath.Join(bundle, "sandbox.pid")
	cmd := exec.CommandContext(ctx, r.cfg.runsc, r.RunscArgs(spec.Network, append(cmdArgs, "--detach", "--bundle", bundle, "--pid-file", pidFile, spec.ID)...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, logf
	r.nsMu.RLock()
	runErr := cmd.Run()
	r.nsMu.RUnlock()
	inR.Close()
	outW.Close()
	logf.Close()
	if runErr != nil {
		inW.Close()
		outR.Close()
		log, _ := os.ReadFile(filepath.Join(bundle, "agent.log"))
		return nil, nil, fmt.Errorf("gvisor: runsc %s %s: %v: %s", cmdArgs[0], spec.ID, runErr, strings.TrimSpace(lastLines(string(log), 10)))
	}
	return inW, outR, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lost kills the sandbox process once the host gave up on the agent (or
// it exited), so nothing of the sandbox runs unwatched until Stop.
func (s *Sandbox) lost() {
	s.killSandboxProcess()
	s.Exited(fmt.Errorf("agent connection: %w", s.Client().Err()))
}

// Pid returns the host pid of the sandbox's runsc-sandbox process (0 if
// unknown).
func (s *Sandbox) Pid() int { return s.pid }

// UsesCgroupFreezer reports whether Pause and Resume freeze the cgroup
// directly (true) or use the sandbox's control socket (false).
func (s *Sandbox) UsesCgroupFreezer() bool { return s.frz != nil }

// freeze is agentbox.Ops.Freeze: gVisor's kernel stops every task,
// through the sandbox's control socket (the call `runsc pause` makes), or
// its cgroup's freezer when WithCgroupFreezer(true) found it.
func (s *Sandbox) freeze(ctx context.Context, pause bool) error {
	var err error
	switch {
	case s.frz != nil:
		err = s.frz.set(pause)
	case pause:
		err = s.r.control(ctx, s.ID(), ctlPause)
	default:
		err = s.r.control(ctx, s.ID(), ctlResume)
	}
	if err != nil {
		return fmt.Errorf("gvisor: sandbox %s: %w", s.ID(), err)
	}
	return nil
}

// teardown is agentbox.Ops.Teardown: it kills the sandbox and removes its
// runsc state, cgroups and bundle, then unseals the volume's directory.
func (s *Sandbox) teardown(ctx context.Context, prev container.Status) error {
	if prev == container.StatusPaused && s.frz != nil {
		// A frozen sandbox cannot die; thaw it first.
		_ = s.frz.set(false)
	}
	s.Client().Close()
	err := s.destroyBounded(ctx)
	if err != nil && s.killSandboxProcess() {
		// runsc did not finish in time: the sandbox process is dead now,
		// so a second try only removes state.
		err = s.destroyBounded(ctx)
	}
	if err == nil {
		err = container.UnsealVolumeDir(s.workspace)
	}
	return err
}

// stopTimeout bounds one `runsc delete` of a stopping sandbox, whatever
// the caller's context (which cannot cut a stop short either).
const stopTimeout = 20 * time.Second

func (s *Sandbox) destroyBounded(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
	defer cancel()
	return s.r.destroy(dctx, s.ID())
}

// killSandboxProcess sends SIGKILL to the runsc sandbox process, if it is
// still the one this sandbox started (its command line names the
// sandbox's id), and reports whether it did.
func (s *Sandbox) killSandboxProcess() bool {
	if s.pid <= 0 {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(s.pid) + "/cmdline")
	if err != nil || !slices.Contains(strings.Split(string(cmdline), "\x00"), s.ID()) {
		return false
	}
	return syscall.Kill(s.pid, syscall.SIGKILL) == nil
}
