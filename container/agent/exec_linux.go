package agent

import (
	"bytes"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// defaultPath is the PATH used when a command's environment has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

type execRequest struct {
	id      uint64
	args    []string
	env     []string
	dir     string
	timeout time.Duration
	stdin   bool
}

// proc is a running command.
type proc struct {
	s      *server
	id     uint64
	pid    int
	marker string // execMarkerVar=value in the command's environment
	stdin  *stdinQueue

	mu        sync.Mutex
	timedOut  bool
	oomKilled bool // killed by the memory limit (WithMemoryLimit)
	exited    bool
	done      chan struct{} // closed after Exited was sent
}

// kill kills the command's process tree. timedOut marks the command as
// killed by its timeout or the host (MsgKill).
func (p *proc) kill(timedOut bool) {
	p.mu.Lock()
	if timedOut {
		p.timedOut = true
	}
	p.mu.Unlock()
	killTree(p.pid, p.marker)
}

// execMarkerVar is set in every command's environment to a value unique to
// the command. Processes inherit it through fork, exec and setsid, so a
// daemon that left the command's process group and session is still found
// and killed with its command. (Only a process that both leaves the
// session and scrubs its environment escapes; KillAll still kills it.)
const execMarkerVar = "TURNBOX_EXEC_ID"

func (s *server) failed(id uint64, format string, args ...any) {
	_ = s.fw.write(newFrame(MsgFailed, id).str(fmt.Sprintf(format, args...)).bytes())
}

func (s *server) exec(req execRequest) {
	if len(req.args) == 0 {
		s.failed(req.id, "empty args")
		return
	}
	s.mu.Lock()
	_, dup := s.procs[req.id]
	s.mu.Unlock()
	if dup {
		s.failed(req.id, "duplicate request id %d", req.id)
		return
	}
	dir := req.dir
	if dir == "" {
		dir = s.defaultDir
	}
	// PWD keeps the logical path when dir goes through a symlink (as
	// /workspace does in a sandbox), like a shell's cd.
	marker := execMarkerVar + "=" + s.nonce + "-" + strconv.FormatUint(req.id, 10)
	env := mergeEnv(s.baseEnv, append([]string{"PWD=" + dir}, req.env...))
	env = append(env, marker)
	path, err := lookPath(req.args[0], envValue(env, "PATH"), dir)
	if err != nil {
		s.failed(req.id, "%v", err)
		return
	}

	pp, err := s.newPipes(req.stdin)
	if err != nil {
		s.failed(req.id, "%v", err)
		return
	}
	attr := &syscall.ProcAttr{
		Dir:   dir,
		Env:   env,
		Files: []uintptr{uintptr(pp.child[0]), uintptr(pp.child[1]), uintptr(pp.child[2])},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	}

	p := &proc{s: s, id: req.id, marker: marker, done: make(chan struct{})}
	if req.stdin {
		p.stdin = newStdinQueue()
	}
	start := time.Now()
	var pid int
	var waitCh chan syscall.WaitStatus
	launched := false
	if l := s.launcher(); l != nil {
		pid, waitCh, err = l.spawn(path, req.args, env, dir, pp.child)
		switch {
		case errors.Is(err, errLauncherGone):
			// It never saw the request: start a new one for the next
			// command and start this one here.
			s.launcherGone(l, err)
		case errors.Is(err, errLauncherLost):
			// The command may run (it may have killed the launcher
			// itself): it carries the marker.
			launched = true
			if found := findMarked(marker); found > 0 {
				pid, err = found, nil
				waitCh = make(chan syscall.WaitStatus, 1)
				s.reap.adopt(pid, waitCh)
			} else {
				err = fmt.Errorf("%w; the command is not running (it may have run and exited)", err)
			}
		default:
			launched = true
		}
	}
	switch {
	case launched:
	case s.reap != nil:
		// Hold the reaper's lock across fork so that the child's exit
		// cannot be reaped before we have registered for it.
		s.reap.mu.Lock()
		pid, err = s.forkExec(path, req.args, attr)
		if err == nil {
			waitCh = make(chan syscall.WaitStatus, 1)
			s.reap.waiters[pid] = waitCh
		}
		s.reap.mu.Unlock()
	default:
		pid, err = s.forkExec(path, req.args, attr)
	}
	pp.closeChild()
	if err != nil {
		pp.closeOurs()
		s.failed(req.id, "start %s: %v", req.args[0], err)
		return
	}
	inW, outR, errR := pp.in, pp.out, pp.err
	p.pid = pid
	s.mu.Lock()
	s.procs[req.id] = p
	s.mu.Unlock()
	s.trackSession(pid)

	if p.stdin != nil {
		go p.stdin.pump(inW)
	}
	var readers sync.WaitGroup
	var progress atomic.Int64 // bytes read from both pipes and sent
	var inFlight atomic.Int64 // chunks read and not yet sent
	readers.Add(2)
	go s.readOutput(req.id, StreamStdout, outR, &readers, &progress, &inFlight)
	go s.readOutput(req.id, StreamStderr, errR, &readers, &progress, &inFlight)

	var timer *time.Timer
	if req.timeout > 0 {
		timer = time.AfterFunc(req.timeout, func() { p.kill(true) })
	}

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var ws syscall.WaitStatus
		if waitCh != nil {
			ws = <-waitCh
		} else {
			for {
				_, err := syscall.Wait4(pid, &ws, 0, nil)
				if err != syscall.EINTR {
					break
				}
			}
		}
		dur := time.Since(start)
		if timer != nil {
			timer.Stop()
		}
		p.mu.Lock()
		p.exited = true
		timedOut, oomKilled := p.timedOut, p.oomKilled
		p.mu.Unlock()

		// Output written just before exit is still in the pipes; processes
		// left in the background may hold them open for longer. Read until
		// both pipes end, or for a short grace period.
		// Output still flowing is never cut off: the pipes are closed
		// only after a grace period in which nothing was read, no chunk
		// was on its way to the host and both pipes were empty (so a
		// reader the scheduler starved, or one waiting on a slow host,
		// does not look idle).
		drained := make(chan struct{})
		go func() { readers.Wait(); close(drained) }()
		tick := time.NewTicker(s.outputGrace)
		last := progress.Load()
	drain:
		for {
			select {
			case <-drained:
				break drain
			case <-tick.C:
				if now := progress.Load(); now != last || inFlight.Load() > 0 || unread(outR) > 0 || unread(errR) > 0 {
					last = now
					continue
				}
				outR.Close()
				errR.Close()
				<-drained
				break drain
			}
		}
		tick.Stop()
		outR.Close()
		errR.Close()
		if p.stdin != nil {
			p.stdin.close()
		}

		var code int64
		var sig uint64
		switch {
		case ws.Exited():
			code = int64(ws.ExitStatus())
		case ws.Signaled():
			sig = uint64(ws.Signal())
			code = 128 + int64(sig)
		}
		var flags byte
		if timedOut {
			flags |= exitFlagTimedOut
		}
		if oomKilled {
			flags |= exitFlagOOM
		}
		s.mu.Lock()
		delete(s.procs, req.id)
		s.mu.Unlock()
		_ = s.fw.write(newFrame(MsgExited, req.id).varint(code).uvarint(sig).byte1(flags).uvarint(uint64(dur)).bytes())
		close(p.done)
		s.ensureLauncher()
	}()
}

