package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// EnvLauncherFD is the environment variable that makes the agent binary
// serve as its own launcher: it holds the descriptor of the launcher's
// socket to the agent. The launcher is C code in cmd/turnbox-agent
// (launcher.c) that takes over the process before the Go runtime starts.

const EnvLauncherFD = "TURNBOX_LAUNCHER_FD"

// EnvLauncherRoot, when set for a launcher, is the directory it chroots
// each command into (WithRoot) before the command's chdir.
const EnvLauncherRoot = "TURNBOX_LAUNCHER_ROOT"

// WithLauncher makes an init agent start its commands through a launcher
// process: exe, the agent binary built with cgo, started once with
// EnvLauncherFD set. The launcher starts each command with vfork+execve
// and reaps it. A Go program cannot do that cheaply in gVisor: Go's fork
// path resets every signal handler of the runtime in the child (dozens of
// system calls, each a trap into the Sentry). Without the option, or when
// the agent is not init, commands fork from the agent.
//
// The launcher runs in the commands' pids cgroup without CAP_SYS_RESOURCE
// (it is started from the forking thread, see WithPidsLimit and
// WithProcessLimit), from the end of the first command on (see
// ensureLauncher). If it dies (a command may kill it; KillAll does when
// it has to turn to kill(-1)), the agent adopts its commands, which the
// kernel hands to init, and starts a new launcher in the background;
// until it runs, commands fork from the agent.
func WithLauncher(exe string) Option { return func(s *server) { s.launchExe = exe } }

// Reply kinds and failure stages of the launcher protocol (launcher.c).
const (
	launchStarted = 1
	launchFailed  = 2
	launchExited  = 3
)

var launchStages = map[uint32]string{1: "fork", 2: "setsid", 3: "dup", 4: "chdir", 5: "exec", 6: "request", 7: "controlling terminal", 8: "user", 9: "chroot"}

// Flags of a launcher request (its header's fourth word).
const (
	launchFlagCtty = 1 << 0 // make stdin (a PTY) the controlling terminal
	launchFlagUser = 1 << 1 // the payload starts with uid, gid, ngroups, groups
)

// errLauncherGone reports that the launcher was gone before it could read
// a request: the command did not start, and a new launcher may.
var errLauncherGone = errors.New("agent: launcher is gone")

// errLauncherLost reports that the launcher died after it got a request
// and before it answered: the command may have started.
var errLauncherLost = errors.New("agent: launcher died before it answered")

// launcher is the agent's side of a launcher process.
type launcher struct {
	pid  int
	reap *reaper

	reqMu   sync.Mutex // one request at a time
	conn    *os.File   // the socket, non-blocking
	raw     syscall.RawConn
	replies chan launchReply
	dead    chan struct{} // closed when the launcher's socket ended

	mu      sync.Mutex
	closed  bool
	waiters map[int]chan syscall.WaitStatus
	early   map[int]syscall.WaitStatus // exits that came before their waiter
}

type launchReply struct {
	kind  uint32
	pid   int
	value int32
	stage uint32
}

// startLauncher starts exe as a launcher with fork (the forker's, so that
// it inherits the commands' cgroup and capabilities).
func startLauncher(exe, root string, fork func(string, []string, *syscall.ProcAttr) (int, error), reap *reaper) (*launcher, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("agent: launcher socket: %w", err)
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fmt.Errorf("agent: launcher: %w", err)
	}
	attr := &syscall.ProcAttr{
		Dir:   "/",
		Env:   []string{EnvLauncherFD + "=3"},
		Files: []uintptr{null.Fd(), null.Fd(), 2, uintptr(fds[1])},
	}
	if root != "" {
		attr.Env = append(attr.Env, EnvLauncherRoot+"="+root)
	}
	pid, err := fork(exe, []string{"turnbox-agent-launcher"}, attr)
	null.Close()
	unix.Close(fds[1])
	if err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("agent: start launcher %s: %w", exe, err)
	}
	// Through the runtime's poller: a blocking read would park a thread
	// in the kernel (in gVisor, a Sentry task) and cost a hand-off of the
	// scheduler on every reply.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("agent: launcher socket: %w", err)
	}
	conn := os.NewFile(uintptr(fds[0]), "launcher")
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("agent: launcher socket: %w", err)
	}
	l := &launcher{
		pid:     pid,
		reap:    reap,
		conn:    conn,
		raw:     raw,
		replies: make(chan launchReply, 1),
		dead:    make(chan struct{}),
		waiters: make(map[int]chan syscall.WaitStatus),
		early:   make(map[int]syscall.WaitStatus),
	}
	go l.readLoop()
	return l, nil
}

