package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/turnbox/turnbox/container"
)

// ErrStart reports that the agent could not start a command (for example,
// the program does not exist). Errors from Client.Exec wrap it.
var ErrStart = errors.New("agent: command could not be started")

// ErrVersion reports an agent that speaks another protocol version than
// this client (see ProtocolVersion): the agent binary in use was built
// from another turnbox. The connection ends; its error wraps ErrVersion
// and container.ErrNotRunning.
var ErrVersion = errors.New("agent: protocol version mismatch")

// ErrClosed is the error of a client closed by Close. It wraps
// container.ErrNotRunning.
var ErrClosed = fmt.Errorf("agent: client closed: %w", container.ErrNotRunning)

// ErrNoAnswer reports that the agent did not answer a request within its
// bound (see AnswerTimeout, KillAllTimeout). The agent may be starved (a
// fork bomb), frozen or hostile; the connection stays up, and what to do
// about the sandbox is the caller's choice.
var ErrNoAnswer = errors.New("agent: no answer in time")

// Bounds on every wait for the agent. The agent runs inside the sandbox,
// which the agent's user controls: it may be starved, stopped or hostile,
// so no host call waits on it forever. A request whose context has a
// deadline waits until then; one whose context has none waits at most
// these.
const (
	// AnswerTimeout bounds Ping and Idle.
	AnswerTimeout = 10 * time.Second
	// KillAllTimeout bounds KillAll. It is shorter than the agent's own
	// 30 s give-up: a sandbox whose processes do not die in this long is
	// better killed whole.
	KillAllTimeout = 15 * time.Second
	// killGrace is how long Exec waits for a command's exit after sending
	// Kill (its context ended or its Timeout passed) before it gives up on
	// the agent and ends the connection.
	killGrace = 10 * time.Second
	// WriteTimeout bounds one frame write: an agent that stops reading
	// its input for this long has its connection ended (every call fails
	// with container.ErrNotRunning).
	WriteTimeout = 10 * time.Second
	// MaxQueuedBytes bounds the frame bodies queued for one call that its
	// caller has not taken yet. A full queue stops the connection's reader
	// until the caller catches up, so a flooding agent costs the host
	// bounded memory.
	MaxQueuedBytes = 8 << 20
	// maxMessage bounds the bytes of an agent's error or status message
	// that the host keeps.
	maxMessage = 1024
)

// Client is the host side of an agent connection. It multiplexes any number
// of concurrent Exec calls, KillAll and Ping over one pair of streams. Safe
// for concurrent use.
type Client struct {
	r  io.Reader
	fw *frameWriter

	mu       sync.Mutex
	nextID   uint64
	calls    map[uint64]*call
	tunnels  map[uint64]*tunnel // open tunnels (DialPort), at most MaxTunnels
	hello    chan struct{}      // closed when Hello arrives
	agentPID int

	done    chan struct{}
	errOnce sync.Once
	err     error

	bounds bounds
}

// bounds are a client's waits for the agent: the constants above (tests
// shorten them).
type bounds struct {
	answer, killAll, killGrace, write time.Duration
}

var defaultBounds = bounds{answer: AnswerTimeout, killAll: KillAllTimeout, killGrace: killGrace, write: WriteTimeout}

// call is one outstanding request. Its events queue up to MaxQueuedBytes
// of bodies: a slow consumer of one command stalls the connection's reader
// only when that much waits, never the host's memory.
type call struct {
	mu     sync.Mutex
	events []frame
	queued int           // body bytes in events
	closed bool          // unregistered: frames are dropped
	notify chan struct{} // 1-buffered: events were added
	space  chan struct{} // 1-buffered: events were taken or the call ended
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// push queues f, waiting while the queue is full until the caller takes
// events, the call ends or done is closed.
func (c *call) push(f frame, done <-chan struct{}) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return
		}
		if c.queued == 0 || c.queued+len(f.body) <= MaxQueuedBytes {
			c.events = append(c.events, f)
			c.queued += len(f.body)
			c.mu.Unlock()
			wake(c.notify)
			return
		}
		c.mu.Unlock()
		select {
		case <-c.space:
		case <-done:
			return
		}
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
	c.queued -= len(f.body)
	wake(c.space)
	return f, true
}

