package agent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
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
	user    string // "" for the agent's own
	pty     bool
	report  bool // answer MsgStarted once it runs
	rows    uint16
	cols    uint16
}

// proc is a running command.
type proc struct {
	s      *server
	id     uint64
	pid    int
	marker string // execMarkerVar=value in the command's environment
	stdin  *stdinQueue
	pty    *os.File // the PTY master, nil without one

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

// failed sends MsgFailed for request id: FailInvalid if err wraps
// errInvalid, else FailStart.
func (s *server) failed(id uint64, err error) {
	reason := FailStart
	if errors.Is(err, errInvalid) {
		reason = FailInvalid
	}
	_ = s.fw.write(newFrame(MsgFailed, id).str(err.Error()).byte1(reason).bytes())
}

// exec runs a command for MsgExec: it starts it (spawn, in
// exec_spawn_linux.go), streams its output as MsgOutput frames
// (exec_drain_linux.go), and once it exited (exec_wait_linux.go) and its
// output is drained, sends MsgExited. A command that cannot start gets
// MsgFailed; one whose Exec asked for it gets MsgStarted before its
// output.
func (s *server) exec(req execRequest) {
	c, err := s.prepare(req)
	if err != nil {
		s.failed(req.id, err)
		return
	}
	var pp *pipes
	if req.pty {
		pp, err = s.newPTY(req, c)
	} else {
		pp, err = s.newPipes(req.stdin)
	}
	if err != nil {
		s.failed(req.id, err)
		return
	}
	p := &proc{s: s, id: req.id, marker: c.marker, done: make(chan struct{})}
	if req.stdin || req.pty {
		p.stdin = newStdinQueue(pp.in)
	}
	if req.pty {
		p.pty = pp.out
	}
	start := time.Now()
	pid, waitCh, err := s.spawn(c, pp)
	pp.closeChild()
	if err != nil {
		pp.closeOurs()
		s.failed(req.id, fmt.Errorf("start %s: %w", req.args[0], err))
		return
	}
	p.pid = pid
	s.mu.Lock()
	s.procs[req.id] = p
	s.mu.Unlock()
	s.trackSession(pid)
	if req.report {
		_ = s.fw.write(newFrame(MsgStarted, req.id).uvarint(uint64(pid)).bytes())
	}
	if p.stdin != nil {
		end := func() { pp.in.Close() }
		if req.pty {
			end = ptyEOF(pp.in)
		}
		go p.stdin.pump(pp.in, end)
	}
	out := s.startOutput(req.id, pp.out, pp.err)
	var timer *time.Timer
	if req.timeout > 0 {
		timer = time.AfterFunc(req.timeout, func() { p.kill(true) })
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ws := waitExit(pid, waitCh)
		dur := time.Since(start)
		if timer != nil {
			timer.Stop()
		}
		s.finish(p, ws, dur, out)
	}()
}

// command is a command ready to start: its resolved program, arguments,
// environment (with its marker, execMarkerVar=value) and directory.
type command struct {
	path   string
	args   []string
	env    []string
	dir    string
	marker string
	cred   *credential // nil: the agent's own user
	ctty   bool        // stdin is a PTY to make the controlling terminal
}

// prepare checks req and resolves its program, directory and environment.
func (s *server) prepare(req execRequest) (*command, error) {
	if len(req.args) == 0 {
		return nil, fmt.Errorf("%w: empty args", errInvalid)
	}
	s.mu.Lock()
	_, dup := s.procs[req.id]
	s.mu.Unlock()
	if dup {
		return nil, fmt.Errorf("duplicate request id %d", req.id)
	}
	dir := req.dir
	if dir == "" {
		dir = s.defaultDir
	}
	// PWD keeps the logical path when dir goes through a symlink (as
	// /workspace does in a sandbox), like a shell's cd.
	marker := execMarkerVar + "=" + s.nonce + "-" + strconv.FormatUint(req.id, 10)
	extra := []string{"PWD=" + dir}
	var cred *credential
	if req.user != "" {
		var err error
		// Users are the commands' own: those of their root's /etc.
		if cred, err = resolveUser(filepath.Join(s.rootDir(), s.etcDir), req.user); err != nil {
			return nil, err
		}
		extra = append(extra, cred.env()...)
	}
	env := mergeEnv(s.baseEnv, append(extra, req.env...))
	env = append(env, marker)
	path, err := lookPath(req.args[0], envValue(env, "PATH"), dir, s.rootDir())
	if err != nil {
		return nil, err
	}
	return &command{path: path, args: req.args, env: env, dir: dir, marker: marker, cred: cred, ctty: req.pty}, nil
}

// finish reports the exit of p, whose status is ws, after its output
// drained: MsgExited with its code or signal, flags and duration.
func (s *server) finish(p *proc, ws syscall.WaitStatus, dur time.Duration, out *output) {
	p.mu.Lock()
	p.exited = true
	timedOut, oomKilled := p.timedOut, p.oomKilled
	p.mu.Unlock()
	out.drain(s.outputGrace)
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
	delete(s.procs, p.id)
	s.mu.Unlock()
	_ = s.fw.write(newFrame(MsgExited, p.id).varint(code).uvarint(sig).byte1(flags).uvarint(uint64(dur)).bytes())
	close(p.done)
	s.ensureLauncher()
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
func lookPath(name, path, dir, root string) (string, error) {
	st, err := newStatter(root)
	if err != nil {
		return "", err
	}
	defer st.close()
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if err := st.executable(p); err != nil {
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
		if st.executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: executable file not found in PATH", name)
}

func (st statter) executable(p string) error {
	mode, err := st.stat(p)
	if err != nil {
		return err
	}
	if mode&unix.S_IFMT == unix.S_IFDIR || mode&0o111 == 0 {
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
