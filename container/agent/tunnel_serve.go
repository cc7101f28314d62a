package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/turnbox/turnbox/container"
)

// Bounds of the agent's tunnels.
const (
	// agentMaxTunnels bounds the tunnels the agent keeps open (a host
	// allows MaxTunnels; the agent keeps some room for tunnels whose
	// close is under way).
	agentMaxTunnels = 2 * MaxTunnels
	// dialTimeout bounds a dial inside the sandbox.
	dialTimeout = 10 * time.Second
	// flushTimeout bounds how long a closed tunnel's queued data is
	// written to a socket whose reader does not take it.
	flushTimeout = 5 * time.Second
)

// stunnel is the agent's side of one tunnel: a socket, a reader goroutine
// (socket -> TunnelData within the host's credit) and a writer goroutine
// (ConnData -> socket, granting credit back as it writes).
type stunnel struct {
	s  *server
	id uint64

	mu       sync.Mutex
	cond     *sync.Cond // signalled on every change below
	conn     *net.TCPConn
	queue    [][]byte // data from the host not yet written
	queued   int
	sendLeft int  // bytes the host lets us send
	wclose   bool // the host half-closed (or closed) the tunnel
	hostGone bool // the host closed the tunnel: send it nothing more
	rdone    bool // the socket read end of file (ConnEOF sent)
	wdone    bool // the writing side was shut down
	finished bool // the socket is closed and the tunnel forgotten
}

// dial handles MsgDial: it registers the tunnel and dials in a goroutine.
func (s *server) dial(f frame) {
	d := decoder{b: f.body}
	port := d.uvarint()
	if d.err != nil || port < 1 || port > 65535 {
		s.failedReason(f.id, "bad port", FailInvalid)
		return
	}
	t := &stunnel{s: s, id: f.id, sendLeft: TunnelWindow}
	t.cond = sync.NewCond(&t.mu)
	s.tunMu.Lock()
	_, dup := s.tunnels[f.id]
	full := len(s.tunnels) >= agentMaxTunnels
	if !dup && !full {
		s.tunnels[f.id] = t
	}
	s.tunMu.Unlock()
	switch {
	case dup:
		return // a host bug: the first tunnel goes on
	case full:
		s.failedReason(f.id, "too many tunnels", FailInvalid)
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t.connect(int(port))
	}()
}

// failedReason sends MsgFailed for request id.
func (s *server) failedReason(id uint64, msg string, reason byte) {
	_ = s.fw.write(newFrame(MsgFailed, id).str(msg).byte1(reason).bytes())
}

// connect dials port and, once connected, runs the tunnel's reader and
// writer.
func (t *stunnel) connect(port int) {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	c, err := container.DialLoopback(ctx, port)
	cancel()
	if err != nil {
		t.s.forget(t.id)
		reason := FailStart
		switch {
		case errors.Is(err, container.ErrPortRefused):
			reason = FailRefused
		case errors.Is(err, container.ErrInvalidSpec):
			reason = FailInvalid
		}
		t.s.failedReason(t.id, err.Error(), reason)
		return
	}
	t.mu.Lock()
	stop := t.hostGone || t.finished
	if !stop {
		t.conn = c.(*net.TCPConn)
	}
	t.mu.Unlock()
	if stop { // closed by the host, or the agent stops
		_ = c.Close()
		t.finish(nil)
		return
	}
	_ = t.s.fw.write(newFrame(MsgDialed, t.id).bytes())
	t.s.wg.Add(1)
	go func() {
		defer t.s.wg.Done()
		t.writeLoop()
	}()
	t.readLoop()
}

func (s *server) forget(id uint64) {
	s.tunMu.Lock()
	delete(s.tunnels, id)
	s.tunMu.Unlock()
}

