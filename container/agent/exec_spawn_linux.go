package agent

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// spawn starts c with pp.child as its standard streams, in one of three
// ways: through the launcher when there is one; else forked here,
// registered with the reaper when the agent is init (see reaper.forkExec);
// else forked here and waited for with wait4. waitCh delivers the exit
// status; it is nil in the last case (see waitExit).
func (s *server) spawn(c *command, pp *pipes) (pid int, waitCh chan syscall.WaitStatus, err error) {
	if s.root != nil {
		// Its own /proc, /dev and /sys (again after a rollback) before
		// the command is chrooted there.
		if err := s.root.ensure(); err != nil {
			return 0, nil, err
		}
	}
	if l := s.launcher(); l != nil {
		pid, waitCh, launched, err := s.spawnLaunched(l, c, pp)
		if launched {
			return pid, waitCh, err
		}
	}
	attr := &syscall.ProcAttr{
		Dir:   c.dir,
		Env:   c.env,
		Files: []uintptr{uintptr(pp.child[0]), uintptr(pp.child[1]), uintptr(pp.child[2])},
		Sys:   c.sysProcAttr(s.rootDir()),
	}
	fork := func() (int, error) { return s.forkExec(c.path, c.args, attr) }
	if s.reap != nil {
		return s.reap.forkExec(fork)
	}
	pid, err = fork()
	return pid, nil, err
}

// spawnLaunched asks launcher l to start c. launched is false when l
// never saw the request (it is gone): spawn then starts c itself.
func (s *server) spawnLaunched(l *launcher, c *command, pp *pipes) (pid int, waitCh chan syscall.WaitStatus, launched bool, err error) {
	pid, waitCh, err = l.spawn(c, pp.child)
	switch {
	case errors.Is(err, errLauncherGone):
		// It never saw the request: start a new one for the next
		// command and start this one here.
		s.launcherGone(l, err)
		return 0, nil, false, nil
	case errors.Is(err, errLauncherLost):
		// The command may run (it may have killed the launcher
		// itself): it carries the marker.
		if found := findMarked(c.marker); found > 0 {
			waitCh = make(chan syscall.WaitStatus, 1)
			s.reap.adopt(found, waitCh)
			return found, waitCh, true, nil
		}
		return 0, nil, true, fmt.Errorf("%w; the command is not running (it may have run and exited)", err)
	}
	return pid, waitCh, true, err
}

// sysProcAttr returns the attributes of c's child process for Go's fork
// path: a new session; the PTY on its stdin as its controlling terminal;
// its user. The launcher's request (launcher.spawn) carries the same, and
// launcher.c applies them in the same order.
func (c *command) sysProcAttr(root string) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setsid: true, Chroot: root}
	if c.ctty {
		a.Setctty, a.Ctty = true, 0
	}
	if c.cred != nil {
		a.Credential = &syscall.Credential{Uid: c.cred.uid, Gid: c.cred.gid, Groups: c.cred.groups}
	}
	return a
}

// pipes are a command's standard streams. child holds the command's ends
// (stdin, stdout, stderr): plain blocking descriptors, closed once the
// command started. The agent's ends go through the runtime's poller: in
// (nil without stdin, when the command reads /dev/null), out and err.
// (os.Pipe would put both ends through the poller, and each system call
// is a trap in gVisor.) For a PTY, child holds the slave three times, in
// and out are the master and err is nil.
type pipes struct {
	child        [3]int
	ownStdin     bool // child[0] is a pipe, not the shared /dev/null
	pty          bool
	in, out, err *os.File
}

func (s *server) newPipes(stdin bool) (*pipes, error) {
	p := &pipes{child: [3]int{-1, -1, -1}}
	var err error
	if stdin {
		var fds [2]int
		if err = unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			return nil, fmt.Errorf("stdin pipe: %w", err)
		}
		p.child[0], p.ownStdin = fds[0], true
		if p.in, err = pollable(fds[1], "stdin"); err != nil {
			p.closeChild()
			return nil, err
		}
	} else if p.child[0], err = s.devNull(); err != nil {
		return nil, err
	}
	for i, f := range []**os.File{&p.out, &p.err} {
		var fds [2]int
		if err = unix.Pipe2(fds[:], unix.O_CLOEXEC); err == nil {
			p.child[1+i] = fds[1]
			*f, err = pollable(fds[0], "output")
		}
		if err != nil {
			p.closeChild()
			p.closeOurs()
			return nil, fmt.Errorf("output pipe: %w", err)
		}
	}
	return p, nil
}

// pollable makes fd non-blocking and an *os.File on the runtime's poller.
func pollable(fd int, name string) (*os.File, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

func (p *pipes) closeChild() {
	for i, fd := range p.child {
		if fd >= 0 && (i > 0 || p.ownStdin) && (i == 0 || !p.pty) {
			unix.Close(fd)
		}
		p.child[i] = -1
	}
}

func (p *pipes) closeOurs() {
	for _, f := range []*os.File{p.in, p.out, p.err} {
		if f != nil {
			f.Close() // the PTY master twice: the second fails, harmlessly
		}
	}
}

// devNull returns a descriptor of /dev/null, opened once, for commands
// without stdin.
func (s *server) devNull() (int, error) {
	s.nullOnce.Do(func() {
		s.nullFD, s.nullErr = unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	})
	if s.nullErr != nil {
		return -1, fmt.Errorf("open %s: %w", os.DevNull, s.nullErr)
	}
	return s.nullFD, nil
}

func (s *server) forkExec(path string, args []string, attr *syscall.ProcAttr) (int, error) {
	if s.forker != nil {
		return s.forker.forkExec(path, args, attr)
	}
	return syscall.ForkExec(path, args, attr)
}