// close drops the queue and makes later pushes no-ops.
func (c *call) close() {
	c.mu.Lock()
	c.closed, c.events, c.queued = true, nil, 0
	c.mu.Unlock()
	wake(c.space)
}

// NewClient returns a client talking to an agent that reads frames from w's
// other end and writes frames to r's other end. It starts a goroutine that
// reads r until it fails; Done is closed then. Close closes r and w if they
// are io.Closers.
//
// Every frame from the agent is untrusted: a frame of a type the agent does
// not send, for a request id never issued, or with a malformed body ends
// the connection with an error wrapping ErrProtocol and
// container.ErrNotRunning, as does an agent that stops reading (see
// WriteTimeout).
func NewClient(r io.Reader, w io.Writer) *Client {
	c := newClient(r, w)
	go c.readLoop()
	return c
}

// newClient is NewClient without its reader goroutine.
func newClient(r io.Reader, w io.Writer) *Client {
	return &Client{
		r:       r,
		fw:      &frameWriter{w: w},
		calls:   make(map[uint64]*call),
		tunnels: make(map[uint64]*tunnel),
		hello:   make(chan struct{}),
		done:    make(chan struct{}),
		bounds:  defaultBounds,
	}
}

func (c *Client) readLoop() {
	fr := newFrameReader(c.r)
	for {
		f, err := fr.read()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("agent: connection closed (agent exited?): %w", container.ErrNotRunning)
			} else if !errors.Is(err, container.ErrNotRunning) {
				err = fmt.Errorf("agent: connection lost: %w: %w", err, container.ErrNotRunning)
			}
			c.fail(err)
			return
		}
		if err := c.dispatch(f); err != nil {
			c.protocolError(err)
			return
		}
	}
}

