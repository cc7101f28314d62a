package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/turnbox/turnbox/container"
)

// ErrStart reports that the agent could not start a command (for example,
// the program does not exist). Errors from Client.Exec wrap it.
var ErrStart = errors.New("agent: command could not be started")

// ErrClosed is the error of a client closed by Close. It wraps
// container.ErrNotRunning.
var ErrClosed = fmt.Errorf("agent: client closed: %w", container.ErrNotRunning)

// killGrace is how long Exec waits for a command's exit after sending Kill
// on a cancelled context before giving up on the agent.
const killGrace = 10 * time.Second

// Client is the host side of an agent connection. It multiplexes any number
// of concurrent Exec calls, KillAll and Ping over one pair of streams. Safe
// for concurrent use.
type Client struct {
	r  io.Reader
	fw *frameWriter

	mu       sync.Mutex
	nextID   uint64
	calls    map[uint64]*call
	hello    chan struct{} // closed when Hello arrives
	agentPID int

	done    chan struct{}
	errOnce sync.Once
	err     error
}

// call is one outstanding request; events queue up without bound so that
// a slow consumer of one command never stalls the connection.
type call struct {
	mu     sync.Mutex
	events []frame
	notify chan struct{} // 1-buffered: events were added
}

func (c *call) push(f frame) {
	c.mu.Lock()
	c.events = append(c.events, f)
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

func (c *call) pop() (frame, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.events) == 0 {
		return frame{}, false
	}
	f := c.events[0]
	c.events[0] = frame{}
	c.events = c.events[1:]
	return f, true
}

// NewClient returns a client talking to an agent that reads frames from w's
// other end and writes frames to r's other end. It starts a goroutine that
// reads r until it fails; Done is closed then. Close closes r and w if they
// are io.Closers.
func NewClient(r io.Reader, w io.Writer) *Client {
	c := &Client{
		r:     r,
		fw:    &frameWriter{w: w},
		calls: make(map[uint64]*call),
		hello: make(chan struct{}),
		done:  make(chan struct{}),
	}
	go c.readLoop()
	return c
}

func (c *Client) readLoop() {
	fr := newFrameReader(c.r)
	for {
		f, err := fr.read()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("agent: connection closed (agent exited?): %w", container.ErrNotRunning)
			} else if !errors.Is(err, container.ErrNotRunning) {
				err = fmt.Errorf("agent: connection lost: %v: %w", err, container.ErrNotRunning)
			}
			c.fail(err)
			return
		}
		if f.typ == MsgHello {
			d := decoder{b: f.body}
			d.uvarint()
			pid := d.uvarint()
			c.mu.Lock()
			select {
			case <-c.hello:
			default:
				c.agentPID = int(pid)
				close(c.hello)
			}
			c.mu.Unlock()
			continue
		}
		c.mu.Lock()
		cl := c.calls[f.id]
		c.mu.Unlock()
		if cl != nil {
			cl.push(f)
		}
	}
}

// fail records the connection's end (first error wins) and closes Done.
func (c *Client) fail(err error) {
	c.errOnce.Do(func() {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.done)
	})
}

// Done is closed when the connection to the agent has ended (the agent
// died, the streams failed, or Close was called). Err then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is up; afterwards an error wrapping
// container.ErrNotRunning (ErrClosed after Close).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the connection: pending and later calls fail with ErrClosed.
// It closes the streams given to NewClient if they are io.Closers, which
// makes an agent serving them see end of input and exit.
func (c *Client) Close() error {
	c.fail(ErrClosed)
	var errs []error
	if wc, ok := c.fw.w.(io.Closer); ok {
		errs = append(errs, wc.Close())
	}
	if rc, ok := c.r.(io.Closer); ok && any(rc) != any(c.fw.w) {
		errs = append(errs, rc.Close())
	}
	return errors.Join(errs...)
}

// AgentPID returns the agent's pid as it announced it in its Hello frame
// (1 when it runs as a sandbox's init), or 0 if no Hello has arrived yet.
func (c *Client) AgentPID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.agentPID
}

func (c *Client) register() (uint64, *call) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextID++
	cl := &call{notify: make(chan struct{}, 1)}
	c.calls[c.nextID] = cl
	return c.nextID, cl
}

func (c *Client) unregister(id uint64) {
	c.mu.Lock()
	delete(c.calls, id)
	c.mu.Unlock()
}

func (c *Client) send(b []byte) error {
	select {
	case <-c.done:
		return c.Err()
	default:
	}
	if err := c.fw.write(b); err != nil {
		// The agent is gone if we cannot write to it; report it the same
		// way as a dead read side.
		err = fmt.Errorf("agent: write: %v: %w", err, container.ErrNotRunning)
		c.fail(err)
		return c.Err()
	}
	return nil
}

