package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/turnbox/turnbox/container"
)

// MaxTunnels bounds the tunnels open at once on one client (DialPort past
// it fails with ErrTunnelLimit); a tunnel counts until its Close, even
// after the sandbox's side ended it. With TunnelWindow it bounds what the
// host buffers of tunnel data: MaxTunnels * TunnelWindow.
const MaxTunnels = 1024

// ErrTunnelLimit reports a DialPort past MaxTunnels open tunnels.
var ErrTunnelLimit = errors.New("agent: too many open tunnels")

// creditBatch is how many bytes a side consumes before it grants them
// back: fewer, larger Credit frames.
const creditBatch = TunnelWindow / 8

// smallData is the size under which received data is coalesced.
const smallData = 4 << 10

// tunnel is the host side of one tunnel, a net.Conn.
//
// Lock order: writeMu before mu. The client's read loop takes only mu,
// and never waits while holding it.
type tunnel struct {
	c    *Client
	id   uint64
	port int

	writeMu sync.Mutex // serializes Write and CloseWrite

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change of state
	dialed   bool
	dialErr  error    // the dial failed (set once, before dialed)
	buf      [][]byte // received data not yet read
	buffered int
	recvLeft int   // bytes the agent may still send (its credit)
	consumed int   // bytes read but not yet granted back
	sendLeft int   // bytes we may still send
	eof      bool  // ConnEOF arrived
	rdErr    error // reads fail with it once buf is empty (after eof: EOF)
	wrErr    error // writes fail with it
	closed   bool  // Close was called
	wclosed  bool  // CloseWrite was called
	gone     bool  // ConnClosed arrived: the agent forgot the tunnel

	rdl, wdl deadline
}

// broadcast wakes every waiter on t. Called with t.mu held.
func (t *tunnel) broadcast() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// DialPort connects to port (1-65535) on the sandbox's loopback (see
// container.DialLoopback) through the agent: the connection's bytes flow
// over the agent's connection, multiplexed with every other request and
// flow-controlled per tunnel (see TunnelWindow). ctx bounds only the dial;
// without a deadline in ctx the dial waits at most AnswerTimeout.
// Nothing listening fails with an error wrapping container.ErrPortRefused,
// a bad port with container.ErrInvalidSpec, a dead agent with
// container.ErrNotRunning; past MaxTunnels open tunnels with
// ErrTunnelLimit. The returned net.Conn also has CloseWrite. When the
// agent connection ends, the tunnel's Read and Write fail at once.
func (c *Client) DialPort(ctx context.Context, port int) (net.Conn, error) {
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("agent: dial: %w: port %d (want 1-65535)", container.ErrInvalidSpec, port)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t, err := c.registerTunnel(port)
	if err != nil {
		return nil, err
	}
	if err := c.send(newFrame(MsgDial, t.id).uvarint(uint64(port)).bytes()); err != nil {
		c.unregisterTunnel(t.id)
		return nil, err
	}
	if err := t.waitDialed(ctx); err != nil {
		t.abort()
		return nil, err
	}
	return t, nil
}

func (c *Client) registerTunnel(port int) (*tunnel, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.tunnels) >= MaxTunnels {
		return nil, fmt.Errorf("%w (%d)", ErrTunnelLimit, MaxTunnels)
	}
	c.nextID++
	t := &tunnel{c: c, id: c.nextID, port: port, changed: make(chan struct{}),
		recvLeft: TunnelWindow, sendLeft: TunnelWindow}
	t.rdl.init()
	t.wdl.init()
	c.tunnels[t.id] = t
	return t, nil
}

func (c *Client) unregisterTunnel(id uint64) {
	c.mu.Lock()
	delete(c.tunnels, id)
	c.mu.Unlock()
}

