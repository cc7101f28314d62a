package runc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/agent"
	"github.com/turnbox/turnbox/container/cgroup"
)

// startTimeout bounds the wait for a new agent's first answer when Start's
// ctx has no deadline.
const startTimeout = 10 * time.Second

// Sandbox is a running runc sandbox: a libcontainer container whose init
// is the turnbox agent, talking to the host over its stdin and stdout.
// Safe for concurrent use.
type Sandbox struct {
	rt     *Runtime
	id     string
	c      *libcontainer.Container
	proc   *libcontainer.Process
	client *agent.Client
	skel   string
	// workspace is the host path of the workspace; its directory is
	// sealed while the sandbox lives (container.SealVolumeDir).
	workspace string
	// memCgroup is the memory cgroup's directory when a memory limit is
	// set ("" otherwise); OOM kills are read from it.
	memCgroup string
	stderr    *tailBuffer

	done chan struct{}

	mu       sync.Mutex
	err      error // why the sandbox died; nil after a clean Stop
	stopping bool
	stopped  bool
	stopErr  error
	stopDone chan struct{} // closed when the first Stop finishes
}

var _ container.Sandbox = (*Sandbox)(nil)

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
// spec.Network is NetworkHost) network namespaces with only loopback, with
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
	if err := container.SealVolumeDir(spec.Workspace); err != nil {
		r.forget(spec.ID, nil)
		return nil, fmt.Errorf("runc: %w", err)
	}
	return func() {
		_ = container.UnsealVolumeDir(spec.Workspace)
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
	binds, err := buildSkeleton(skel, spec.RootFS, spec.Workspace, r.agent)
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
	agentArgs := []string{AgentPath, "-dir", container.WorkspaceDir}
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

	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return nil, err
	}
	p := &libcontainer.Process{
		Args:   agentArgs,
		Env:    agentEnv(spec),
		Cwd:    "/",
		Stdin:  inR,
		Stdout: outW,
		Stderr: errW,
		Init:   true,
	}
	runErr := c.Run(p)
	// The container holds its own copies of the child ends.
	inR.Close()
	outW.Close()
	errW.Close()
	if runErr != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("runc: start container %s: %w", id, runErr)
	}
	s := &Sandbox{
		rt:        r,
		id:        id,
		c:         c,
		proc:      p,
		client:    agent.NewClient(outR, inW),
		skel:      skel,
		workspace: spec.Workspace,
		stderr:    newTailBuffer(4 << 10),
		done:      make(chan struct{}),
		stopDone:  make(chan struct{}),
	}
	if spec.Limits.MemoryBytes > 0 {
		if st, err := c.State(); err == nil {
			s.memCgroup = st.CgroupPaths["memory"]
			if s.memCgroup == "" {
				s.memCgroup = st.CgroupPaths[""]
			}
		}
	}
	go func() {
		_, _ = io.Copy(s.stderr, errR)
		errR.Close()
	}()
	go s.wait()
	go s.killOnLostAgent()

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
	if err := s.client.Ping(pctx); err != nil {
		s.abort()
		return nil, fmt.Errorf("runc: agent of %s did not answer: %w (agent stderr: %q)", id, err, s.stderr.String())
	}
	destroy, cleanupSkel = false, false
	r.mu.Lock()
	r.live[id] = s
	r.mu.Unlock()
	return s, nil
}

// leftSandbox checks that starting the sandbox left this process in the
// host's namespaces: it waits for libcontainer's helper threads in the
// sandbox's namespaces to end (see waitThreadsLeft).
func (s *Sandbox) leftSandbox() error {
	pid, err := s.proc.Pid()
	if err != nil {
		return fmt.Errorf("runc: start container %s: %w", s.id, err)
	}
	if err := waitThreadsLeft(pid); err != nil {
		return fmt.Errorf("runc: start container %s: %w", s.id, err)
	}
	return nil
}

