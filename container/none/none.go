// Package none is the container.Runtime that isolates nothing: commands run
// as plain host processes, as the host user, with the workspace as working
// directory. A command can read and write anything that user can. It exists
// for development and for hosts without runsc or runc; never run untrusted
// code on it.
//
// What it does provide: each command runs in its own session and, where the
// unified (v2) cgroup hierarchy is writable, in its own child cgroup of the
// sandbox's cgroup (placed there atomically at fork with CLONE_INTO_CGROUP).
// A timeout or KillAll then kills the whole process tree through
// cgroup.kill, even processes that called setsid; Pause and Resume freeze and
// thaw every process of the sandbox through cgroup.freeze. Without a
// writable cgroup hierarchy, trees are killed by process group and Pause
// returns container.ErrUnsupported.
package none

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/turnbox/turnbox/container"
)

// CgroupBase is the cgroup v2 directory that holds every none runtime's
// cgroup root, one directory each. A runtime lists and reaps only the
// sandboxes in its own root, so roots must be siblings, never nested:
// embedded gives each host CgroupBase/<hash of its state directory>.
const CgroupBase = "/sys/fs/cgroup/unified/turnbox-none"

// DefaultCgroupRoot is where sandboxes' cgroups go when the unified
// hierarchy is writable and New is given no WithCgroupRoot.
const DefaultCgroupRoot = CgroupBase + "/default"

// defaultPath is the PATH commands get when the spec sets none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Runtime is the none runtime.
type Runtime struct {
	cgroupRoot string // "" when cgroups are not used
	log        *slog.Logger
}

// Option configures a Runtime.
type Option func(*Runtime)

// WithCgroupRoot sets the cgroup v2 directory under which sandboxes get
// their cgroups; "" disables cgroups (process-group kill, no Pause).
func WithCgroupRoot(dir string) Option { return func(r *Runtime) { r.cgroupRoot = dir } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(r *Runtime) { r.log = l } }

// New returns the none runtime. Unless WithCgroupRoot says otherwise it uses
// DefaultCgroupRoot when the unified hierarchy is writable, and logs a
// warning that nothing is isolated.
func New(opts ...Option) (*Runtime, error) {
	r := &Runtime{cgroupRoot: DefaultCgroupRoot, log: slog.Default()}
	for _, o := range opts {
		o(r)
	}
	if r.cgroupRoot != "" {
		if err := os.MkdirAll(r.cgroupRoot, 0o755); err != nil || !cgroupWritable(r.cgroupRoot) {
			r.log.Warn("none runtime: cgroup v2 not writable; trees are killed by process group and pause is unsupported",
				"cgroup_root", r.cgroupRoot, "err", err)
			r.cgroupRoot = ""
		}
	}
	r.log.Warn("none runtime: commands run as plain host processes; NOTHING IS ISOLATED (development only)")
	return r, nil
}

func cgroupWritable(dir string) bool {
	probe := filepath.Join(dir, ".probe-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(probe, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return false
	}
	_, err := os.Stat(filepath.Join(probe, "cgroup.kill"))
	_ = os.Remove(probe)
	return err == nil
}

// Close removes the runtime's cgroup root if no sandbox is left in it.
func (r *Runtime) Close() error {
	if r.cgroupRoot == "" {
		return nil
	}
	if err := os.Remove(r.cgroupRoot); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("none: removing %s: %w", r.cgroupRoot, err)
	}
	return nil
}

// Kind implements container.Runtime.
func (r *Runtime) Kind() string { return "none" }

// CgroupsEnabled reports whether sandboxes get cgroups (and so Pause).
func (r *Runtime) CgroupsEnabled() bool { return r.cgroupRoot != "" }

