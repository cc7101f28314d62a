package none

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"

	"github.com/turnbox/turnbox/container"
)

var _ container.ProcessStarter = (*sandbox)(nil)

// ptyDrain bounds how long a PTY's output is read after its process exited
// (a background child may hold the terminal open).
const ptyDrain = 250 * time.Millisecond

// process is a host process started by StartProcess (or Exec).
type process struct {
	s       *sandbox
	cmd     *exec.Cmd
	cg      string   // its cgroup, "" without
	stdin   *os.File // write end of its stdin pipe, or its PTY master
	ptmx    *os.File // PTY master, nil without a PTY
	kill    context.CancelFunc
	done    chan struct{}
	st      container.ExitStatus
	err     error
	inMu    sync.Mutex // guards stdin closing against writes
	inClose bool
}

// StartProcess implements container.ProcessStarter with a host process
// (see the package documentation: nothing is isolated).
func (s *sandbox) StartProcess(ctx context.Context, spec container.ProcessSpec) (container.RunningProcess, error) {
	return s.start(spec, nil)
}

// start starts spec's command in its own session (and cgroup); stdin is
// its input when spec.OpenStdin and spec.PTY are not set.
func (s *sandbox) start(spec container.ProcessSpec, stdin io.Reader) (*process, error) {
	p := spec.Process
	if len(p.Args) == 0 || p.Args[0] == "" {
		return nil, fmt.Errorf("%w: empty command", container.ErrInvalidSpec)
	}
	dir, err := s.hostDir(p.Dir)
	if err != nil {
		return nil, err
	}
	cred, userEnv, err := credential(spec.User)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(p.Args[0], p.Args[1:]...)
	cmd.Dir, cmd.Env = dir, s.env(append(userEnv, p.Env...))
	cmd.WaitDelay = 250 * time.Millisecond
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: cred}
	pr := &process{s: s, cmd: cmd, done: make(chan struct{})}
	var childEnds []*os.File // closed in the parent once the child runs
	defer func() {
		for _, f := range childEnds {
			f.Close()
		}
	}()
	switch {
	case spec.PTY != nil:
		ptmx, tty, err := pty.Open()
		if err != nil {
			return nil, fmt.Errorf("none: opening a pty: %w", err)
		}
		if err := pty.Setsize(ptmx, &pty.Winsize{Rows: spec.PTY.Rows, Cols: spec.PTY.Cols}); err != nil {
			ptmx.Close()
			tty.Close()
			return nil, fmt.Errorf("none: sizing the pty: %w", err)
		}
		childEnds = append(childEnds, tty)
		pr.ptmx, pr.stdin = ptmx, ptmx
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		cmd.SysProcAttr.Setctty = true
	case spec.OpenStdin:
		r, w, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("none: stdin pipe: %w", err)
		}
		childEnds = append(childEnds, r)
		pr.stdin = w
		cmd.Stdin, cmd.Stdout, cmd.Stderr = r, p.Stdout, p.Stderr
	default:
		cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, p.Stdout, p.Stderr
	}
	if err := s.spawn(pr); err != nil {
		if pr.stdin != nil {
			pr.stdin.Close()
		}
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	if p.Timeout > 0 {
		runCtx, cancel = context.WithTimeout(context.Background(), p.Timeout)
	}
	pr.kill = cancel
	go pr.run(runCtx, p.Stdout, time.Now())
	return pr, nil
}

// spawn starts pr.cmd in a new cgroup of the sandbox, unless the sandbox
// is paused or stopped (see startMu).
func (s *sandbox) spawn(pr *process) error {
	s.startMu.RLock()
	defer s.startMu.RUnlock()
	if err := s.Require(container.StatusRunning); err != nil {
		return err
	}
	cg, fd, err := s.newExecCgroup()
	if err != nil {
		return err
	}
	if fd != nil {
		defer fd.Close()
		pr.cmd.SysProcAttr.UseCgroupFD = true
		pr.cmd.SysProcAttr.CgroupFD = int(fd.Fd())
	}
	if err := pr.cmd.Start(); err != nil {
		if cg != "" {
			_ = os.Remove(cg)
		}
		return fmt.Errorf("none: starting %q: %w", pr.cmd.Args[0], err)
	}
	pr.cg = cg
	s.mu.Lock()
	s.procs[pr.cmd.Process.Pid] = struct{}{}
	s.mu.Unlock()
	return nil
}

// run waits for the process (killing its tree when ctx ends), delivers a
// PTY's output, and records how it ended.
func (pr *process) run(ctx context.Context, out io.Writer, start time.Time) {
	var copied chan struct{}
	if pr.ptmx != nil {
		copied = make(chan struct{})
		go func() {
			defer close(copied)
			if out == nil {
				out = io.Discard
			}
			_, _ = io.Copy(out, pr.ptmx) // ends with EIO when the terminal closes
		}()
	}
	pr.st, pr.err = pr.s.await(ctx, pr.cmd, pr.cg, start)
	pr.kill()
	if st := pr.s.Status(); pr.err == nil && st != container.StatusRunning && st != container.StatusPaused {
		// Killed by Stop (or with a dead sandbox): as on every runtime,
		// a process of a sandbox that is gone reports that.
		pr.err = fmt.Errorf("none: process %d: %w", pr.PID(), container.ErrNotRunning)
	}
	if copied != nil {
		select {
		case <-copied:
		case <-time.After(ptyDrain):
		}
	}
	pr.inMu.Lock()
	pr.inClose = true
	if pr.stdin != nil {
		pr.stdin.Close()
	}
	pr.inMu.Unlock()
	if copied != nil {
		<-copied
	}
	s := pr.s
	s.mu.Lock()
	delete(s.procs, pr.cmd.Process.Pid)
	s.mu.Unlock()
	if pr.cg != "" {
		// EBUSY while background children remain: KillAll or Stop
		// removes it.
		_ = os.Remove(pr.cg)
	}
	close(pr.done)
}

