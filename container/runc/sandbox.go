package runc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/agent"
	"github.com/turnbox/turnbox/container/agentbox"
)

// startTimeout bounds the wait for a new agent's first answer when Start's
// ctx has no deadline.
const startTimeout = 10 * time.Second

// Sandbox is a running runc sandbox: a libcontainer container whose init
// is the turnbox agent, talking to the host over its stdin and stdout.
// Exec, KillAll, Idle and the status machine are agentbox.Sandbox's. Safe
// for concurrent use.
type Sandbox struct {
	*agentbox.Sandbox
	rt   *Runtime
	c    *libcontainer.Container
	proc *libcontainer.Process
	skel string
	// workspace is the host path of the workspace; its directory is
	// sealed while the sandbox lives (container.SealVolumeDir).
	workspace string
	stderr    *tailBuffer
}

var (
	_ container.Sandbox     = (*Sandbox)(nil)
	_ container.IdleChecker = (*Sandbox)(nil)
	_ container.PortDialer  = (*Sandbox)(nil)
)

// Start starts a sandbox and returns once its agent answers.
//
// The sandbox's root is a per-session skeleton directory (under the
// runtime's root) holding a read-only bind mount of each top-level entry
// of spec.RootFS, so the shared image is never written to; /dev, /dev/pts,
// /dev/shm, /tmp and /run are fresh tmpfs or devpts mounts, /proc and a
// read-only /sys are mounted; the agent binary is bound read-only at
// AgentPath; the parent directory of spec.Workspace is bound read-write at
// VolumeDir and /workspace is a symlink to the workspace inside it, so a
// tree renamed into place at spec.Workspace on the host shows at once.
//
// Every process runs as root in new mount, pid, ipc, uts and (unless
// spec.Network is NetworkHost) network namespaces with only loopback
// (NetworkNamespace: the namespace at spec.NetNS, joined instead), with
// a reduced capability set, no_new_privs, the default seccomp filter (see
// WithSeccomp) and spec.Limits applied through cgroups.
func (r *Runtime) Start(ctx context.Context, spec container.Spec) (container.Sandbox, error) {
	s, err := r.start(ctx, spec)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// claim reserves spec.ID among the live sandboxes and seals the
// workspace's directory (container.SealVolumeDir); undo releases both.
func (r *Runtime) claim(spec container.Spec) (undo func(), err error) {
	r.mu.Lock()
	if _, ok := r.live[spec.ID]; ok {
		r.mu.Unlock()
		return nil, fmt.Errorf("runc: sandbox %s: %w", spec.ID, os.ErrExist)
	}
	r.live[spec.ID] = nil // reserve the id
	r.mu.Unlock()
	if err := container.SealVolumeDir(spec.VolumeTree()); err != nil {
		r.forget(spec.ID, nil)
		return nil, fmt.Errorf("runc: %w", err)
	}
	return func() {
		_ = container.UnsealVolumeDir(spec.VolumeTree())
		r.forget(spec.ID, nil)
	}, nil
}

func (r *Runtime) start(ctx context.Context, spec container.Spec) (_ *Sandbox, retErr error) {
	if err := validateSpec(spec); err != nil {
		return nil, err
	}
	id := spec.ID
	undo, err := r.claim(spec)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			undo()
		}
	}()
	skel := filepath.Join(r.skelRoot, id)
	if _, err := os.Lstat(skel); err == nil {
		return nil, fmt.Errorf("runc: sandbox %s: leftover root skeleton %s (Reap it): %w", id, skel, os.ErrExist)
	}
	if _, err := os.Lstat(filepath.Join(r.stateRoot, id)); err == nil {
		return nil, fmt.Errorf("runc: sandbox %s: leftover container state (Reap it): %w", id, os.ErrExist)
	}
	binds, err := buildSkeleton(skel, spec.RootFS, spec.VolumeTree(), r.agent)
	if err != nil {
		_ = os.RemoveAll(skel)
		return nil, err
	}
	cleanupSkel := true
	defer func() {
		if cleanupSkel {
			_ = os.RemoveAll(skel)
		}
	}()
	// Without its own root /workspace is the skeleton's link.
	agentArgs := []string{AgentPath, "-dir", container.WorkspaceDir}
	if spec.Root != "" {
		agentArgs = append([]string{AgentPath}, container.AgentRootArgs(spec, VolumeDir)...)
	}
	var pidsDir string
	if spec.Limits.Pids > 0 {
		if pidsDir, err = r.pidsSetup(id, spec.Limits.Pids); err != nil {
			_ = r.removeCgroups(context.Background(), id)
			return nil, fmt.Errorf("runc: pids cgroup of %s: %w", id, err)
		}
		agentArgs = append(agentArgs, "-pids-limit", strconv.FormatInt(spec.Limits.Pids, 10))
	}
	cfg, err := libcontainerConfig(id, ociSpec(spec, skel, r.containerCgroup(id), pidsDir, binds, r.seccomp))
	if err != nil {
		_ = r.removeCgroups(context.Background(), id)
		return nil, err
	}
	c, err := libcontainer.Create(r.stateRoot, id, cfg)
	if err != nil {
		if errors.Is(err, libcontainer.ErrExist) {
			return nil, fmt.Errorf("runc: sandbox %s: leftover container state (Reap it): %w", id, os.ErrExist)
		}
		_ = r.removeCgroups(context.Background(), id)
		return nil, fmt.Errorf("runc: create container %s: %w", id, err)
	}
	destroy := true
	defer func() {
		if destroy {
			_ = c.Signal(syscall.SIGKILL)
			_ = c.Destroy()
			_ = r.removeCgroups(context.Background(), id)
		}
	}()

	p, stdio, err := runAgent(c, agentArgs, agentEnv(spec))
	if err != nil {
		return nil, fmt.Errorf("runc: start container %s: %w", id, err)
	}
	s, err := r.attach(ctx, spec, c, p, stdio, skel)
	if err != nil {
		return nil, err
	}
	destroy, cleanupSkel = false, false
	r.mu.Lock()
	r.live[id] = s
	r.mu.Unlock()
	return s, nil
}