// tunnelFrame handles a host frame for a tunnel; it never blocks.
func (s *server) tunnelFrame(f frame) {
	s.tunMu.Lock()
	t := s.tunnels[f.id]
	s.tunMu.Unlock()
	if t == nil {
		return
	}
	t.mu.Lock()
	d := decoder{b: f.body}
	switch f.typ {
	case MsgConnData:
		if t.wclose || len(f.body)+t.queued > TunnelWindow {
			// Beyond the credit granted: the host is broken; end
			// the tunnel rather than buffer without bound.
			t.mu.Unlock()
			t.finish(errors.New("the host sent data beyond its credit"))
			return
		}
		t.queue = append(t.queue, f.body)
		t.queued += len(f.body)
	case MsgConnClose:
		t.wclose = true
		if d.byte1() != ConnCloseWrite {
			t.hostGone = true
			if t.conn != nil {
				// What is queued gets this long to be written.
				_ = t.conn.SetWriteDeadline(time.Now().Add(flushTimeout))
			}
		}
	case MsgConnCredit:
		if n := d.uvarint(); d.err == nil {
			t.sendLeft = min(TunnelWindow, t.sendLeft+int(min(n, TunnelWindow)))
		}
	}
	t.cond.Broadcast()
	t.mu.Unlock()
}

// readLoop copies the socket to the host within the host's credit.
func (t *stunnel) readLoop() {
	buf := make([]byte, outputChunk)
	for {
		t.mu.Lock()
		for t.sendLeft == 0 && !t.hostGone && !t.finished {
			t.cond.Wait()
		}
		n, stop := min(t.sendLeft, len(buf)), t.hostGone || t.finished
		t.mu.Unlock()
		if stop {
			return
		}
		k, err := t.conn.Read(buf[:n])
		if k > 0 {
			t.mu.Lock()
			t.sendLeft -= k
			gone := t.hostGone
			t.mu.Unlock()
			if !gone {
				_ = t.s.fw.write(newFrame(MsgTunnelData, t.id).raw(buf[:k]).bytes())
			}
		}
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			t.mu.Lock()
			t.rdone = true
			both, gone := t.wdone, t.hostGone
			t.mu.Unlock()
			if !gone {
				_ = t.s.fw.write(newFrame(MsgConnEOF, t.id).bytes())
			}
			if both {
				t.finish(nil)
			}
			return
		}
		t.finish(err)
		return
	}
}

// writeLoop writes the host's data to the socket and grants the bytes
// written back as credit; after a half-close it shuts down the socket's
// writing side, after a close it closes the socket.
func (t *stunnel) writeLoop() {
	granted := 0
	for {
		t.mu.Lock()
		for len(t.queue) == 0 && !t.wclose && !t.finished {
			t.cond.Wait()
		}
		if t.finished {
			t.mu.Unlock()
			return
		}
		if len(t.queue) == 0 { // wclose
			gone, rdone := t.hostGone, t.rdone
			t.wdone = true
			t.mu.Unlock()
			if gone || rdone {
				t.finish(nil)
				return
			}
			if err := t.conn.CloseWrite(); err != nil {
				t.finish(err)
			}
			return
		}
		b := t.queue[0]
		t.queue[0] = nil
		t.queue = t.queue[1:]
		t.mu.Unlock()
		if _, err := t.conn.Write(b); err != nil {
			t.finish(err)
			return
		}
		t.mu.Lock()
		t.queued -= len(b)
		granted += len(b)
		grant := 0
		if granted >= creditBatch || len(t.queue) == 0 {
			grant, granted = granted, 0
		}
		gone := t.hostGone
		t.mu.Unlock()
		if grant > 0 && !gone {
			_ = t.s.fw.write(newFrame(MsgTunnelCredit, t.id).uvarint(uint64(grant)).bytes())
		}
	}
}

// finish closes the socket, forgets the tunnel and, unless the host
// closed it, reports ConnClosed (with err's text if the socket failed).
// Only its first call acts.
func (t *stunnel) finish(err error) {
	t.mu.Lock()
	if t.finished {
		t.mu.Unlock()
		return
	}
	t.finished = true
	gone := t.hostGone
	t.queue, t.queued = nil, 0
	t.cond.Broadcast()
	t.mu.Unlock()
	if t.conn != nil {
		_ = t.conn.Close()
	}
	t.s.forget(t.id)
	if gone {
		return
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	_ = t.s.fw.write(newFrame(MsgConnClosed, t.id).str(msg).bytes())
}

// closeTunnels closes every tunnel's socket: the agent is stopping.
func (s *server) closeTunnels() {
	s.tunMu.Lock()
	ts := make([]*stunnel, 0, len(s.tunnels))
	for _, t := range s.tunnels {
		ts = append(ts, t)
	}
	s.tunMu.Unlock()
	for _, t := range ts {
		t.mu.Lock()
		t.hostGone = true
		t.mu.Unlock()
		t.finish(nil)
	}
}
