package embedded

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/environment"
)

// Processes that live between calls (environment.ProcessRunner). The
// session's sandbox starts them (container.ProcessStarter); the session's
// procTable keeps them and their output (proctable.go).

var _ environment.ProcessRunner = (*Environment)(nil)

// procSession returns the bound session for a process call, or
// ErrCapabilityNotSupported when the host runs no processes.
func (e *Environment) procSession() (*session, error) {
	if !e.host.caps.Processes {
		return nil, fmt.Errorf("%w: processes on the %s runtime", environment.ErrCapabilityNotSupported, e.host.caps.Isolation)
	}
	return e.session()
}

// proc returns the bound session's process pid.
func (e *Environment) proc(pid int) (*session, *proc, error) {
	s, err := e.procSession()
	if err != nil {
		return nil, nil, err
	}
	p, err := s.procs.get(pid)
	if err != nil {
		return nil, nil, fmt.Errorf("session %s: %w", s.id, err)
	}
	return s, p, nil
}

// StartProcess implements environment.ProcessRunner.
func (e *Environment) StartProcess(ctx context.Context, cfg environment.ProcessConfig) (*environment.ProcessInfo, error) {
	s, err := e.procSession()
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.PTY != nil && !e.host.caps.PTY {
		return nil, fmt.Errorf("%w: PTY on the %s runtime", environment.ErrCapabilityNotSupported, e.host.caps.Isolation)
	}
	info, err := s.startProcess(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return info, nil
}

// startProcess admits, starts and registers one process.
func (s *session) startProcess(ctx context.Context, cfg environment.ProcessConfig) (*environment.ProcessInfo, error) {
	end, err := s.beginAwake(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	if err := s.procs.admit(); err != nil {
		return nil, err
	}
	dir, err := s.processDir(cfg.Cwd)
	if err != nil {
		return nil, err
	}
	sb, err := s.sandbox(ctx)
	if err != nil {
		return nil, err
	}
	ps, ok := sb.(container.ProcessStarter)
	if !ok {
		return nil, fmt.Errorf("%w: this %s sandbox cannot start processes", environment.ErrCapabilityNotSupported, s.deps.runtime.Kind())
	}
	args := cfg.Args
	if cfg.Command != "" {
		rootfs, _ := s.deps.images.path(s.cfg.Image)
		args = []string{s.shell(rootfs), "-c", cfg.Command}
	}
	p := newProc(cfg, args, s.procs.ringBytes)
	spec := container.ProcessSpec{
		Process: container.Process{Args: args, Env: s.processEnv(cfg.Env), Dir: dir,
			Stdout: p.writer(environment.StreamStdout), Stderr: p.writer(environment.StreamStderr), Timeout: cfg.Timeout},
		User: s.userFor(cfg.User), OpenStdin: cfg.Stdin,
	}
	if cfg.PTY != nil {
		spec.PTY = &container.TermSize{Rows: cfg.PTY.Rows, Cols: cfg.PTY.Cols}
	}
	rp, err := ps.StartProcess(ctx, spec)
	if err != nil {
		return nil, s.processError(err)
	}
	s.procs.add(p, rp)
	go s.procs.watch(p, sb)
	info := p.snapshot()
	return &info, nil
}

// processDir is the directory a process starts in: commandDir's, except
// that a session with its own root also takes an absolute directory
// anywhere in that root (ProcessConfig.Cwd is "absolute in the sandbox").
// The check only makes a missing directory a clear error: the sandbox
// itself changes into the directory, so nothing on the host follows it.
func (s *session) processDir(cwd string) (string, error) {
	if !path.IsAbs(cwd) || !s.ownRoot() {
		return s.commandDir(cwd)
	}
	return s.rootDir(cwd)
}

// rootDir checks, through descriptors, that the absolute sandbox path
// dir is a directory of the session's own root, and returns it cleaned.
func (s *session) rootDir(dir string) (string, error) {
	rel, err := s.resolveSandboxPath(dir)
	if err != nil {
		return "", err
	}
	root, err := s.workspace().openTree()
	if err != nil {
		return "", err
	}
	defer unix.Close(root)
	fd, err := openat2(root, rel, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return "", fileErr(dir, err)
	}
	unix.Close(fd)
	return path.Clean("/" + rel), nil
}

// processEnv is the session's environment with extra added, sorted.
func (s *session) processEnv(extra map[string]string) []string {
	env := s.env()
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		env = append(env, k+"="+extra[k])
	}
	return env
}

// processError maps a container error of a process call to the
// environment's sentinels.
func (s *session) processError(err error) error {
	switch {
	case errors.Is(err, container.ErrPaused):
		return fmt.Errorf("%w: session %s is paused (%w)", environment.ErrNotActive, s.id, err)
	case errors.Is(err, container.ErrNotRunning):
		return fmt.Errorf("%w: session %s: its sandbox is not running (%w)", environment.ErrNotActive, s.id, err)
	case errors.Is(err, container.ErrProcessDone):
		return fmt.Errorf("%w: the process has ended (%w)", environment.ErrInvalidArgument, err)
	case errors.Is(err, container.ErrInvalidSpec):
		return fmt.Errorf("%w: %w", environment.ErrInvalidArgument, err)
	case errors.Is(err, container.ErrUnsupported):
		return fmt.Errorf("%w: %w", environment.ErrCapabilityNotSupported, err)
	}
	return err
}

// execTracked runs a bash tool call's command and registers it in the
// process table (tag "tool:<call id>") where the sandbox can start
// processes, so its output can be followed later by resp.PID. It keeps
// Exec's semantics: ctx's end kills the command's tree.
func (s *session) execTracked(ctx context.Context, sb container.Sandbox, callID string, spec container.Process, user string, resp *environment.ToolResponse) (container.ExitStatus, error) {
	ps, ok := sb.(container.ProcessStarter)
	if !ok {
		if user != "" {
			return container.ExitStatus{}, fmt.Errorf("%w: this %s sandbox cannot run a command as user %q", environment.ErrCapabilityNotSupported, s.deps.runtime.Kind(), user)
		}
		return sb.Exec(ctx, spec)
	}
	p := newProc(environment.ProcessConfig{Tag: "tool:" + callID}, spec.Args, s.procs.ringBytes)
	spec.Stdout = io.MultiWriter(spec.Stdout, p.writer(environment.StreamStdout))
	spec.Stderr = io.MultiWriter(spec.Stderr, p.writer(environment.StreamStderr))
	rp, err := ps.StartProcess(ctx, container.ProcessSpec{Process: spec, User: user})
	if err != nil {
		return container.ExitStatus{}, err
	}
	s.procs.add(p, rp)
	resp.PID = rp.PID()
	go s.procs.watch(p, sb)
	st, err := rp.Wait(ctx)
	if ctx.Err() == nil {
		return st, err
	}
	// Canceled: kill the tree as Exec does, and wait for it, bounded.
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), killAllTimeout)
	defer cancel()
	_ = rp.Kill(kctx)
	return rp.Wait(kctx)
}

