package agent

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/turnbox/turnbox/container"
)

// StartProcess starts spec through the agent and returns once the agent
// reported it running (MsgStarted), or failed to start it. Its output goes
// to spec.Stdout and spec.Stderr from the client's goroutines. ctx bounds
// only the start: if it ends first the process is killed. Without a
// deadline in ctx the start waits at most AnswerTimeout. The error wraps
// ErrStart if the agent could not start it (and container.ErrInvalidSpec
// for an unknown user), container.ErrNotRunning if the connection died.
func (c *Client) StartProcess(ctx context.Context, spec container.ProcessSpec) (container.RunningProcess, error) {
	if len(spec.Args) == 0 {
		return nil, fmt.Errorf("%w: empty Args", container.ErrInvalidSpec)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	flags := execFlagReport
	if spec.OpenStdin || spec.PTY != nil {
		flags |= execFlagStdin
	}
	if spec.PTY != nil {
		flags |= execFlagPTY
	}
	id, cl := c.register()
	if err := c.send(execFrame(id, spec.Process, flags, spec.User, spec.PTY)); err != nil {
		c.unregister(id)
		return nil, err
	}
	killCtx, kill := context.WithCancel(context.Background())
	rp := &process{
		c: c, id: id, kill: kill,
		stdin: flags&execFlagStdin != 0, pty: spec.PTY != nil,
		started: make(chan int, 1), done: make(chan struct{}),
	}
	hostTimeout, stop := c.hostTimer(spec.Timeout)
	r := &run{c: c, id: id, cl: cl, p: spec.Process, onStart: func(pid int) { rp.started <- pid }}
	go func() {
		defer kill()
		st, err := r.wait(killCtx, hostTimeout)
		stop()
		c.unregister(id)
		rp.st, rp.err = st, err
		close(rp.done)
	}()
	if err := rp.waitStart(ctx); err != nil {
		return nil, err
	}
	return rp, nil
}

// process is a container.RunningProcess of a Client.
type process struct {
	c     *Client
	id    uint64
	pid   int
	kill  context.CancelFunc // makes run.wait send Kill, once
	stdin bool               // started with an open stdin (or a PTY)
	pty   bool

	started chan int
	done    chan struct{} // closed after st and err are set
	st      container.ExitStatus
	err     error

	inMu     sync.Mutex // orders WriteStdin and CloseStdin
	inClosed bool
}

// waitStart waits for the start report: the pid, or the start's failure.
func (p *process) waitStart(ctx context.Context) error {
	bound := p.c.bounds.answer
	if dl, ok := ctx.Deadline(); ok {
		bound = time.Until(dl)
	}
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case p.pid = <-p.started:
		return nil
	case <-p.done:
		select {
		case p.pid = <-p.started:
			return nil // it started and has already ended
		default:
		}
		return p.err
	case <-ctx.Done():
		p.kill()
		return ctx.Err()
	case <-t.C:
		p.kill()
		return fmt.Errorf("%w: start of %v for %v: %w", ErrNoAnswer, p.id, bound, context.DeadlineExceeded)
	}
}

// PID returns the process's pid in the sandbox.
func (p *process) PID() int { return p.pid }

// Done is closed once the process ended and its output was delivered.
func (p *process) Done() <-chan struct{} { return p.done }

// Wait waits for the process's end or ctx.
func (p *process) Wait(ctx context.Context) (container.ExitStatus, error) {
	select {
	case <-p.done:
		return p.st, p.err
	case <-ctx.Done():
		return container.ExitStatus{}, ctx.Err()
	}
}

// ended returns an error wrapping container.ErrProcessDone once the
// process ended, else nil.
func (p *process) ended() error {
	select {
	case <-p.done:
		return fmt.Errorf("agent: process %d: %w", p.pid, container.ErrProcessDone)
	default:
		return nil
	}
}

// WriteStdin sends b to the process's stdin, in frames of at most
// outputChunk bytes.
func (p *process) WriteStdin(ctx context.Context, b []byte) error {
	if err := p.ended(); err != nil {
		return err
	}
	if !p.stdin {
		return fmt.Errorf("agent: process %d was started without OpenStdin: %w", p.pid, container.ErrInvalidSpec)
	}
	p.inMu.Lock()
	defer p.inMu.Unlock()
	if p.inClosed {
		return fmt.Errorf("agent: process %d: stdin closed: %w", p.pid, container.ErrInvalidSpec)
	}
	for len(b) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(len(b), outputChunk)
		if err := p.c.send(newFrame(MsgStdin, p.id).raw(b[:n]).bytes()); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// CloseStdin closes the process's stdin; a second call does nothing.
func (p *process) CloseStdin(ctx context.Context) error {
	if err := p.ended(); err != nil {
		return err
	}
	if !p.stdin {
		return fmt.Errorf("agent: process %d was started without OpenStdin: %w", p.pid, container.ErrInvalidSpec)
	}
	p.inMu.Lock()
	defer p.inMu.Unlock()
	if p.inClosed {
		return nil
	}
	p.inClosed = true
	return p.c.send(newFrame(MsgStdinClose, p.id).bytes())
}

// Signal sends sig to the process alone.
func (p *process) Signal(ctx context.Context, sig syscall.Signal) error {
	if err := p.ended(); err != nil {
		return err
	}
	if sig < 1 || sig > 64 {
		return fmt.Errorf("agent: signal %d: %w", sig, container.ErrInvalidSpec)
	}
	return p.c.send(newFrame(MsgSignal, p.id).uvarint(uint64(sig)).bytes())
}

// Kill kills the process's tree; Wait then reports TimedOut. If the agent
// does not report the end within a grace period the connection ends.
func (p *process) Kill(ctx context.Context) error {
	if err := p.ended(); err != nil {
		return err
	}
	p.kill()
	return nil
}

// Resize sets the size of the process's PTY.
func (p *process) Resize(ctx context.Context, size container.TermSize) error {
	if err := p.ended(); err != nil {
		return err
	}
	if !p.pty {
		return fmt.Errorf("agent: process %d has no PTY: %w", p.pid, container.ErrInvalidSpec)
	}
	return p.c.send(newFrame(MsgResize, p.id).uvarint(uint64(size.Rows)).uvarint(uint64(size.Cols)).bytes())
}