// alive reports whether the launcher's socket is still up.
func (l *launcher) alive() bool {
	select {
	case <-l.dead:
		return false
	default:
		return true
	}
}

func (l *launcher) readLoop() {
	var buf [16]byte
	for {
		if _, err := io.ReadFull(l.conn, buf[:]); err != nil {
			break
		}
		r := launchReply{
			kind:  binary.NativeEndian.Uint32(buf[0:]),
			pid:   int(int32(binary.NativeEndian.Uint32(buf[4:]))),
			value: int32(binary.NativeEndian.Uint32(buf[8:])),
			stage: binary.NativeEndian.Uint32(buf[12:]),
		}
		switch r.kind {
		case launchStarted, launchFailed:
			l.replies <- r
		case launchExited:
			ws := syscall.WaitStatus(r.value)
			l.mu.Lock()
			if ch := l.waiters[r.pid]; ch != nil {
				delete(l.waiters, r.pid)
				ch <- ws
			} else {
				l.early[r.pid] = ws
			}
			l.mu.Unlock()
		}
	}
	// The launcher is gone. Its commands are init's children now: the
	// reaper reports their exits.
	l.mu.Lock()
	l.closed = true
	waiters := l.waiters
	l.waiters = nil
	l.mu.Unlock()
	close(l.dead)
	for pid, ch := range waiters {
		l.reap.adopt(pid, ch)
	}
	l.conn.Close()
}

// send writes msg to the launcher, with rights attached to its first
// byte, waiting for room through the poller.
func (l *launcher) send(msg, rights []byte) (sent int, err error) {
	werr := l.raw.Write(func(fd uintptr) bool {
		for sent < len(msg) {
			n, e := unix.SendmsgN(int(fd), msg[sent:], rights, nil, unix.MSG_NOSIGNAL)
			switch {
			case e == unix.EINTR:
				continue
			case e == unix.EAGAIN:
				return false
			case e != nil:
				err = e
				return true
			}
			sent += n
			rights = nil
		}
		return true
	})
	if err == nil {
		err = werr
	}
	return sent, err
}

// spawn starts c with files as its stdin, stdout and stderr, with the
// attributes of c.sysProcAttr (a new session, its controlling terminal,
// its user). It returns the command's pid and a channel that receives its
// wait status. The error wraps errLauncherGone if the launcher was gone
// before it read the request.
func (l *launcher) spawn(c *command, files [3]int) (int, chan syscall.WaitStatus, error) {
	msg := launchRequest(c)
	l.reqMu.Lock()
	defer l.reqMu.Unlock()
	if !l.alive() {
		return 0, nil, errLauncherGone
	}
	if n, err := l.send(msg, unix.UnixRights(files[:]...)); err != nil {
		if n == 0 {
			return 0, nil, fmt.Errorf("%w: %v", errLauncherGone, err)
		}
		return 0, nil, fmt.Errorf("%w (while reading the request: %v)", errLauncherLost, err)
	}
	var r launchReply
	select {
	case r = <-l.replies:
	case <-l.dead:
		return 0, nil, errLauncherLost
	}
	if r.kind == launchFailed {
		stage := launchStages[r.stage]
		if stage == "" {
			stage = "stage " + strconv.Itoa(int(r.stage))
		}
		return 0, nil, fmt.Errorf("%s: %w", stage, syscall.Errno(r.value))
	}
	// The pid was free: whatever the reaper kept for it is stale.
	l.reap.forget(r.pid)
	ch := make(chan syscall.WaitStatus, 1)
	l.mu.Lock()
	switch ws, ok := l.early[r.pid]; {
	case ok:
		delete(l.early, r.pid)
		ch <- ws
	case l.closed:
		l.mu.Unlock()
		l.reap.adopt(r.pid, ch)
		return r.pid, ch, nil
	default:
		l.waiters[r.pid] = ch
	}
	l.mu.Unlock()
	return r.pid, ch, nil
}