// agentStdio holds the host's ends of the agent's stdin, stdout and
// stderr.
type agentStdio struct{ in, out, err *os.File }

// runAgent starts the agent as container c's init, its stdio on three
// pipes, and returns the process and the host's ends.
func runAgent(c *libcontainer.Container, args, env []string) (*libcontainer.Process, agentStdio, error) {
	var host, child [3]*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			if f != nil {
				f.Close()
			}
		}
	}
	for i := range host {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(host[:])
			closeAll(child[:])
			return nil, agentStdio{}, err
		}
		if i == 0 { // stdin: the agent reads
			child[i], host[i] = r, w
		} else {
			host[i], child[i] = r, w
		}
	}
	p := &libcontainer.Process{
		Args: args, Env: env, Cwd: "/",
		Stdin: child[0], Stdout: child[1], Stderr: child[2],
		Init: true,
	}
	err := c.Run(p)
	// The container holds its own copies of the child ends.
	closeAll(child[:])
	if err != nil {
		closeAll(host[:])
		return nil, agentStdio{}, err
	}
	return p, agentStdio{in: host[0], out: host[1], err: host[2]}, nil
}

// attach makes the Sandbox of container c, whose agent p runs, and waits
// until the agent answers; on failure it kills the container (Start's
// deferred cleanup removes the rest).
func (r *Runtime) attach(ctx context.Context, spec container.Spec, c *libcontainer.Container, p *libcontainer.Process, stdio agentStdio, skel string) (*Sandbox, error) {
	s := &Sandbox{rt: r, c: c, proc: p, skel: skel, workspace: spec.VolumeTree(), stderr: newTailBuffer(4 << 10)}
	s.Sandbox = agentbox.New("runc", spec.ID, agent.NewClient(stdio.out, stdio.in), agentbox.Ops{
		Freeze: s.freeze, Teardown: s.teardown, Lost: s.lost, OwnRoot: spec.Root != "",
	})
	if spec.Limits.MemoryBytes > 0 {
		if st, err := c.State(); err == nil {
			mem := st.CgroupPaths["memory"]
			if mem == "" {
				mem = st.CgroupPaths[""]
			}
			s.SetMemoryCgroup(mem)
		}
	}
	go func() {
		_, _ = io.Copy(s.stderr, stdio.err)
		stdio.err.Close()
	}()
	go s.wait()

	pctx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		pctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	if err := s.leftSandbox(); err != nil {
		s.abort()
		return nil, err
	}
	if err := s.Client().Ping(pctx); err != nil {
		s.abort()
		return nil, fmt.Errorf("runc: agent of %s did not answer: %w (agent stderr: %q)", spec.ID, err, s.stderr.String())
	}
	if err := s.Started(); err != nil {
		s.abort()
		return nil, err
	}
	return s, nil
}

// leftSandbox checks that starting the sandbox left this process in the
// host's namespaces: it waits for libcontainer's helper threads in the
// sandbox's namespaces to end (see waitThreadsLeft).
func (s *Sandbox) leftSandbox() error {
	pid, err := s.proc.Pid()
	if err != nil {
		return fmt.Errorf("runc: start container %s: %w", s.ID(), err)
	}
	if err := waitThreadsLeft(pid); err != nil {
		return fmt.Errorf("runc: start container %s: %w", s.ID(), err)
	}
	return nil
}

// abort kills a sandbox that Start is giving up on and waits for its
// agent to exit; Start's deferred cleanup destroys the rest.
func (s *Sandbox) abort() {
	_ = s.c.Signal(syscall.SIGKILL)
	<-s.Done()
	s.Client().Close()
}

// agentEnv is the agent's environment, which is also every command's base
// environment.
func agentEnv(spec container.Spec) []string {
	env := []string{defaultPath, "HOME=/root", "TERM=dumb"}
	return append(env, spec.Env...)
}