// dispatch hands f to its call. It fails on frames the agent never sends.
func (c *Client) dispatch(f frame) error {
	switch f.typ {
	case MsgHello:
		d := decoder{b: f.body}
		version := d.uvarint()
		pid := d.uvarint()
		if d.err != nil || pid == 0 || pid > 1<<22 || f.id != 0 {
			return fmt.Errorf("%w: malformed Hello", ErrProtocol)
		}
		if version != ProtocolVersion {
			return fmt.Errorf("%w: the agent speaks protocol version %d, this host version %d: rebuild turnbox-agent from this turnbox", ErrVersion, version, ProtocolVersion)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		select {
		case <-c.hello:
			return fmt.Errorf("%w: second Hello", ErrProtocol)
		default:
		}
		c.agentPID = int(pid)
		close(c.hello)
		return nil
	case MsgOutput, MsgExited, MsgFailed, MsgReply, MsgStarted:
	case MsgDialed, MsgTunnelData, MsgConnEOF, MsgConnClosed, MsgTunnelCredit:
	default:
		return fmt.Errorf("%w: unexpected frame type %v", ErrProtocol, f.typ)
	}
	c.mu.Lock()
	cl, t, issued := c.calls[f.id], c.tunnels[f.id], f.id != 0 && f.id <= c.nextID
	c.mu.Unlock()
	if !issued {
		return fmt.Errorf("%w: %v frame for request %d, never sent", ErrProtocol, f.typ, f.id)
	}
	if t != nil {
		return c.tunnelFrame(t, f)
	}
	if cl != nil {
		// A late frame for a finished call is dropped.
		cl.push(f, c.done)
	}
	return nil
}

// protocolError ends the connection because the agent broke the protocol:
// the streams are closed, so the agent sees its input end.
func (c *Client) protocolError(err error) {
	if !errors.Is(err, container.ErrNotRunning) {
		err = fmt.Errorf("%w: %w", err, container.ErrNotRunning)
	}
	c.fail(err)
	_ = c.closeStreams()
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
	return c.closeStreams()
}

func (c *Client) closeStreams() error {
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
	cl := &call{notify: make(chan struct{}, 1), space: make(chan struct{}, 1)}
	c.calls[c.nextID] = cl
	return c.nextID, cl
}

func (c *Client) unregister(id uint64) {
	c.mu.Lock()
	cl := c.calls[id]
	delete(c.calls, id)
	c.mu.Unlock()
	if cl != nil {
		cl.close()
	}
}

func (c *Client) send(b []byte) error {
	select {
	case <-c.done:
		return c.Err()
	default:
	}
	// A write blocks while the agent does not read; past WriteTimeout the
	// connection is ended, which unblocks it (the streams are closed).
	t := time.AfterFunc(c.bounds.write, func() {
		c.protocolError(fmt.Errorf("agent: a frame write blocked for %v (the agent stopped reading)", c.bounds.write))
	})
	err := c.fw.write(b)
	t.Stop()
	if err != nil {
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
	if err := c.send(execFrame(id, p, flags, "", nil)); err != nil {
		return container.ExitStatus{}, err
	}
	hostTimeout, stop := c.hostTimer(p.Timeout)
	defer stop()
	stdinDone := make(chan struct{})
	defer close(stdinDone)
	if p.Stdin != nil {
		// The agent registers the command before it reads the next
		// frame, so stdin may follow the request at once (if the
		// command fails to start, the agent drops it).
		go c.copyStdin(id, p.Stdin, stdinDone)
	}
	r := &run{c: c, id: id, cl: cl, p: p}
	return r.wait(ctx, hostTimeout)
}

// execFrame encodes an Exec request (see MsgExec).
func execFrame(id uint64, p container.Process, flags byte, user string, size *container.TermSize) []byte {
	timeout := p.Timeout
	if timeout < 0 {
		timeout = 0
	}
	var rows, cols uint64
	if size != nil {
		rows, cols = uint64(size.Rows), uint64(size.Cols)
	}
	return newFrame(MsgExec, id).strs(p.Args).strs(p.Env).str(p.Dir).
		uvarint(uint64(timeout)).byte1(flags).str(user).uvarint(rows).uvarint(cols).bytes()
}

// hostTimer returns a channel that fires a grace period after a
// command's timeout: the agent kills a command at its Timeout; if it has
// not reported its end a grace period later, the host gives up on the
// agent. Without a timeout the channel is nil. stop releases the timer.
func (c *Client) hostTimer(timeout time.Duration) (<-chan time.Time, func()) {
	grace := c.bounds.killGrace
	if timeout <= 0 || timeout >= math.MaxInt64-grace {
		return nil, func() {}
	}
	t := time.NewTimer(timeout + grace)
	return t.C, func() { t.Stop() }
}

// run is the host's side of one command: it handles the command's frames
// until it ends.
type run struct {
	c  *Client
	id uint64
	cl *call
	p  container.Process // output writers and Timeout
	// onStart, if not nil, gets the pid of MsgStarted, which must come
	// (once) before any other event of the command.
	onStart func(pid int)
	started bool
}

// wait handles the command's frames until it ends: the command's exit,
// its failure to start, the connection's end, or the host's bounds
// (hostTimeout, then a grace period after a Kill). When ctx is done it
// asks the agent to kill the command, once.
func (r *run) wait(ctx context.Context, hostTimeout <-chan time.Time) (container.ExitStatus, error) {
	c, grace := r.c, r.c.bounds.killGrace
	ctxDone := ctx.Done()
	var killDeadline <-chan time.Time
	var killed bool
	dead := false
	for {
		for {
			f, ok := r.cl.pop()
			if !ok {
				break
			}
			if st, end, err := r.event(f, killed); end {
				return st, err
			}
		}
		select {
		case <-r.cl.notify:
			continue
		case <-ctxDone:
		case <-hostTimeout:
			// The agent should have killed the command and reported it
			// a grace period ago: kill it (best effort) and give up.
			_ = c.send(newFrame(MsgKill, r.id).bytes())
			c.protocolError(fmt.Errorf("agent: command not reported ended %v after its %v timeout: %w", grace, r.p.Timeout, ErrNoAnswer))
			return container.ExitStatus{TimedOut: true}, c.Err()
		case <-killDeadline:
			// An agent that does not report a killed command is starved,
			// stuck or hostile: the connection is ended, so the sandbox
			// counts as failed (and is replaced) rather than trusted.
			c.protocolError(fmt.Errorf("agent: command did not exit %v after kill: %w", grace, ErrNoAnswer))
			return container.ExitStatus{TimedOut: true}, c.Err()
		case <-c.done:
			// Handle whatever arrived before the connection died; the
			// loop returns if that includes the command's exit.
			if dead {
				return container.ExitStatus{}, c.Err()
			}
			dead = true
			wake(r.cl.notify)
			continue
		}
		// The context ended: kill, once.
		ctxDone = nil
		if !killed {
			killed = true
			if err := c.send(newFrame(MsgKill, r.id).bytes()); err != nil {
				return container.ExitStatus{}, err
			}
			killDeadline = time.After(grace)
		}
	}
}

// event handles one frame of the command; end reports that the call is
// over with st and err. A malformed frame ends the connection.
func (r *run) event(f frame, killed bool) (st container.ExitStatus, end bool, err error) {
	d := decoder{b: f.body}
	if r.onStart != nil && !r.started && f.typ != MsgStarted && f.typ != MsgFailed {
		d.err = fmt.Errorf("%w: %v frame before Started", ErrProtocol, f.typ)
	}
	switch {
	case d.err != nil:
	case f.typ == MsgStarted && r.onStart != nil && !r.started:
		pid := d.uvarint()
		if d.err == nil && (pid == 0 || pid > 1<<22) {
			d.err = fmt.Errorf("%w: Started with pid %d", ErrProtocol, pid)
		}
		if d.err == nil {
			r.started = true
			r.onStart(int(pid))
		}
	case f.typ == MsgOutput:
		stream := d.byte1()
		data := d.rest()
		var w io.Writer
		switch stream {
		case StreamStdout:
			w = r.p.Stdout
		case StreamStderr:
			w = r.p.Stderr
		default:
			d.fail()
		}
		if d.err == nil && w != nil && len(data) > 0 {
			// A failing writer does not stop the command; its output is
			// dropped, as with a nil writer.
			_, _ = w.Write(data)
		}
	case f.typ == MsgExited:
		st, d.err = decodeExit(&d)
		if d.err == nil {
			st.TimedOut = st.TimedOut || killed
			return st, true, nil
		}
	case f.typ == MsgFailed:
		if err := decodeFailed(&d); d.err == nil {
			return container.ExitStatus{}, true, err
		}
	default:
		d.err = fmt.Errorf("%w: %v frame for a command", ErrProtocol, f.typ)
	}
	if d.err != nil {
		err := fmt.Errorf("agent: %v frame: %w", f.typ, d.err)
		r.c.protocolError(err)
		return container.ExitStatus{}, true, r.c.Err()
	}
	return container.ExitStatus{}, false, nil
}

// decodeFailed decodes a Failed body into the call's error: it wraps
// ErrStart, and container.ErrInvalidSpec for FailInvalid.
func decodeFailed(d *decoder) error {
	msg := message(d.str())
	reason := d.byte1()
	switch {
	case d.err != nil:
		return nil
	case reason == FailInvalid:
		return fmt.Errorf("%w: %w: %s", ErrStart, container.ErrInvalidSpec, msg)
	case reason == FailStart:
		return fmt.Errorf("%w: %s", ErrStart, msg)
	}
	d.err = fmt.Errorf("%w: Failed with reason %d", ErrProtocol, reason)
	return nil
}

// decodeExit decodes and checks an Exited body.
func decodeExit(d *decoder) (container.ExitStatus, error) {
	code := d.varint()
	sig := d.uvarint()
	fl := d.byte1()
	dur := d.uvarint()
	if d.err != nil {
		return container.ExitStatus{}, d.err
	}
	if code < -1 || code > 255 || sig > 127 || dur > math.MaxInt64 || fl&^(exitFlagTimedOut|exitFlagOOM) != 0 {
		return container.ExitStatus{}, fmt.Errorf("%w: exit status out of range (code %d, signal %d, flags %#x)", ErrProtocol, code, sig, fl)
	}
	st := container.ExitStatus{
		Code:      int(code),
		Signal:    int(sig),
		TimedOut:  fl&exitFlagTimedOut != 0,
		OOMKilled: fl&exitFlagOOM != 0,
		Duration:  time.Duration(dur),
	}
	if sig != 0 {
		st.Code = 128 + int(sig)
	}
	return st, nil
}

// message makes an agent's message fit for an error: at most maxMessage
// bytes, quoted when it holds anything but printable text.
func message(s string) string {
	if len(s) > maxMessage {
		s = s[:maxMessage] + "..."
	}
	if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return strconv.Quote(s)
	}
	return s
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

// roundTrip sends a request without body and waits for its MsgReply, at
// most bound.
func (c *Client) roundTrip(ctx context.Context, typ MsgType, bound time.Duration) error {
	msg, err := c.ask(ctx, typ, bound)
	if err == nil && msg != "" {
		err = fmt.Errorf("agent: %v: %s", typ, msg)
	}
	return err
}

// Idle reports whether no process other than the agent runs in the
// sandbox (see MsgIdle). A snapshot of an idle sandbox needs no freeze.
// Without a deadline in ctx it waits at most AnswerTimeout; an error
// (ErrNoAnswer when there was no answer in time) means "cannot tell",
// which callers must treat as busy.
func (c *Client) Idle(ctx context.Context) (bool, error) {
	msg, err := c.ask(ctx, MsgIdle, c.bounds.answer)
	return err == nil && msg == "", err
}

// ask sends a request answered by MsgReply and returns the reply's
// message. It waits until ctx's deadline, or at most bound if ctx has
// none; past it the error wraps ErrNoAnswer and
// context.DeadlineExceeded.
func (c *Client) ask(ctx context.Context, typ MsgType, bound time.Duration) (string, error) {
	id, cl := c.register()
	defer c.unregister(id)
	if err := c.send(newFrame(typ, id).bytes()); err != nil {
		return "", err
	}
	return c.awaitReply(ctx, cl, typ, bound)
}

// awaitReply waits for the MsgReply of cl, a typ request, as ask does.
func (c *Client) awaitReply(ctx context.Context, cl *call, typ MsgType, bound time.Duration) (string, error) {
	if dl, ok := ctx.Deadline(); ok {
		bound = time.Until(dl)
	}
	t := time.NewTimer(bound)
	defer t.Stop()
	for {
		if f, ok := cl.pop(); ok {
			d := decoder{b: f.body}
			msg := d.str()
			if f.typ != MsgReply {
				d.err = fmt.Errorf("%w: %v frame for a %v request", ErrProtocol, f.typ, typ)
			}
			if d.err != nil {
				c.protocolError(fmt.Errorf("agent: %v reply: %w", typ, d.err))
				return "", c.Err()
			}
			return message(msg), nil
		}
		select {
		case <-cl.notify:
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return "", fmt.Errorf("%w: %v: %w", ErrNoAnswer, typ, ctx.Err())
			}
			return "", ctx.Err()
		case <-t.C:
			return "", fmt.Errorf("%w: %v for %v: %w", ErrNoAnswer, typ, bound, context.DeadlineExceeded)
		case <-c.done:
			return "", c.Err()
		}
	}
}

// Ping checks that the agent answers (within AnswerTimeout if ctx has no
// deadline).
func (c *Client) Ping(ctx context.Context) error {
	return c.roundTrip(ctx, MsgPing, c.bounds.answer)
}

// KillAll asks the agent to kill every process it can (as a sandbox's
// init: every process in the sandbox but itself) and to wait until they
// are gone. Running Exec calls return with the killed command's status.
// Without a deadline in ctx it waits at most KillAllTimeout; when no
// answer comes in time the error wraps ErrNoAnswer, and a caller that
// needs the processes gone kills the sandbox.
func (c *Client) KillAll(ctx context.Context) error {
	return c.roundTrip(ctx, MsgKillAll, c.bounds.killAll)
}