// launchRequest encodes c as a launcher request: header, then payload
// (the user's ids if any, then path NUL dir NUL argv NUL... envp NUL...).
func launchRequest(c *command) []byte {
	size := len(c.path) + len(c.dir) + 2
	for _, s := range c.args {
		size += len(s) + 1
	}
	for _, s := range c.env {
		size += len(s) + 1
	}
	var flags uint32
	if c.ctty {
		flags |= launchFlagCtty
	}
	if c.cred != nil {
		flags |= launchFlagUser
		size += 12 + 4*len(c.cred.groups)
	}
	msg := make([]byte, 16, 16+size)
	binary.NativeEndian.PutUint32(msg[0:], uint32(size))
	binary.NativeEndian.PutUint32(msg[4:], uint32(len(c.args)))
	binary.NativeEndian.PutUint32(msg[8:], uint32(len(c.env)))
	binary.NativeEndian.PutUint32(msg[12:], flags)
	if cr := c.cred; cr != nil {
		msg = binary.NativeEndian.AppendUint32(msg, cr.uid)
		msg = binary.NativeEndian.AppendUint32(msg, cr.gid)
		msg = binary.NativeEndian.AppendUint32(msg, uint32(len(cr.groups)))
		for _, g := range cr.groups {
			msg = binary.NativeEndian.AppendUint32(msg, g)
		}
	}
	for _, s := range append(append([]string{c.path, c.dir}, c.args...), c.env...) {
		msg = append(msg, s...)
		msg = append(msg, 0)
	}
	return msg
}

// close ends the launcher: it exits when its socket closes.
func (l *launcher) close() {
	// Shut down rather than close: the read loop owns the socket.
	_ = l.raw.Control(func(fd uintptr) { _ = unix.Shutdown(int(fd), unix.SHUT_RDWR) })
}

// launcher returns the running launcher, or nil: then commands fork from
// the agent (none configured, not init, not started yet, or it died).
func (s *server) launcher() *launcher {
	if s.launchExe == "" || s.reap == nil {
		return nil
	}
	s.launchMu.Lock()
	defer s.launchMu.Unlock()
	if s.launch != nil && s.launch.alive() {
		return s.launch
	}
	return nil
}

// ensureLauncher starts a launcher in the background if none runs or is
// starting. The agent calls it after a command ended, not at start: a
// launcher starting beside the sandbox's first command would slow that
// command down (in gVisor, by tens of milliseconds), so the first
// command forks from the agent and the next ones use the launcher.
func (s *server) ensureLauncher() {
	if s.launchExe == "" || s.reap == nil {
		return
	}
	s.launchMu.Lock()
	defer s.launchMu.Unlock()
	if (s.launch != nil && s.launch.alive()) || s.launchStarting || s.launchFailed {
		return
	}
	s.launchStarting = true
	go s.startLauncher()
}

func (s *server) startLauncher() {
	l, err := startLauncher(s.launchExe, s.rootDir(), s.forkExec, s.reap)
	s.launchMu.Lock()
	defer s.launchMu.Unlock()
	s.launchStarting = false
	if err != nil {
		// Not fatal: commands fork from the agent, a little slower.
		fmt.Fprintf(os.Stderr, "turnbox-agent: %v; commands fork from the agent\n", err)
		s.launchFailed = true
		return
	}
	s.launch = l
	s.launchPID.Store(int64(l.pid))
}

// restartLauncher waits (briefly) until the agent noticed that its
// launcher died (KillAll killed it) and starts a new one.
func (s *server) restartLauncher() {
	s.launchMu.Lock()
	l := s.launch
	s.launchMu.Unlock()
	if l != nil {
		select {
		case <-l.dead:
		case <-time.After(time.Second):
		}
	}
	s.ensureLauncher()
}

// launcherGone notes that l could not take a request.
func (s *server) launcherGone(l *launcher, err error) {
	fmt.Fprintf(os.Stderr, "turnbox-agent: launcher %d: %v; starting another\n", l.pid, err)
}

// stopLauncher ends the launcher, if any.
func (s *server) stopLauncher() {
	s.launchMu.Lock()
	defer s.launchMu.Unlock()
	if s.launch != nil {
		s.launch.close()
	}
}