// waitDialed waits for the dial's answer, until ctx's deadline or at
// most the client's answer bound.
func (t *tunnel) waitDialed(ctx context.Context) error {
	bound := t.c.bounds.answer
	if dl, ok := ctx.Deadline(); ok {
		bound = time.Until(dl)
	}
	timer := time.NewTimer(bound)
	defer timer.Stop()
	for {
		t.mu.Lock()
		dialed, err, ch := t.dialed, t.dialErr, t.changed
		t.mu.Unlock()
		if err != nil {
			return err
		}
		if dialed {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return fmt.Errorf("%w: dial of port %d for %v: %w", ErrNoAnswer, t.port, bound, context.DeadlineExceeded)
		case <-t.c.done:
			return t.c.Err()
		}
	}
}

// abort forgets a tunnel whose dial did not complete and tells the agent
// to close it should its dial still succeed.
func (t *tunnel) abort() {
	t.c.unregisterTunnel(t.id)
	t.mu.Lock()
	tell := !t.gone && t.dialErr == nil
	t.closed = true
	t.mu.Unlock()
	if tell {
		_ = t.c.send(newFrame(MsgConnClose, t.id).byte1(ConnCloseAll).bytes())
	}
}

// tunnelFrame handles a frame of the agent's for tunnel t; it runs on the
// client's read loop, so it never blocks. An error is a protocol
// violation that ends the connection.
func (c *Client) tunnelFrame(t *tunnel, f frame) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := decoder{b: f.body}
	if !t.dialed && t.dialErr == nil && f.typ != MsgDialed && f.typ != MsgFailed {
		return fmt.Errorf("%w: %v frame for tunnel %d before Dialed", ErrProtocol, f.typ, f.id)
	}
	if t.gone {
		return fmt.Errorf("%w: %v frame for tunnel %d after ConnClosed", ErrProtocol, f.typ, f.id)
	}
	switch f.typ {
	case MsgDialed:
		if t.dialed || t.dialErr != nil || len(f.body) != 0 {
			return fmt.Errorf("%w: unexpected Dialed for tunnel %d", ErrProtocol, f.id)
		}
		t.dialed = true
	case MsgFailed:
		if t.dialed || t.dialErr != nil {
			return fmt.Errorf("%w: Failed for dialed tunnel %d", ErrProtocol, f.id)
		}
		err := decodeDialFailed(&d, t.port)
		if d.err != nil {
			return d.err
		}
		t.dialErr, t.gone = err, true
	case MsgTunnelData:
		if t.eof || len(f.body) == 0 || len(f.body) > outputChunk || len(f.body) > t.recvLeft {
			return fmt.Errorf("%w: tunnel %d: %d data bytes with %d of credit (eof %v)", ErrProtocol, f.id, len(f.body), t.recvLeft, t.eof)
		}
		t.recvLeft -= len(f.body)
		if !t.closed {
			t.queue(f.body)
		}
	case MsgConnEOF:
		if t.eof || len(f.body) != 0 {
			return fmt.Errorf("%w: unexpected ConnEOF for tunnel %d", ErrProtocol, f.id)
		}
		t.eof = true
	case MsgConnClosed:
		msg := d.str()
		if d.err != nil || len(d.b) != 0 {
			return fmt.Errorf("%w: malformed ConnClosed for tunnel %d", ErrProtocol, f.id)
		}
		t.gone = true
		t.agentClosed(message(msg))
	case MsgTunnelCredit:
		n := d.uvarint()
		if d.err != nil || n == 0 || n > uint64(TunnelWindow-t.sendLeft) {
			return fmt.Errorf("%w: tunnel %d: credit of %d with %d outstanding", ErrProtocol, f.id, n, TunnelWindow-t.sendLeft)
		}
		t.sendLeft += int(n)
	default:
		return fmt.Errorf("%w: %v frame for a tunnel", ErrProtocol, f.typ)
	}
	t.broadcast()
	return nil
}

// queue buffers received data. Small bodies are appended to the last
// chunk, so a window of tiny frames costs about a window of memory, not
// a slice per byte. Called with t.mu held.
func (t *tunnel) queue(b []byte) {
	t.buffered += len(b)
	if n := len(t.buf); n > 0 && len(b) < smallData && len(t.buf[n-1]) < outputChunk {
		t.buf[n-1] = append(t.buf[n-1], b...)
		return
	}
	t.buf = append(t.buf, b)
}