// ListProcesses implements environment.ProcessRunner.
func (e *Environment) ListProcesses(ctx context.Context) ([]environment.ProcessInfo, error) {
	s, err := e.procSession()
	if err != nil {
		return nil, err
	}
	return s.procs.list(), nil
}

// AttachProcess implements environment.ProcessRunner. An offset past the
// output produced so far waits for output to reach it.
func (e *Environment) AttachProcess(ctx context.Context, pid int, offset int64, fn func(environment.ProcessEvent) error) error {
	_, p, err := e.proc(pid)
	if err != nil {
		return err
	}
	return p.attach(ctx, offset, fn)
}

// WaitProcess implements environment.ProcessRunner.
func (e *Environment) WaitProcess(ctx context.Context, pid int) (*environment.ProcessExit, error) {
	_, p, err := e.proc(pid)
	if err != nil {
		return nil, err
	}
	return p.wait(ctx)
}

// control runs fn on a running process of an active session.
func (e *Environment) control(ctx context.Context, pid int, fn func(rp container.RunningProcess) error) error {
	s, p, err := e.proc(pid)
	if err != nil {
		return err
	}
	if st := s.currentState(); st != environment.StateActive {
		return s.notActive()
	}
	if err := s.wake(ctx); err != nil {
		return err
	}
	if p.done() {
		return fmt.Errorf("%w: process %d has ended", environment.ErrInvalidArgument, pid)
	}
	if err := fn(p.rp); err != nil {
		return s.processError(err)
	}
	return nil
}

// SendInput implements environment.ProcessRunner.
func (e *Environment) SendInput(ctx context.Context, pid int, data []byte) error {
	if len(data) > environment.MaxProcessInputBytes {
		return fmt.Errorf("%w: %d bytes of input, at most %d", environment.ErrInvalidArgument, len(data), environment.MaxProcessInputBytes)
	}
	return e.control(ctx, pid, func(rp container.RunningProcess) error { return rp.WriteStdin(ctx, data) })
}

// CloseInput implements environment.ProcessRunner.
func (e *Environment) CloseInput(ctx context.Context, pid int) error {
	return e.control(ctx, pid, func(rp container.RunningProcess) error { return rp.CloseStdin(ctx) })
}

// SignalProcess implements environment.ProcessRunner.
func (e *Environment) SignalProcess(ctx context.Context, pid int, sig int) error {
	if err := environment.ValidateSignal(sig); err != nil {
		return err
	}
	return e.control(ctx, pid, func(rp container.RunningProcess) error { return rp.Signal(ctx, syscall.Signal(sig)) })
}

// ResizeProcess implements environment.ProcessRunner.
func (e *Environment) ResizeProcess(ctx context.Context, pid int, size environment.TermSize) error {
	if err := size.Validate(); err != nil {
		return err
	}
	return e.control(ctx, pid, func(rp container.RunningProcess) error {
		return rp.Resize(ctx, container.TermSize{Rows: size.Rows, Cols: size.Cols})
	})
}