func validateSpec(spec container.Spec) error {
	if !validID(spec.ID) {
		return fmt.Errorf("%w: id %q (letters, digits, _ + - . only)", container.ErrInvalidSpec, spec.ID)
	}
	return container.CheckIsolatedSpec(spec)
}

// wait waits for the agent (the container's init) to exit; all other
// processes of the sandbox die with it.
func (s *Sandbox) wait() {
	ps, werr := s.proc.Wait()
	how := "exited"
	if ps != nil {
		how = ps.String()
	} else if werr != nil {
		how = werr.Error()
	}
	msg := fmt.Sprintf("runc: sandbox %s: agent %s", s.ID(), how)
	if cerr := s.Client().Err(); cerr != nil {
		msg += fmt.Sprintf(" (agent connection: %v)", cerr)
	}
	if t := s.stderr.String(); t != "" {
		msg += fmt.Sprintf(" (stderr: %q)", t)
	}
	s.Exited(fmt.Errorf("%s: %w", msg, container.ErrNotRunning))
	s.Client().Close()
}

// lost is agentbox.Ops.Lost: the connection to the agent ended while the
// sandbox runs (the agent broke the protocol, stopped reading or did not
// report a killed command), so the container is killed; wait then
// reports it dead.
func (s *Sandbox) lost() {
	select {
	case <-s.Done():
	default:
		_ = s.c.Signal(syscall.SIGKILL)
	}
}

// freeze is agentbox.Ops.Freeze: the cgroup freezer stops every process
// of the sandbox, the agent included.
func (s *Sandbox) freeze(ctx context.Context, pause bool) error {
	if !pause {
		err := s.c.Resume()
		if err == nil || errors.Is(err, libcontainer.ErrNotPaused) {
			return nil
		}
		return fmt.Errorf("runc: resume %s: %w", s.ID(), err)
	}
	// The v1 freezer can fail to settle while tasks keep forking ("unable
	// to freeze"); libcontainer thaws again then, so a retry is safe. Under
	// load (tool calls forking while a turn ends) one try is not enough.
	var err error
	delay := 10 * time.Millisecond
	for attempt := 0; attempt < 6; attempt++ {
		if err = s.c.Pause(); err == nil || errors.Is(err, libcontainer.ErrNotRunning) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("runc: pause %s: %w (%v)", s.ID(), ctx.Err(), err)
		case <-time.After(delay):
		}
		delay *= 2
	}
	if err != nil {
		return fmt.Errorf("runc: pause %s: %w", s.ID(), err)
	}
	return nil
}

// teardown is agentbox.Ops.Teardown: it kills the sandbox (paused or
// not), waits for its processes to exit and removes its cgroups,
// libcontainer state and root skeleton. It also cleans up after a sandbox
// that died on its own.
func (s *Sandbox) teardown(ctx context.Context, _ container.Status) error {
	var killErr error
	select {
	case <-s.Done():
	default:
		// SIGKILL to a pid namespace's init kills the whole namespace;
		// libcontainer also thaws a frozen cgroup so the kill lands.
		killErr = s.c.Signal(syscall.SIGKILL)
	}
	select {
	case <-s.Done():
	case <-ctx.Done():
		return fmt.Errorf("runc: stop %s: %w (kill: %v)", s.ID(), ctx.Err(), killErr)
	}
	var errs []error
	if err := s.c.Destroy(); err != nil {
		errs = append(errs, fmt.Errorf("runc: destroy %s: %w", s.ID(), err))
	}
	// Destroy removes the cgroups; this catches any it could not.
	if err := s.rt.removeCgroups(ctx, s.ID()); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(s.skel); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		// Every process of the sandbox is gone: nothing sees the volume.
		errs = append(errs, container.UnsealVolumeDir(s.workspace))
	}
	s.rt.forget(s.ID(), s)
	return errors.Join(errs...)
}

// forget drops a sandbox (or a reservation, s == nil) from the live set.
func (r *Runtime) forget(id string, s *Sandbox) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur, ok := r.live[id]; ok && cur == s {
		delete(r.live, id)
	}
	if len(r.live) == 0 {
		// No sandbox of this runtime is running or starting: drop the
		// empty cgroup parent (rmdir fails harmlessly if it is not).
		for _, d := range cgroupDirs(r.cgroupParent) {
			_ = os.Remove(d)
		}
	}
}

// reapStale destroys a sandbox left by another (crashed) process.
func (r *Runtime) reapStale(ctx context.Context, id string) error {
	var errs []error
	if c, err := libcontainer.Load(r.stateRoot, id); err == nil {
		if st, err := c.Status(); err == nil && st != libcontainer.Stopped {
			_ = c.Signal(syscall.SIGKILL)
			for i := 0; i < 500; i++ {
				if st, err := c.Status(); err != nil || st == libcontainer.Stopped {
					break
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(2 * time.Millisecond):
				}
			}
		}
		if err := c.Destroy(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := r.removeCgroups(ctx, id); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(filepath.Join(r.stateRoot, id)); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(filepath.Join(r.skelRoot, id)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// tailBuffer keeps the last bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}