// Start implements container.Runtime. There is nothing to boot: the sandbox
// is a cgroup (when enabled) and a workspace directory.
func (r *Runtime) Start(ctx context.Context, spec container.Spec) (container.Sandbox, error) {
	if spec.ID == "" || strings.ContainsAny(spec.ID, "/\x00") || spec.ID == "." || spec.ID == ".." {
		return nil, fmt.Errorf("%w: bad sandbox id %q", container.ErrInvalidSpec, spec.ID)
	}
	fi, err := os.Stat(spec.Workspace)
	if err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%w: workspace %q is not a directory", container.ErrInvalidSpec, spec.Workspace)
	}
	if spec.Network == container.NetworkNamespace || spec.NetNS != "" {
		return nil, fmt.Errorf("none: network %q: commands run on the host's own network, they cannot join a network namespace: %w", container.NetworkNamespace, container.ErrUnsupported)
	}
	s := &sandbox{Lifecycle: container.NewLifecycle("none: sandbox " + spec.ID), rt: r, spec: spec, procs: map[int]struct{}{}}
	if r.cgroupRoot != "" {
		s.cgroup = filepath.Join(r.cgroupRoot, spec.ID)
		if _, err := os.Stat(s.cgroup); err == nil {
			// Left by a crashed host: clean it before reuse.
			if err := removeCgroupTree(ctx, s.cgroup); err != nil {
				return nil, fmt.Errorf("none: cleaning stale cgroup %s: %w", s.cgroup, err)
			}
		}
		if err := os.Mkdir(s.cgroup, 0o755); err != nil {
			return nil, fmt.Errorf("none: creating cgroup: %w", err)
		}
	}
	if err := s.Started(); err != nil {
		return nil, err
	}
	return s, nil
}

