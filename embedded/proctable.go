package embedded

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/environment"
)

// A session's process table: every process started through ProcessRunner
// or by the bash tool, running or recently ended, with the tail of its
// output in a bounded ring. Host memory per session is bounded by
// (MaxProcesses + MaxEndedProcesses + running bash calls) x
// ProcessOutputBytes. Writers (the sandbox's output goroutines) never
// block on readers: a reader that falls behind the ring gets a Dropped
// event.

// procTable is a session's processes by pid. Lock order: procTable.mu,
// then proc.mu. Neither is held across I/O; session.mu is never taken
// while holding them.
type procTable struct {
	maxLive, maxEnded, ringBytes int

	mu    sync.Mutex
	procs map[int]*proc
	ended []*proc // oldest first, at most maxEnded
}

func newProcTable(live, ended, ring int) *procTable {
	return &procTable{maxLive: live, maxEnded: ended, ringBytes: ring, procs: map[int]*proc{}}
}

// coalesceBytes is the size up to which consecutive writes of one stream
// share a chunk.
const coalesceBytes = 4 << 10

// chunk is output of one stream at absolute offset off.
type chunk struct {
	off    int64
	stream string
	data   []byte // never modified once appended
}

// proc is one process of the table.
type proc struct {
	rp     container.RunningProcess // nil until started
	stream string                   // StreamPTY for a PTY, else ""
	max    int

	mu     sync.Mutex
	info   environment.ProcessInfo
	chunks []chunk
	held   int   // bytes in chunks
	total  int64 // offset of the next byte
	notify chan struct{}
	reason string // why the host is killing it, "" if it is not
}

func newProc(cfg environment.ProcessConfig, args []string, ringBytes int) *proc {
	p := &proc{max: ringBytes, notify: make(chan struct{})}
	p.info = environment.ProcessInfo{Tag: cfg.Tag, Args: args, PTY: cfg.PTY != nil, StartedAt: time.Now()}
	if cfg.PTY != nil {
		p.stream = environment.StreamPTY
	}
	return p
}

// writer returns an io.Writer appending to p's output as stream (a PTY's
// one stream whatever is asked).
func (p *proc) writer(stream string) procWriter {
	if p.stream != "" {
		stream = p.stream
	}
	return procWriter{p, stream}
}

type procWriter struct {
	p      *proc
	stream string
}

// Write appends a copy of b to the ring, dropping the oldest bytes past
// its bound, and wakes the readers. It never blocks on them.
func (w procWriter) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	p := w.p
	data := b[max(0, len(b)-p.max):] // a write larger than the ring keeps its tail
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total += int64(len(b) - len(data))
	if n := len(p.chunks); n > 0 && len(data) == len(b) && p.chunks[n-1].stream == w.stream && len(p.chunks[n-1].data)+len(data) <= coalesceBytes {
		// Small writes share a chunk, so that a flood of one-byte writes
		// costs bytes, not chunk headers. Appending never changes bytes
		// a reader holds: readers' slices end at the old length.
		last := &p.chunks[n-1]
		last.data = append(last.data, data...)
	} else {
		c := make([]byte, len(data), max(len(data), min(coalesceBytes, 512)))
		copy(c, data)
		p.chunks = append(p.chunks, chunk{off: p.total, stream: w.stream, data: c})
	}
	p.held += len(data)
	p.total += int64(len(data))
	for p.held > p.max {
		c := &p.chunks[0]
		if cut := p.held - p.max; cut < len(c.data) {
			c.data, c.off, p.held = c.data[cut:], c.off+int64(cut), p.held-cut
			break
		}
		p.held -= len(c.data)
		p.chunks = p.chunks[1:]
	}
	p.info.OutputBytes = p.total
	close(p.notify)
	p.notify = make(chan struct{})
	return len(b), nil
}

// read returns the events from offset off on (at most about 64 KiB of
// data), the offset after them, p's exit once all output was read, and a
// channel closed on the next change.
func (p *proc) read(off int64) (evs []environment.ProcessEvent, next int64, exit *environment.ProcessExit, changed <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	first := p.total
	if len(p.chunks) > 0 {
		first = p.chunks[0].off
	}
	if off < first {
		evs = append(evs, environment.ProcessEvent{Offset: off, Dropped: first - off})
		off = first
	}
	n := 0
	for _, c := range p.chunks {
		end := c.off + int64(len(c.data))
		if end <= off {
			continue
		}
		data := c.data[off-c.off : len(c.data) : len(c.data)] // cap = len: a reader that appends cannot write into the ring
		evs = append(evs, environment.ProcessEvent{Offset: off, Stream: c.stream, Data: data})
		off, n = end, n+len(data)
		if n >= 64<<10 {
			break
		}
	}
	if off >= p.total && p.info.Exit != nil {
		exit = p.info.Exit
	}
	return evs, off, exit, p.notify
}