// agentClosed records that the agent closed the socket: with msg empty
// both directions had ended (reads end with EOF), else the socket failed.
// Called with t.mu held.
func (t *tunnel) agentClosed(msg string) {
	err := fmt.Errorf("agent: port %d: connection closed inside the sandbox: %w", t.port, net.ErrClosed)
	if msg != "" {
		err = fmt.Errorf("agent: port %d: connection failed inside the sandbox: %s", t.port, msg)
	}
	if t.wrErr == nil {
		t.wrErr = err
	}
	if t.rdErr == nil {
		t.rdErr = err
		if t.eof {
			t.rdErr = io.EOF
		}
	}
}

// decodeDialFailed decodes a Failed body answering a Dial.
func decodeDialFailed(d *decoder, port int) error {
	msg := message(d.str())
	reason := d.byte1()
	switch {
	case d.err != nil:
		return nil
	case reason == FailRefused:
		return fmt.Errorf("agent: port %d: %w (%s)", port, container.ErrPortRefused, msg)
	case reason == FailInvalid:
		return fmt.Errorf("agent: port %d: %w: %s", port, container.ErrInvalidSpec, msg)
	case reason == FailStart:
		return fmt.Errorf("agent: port %d: dial failed: %s", port, msg)
	}
	d.err = fmt.Errorf("%w: Failed with reason %d", ErrProtocol, reason)
	return nil
}

// Read reads data the sandbox's socket sent. It returns io.EOF after the
// server closed its writing side, and an error wrapping
// container.ErrNotRunning once the agent connection ended.
func (t *tunnel) Read(b []byte) (int, error) {
	for {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return 0, net.ErrClosed
		}
		if t.buffered > 0 {
			n := t.take(b)
			grant := 0
			if t.consumed >= creditBatch && !t.eof {
				grant, t.consumed = t.consumed, 0
				t.recvLeft += grant
			}
			t.mu.Unlock()
			if grant > 0 && !t.isGone() {
				_ = t.c.send(newFrame(MsgConnCredit, t.id).uvarint(uint64(grant)).bytes())
			}
			return n, nil
		}
		if t.eof {
			t.mu.Unlock()
			return 0, io.EOF
		}
		if t.rdErr != nil {
			err := t.rdErr
			t.mu.Unlock()
			return 0, err
		}
		ch := t.changed
		t.mu.Unlock()
		if err := t.wait(ch, &t.rdl); err != nil {
			return 0, err
		}
	}
}

func (t *tunnel) isGone() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.gone
}

// take copies buffered data into b. Called with t.mu held.
func (t *tunnel) take(b []byte) int {
	n := 0
	for n < len(b) && len(t.buf) > 0 {
		k := copy(b[n:], t.buf[0])
		n += k
		if k == len(t.buf[0]) {
			t.buf[0] = nil
			t.buf = t.buf[1:]
		} else {
			t.buf[0] = t.buf[0][k:]
		}
	}
	t.buffered -= n
	t.consumed += n
	return n
}

// wait waits for a change of t's state (ch), the deadline dl or the
// client's end.
func (t *tunnel) wait(ch <-chan struct{}, dl *deadline) error {
	select {
	case <-ch:
		return nil
	case <-dl.expired():
		return os.ErrDeadlineExceeded
	case <-t.c.done:
		t.mu.Lock()
		select {
		case <-ch: // something arrived before the end: handle it first
			t.mu.Unlock()
			return nil
		default:
		}
		err := fmt.Errorf("agent: port %d: %w", t.port, t.c.Err())
		if t.rdErr == nil {
			t.rdErr = err
		}
		if t.wrErr == nil {
			t.wrErr = err
		}
		t.broadcast()
		t.mu.Unlock()
		return nil
	}
}