// pipes are a command's standard streams. child holds the command's ends
// (stdin, stdout, stderr): plain blocking descriptors, closed once the
// command started. The agent's ends go through the runtime's poller: in
// (nil without stdin, when the command reads /dev/null), out and err.
// (os.Pipe would put both ends through the poller, and each system call
// is a trap in gVisor.)
type pipes struct {
	child        [3]int
	ownStdin     bool // child[0] is a pipe, not the shared /dev/null
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
		if fd >= 0 && (i > 0 || p.ownStdin) {
			unix.Close(fd)
		}
		p.child[i] = -1
	}
}

func (p *pipes) closeOurs() {
	for _, f := range []*os.File{p.in, p.out, p.err} {
		if f != nil {
			f.Close()
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

func (s *server) readOutput(id uint64, stream byte, r *os.File, wg *sync.WaitGroup, progress, inFlight *atomic.Int64) {
	defer wg.Done()
	buf := make([]byte, outputChunk)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			inFlight.Add(1)
			werr := s.fw.write(newFrame(MsgOutput, id).byte1(stream).raw(buf[:n]).bytes())
			progress.Add(int64(n))
			inFlight.Add(-1)
			if werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// trackSession remembers a command's session (its pid: commands run with
// Setsid) so that KillAll outside init can find processes it left behind.
func (s *server) trackSession(pid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions == nil {
		s.sessions = make(map[int]bool)
	}
	s.sessions[pid] = true
}

// busy counts the live processes other than the agent: as init, it stops
// at the first one found in the sandbox (so at most 1); otherwise the
// members of its commands' sessions.
func (s *server) busy() int {
	if !s.init {
		s.mu.Lock()
		sessions := make([]int, 0, len(s.sessions))
		for sid := range s.sessions {
			sessions = append(sessions, sid)
		}
		s.mu.Unlock()
		n := 0
		for _, sid := range sessions {
			n += len(treeMembers(sid, ""))
		}
		return n
	}
	pids, err := listPids()
	if err != nil {
		return 1 // cannot tell: report busy, the safe answer
	}
	// One live process answers the question: a sandbox full of processes
	// (a fork bomb) is not read whole, which would keep the host waiting.
	self, launcher := os.Getpid(), int(s.launchPID.Load())
	for _, pid := range pids {
		if pid != self && pid != launcher && alive(pid) {
			return 1
		}
	}
	return 0
}

// describe returns "pid (state, parent ppid)" for up to n of pids.
func describe(pids []int, n int) string {
	var parts []string
	for _, pid := range pids[:min(n, len(pids))] {
		if st, ok := readStat(pid); ok {
			parts = append(parts, fmt.Sprintf("%d (%c, parent %d)", pid, st.state, st.ppid))
		} else {
			parts = append(parts, fmt.Sprintf("%d (gone)", pid))
		}
	}
	return strings.Join(parts, ", ")
}

// procStat holds the fields of /proc/PID/stat the agent uses.
type procStat struct {
	state   byte // R, S, T, Z, X...
	ppid    int
	session int
	rss     int64 // resident bytes
}

// readStat reads /proc/pid/stat; ok is false if pid does not exist.
func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	// Fields after the command name (which may hold spaces and
	// parentheses): state ppid pgrp session ...
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 4 || len(f[0]) != 1 {
		return procStat{}, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	sid, err2 := strconv.Atoi(f[3])
	if err1 != nil || err2 != nil {
		return procStat{}, false
	}
	st := procStat{state: f[0][0], ppid: ppid, session: sid}
	if len(f) > 21 { // field 24, rss in pages
		if n, err := strconv.ParseInt(f[21], 10, 64); err == nil {
			st.rss = n * pageSize
		}
	}
	return st, true
}

// zombie reports whether a process's state is zombie or dead.
func (p procStat) zombie() bool { return p.state == 'Z' || p.state == 'X' }

// procState returns the state letter of pid (R, S, T, Z...), or 0 if pid
// does not exist.
func procState(pid int) byte {
	st, _ := readStat(pid)
	return st.state
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	s := procState(pid)
	return s != 0 && s != 'Z' && s != 'X'
}

// killAll kills every process the agent may kill and waits until they are
// gone: as init, every process but itself; otherwise the process trees of
// every command it started.
func (s *server) killAll() error {
	if !s.init {
		s.killAllOwn()
		return nil
	}
	self := os.Getpid()
	// Thousands of processes (a fork bomb under a pids limit) take seconds
	// to die in gVisor on a loaded machine.
	deadline := time.Now().Add(30 * time.Second)
	// The launcher is spared unless processes are still there after
	// escalateAfter (a fork bomb): then kill(-1), which reaches every
	// process in the namespace but the caller in one step so that
	// nothing outruns it, takes the launcher too; a new one is started
	// below.
	escalate := time.Now().Add(escalateAfter)
	spareLauncher := true
	for {
		pids, err := listPids()
		if err != nil {
			return err
		}
		if spareLauncher && time.Now().After(escalate) {
			spareLauncher = false
		}
		spare := 0
		if spareLauncher {
			spare = int(s.launchPID.Load())
		}
		// Stop them all, then kill them: killed one by one, a child
		// could die before its parent, which might see it and exit on
		// its own (a shell's wait returns 0) before its own SIGKILL
		// lands. Signals reach zombies too (and succeed), and zombies
		// count: they hold RLIMIT_NPROC until their reaper (the
		// launcher or this agent) has reaped them.
		var present []int
		for _, pid := range pids {
			if pid != self && pid != spare && syscall.Kill(pid, syscall.SIGSTOP) == nil {
				present = append(present, pid)
			}
		}
		if len(present) == 0 {
			break
		}
		if !spareLauncher {
			_ = syscall.Kill(-1, syscall.SIGKILL)
		}
		for _, pid := range present {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d processes still there (alive or not yet reaped) after SIGKILL (e.g. %s)", len(present), describe(present, 5))
		}
		time.Sleep(time.Millisecond)
	}
	if !spareLauncher {
		// Start the next launcher now; commands that come first fork
		// from the agent.
		s.restartLauncher()
	}
	s.waitProcs()
	return nil
}

// killAllOwn kills the process trees of every command the agent started
// and waits for the commands to be reported.
func (s *server) killAllOwn() {
	s.mu.Lock()
	sessions := make([]int, 0, len(s.sessions))
	for sid := range s.sessions {
		sessions = append(sessions, sid)
	}
	s.mu.Unlock()
	for _, sid := range sessions {
		if killTree(sid, "") == 0 {
			s.mu.Lock()
			delete(s.sessions, sid)
			s.mu.Unlock()
		}
	}
	s.waitProcs()
}

// waitProcs waits until every running command has been reported exited.
func (s *server) waitProcs() {
	s.mu.Lock()
	procs := make([]*proc, 0, len(s.procs))
	for _, p := range s.procs {
		procs = append(procs, p)
	}
	s.mu.Unlock()
	for _, p := range procs {
		<-p.done
	}
}

// killTree sends SIGKILL to the process group pgid, to every process in
// the session sid == pgid (a command that called setpgid escapes the
// group, not the session) and to every process whose environment holds
// marker (one that called setsid escapes the session, not its inherited
// environment). It repeats until a pass finds no process (for at most
// killTreeFor), to catch processes forked meanwhile, and returns how many
// live processes it found.
func killTree(sid int, marker string) int {
	total := 0
	deadline := time.Now().Add(killTreeFor)
	for pass := 0; pass < 3 || time.Now().Before(deadline); pass++ {
		found := 0
		if err := syscall.Kill(-sid, syscall.SIGKILL); err == nil {
			found++
		}
		for _, pid := range treeMembers(sid, marker) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				found++
			}
		}
		total += found
		if found == 0 {
			break
		}
		if pass >= 2 {
			// Zombies still count until reaped; let their reapers run.
			time.Sleep(time.Millisecond)
		}
	}
	return total
}

// escalateAfter is how long KillAll kills process by process, sparing
// the launcher, before it turns to kill(-1).
const escalateAfter = 200 * time.Millisecond

// killTreeFor bounds how long killTree keeps repeating its passes.
const killTreeFor = 5 * time.Second

// findMarked returns the pid of the live session leader whose
// environment holds marker (a command; its children inherit the marker
// but not the leadership), or 0.
func findMarked(marker string) int {
	pids, err := listPids()
	if err != nil {
		return 0
	}
	for _, pid := range pids {
		if hasEnv(pid, marker) && sessionOf(pid) == pid {
			return pid
		}
	}
	return 0
}

// sessionOf returns pid's session id, or -1.
func sessionOf(pid int) int {
	st, ok := readStat(pid)
	if !ok {
		return -1
	}
	return st.session
}

// listPids returns the pids in /proc.
func listPids() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	pids := make([]int, 0, len(ents))
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// treeMembers returns the live (non-zombie) processes whose session id is
// sid or whose environment holds marker ("" for none).
func treeMembers(sid int, marker string) []int {
	pids, err := listPids()
	if err != nil {
		return nil
	}
	var out []int
	for _, pid := range pids {
		st, ok := readStat(pid)
		if !ok || st.zombie() {
			continue
		}
		if st.session == sid {
			out = append(out, pid)
			continue
		}
		if marker != "" && hasEnv(pid, marker) {
			out = append(out, pid)
		}
	}
	return out
}

// reaper reaps every child of an init agent and hands the statuses of its
// commands to their waiters.
type reaper struct {
	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus
	// unclaimed keeps the statuses of the last reaped processes nobody
	// waited for (oldest first in order), so that adopt finds a command
	// of a dead launcher that was reaped before it was adopted.
	unclaimed map[int]syscall.WaitStatus
	order     []int
	sig       chan os.Signal
	quit      chan struct{}
}

// maxUnclaimed bounds reaper.unclaimed.
const maxUnclaimed = 4096

func startReaper() *reaper {
	r := &reaper{
		waiters:   make(map[int]chan syscall.WaitStatus),
		unclaimed: make(map[int]syscall.WaitStatus),
		sig:       make(chan os.Signal, 1),
		quit:      make(chan struct{}),
	}
	signal.Notify(r.sig, syscall.SIGCHLD)
	go r.loop()
	return r
}

func (r *reaper) loop() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if err != nil || pid <= 0 {
				break
			}
			r.mu.Lock()
			ch := r.waiters[pid]
			delete(r.waiters, pid)
			if ch == nil {
				if len(r.order) >= maxUnclaimed {
					delete(r.unclaimed, r.order[0])
					r.order = r.order[1:]
				}
				r.unclaimed[pid] = ws
				r.order = append(r.order, pid)
			}
			r.mu.Unlock()
			if ch != nil {
				ch <- ws
			}
		}
		select {
		case <-r.sig:
		case <-tick.C:
		case <-r.quit:
			return
		}
	}
}