// abort kills a sandbox that Start is giving up on and waits for its
// agent to exit; Start's deferred cleanup destroys the rest.
func (s *Sandbox) abort() {
	_ = s.c.Signal(syscall.SIGKILL)
	<-s.done
	s.client.Close()
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
	if !filepath.IsAbs(spec.RootFS) {
		return fmt.Errorf("%w: RootFS %q must be an absolute path", container.ErrInvalidSpec, spec.RootFS)
	}
	if fi, err := os.Stat(spec.RootFS); err != nil || !fi.IsDir() {
		return fmt.Errorf("%w: RootFS %q is not a directory", container.ErrInvalidSpec, spec.RootFS)
	}
	if !filepath.IsAbs(spec.Workspace) || filepath.Clean(spec.Workspace) == "/" {
		return fmt.Errorf("%w: Workspace %q must be an absolute path below /", container.ErrInvalidSpec, spec.Workspace)
	}
	if fi, err := os.Stat(spec.Workspace); err != nil || !fi.IsDir() {
		return fmt.Errorf("%w: Workspace %q is not a directory", container.ErrInvalidSpec, spec.Workspace)
	}
	switch spec.Network {
	case "", container.NetworkNone, container.NetworkHost:
	default:
		return fmt.Errorf("%w: network %q", container.ErrInvalidSpec, spec.Network)
	}
	l := spec.Limits
	if l.CPUs < 0 || l.MemoryBytes < 0 || l.Pids < 0 {
		return fmt.Errorf("%w: negative limit", container.ErrInvalidSpec)
	}
	for _, e := range spec.Env {
		if !strings.Contains(e, "=") {
			return fmt.Errorf("%w: env entry %q is not KEY=value", container.ErrInvalidSpec, e)
		}
	}
	return nil
}

// wait waits for the agent (the container's init) to exit; all other
// processes of the sandbox die with it.
func (s *Sandbox) wait() {
	ps, werr := s.proc.Wait()
	s.mu.Lock()
	if !s.stopping {
		how := "exited"
		if ps != nil {
			how = ps.String()
		} else if werr != nil {
			how = werr.Error()
		}
		msg := fmt.Sprintf("runc: sandbox %s: agent %s", s.id, how)
		if cerr := s.client.Err(); cerr != nil {
			msg += fmt.Sprintf(" (agent connection: %v)", cerr)
		}
		if t := s.stderr.String(); t != "" {
			msg += fmt.Sprintf(" (stderr: %q)", t)
		}
		s.err = fmt.Errorf("%s: %w", msg, container.ErrNotRunning)
	}
	s.mu.Unlock()
	s.client.Close()
	close(s.done)
}

// killOnLostAgent kills the container when the connection to its agent
// ends while it runs (the agent broke the protocol, stopped reading or
// did not report a killed command): a sandbox whose agent the host gave
// up on is not left running. wait then reports it dead.
func (s *Sandbox) killOnLostAgent() {
	select {
	case <-s.client.Done():
	case <-s.done:
		return
	}
	s.mu.Lock()
	stopping := s.stopping
	s.mu.Unlock()
	if !stopping && !s.isDone() {
		_ = s.c.Signal(syscall.SIGKILL)
	}
}

// ID returns the sandbox's id.
func (s *Sandbox) ID() string { return s.id }

// Done is closed when the sandbox's agent has exited (by Stop or not).
// A sandbox that died on its own still holds its cgroups and state until
// Stop (or the runtime's Reap).
func (s *Sandbox) Done() <-chan struct{} { return s.done }

// Err is nil while the sandbox runs and after a clean Stop; otherwise it
// wraps container.ErrNotRunning and says how the agent ended.
func (s *Sandbox) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *Sandbox) notRunning() error {
	if err := s.Err(); err != nil {
		return err
	}
	return fmt.Errorf("runc: sandbox %s stopped: %w", s.id, container.ErrNotRunning)
}

func (s *Sandbox) isDone() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Exec runs a command through the agent: a fork+exec inside the sandbox.
// Its whole process tree is killed when ctx is done or p.Timeout passes.
// With a memory limit, a command killed by SIGKILL while the sandbox's
// memory cgroup recorded an OOM kill is reported as OOMKilled.
func (s *Sandbox) Exec(ctx context.Context, p container.Process) (container.ExitStatus, error) {
	if len(p.Args) == 0 {
		return container.ExitStatus{}, fmt.Errorf("%w: empty Args", container.ErrInvalidSpec)
	}
	if p.Dir != "" {
		d := path.Clean(p.Dir)
		if !path.IsAbs(p.Dir) || (d != container.WorkspaceDir && !strings.HasPrefix(d, container.WorkspaceDir+"/")) {
			return container.ExitStatus{}, fmt.Errorf("%w: Dir %q must be %s or below it", container.ErrInvalidSpec, p.Dir, container.WorkspaceDir)
		}
		p.Dir = d
	}
	if s.isDone() {
		return container.ExitStatus{}, s.notRunning()
	}
	// The working directory is reached through the /workspace symlink, so
	// getcwd(2) answers with the path inside VolumeDir; PWD makes shells
	// (and anything that trusts PWD) show the /workspace path.
	if !hasEnv(p.Env, "PWD") {
		dir := p.Dir
		if dir == "" {
			dir = container.WorkspaceDir
		}
		p.Env = append([]string{"PWD=" + dir}, p.Env...)
	}
	before := cgroup.OOMKills(s.memCgroup)
	st, err := s.client.Exec(ctx, p)
	if err != nil {
		if s.isDone() || errors.Is(err, container.ErrNotRunning) {
			if s.isDone() {
				return st, fmt.Errorf("%w (%v)", s.notRunning(), err)
			}
			return st, err
		}
		return st, err
	}
	if !st.OOMKilled && st.Code == 128+int(syscall.SIGKILL) && before >= 0 && cgroup.OOMKills(s.memCgroup) > before {
		st.OOMKilled = true
	}
	return st, nil
}