// Exec runs p through the agent and waits for it to end, writing its output
// to p.Stdout and p.Stderr as frames arrive. p.Dir and p.Env are passed as
// they are (the agent applies its defaults: its working directory default
// and its own environment as the base). When ctx is done, Exec asks the
// agent to kill the command's process tree and returns its status with
// TimedOut set. The error wraps ErrStart if the command could not be
// started and container.ErrNotRunning if the agent connection died.
func (c *Client) Exec(ctx context.Context, p container.Process) (container.ExitStatus, error) {
	if len(p.Args) == 0 {
		return container.ExitStatus{}, fmt.Errorf("%w: empty Args", container.ErrInvalidSpec)
	}
	if err := ctx.Err(); err != nil {
		return container.ExitStatus{}, err
	}
	id, cl := c.register()
	defer c.unregister(id)

	var flags byte
	if p.Stdin != nil {
		flags |= execFlagStdin
	}
	timeout := p.Timeout
	if timeout < 0 {
		timeout = 0
	}
	req := newFrame(MsgExec, id).strs(p.Args).strs(p.Env).str(p.Dir).
		uvarint(uint64(timeout)).byte1(flags).bytes()
	if err := c.send(req); err != nil {
		return container.ExitStatus{}, err
	}

	stdinDone := make(chan struct{})
	defer close(stdinDone)
	if p.Stdin != nil {
		// The agent registers the command before it reads the next
		// frame, so stdin may follow the request at once (if the
		// command fails to start, the agent drops it).
		go c.copyStdin(id, p.Stdin, stdinDone)
	}
	ctxDone := ctx.Done()
	var killDeadline <-chan time.Time
	var killed bool
	dead := false
	for {
		for {
			f, ok := cl.pop()
			if !ok {
				break
			}
			switch f.typ {
			case MsgOutput:
				d := decoder{b: f.body}
				stream := d.byte1()
				data := d.rest()
				var w io.Writer
				if stream == StreamStdout {
					w = p.Stdout
				} else {
					w = p.Stderr
				}
				if w != nil && len(data) > 0 {
					// A failing writer does not stop the command; its
					// output is dropped, as with a nil writer.
					_, _ = w.Write(data)
				}
			case MsgExited:
				d := decoder{b: f.body}
				code := d.varint()
				sig := d.uvarint()
				fl := d.byte1()
				dur := d.uvarint()
				if d.err != nil {
					return container.ExitStatus{}, d.err
				}
				st := container.ExitStatus{
					Code:      int(code),
					TimedOut:  fl&exitFlagTimedOut != 0 || killed,
					OOMKilled: fl&exitFlagOOM != 0,
					Duration:  time.Duration(dur),
				}
				if sig != 0 {
					st.Code = 128 + int(sig)
				}
				return st, nil
			case MsgFailed:
				d := decoder{b: f.body}
				return container.ExitStatus{}, fmt.Errorf("%w: %s", ErrStart, d.str())
			}
		}
		select {
		case <-cl.notify:
		case <-ctxDone:
			ctxDone = nil
			killed = true
			if err := c.send(newFrame(MsgKill, id).bytes()); err != nil {
				return container.ExitStatus{}, err
			}
			killDeadline = time.After(killGrace)
		case <-killDeadline:
			return container.ExitStatus{TimedOut: true}, fmt.Errorf("agent: command did not exit %v after kill: %w", killGrace, ctx.Err())
		case <-c.done:
			// Handle whatever arrived before the connection died; the
			// loop returns if that includes the command's exit.
			if dead {
				return container.ExitStatus{}, c.Err()
			}
			dead = true
			select {
			case cl.notify <- struct{}{}:
			default:
			}
		}
	}
}

// copyStdin streams r to the command's stdin until EOF, then closes it.
func (c *Client) copyStdin(id uint64, r io.Reader, stop <-chan struct{}) {
	buf := make([]byte, outputChunk)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			select {
			case <-stop:
				return
			default:
			}
			if c.send(newFrame(MsgStdin, id).raw(buf[:n]).bytes()) != nil {
				return
			}
		}
		if err != nil {
			break
		}
	}
	select {
	case <-stop:
		return
	default:
	}
	_ = c.send(newFrame(MsgStdinClose, id).bytes())
}

// roundTrip sends a request without body and waits for its MsgReply.
func (c *Client) roundTrip(ctx context.Context, typ MsgType) error {
	msg, err := c.ask(ctx, typ)
	if err == nil && msg != "" {
		err = fmt.Errorf("agent: %v: %s", typ, msg)
	}
	return err
}

// Idle reports whether no process other than the agent runs in the
// sandbox (see MsgIdle). A snapshot of an idle sandbox needs no freeze.
func (c *Client) Idle(ctx context.Context) (bool, error) {
	msg, err := c.ask(ctx, MsgIdle)
	return err == nil && msg == "", err
}

// ask sends a request answered by MsgReply and returns the reply's message.
func (c *Client) ask(ctx context.Context, typ MsgType) (string, error) {
	id, cl := c.register()
	defer c.unregister(id)
	if err := c.send(newFrame(typ, id).bytes()); err != nil {
		return "", err
	}
	for {
		if f, ok := cl.pop(); ok && f.typ == MsgReply {
			d := decoder{b: f.body}
			msg := d.str()
			return msg, d.err
		}
		select {
		case <-cl.notify:
		case <-ctx.Done():
			return "", ctx.Err()
		case <-c.done:
			return "", c.Err()
		}
	}
}

// Ping checks that the agent answers.
func (c *Client) Ping(ctx context.Context) error { return c.roundTrip(ctx, MsgPing) }

// KillAll asks the agent to kill every process it can (as a sandbox's
// init: every process in the sandbox but itself) and to wait until they
// are gone. Running Exec calls return with the killed command's status.
func (c *Client) KillAll(ctx context.Context) error { return c.roundTrip(ctx, MsgKillAll) }