// snapshot returns p's info.
func (p *proc) snapshot() environment.ProcessInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	info := p.info
	info.Args = slices.Clone(info.Args)
	if info.Exit != nil {
		e := *info.Exit
		info.Exit = &e
	}
	return info
}

// end records how p ended and wakes its readers.
func (p *proc) end(st container.ExitStatus, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.info.Exit != nil {
		return
	}
	exit := &environment.ProcessExit{Code: st.Code, OOMKilled: st.OOMKilled, TimedOut: st.TimedOut, EndedAt: time.Now()}
	if st.Code > 128 && st.Code <= 128+environment.MaxSignal {
		exit.Signal = st.Code - 128
	}
	switch {
	case p.reason != "":
		exit.Killed, exit.Reason, exit.TimedOut = true, p.reason, false
	case err != nil:
		exit.Killed, exit.Reason, exit.Code = true, "sandbox stopped: "+err.Error(), -1
	}
	p.info.Exit = exit
	close(p.notify)
	p.notify = make(chan struct{})
}

// wait waits for p's end.
func (p *proc) wait(ctx context.Context) (*environment.ProcessExit, error) {
	for {
		p.mu.Lock()
		exit, changed := p.info.Exit, p.notify
		p.mu.Unlock()
		if exit != nil {
			e := *exit
			return &e, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// done reports whether p has ended.
func (p *proc) done() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.info.Exit != nil
}

// add registers p, started as rp, replacing an ended process of the same
// pid (the sandbox reused it).
func (t *procTable) add(p *proc, rp container.RunningProcess) {
	p.rp = rp
	p.mu.Lock()
	p.info.PID = rp.PID()
	p.mu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if old := t.procs[rp.PID()]; old != nil {
		t.ended = slices.DeleteFunc(t.ended, func(q *proc) bool { return q == old })
	}
	t.procs[rp.PID()] = p
}

// admit checks the live-process bound before a start.
func (t *procTable) admit() error {
	if n := t.live(); n >= t.maxLive {
		return fmt.Errorf("%w: %d processes run in this session (Config.MaxProcesses)", environment.ErrLimitExceeded, n)
	}
	return nil
}

// live counts the running processes.
func (t *procTable) live() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.procs) - len(t.ended)
}

// retire moves an ended p to the ended list, forgetting the oldest ended
// processes past the bound.
func (t *procTable) retire(p *proc) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.procs[p.info.PID] != p {
		return // replaced already
	}
	t.ended = append(t.ended, p)
	for len(t.ended) > t.maxEnded {
		old := t.ended[0]
		t.ended = t.ended[1:]
		if t.procs[old.info.PID] == old {
			delete(t.procs, old.info.PID)
		}
	}
}

// get returns the process pid.
func (t *procTable) get(pid int) (*proc, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.procs[pid]; p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("%w: pid %d", environment.ErrProcessNotFound, pid)
}

// list returns every process's info, oldest start first.
func (t *procTable) list() []environment.ProcessInfo {
	t.mu.Lock()
	ps := make([]*proc, 0, len(t.procs))
	for _, p := range t.procs {
		ps = append(ps, p)
	}
	t.mu.Unlock()
	out := make([]environment.ProcessInfo, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.snapshot())
	}
	slices.SortFunc(out, func(a, b environment.ProcessInfo) int { return a.StartedAt.Compare(b.StartedAt) })
	return out
}

// killing records why the host is about to kill every running process
// (rollback, destroy, restart), unless a reason is recorded already; each
// ends with Killed and this reason.
func (t *procTable) killing(reason string) {
	t.mu.Lock()
	ps := make([]*proc, 0, len(t.procs))
	for _, p := range t.procs {
		ps = append(ps, p)
	}
	t.mu.Unlock()
	for _, p := range ps {
		p.mu.Lock()
		if p.info.Exit == nil && p.reason == "" {
			p.reason = reason
		}
		p.mu.Unlock()
	}
}

// watch ends p in the table when its process ends or its sandbox stops.
func (t *procTable) watch(p *proc, sb container.Sandbox) {
	select {
	case <-p.rp.Done():
		st, err := p.rp.Wait(context.Background())
		p.end(st, err)
	case <-sb.Done():
		// The sandbox is gone and its processes with it; output still
		// in flight is lost with them.
		p.end(container.ExitStatus{Code: 128 + int(syscall.SIGKILL)}, fmt.Errorf("the sandbox exited"))
	}
	t.retire(p)
}

// attach streams p's output from off to fn until p ended and all was
// delivered (nil), or ctx is done.
func (p *proc) attach(ctx context.Context, off int64, fn func(environment.ProcessEvent) error) error {
	if off < 0 {
		return fmt.Errorf("%w: negative offset %d", environment.ErrInvalidArgument, off)
	}
	for {
		evs, next, exit, changed := p.read(off)
		for _, ev := range evs {
			if err := fn(ev); err != nil {
				return err
			}
		}
		off = next
		if exit != nil {
			e := *exit
			return fn(environment.ProcessEvent{Offset: off, Exit: &e})
		}
		if len(evs) > 0 {
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