// Idle implements container.IdleChecker through the agent.
func (s *Sandbox) Idle(ctx context.Context) (bool, error) {
	if s.isDone() {
		return false, s.notRunning()
	}
	return s.client.Idle(ctx)
}

// KillAll kills every process in the sandbox but the agent and waits for
// them to exit.
func (s *Sandbox) KillAll(ctx context.Context) error {
	if s.isDone() {
		return s.notRunning()
	}
	if err := s.client.KillAll(ctx); err != nil {
		if s.isDone() {
			return fmt.Errorf("%w (%v)", s.notRunning(), err)
		}
		return err
	}
	return nil
}

// Pause freezes every process of the sandbox, the agent included, with
// the cgroup freezer. Exec calls block until Resume.
func (s *Sandbox) Pause(ctx context.Context) error {
	if s.isDone() {
		return s.notRunning()
	}
	// The v1 freezer can fail to settle while tasks keep forking ("unable
	// to freeze"); libcontainer thaws again then, so a retry is safe. Under
	// load (tool calls forking while a turn ends) one try is not enough.
	var err error
	delay := 10 * time.Millisecond
	for attempt := 0; attempt < 6; attempt++ {
		if err = s.c.Pause(); err == nil {
			return nil
		}
		if errors.Is(err, libcontainer.ErrNotRunning) {
			return fmt.Errorf("%w (%v)", s.notRunning(), err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("runc: pause %s: %w (%v)", s.id, ctx.Err(), err)
		case <-time.After(delay):
		}
		delay *= 2
	}
	return fmt.Errorf("runc: pause %s: %w", s.id, err)
}

// Resume thaws a paused sandbox; it is a no-op on a running one.
func (s *Sandbox) Resume(ctx context.Context) error {
	if s.isDone() {
		return s.notRunning()
	}
	if err := s.c.Resume(); err != nil {
		if errors.Is(err, libcontainer.ErrNotPaused) {
			return nil
		}
		if errors.Is(err, libcontainer.ErrNotRunning) {
			return fmt.Errorf("%w (%v)", s.notRunning(), err)
		}
		return fmt.Errorf("runc: resume %s: %w", s.id, err)
	}
	return nil
}

// Stop kills the sandbox (paused or not), waits for its processes to exit
// and removes its cgroups, libcontainer state and root skeleton. The
// workspace is untouched. Stop on a stopped sandbox returns the first
// Stop's result; it also cleans up after a sandbox that died on its own.
func (s *Sandbox) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		select {
		case <-s.stopDone:
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.stopErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.stopping = true
	s.mu.Unlock()

	err := s.stop(ctx)
	s.mu.Lock()
	s.stopped = true
	s.stopErr = err
	s.mu.Unlock()
	close(s.stopDone)
	return err
}

func (s *Sandbox) stop(ctx context.Context) error {
	var errs []error
	if !s.isDone() {
		// SIGKILL to a pid namespace's init kills the whole namespace;
		// libcontainer also thaws a frozen cgroup so the kill lands.
		if err := s.c.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) && !s.isDone() {
			errs = append(errs, fmt.Errorf("runc: kill %s: %w", s.id, err))
		}
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := s.c.Destroy(); err != nil {
		errs = append(errs, fmt.Errorf("runc: destroy %s: %w", s.id, err))
	}
	// Destroy removes the cgroups; this catches any it could not.
	if err := s.rt.removeCgroups(ctx, s.id); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(s.skel); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		// Every process of the sandbox is gone: nothing sees the volume.
		errs = append(errs, container.UnsealVolumeDir(s.workspace))
	}
	s.rt.forget(s.id, s)
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

func hasEnv(env []string, key string) bool {
	for _, e := range env {
		if k, _, _ := strings.Cut(e, "="); k == key {
			return true
		}
	}
	return false
}
