package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Option configures Serve.
type Option func(*server)

// WithDefaultDir sets the working directory of commands whose Exec gives
// none (default: /workspace if it exists, else /).
func WithDefaultDir(dir string) Option { return func(s *server) { s.defaultDir = dir } }

// WithBaseEnv sets the environment every command starts from; an Exec's
// env is added to it, later entries replacing earlier ones with the same
// key (default: the agent's own environment).
func WithBaseEnv(env []string) Option {
	return func(s *server) { s.baseEnv = append([]string(nil), env...) }
}

// WithInit says whether the agent is its PID namespace's init (default:
// whether its pid is 1). As init it reaps every zombie, and KillAll kills
// every process but itself. Otherwise it waits only for its own commands,
// and KillAll kills only their process trees.
func WithInit(init bool) Option { return func(s *server) { s.init = init; s.initSet = true } }

// WithSymlink makes Serve create a symbolic link at link pointing to
// target before it serves, replacing an empty directory or an existing
// link at link. Sandboxes use it to make /workspace point into the bind
// mount of the workspace's parent directory.
func WithSymlink(link, target string) Option {
	return func(s *server) { s.links = append(s.links, [2]string{link, target}) }
}

// WithPidsLimit confines the commands the agent starts (all together) to
// at most n processes and threads, through a pids cgroup under the
// agent's own, which must be mounted at /sys/fs/cgroup/pids (a sandbox
// mounts its cgroupfs at /sys/fs/cgroup). The agent itself stays outside
// the limit, so a fork bomb cannot starve it. Serve fails if the cgroup
// cannot be set up.
func WithPidsLimit(n int64) Option { return func(s *server) { s.pidsLimit = n } }

// WithProcessLimit sets RLIMIT_NPROC to n for the agent and its commands:
// at most n tasks of the agent's user, the agent's own threads and
// unreaped zombies included. The agent needs CAP_SYS_RESOURCE, which
// exempts it; commands start without it. gVisor sandboxes use it with
// WithPidsLimit because gVisor's pids cgroup stops counting a process when
// it exits, not when it is reaped, so a fork bomb whose shells never reap
// their children fills the sandbox with zombies under any pids.max. Do
// not use it where the user is shared with processes outside the
// sandbox (runc without a user namespace: host root). Serve fails if the
// limit cannot be set.
func WithProcessLimit(n int64) Option { return func(s *server) { s.nprocLimit = n } }

// WithOutputGrace sets how long, after a command exits, the agent waits
// for more output from processes it left running in the background that
// still hold its stdout or stderr: once a whole grace period passes with
// nothing read, it stops reading and reports the exit (default 100 ms).
// Output that keeps flowing is never cut off.
func WithOutputGrace(d time.Duration) Option { return func(s *server) { s.outputGrace = d } }

// server is one Serve call.
type server struct {
	defaultDir  string
	baseEnv     []string
	init        bool
	initSet     bool
	links       [][2]string
	outputGrace time.Duration
	etcDir      string // where users are looked up: passwd, group
	pidsLimit   int64
	memLimit    int64
	nprocLimit  int64
	forker      *forker   // nil: commands fork from any thread
	root        *rootTree // nil: commands run in the agent's root

	nullOnce sync.Once
	nullFD   int
	nullErr  error

	launchExe      string // "": no launcher
	launchMu       sync.Mutex
	launch         *launcher
	launchStarting bool
	launchFailed   bool         // starting one failed: do not retry
	launchPID      atomic.Int64 // the current launcher's pid, 0 if none

	fw *frameWriter

	mu       sync.Mutex
	procs    map[uint64]*proc // by request id
	sessions map[int]bool     // session ids of commands started (not init)

	// tunMu guards tunnels; it is never held with a tunnel's own lock.
	tunMu   sync.Mutex
	tunnels map[uint64]*stunnel // by request id (MsgDial)

	reap *reaper // nil unless init
	wg   sync.WaitGroup

	// nonce makes the per-command environment markers (see
	// execMarkerVar) unique to this agent.
	nonce string
}

// settleDefaults fills in what the options left unset: whether the
// agent is init (pid 1), and the directory commands start in.
func (s *server) settleDefaults() {
	if !s.initSet {
		s.init = os.Getpid() == 1
	}
	if s.defaultDir == "" && s.root != nil {
		s.defaultDir = "/workspace"
	}
	if s.defaultDir == "" {
		s.defaultDir = "/"
		if fi, err := os.Stat("/workspace"); err == nil && fi.IsDir() {
			s.defaultDir = "/workspace"
		}
	}
}

