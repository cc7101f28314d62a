package agent

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"
)

// WithMemoryLimit confines the commands the agent starts (all together) to
// n bytes of resident memory: while commands run the agent measures them
// every memoryPoll, and when they hold more than n it kills the command
// whose processes hold the most (its whole tree) and reports it exited
// with ExitStatus.OOMKilled. The agent itself does not count. As its PID
// namespace's init (WithInit) every other process counts, and one of no
// running command is killed on its own when it holds the most; otherwise
// only the commands' processes count.
//
// Usage is the sum of the processes' resident set sizes (/proc/<pid>/stat),
// which counts pages that several processes share (program text,
// libraries) once per process: many processes of one program look
// bigger than they are. It is for gVisor, whose cgroupfs enforces no
// memory limit: there the
// only enforcement is the host cgroup of the whole sandbox, whose OOM
// killer can only kill the sandbox itself. The host sets that cgroup's
// limit above n, as a backstop for allocations faster than the poll.
func WithMemoryLimit(n int64) Option { return func(s *server) { s.memLimit = n } }

// memoryPoll is how often the agent measures its commands' memory while
// any run; a scan that takes longer stretches it (to four times the scan)
// so that the watch costs at most a fifth of a CPU.
const memoryPoll = 10 * time.Millisecond

// pageSize is the unit of /proc/<pid>/stat's rss field.
var pageSize = int64(os.Getpagesize())

// watchMemory runs until stop is closed, killing commands over the limit.
func (s *server) watchMemory(stop <-chan struct{}) {
	wait := memoryPoll
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		start := time.Now()
		s.enforceMemory()
		wait = max(memoryPoll, 4*time.Since(start))
		t.Reset(wait)
	}
}

// enforceMemory measures the commands once and kills the largest when
// they hold more than the limit together.
func (s *server) enforceMemory() {
	s.mu.Lock()
	bySession := make(map[int]*proc, len(s.procs))
	for _, p := range s.procs {
		bySession[p.pid] = p
	}
	s.mu.Unlock()
	if len(bySession) == 0 {
		return
	}
	pids, err := listPids()
	if err != nil {
		return
	}
	self, launcher := os.Getpid(), int(s.launchPID.Load())
	var total int64
	usage := make(map[*proc]int64, len(bySession))
	// As init, a process of no running command (left behind by one that
	// ended, or dying) is a victim of its own.
	var strayPid int
	var strayRSS int64
	for _, pid := range pids {
		if pid == self || pid == launcher {
			continue
		}
		st, ok := readStat(pid)
		if !ok || st.zombie() || st.rss <= 0 {
			continue
		}
		p := bySession[st.session]
		if p == nil {
			p = markedBy(pid, bySession) // left the command's session
		}
		switch {
		case p != nil:
			usage[p] += st.rss
		case !s.init:
			// Not the sandbox's init: the other processes in /proc are
			// not ours to count, let alone kill.
			continue
		case st.rss > strayRSS:
			strayPid, strayRSS = pid, st.rss
		}
		total += st.rss
	}
	if total <= s.memLimit {
		return
	}
	var victim *proc
	for p, n := range usage {
		if victim == nil || n > usage[victim] {
			victim = p
		}
	}
	if victim == nil || strayRSS > usage[victim] {
		if strayPid > 1 { // never 0 (our group) or init
			_ = syscall.Kill(strayPid, syscall.SIGKILL)
		}
		return
	}
	victim.killOOM()
}

// markedBy returns the command whose marker is in pid's environment, or
// nil.
func markedBy(pid int, procs map[int]*proc) *proc {
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return nil
	}
	for _, p := range procs {
		if p.marker != "" && bytes.Contains(env, []byte(p.marker+"\x00")) {
			return p
		}
	}
	return nil
}

// killOOM kills the command's tree as over the memory limit.
func (p *proc) killOOM() {
	p.mu.Lock()
	already := p.oomKilled
	p.oomKilled = true
	p.mu.Unlock()
	if !already {
		go killTree(p.pid, p.marker)
	}
}