// List implements container.Runtime: the sandboxes with a cgroup under the
// root (none without cgroups keeps no state, so lists nothing).
func (r *Runtime) List(ctx context.Context) ([]string, error) {
	if r.cgroupRoot == "" {
		return nil, nil
	}
	ents, err := os.ReadDir(r.cgroupRoot)
	if err != nil {
		return nil, fmt.Errorf("none: listing %s: %w", r.cgroupRoot, err)
	}
	var ids []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// Reap implements container.Runtime: kills the processes of every sandbox
// cgroup under the root and removes the cgroup.
func (r *Runtime) Reap(ctx context.Context) error {
	ids, err := r.List(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		r.log.Info("none: reaping orphaned sandbox", "sandbox", id)
		if err := removeCgroupTree(ctx, filepath.Join(r.cgroupRoot, id)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sandbox is a none sandbox. Its status is the embedded Lifecycle's; a
// none sandbox never dies on its own, so Err stays nil.
//
// Locks, in order: startMu, the Lifecycle's, mu.
type sandbox struct {
	*container.Lifecycle
	rt     *Runtime
	spec   container.Spec
	cgroup string // "" without cgroups

	seq atomic.Uint64
	// startMu orders process creation against freezing: Exec holds it for
	// reading from its status check until the child has exec'd, Pause and
	// Resume for writing across the freeze and the status change. A child
	// cloned into a frozen cgroup would never reach exec, and the Go
	// thread waiting for it could never be stopped, hanging the whole
	// process.
	startMu sync.RWMutex

	mu    sync.Mutex
	procs map[int]struct{} // pgids of running commands (fallback kill)
}

var (
	_ container.Sandbox        = (*sandbox)(nil)
	_ container.IdleChecker    = (*sandbox)(nil)
	_ container.StatusReporter = (*sandbox)(nil)
)

// ID returns the sandbox's id.
func (s *sandbox) ID() string { return s.spec.ID }

// hostDir maps a Process's Dir (see container.SandboxDir) to the host
// workspace.
func (s *sandbox) hostDir(dir string) (string, error) {
	dir, err := container.SandboxDir(dir)
	if err != nil {
		return "", err
	}
	rel, _ := strings.CutPrefix(dir, container.WorkspaceDir)
	return filepath.Join(s.spec.Workspace, filepath.FromSlash(rel)), nil
}

func (s *sandbox) env(extra []string) []string {
	env := make([]string, 0, len(s.spec.Env)+len(extra)+3)
	env = append(env, "HOME="+s.spec.Workspace, "PWD="+s.spec.Workspace)
	env = append(env, s.spec.Env...)
	env = append(env, extra...)
	for _, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			return env
		}
	}
	return append(env, "PATH="+defaultPath)
}

// Exec runs p as a host process in its own session (and cgroup, when
// the runtime has cgroups) and waits for it; see container.Sandbox. It is
// StartProcess followed by Wait, killing the tree when ctx ends.
func (s *sandbox) Exec(ctx context.Context, p container.Process) (container.ExitStatus, error) {
	pr, err := s.start(container.ProcessSpec{Process: p}, p.Stdin)
	if err != nil {
		return container.ExitStatus{}, err
	}
	stop := context.AfterFunc(ctx, pr.kill)
	defer stop()
	<-pr.done
	return pr.st, pr.err
}

// newExecCgroup makes the cgroup of one command under the sandbox's and
// opens it for clone3's CLONE_INTO_CGROUP; "" and nil without cgroups.
func (s *sandbox) newExecCgroup() (string, *os.File, error) {
	if s.cgroup == "" {
		return "", nil, nil
	}
	dir := filepath.Join(s.cgroup, "x"+strconv.FormatUint(s.seq.Add(1), 10))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", nil, fmt.Errorf("none: creating exec cgroup: %w", err)
	}
	fd, err := os.Open(dir)
	if err != nil {
		_ = os.Remove(dir)
		return "", nil, fmt.Errorf("none: opening exec cgroup: %w", err)
	}
	return dir, fd, nil
}

// await waits for the started cmd, killing its tree (in cgroup cg, or
// its process group) when ctx ends, and returns how it ended.
func (s *sandbox) await(ctx context.Context, cmd *exec.Cmd, cg string, start time.Time) (container.ExitStatus, error) {
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	var timedOut bool
	var werr error
	select {
	case werr = <-waitErr:
	case <-ctx.Done():
		timedOut = true
		s.killTree(cg, cmd.Process.Pid)
		werr = <-waitErr
	}
	st := container.ExitStatus{TimedOut: timedOut, Duration: time.Since(start)}
	if cmd.ProcessState == nil {
		return st, fmt.Errorf("none: waiting for %q: %w", cmd.Args[0], werr)
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		st.Code, st.Signal = 128+int(ws.Signal()), int(ws.Signal())
	} else {
		st.Code = ws.ExitStatus()
	}
	if timedOut {
		// The tree is gone; wait for the cgroup to empty so the caller sees
		// no survivors.
		waitEmpty(context.Background(), cg)
	}
	return st, nil
}

// killTree kills one command's process tree: through its cgroup when there
// is one, else its process group.
func (s *sandbox) killTree(cg string, pgid int) {
	if cg != "" {
		if err := os.WriteFile(filepath.Join(cg, "cgroup.kill"), []byte("1"), 0); err == nil {
			return
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// KillAll kills every command and what it left; ErrPaused while paused.
func (s *sandbox) KillAll(ctx context.Context) error {
	if err := s.Require(container.StatusRunning); err != nil {
		return err
	}
	return s.killAll(ctx)
}

func (s *sandbox) killAll(ctx context.Context) error {
	if s.cgroup != "" {
		if err := os.WriteFile(filepath.Join(s.cgroup, "cgroup.kill"), []byte("1"), 0); err != nil {
			return fmt.Errorf("none: killing sandbox %s: %w", s.spec.ID, err)
		}
		if err := waitEmpty(ctx, s.cgroup); err != nil {
			return err
		}
		removeChildren(s.cgroup)
		return nil
	}
	s.mu.Lock()
	for pgid := range s.procs {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	s.mu.Unlock()
	return nil
}

// Idle implements container.IdleChecker: with cgroups, the sandbox's
// cgroup is unpopulated; without, no command is running (background
// processes cannot be seen then, so it reports busy if any ever ran).
func (s *sandbox) Idle(ctx context.Context) (bool, error) {
	if err := s.Require(container.StatusRunning); err != nil {
		return false, err
	}
	if s.cgroup == "" {
		return false, nil
	}
	b, err := os.ReadFile(filepath.Join(s.cgroup, "cgroup.events"))
	if err != nil {
		return false, err
	}
	return strings.Contains(string(b), "populated 0"), nil
}

// Pause freezes the sandbox's cgroup (ErrUnsupported without cgroups).
func (s *sandbox) Pause(ctx context.Context) error { return s.freeze(ctx, true) }

// Resume thaws a paused sandbox.
func (s *sandbox) Resume(ctx context.Context) error { return s.freeze(ctx, false) }

func (s *sandbox) freeze(ctx context.Context, frozen bool) error {
	if s.cgroup == "" {
		return fmt.Errorf("none: pause needs a writable cgroup v2 hierarchy: %w", container.ErrUnsupported)
	}
	v, want := "0", "frozen 0"
	if frozen {
		v, want = "1", "frozen 1"
	}
	// No Exec may be between its checks and its child's exec while the
	// cgroup freezes (see startMu).
	s.startMu.Lock()
	defer s.startMu.Unlock()
	return s.SetPaused(frozen, func() error {
		if err := os.WriteFile(filepath.Join(s.cgroup, "cgroup.freeze"), []byte(v), 0); err != nil {
			return fmt.Errorf("none: freeze=%s on %s: %w", v, s.spec.ID, err)
		}
		// The write returns before every task has stopped; wait for the
		// kernel to report the cgroup settled.
		err := pollEvents(ctx, s.cgroup, want)
		if err != nil && frozen {
			// Still running as far as Exec knows: thaw what froze.
			_ = os.WriteFile(filepath.Join(s.cgroup, "cgroup.freeze"), []byte("0"), 0)
		}
		return err
	})
}

// Stop kills every process of the sandbox (thawing it first) and removes
// its cgroup. A second Stop waits for the first and returns its result.
func (s *sandbox) Stop(ctx context.Context) error {
	_, first, err := s.BeginStop(ctx)
	if !first {
		return err
	}
	if s.cgroup != "" {
		err = removeCgroupTree(ctx, s.cgroup)
	} else {
		err = s.killAll(ctx)
	}
	return s.EndStop(err)
}

// pollEvents waits until cgroup.events contains line (e.g. "populated 0").
func pollEvents(ctx context.Context, cg, line string) error {
	deadline := time.Now().Add(10 * time.Second)
	for delay := 50 * time.Microsecond; ; delay = min(delay*2, 5*time.Millisecond) {
		b, err := os.ReadFile(filepath.Join(cg, "cgroup.events"))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("none: reading %s/cgroup.events: %w", cg, err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l == line {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("none: %s: timed out waiting for %q", cg, line)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

func waitEmpty(ctx context.Context, cg string) error {
	if cg == "" {
		return nil
	}
	return pollEvents(ctx, cg, "populated 0")
}

func removeChildren(cg string) {
	ents, _ := os.ReadDir(cg)
	for _, e := range ents {
		if e.IsDir() {
			_ = os.Remove(filepath.Join(cg, e.Name()))
		}
	}
}

// removeCgroupTree kills everything in cg (thawing it first, so frozen
// tasks can die) and removes it and its children.
func removeCgroupTree(ctx context.Context, cg string) error {
	_ = os.WriteFile(filepath.Join(cg, "cgroup.freeze"), []byte("0"), 0)
	if err := os.WriteFile(filepath.Join(cg, "cgroup.kill"), []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("none: killing %s: %w", cg, err)
	}
	if err := waitEmpty(ctx, cg); err != nil {
		return err
	}
	removeChildren(cg)
	if err := os.Remove(cg); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("none: removing cgroup %s: %w", cg, err)
	}
	return nil
}