// Serve runs the agent: it reads requests from r and writes replies and
// events to w until r ends, then kills the commands it started and
// returns. As a sandbox's init (pid 1) it also reaps orphaned processes.
// A nil error means r reached end of input.
func Serve(r io.Reader, w io.Writer, opts ...Option) error {
	s := &server{
		baseEnv:     os.Environ(),
		outputGrace: 100 * time.Millisecond,
		etcDir:      "/etc",
		fw:          &frameWriter{w: w},
		procs:       make(map[uint64]*proc),
		tunnels:     make(map[uint64]*stunnel),
		nonce:       strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.Itoa(os.Getpid()),
	}
	for _, o := range opts {
		o(s)
	}
	s.settleDefaults()
	for _, l := range s.links {
		if err := makeSymlink(l[0], l[1]); err != nil {
			return err
		}
	}
	if s.pidsLimit > 0 || s.nprocLimit > 0 || s.root != nil {
		var cg *pidsCgroup
		if s.pidsLimit > 0 {
			var err error
			if cg, err = setupPidsCgroup(s.pidsLimit); err != nil {
				return err
			}
		}
		if s.nprocLimit > 0 {
			if err := limitProcesses(s.nprocLimit); err != nil {
				return err
			}
		}
		f, err := startForker(cg, s.nprocLimit > 0, s.root != nil)
		if err != nil {
			return err
		}
		s.forker = f
	}
	if s.memLimit > 0 {
		stop := make(chan struct{})
		defer close(stop)
		go s.watchMemory(stop)
	}
	if s.init {
		s.reap = startReaper()
		defer s.reap.stop()
		if s.launchExe != "" {
			// Started after the first command (see ensureLauncher).
			defer s.stopLauncher()
		}
	}
	if err := s.fw.write(newFrame(MsgHello, 0).uvarint(ProtocolVersion).uvarint(uint64(os.Getpid())).bytes()); err != nil {
		return fmt.Errorf("agent: write hello: %w", err)
	}
	fr := newFrameReader(r)
	var err error
	for {
		var f frame
		f, err = fr.read()
		if err != nil {
			break
		}
		s.handle(f)
	}
	s.killAllOwn()
	s.closeTunnels()
	s.wg.Wait()
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func makeSymlink(link, target string) error {
	if fi, err := os.Lstat(link); err == nil {
		if fi.Mode()&os.ModeSymlink != 0 || fi.IsDir() {
			if err := os.Remove(link); err != nil {
				return fmt.Errorf("agent: replace %s with a symlink: %w", link, err)
			}
		}
	}
	if err := os.Symlink(target, link); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

func (s *server) reply(id uint64, err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	_ = s.fw.write(newFrame(MsgReply, id).str(msg).bytes())
}

func (s *server) handle(f frame) {
	switch f.typ {
	case MsgPing:
		s.reply(f.id, nil)
	case MsgIdle:
		if n := s.busy(); n > 0 {
			s.reply(f.id, fmt.Errorf("processes running (%d found)", n))
		} else {
			s.reply(f.id, nil)
		}
	case MsgExec:
		req, err := decodeExec(f)
		if err != nil {
			s.failed(f.id, err)
			return
		}
		s.exec(req)
	case MsgStdin, MsgStdinClose, MsgKill, MsgSignal, MsgResize:
		s.handleControl(f)
	case MsgDial:
		s.dial(f)
	case MsgConnData, MsgConnClose, MsgConnCredit:
		s.tunnelFrame(f)
	case MsgKillAll:
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.reply(f.id, s.killAll())
		}()
	default:
		// Unknown requests are ignored so that newer hosts can probe.
	}
}

// stdinQueue feeds a command's stdin from frames without ever blocking
// the connection's read loop. When nothing is queued or being written,
// push writes at once without blocking (direct), which spares a hand-off
// to the pump goroutine (a keystroke's echo through a PTY waits on it);
// what does not fit is queued for the pump.
type stdinQueue struct {
	mu      sync.Mutex
	cond    *sync.Cond
	bufs    [][]byte
	closed  bool
	writing bool               // a write is under way (push's or the pump's)
	direct  func(b []byte) int // non-blocking write; nil: always queue
}

// newStdinQueue returns a queue for stdin w, written by the pump and, when
// w is a pollable file, directly by push.
func newStdinQueue(w *os.File) *stdinQueue {
	q := &stdinQueue{direct: nonblockingWriter(w)}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// push queues b, or writes what it can of it at once. Only the
// connection's read loop calls it, so the queue stays empty while it
// writes and the order of the bytes is kept.
func (q *stdinQueue) push(b []byte) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	if q.direct != nil && len(q.bufs) == 0 && !q.writing {
		q.writing = true
		q.mu.Unlock()
		n := q.direct(b)
		q.mu.Lock()
		q.writing = false
		if b = b[n:]; len(b) == 0 || q.closed {
			q.mu.Unlock()
			return
		}
	}
	q.bufs = append(q.bufs, b)
	q.mu.Unlock()
	q.cond.Signal()
}

func (q *stdinQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Signal()
}

// pump writes queued data to w until the queue is closed and empty, or a
// write fails; then it calls end (which closes a pipe, or writes a PTY's
// end-of-file character).
func (q *stdinQueue) pump(w io.Writer, end func()) {
	defer end()
	for {
		q.mu.Lock()
		for (len(q.bufs) == 0 || q.writing) && !q.closed {
			q.cond.Wait()
		}
		if len(q.bufs) == 0 {
			q.mu.Unlock()
			return
		}
		b := q.bufs[0]
		q.bufs = q.bufs[1:]
		q.writing = true
		q.mu.Unlock()
		_, err := w.Write(b)
		q.mu.Lock()
		q.writing = false
		if err != nil {
			q.closed, q.bufs = true, nil
		}
		q.mu.Unlock()
		if err != nil {
			return
		}
	}
}