// Write sends b to the sandbox's socket, as the agent grants credit.
func (t *tunnel) Write(b []byte) (int, error) {
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	n := 0
	for {
		t.mu.Lock()
		switch {
		case t.closed:
			t.mu.Unlock()
			return n, net.ErrClosed
		case t.wclosed:
			t.mu.Unlock()
			return n, fmt.Errorf("agent: port %d: write after CloseWrite: %w", t.port, net.ErrClosed)
		case t.wrErr != nil:
			err := t.wrErr
			t.mu.Unlock()
			return n, err
		}
		if n == len(b) {
			t.mu.Unlock()
			return n, nil
		}
		select {
		case <-t.wdl.expired():
			t.mu.Unlock()
			return n, os.ErrDeadlineExceeded
		default:
		}
		if k := min(len(b)-n, outputChunk, t.sendLeft); k > 0 {
			t.sendLeft -= k
			t.mu.Unlock()
			if err := t.c.send(newFrame(MsgConnData, t.id).raw(b[n : n+k]).bytes()); err != nil {
				return n, err
			}
			n += k
			continue
		}
		ch := t.changed
		t.mu.Unlock()
		if err := t.wait(ch, &t.wdl); err != nil {
			return n, err
		}
	}
}

// CloseWrite half-closes the tunnel: the server inside reads end of file
// once it read what was written; the tunnel can still be read.
func (t *tunnel) CloseWrite() error {
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return net.ErrClosed
	}
	already, gone := t.wclosed, t.gone
	t.wclosed = true
	t.broadcast()
	t.mu.Unlock()
	if already || gone {
		return nil
	}
	return t.c.send(newFrame(MsgConnClose, t.id).byte1(ConnCloseWrite).bytes())
}

// Close ends the tunnel: the agent writes what it has queued and closes
// the socket. Pending Reads and Writes fail with net.ErrClosed.
func (t *tunnel) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return net.ErrClosed
	}
	t.closed = true
	gone := t.gone
	t.buf, t.buffered = nil, 0
	t.broadcast()
	t.mu.Unlock()
	t.rdl.stop()
	t.wdl.stop()
	t.c.unregisterTunnel(t.id)
	if gone {
		return nil
	}
	select {
	case <-t.c.done:
		return nil
	default:
	}
	return t.c.send(newFrame(MsgConnClose, t.id).byte1(ConnCloseAll).bytes())
}

// tunnelAddr is a tunnel's synthetic address.
type tunnelAddr string

func (a tunnelAddr) Network() string { return "agent" }
func (a tunnelAddr) String() string  { return string(a) }

// LocalAddr returns "host:tunnel-<id>".
func (t *tunnel) LocalAddr() net.Addr {
	return tunnelAddr("host:tunnel-" + strconv.FormatUint(t.id, 10))
}

// RemoteAddr returns "agent:<port>".
func (t *tunnel) RemoteAddr() net.Addr { return tunnelAddr("agent:" + strconv.Itoa(t.port)) }

// SetDeadline sets the read and write deadlines.
func (t *tunnel) SetDeadline(d time.Time) error {
	t.rdl.set(d)
	t.wdl.set(d)
	return nil
}

// SetReadDeadline sets the deadline of Read calls, pending ones included.
func (t *tunnel) SetReadDeadline(d time.Time) error { t.rdl.set(d); return nil }

// SetWriteDeadline sets the deadline of Write calls, pending ones
// included.
func (t *tunnel) SetWriteDeadline(d time.Time) error { t.wdl.set(d); return nil }

// deadline is a settable deadline whose channel is closed once it passed.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	ch    chan struct{}
	fired bool
}

func (d *deadline) init() { d.ch = make(chan struct{}) }

// set arms the deadline at when (zero: none).
func (d *deadline) set(when time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if d.fired {
		d.ch, d.fired = make(chan struct{}), false
	}
	if when.IsZero() {
		return
	}
	if dur := time.Until(when); dur > 0 {
		ch := d.ch
		d.timer = time.AfterFunc(dur, func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			if d.ch == ch && !d.fired {
				close(ch)
				d.fired = true
			}
		})
		return
	}
	close(d.ch)
	d.fired = true
}

// expired returns a channel closed once the deadline passed.
func (d *deadline) expired() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
	}
}

var _ interface{ CloseWrite() error } = (*tunnel)(nil)