// credential maps a ProcessSpec.User to host credentials and the
// environment that goes with them: only a root host process can switch
// users.
func credential(u string) (*syscall.Credential, []string, error) {
	if u == "" {
		return nil, nil, nil
	}
	if os.Geteuid() != 0 {
		return nil, nil, fmt.Errorf("none: running as user %q needs a root host process: %w", u, container.ErrUnsupported)
	}
	name, group, _ := strings.Cut(u, ":")
	uid, err := strconv.ParseUint(name, 10, 32)
	gid := uid
	// As the agent does: the user's HOME, USER and LOGNAME when the host
	// knows it, else HOME=/.
	env := []string{"HOME=/"}
	if err != nil {
		pw, lerr := user.Lookup(name)
		if lerr != nil {
			return nil, nil, fmt.Errorf("%w: unknown user %q", container.ErrInvalidSpec, u)
		}
		uid, _ = strconv.ParseUint(pw.Uid, 10, 32)
		gid, _ = strconv.ParseUint(pw.Gid, 10, 32)
		env = []string{"HOME=" + pw.HomeDir, "USER=" + pw.Username, "LOGNAME=" + pw.Username}
	}
	if group != "" {
		if gid, err = strconv.ParseUint(group, 10, 32); err != nil {
			return nil, nil, fmt.Errorf("%w: bad group in user %q", container.ErrInvalidSpec, u)
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, env, nil
}

// PID implements container.RunningProcess.
func (pr *process) PID() int { return pr.cmd.Process.Pid }

// Done implements container.RunningProcess.
func (pr *process) Done() <-chan struct{} { return pr.done }

// ended fails once the process has ended, and while its sandbox is not
// running: a paused sandbox's processes are frozen (ErrPaused), a stopped
// one's gone (ErrNotRunning), as on every runtime.
func (pr *process) ended() error {
	select {
	case <-pr.done:
		return fmt.Errorf("none: process %d: %w", pr.PID(), container.ErrProcessDone)
	default:
		return pr.s.Require(container.StatusRunning)
	}
}

// WriteStdin implements container.RunningProcess; a write that cannot
// go on (a process that does not read) ends with ctx.
func (pr *process) WriteStdin(ctx context.Context, p []byte) error {
	if err := pr.ended(); err != nil {
		return err
	}
	pr.inMu.Lock()
	defer pr.inMu.Unlock()
	if pr.stdin == nil || pr.inClose {
		return fmt.Errorf("%w: process %d has no open stdin", container.ErrInvalidSpec, pr.PID())
	}
	if d, ok := ctx.Deadline(); ok {
		_ = pr.stdin.SetWriteDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = pr.stdin.SetWriteDeadline(time.Now()) })
	_, err := pr.stdin.Write(p)
	stop()
	_ = pr.stdin.SetWriteDeadline(time.Time{})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("none: writing to process %d: %w", pr.PID(), err)
	}
	return nil
}

// CloseStdin implements container.RunningProcess.
func (pr *process) CloseStdin(ctx context.Context) error {
	if pr.ptmx != nil {
		return pr.WriteStdin(ctx, []byte{4}) // the terminal's EOF (^D)
	}
	if err := pr.ended(); err != nil {
		return err
	}
	pr.inMu.Lock()
	defer pr.inMu.Unlock()
	if pr.stdin == nil || pr.inClose {
		return fmt.Errorf("%w: process %d has no open stdin", container.ErrInvalidSpec, pr.PID())
	}
	pr.inClose = true
	return pr.stdin.Close()
}

// Signal implements container.RunningProcess.
func (pr *process) Signal(ctx context.Context, sig syscall.Signal) error {
	if err := pr.ended(); err != nil {
		return err
	}
	if err := pr.cmd.Process.Signal(sig); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("none: process %d: %w", pr.PID(), container.ErrProcessDone)
		}
		return fmt.Errorf("none: signalling process %d: %w", pr.PID(), err)
	}
	return nil
}

// Kill implements container.RunningProcess.
func (pr *process) Kill(ctx context.Context) error {
	if err := pr.ended(); err != nil {
		return err
	}
	pr.kill()
	return nil
}

// Resize implements container.RunningProcess.
func (pr *process) Resize(ctx context.Context, size container.TermSize) error {
	if err := pr.ended(); err != nil {
		return err
	}
	if pr.ptmx == nil {
		return fmt.Errorf("%w: process %d has no pty", container.ErrInvalidSpec, pr.PID())
	}
	if err := pty.Setsize(pr.ptmx, &pty.Winsize{Rows: size.Rows, Cols: size.Cols}); err != nil {
		return fmt.Errorf("none: resizing process %d: %w", pr.PID(), err)
	}
	return nil
}

// Wait implements container.RunningProcess.
func (pr *process) Wait(ctx context.Context) (container.ExitStatus, error) {
	select {
	case <-pr.done:
		return pr.st, pr.err
	case <-ctx.Done():
		return container.ExitStatus{}, ctx.Err()
	}
}