// forget drops a stale unclaimed status of pid: a new process has it now.
func (r *reaper) forget(pid int) {
	r.mu.Lock()
	delete(r.unclaimed, pid)
	r.mu.Unlock()
}

// adopt makes ch receive the wait status of pid, a process that became
// the agent's child when its parent (a launcher) died.
func (r *reaper) adopt(pid int, ch chan syscall.WaitStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ws, ok := r.unclaimed[pid]; ok {
		delete(r.unclaimed, pid)
		ch <- ws
		return
	}
	r.waiters[pid] = ch
	// Wake the loop: the process may have become a zombie child of ours
	// before this call, with its SIGCHLD already handled.
	select {
	case r.sig <- syscall.SIGCHLD:
	default:
	}
}

func (r *reaper) stop() {
	signal.Stop(r.sig)
	close(r.quit)
}

// mergeEnv returns base with extra added, later entries replacing earlier
// ones with the same key.
func mergeEnv(base, extra []string) []string {
	idx := make(map[string]int, len(base)+len(extra))
	out := make([]string, 0, len(base)+len(extra))
	for _, kv := range append(append([]string(nil), base...), extra...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// lookPath finds a command like a shell does, with the command's own PATH.
func lookPath(name, path, dir string) (string, error) {
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if err := executable(p); err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
		return p, nil
	}
	if path == "" {
		path = defaultPath
	}
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, name)
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: executable file not found in PATH", name)
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("permission denied")
	}
	return nil
}

// hasEnv reports whether process pid's environment holds the entry kv.
func hasEnv(pid int, kv string) bool {
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	for len(env) > 0 {
		entry, rest, _ := bytes.Cut(env, []byte{0})
		if string(entry) == kv {
			return true
		}
		env = rest
	}
	return false
}

// unread returns how many bytes wait in pipe r (FIONREAD, named TIOCINQ on
// Linux), without taking
// the descriptor out of the runtime poller as File.Fd would.
func unread(r *os.File) int {
	rc, err := r.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) })
	return n
}
