package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
)

// The tests here play a hostile agent against DialPort's tunnels.

// dialHostile starts a DialPort of port 80 against the fake agent and
// returns its request id and the channel of its result.
func dialHostile(t *testing.T, c *Client, a *fakeAgent) (uint64, <-chan net.Conn, <-chan error) {
	t.Helper()
	conns, errs := make(chan net.Conn, 1), make(chan error, 1)
	go func() {
		conn, err := c.DialPort(context.Background(), 80)
		if err != nil {
			errs <- err
			return
		}
		t.Cleanup(func() { conn.Close() })
		conns <- conn
	}()
	select {
	case f := <-a.got:
		if f.typ != MsgDial {
			t.Fatalf("host sent %v, want Dial", f.typ)
		}
		return f.id, conns, errs
	case <-time.After(5 * time.Second):
		t.Fatal("no Dial frame")
	}
	return 0, nil, nil
}

// openHostile returns a tunnel the fake agent accepted.
func openHostile(t *testing.T, c *Client, a *fakeAgent) (uint64, net.Conn) {
	t.Helper()
	id, conns, errs := dialHostile(t, c, a)
	a.send(newFrame(MsgDialed, id).bytes())
	select {
	case conn := <-conns:
		return id, conn
	case err := <-errs:
		t.Fatalf("DialPort: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("DialPort hangs after Dialed")
	}
	return 0, nil
}

func dataFrames(id uint64, n int) []byte {
	var b []byte
	chunk := make([]byte, outputChunk)
	for ; n > 0; n -= outputChunk {
		b = append(b, newFrame(MsgTunnelData, id).raw(chunk[:min(n, outputChunk)]).bytes()...)
	}
	return b
}

// TestHostileTunnelFrames: each violation ends the connection with a
// protocol error, and the tunnel's Read fails at once.
func TestHostileTunnelFrames(t *testing.T) {
	cases := []struct {
		name  string
		frame func(id uint64) []byte
		ends  bool // the frames end the tunnel's reads before the violation
	}{
		{"data beyond credit", func(id uint64) []byte { return dataFrames(id, TunnelWindow+1) }, false},
		{"oversized data frame", func(id uint64) []byte {
			return newFrame(MsgTunnelData, id).raw(make([]byte, outputChunk+1)).bytes()
		}, false},
		{"empty data", func(id uint64) []byte { return newFrame(MsgTunnelData, id).bytes() }, false},
		{"second dialed", func(id uint64) []byte { return newFrame(MsgDialed, id).bytes() }, false},
		{"failed after dialed", func(id uint64) []byte {
			return newFrame(MsgFailed, id).str("no").byte1(FailRefused).bytes()
		}, false},
		{"credit never spent", func(id uint64) []byte { return newFrame(MsgTunnelCredit, id).uvarint(1).bytes() }, false},
		{"huge credit", func(id uint64) []byte { return newFrame(MsgTunnelCredit, id).uvarint(1 << 62).bytes() }, false},
		{"data after eof", func(id uint64) []byte {
			return append(newFrame(MsgConnEOF, id).bytes(), dataFrames(id, 1)...)
		}, true},
		{"data after closed", func(id uint64) []byte {
			return append(newFrame(MsgConnClosed, id).str("").bytes(), dataFrames(id, 1)...)
		}, true},
		{"malformed closed", func(id uint64) []byte { return newFrame(MsgConnClosed, id).uvarint(1 << 20).bytes() }, false},
		{"dialed for a tunnel never asked", func(id uint64) []byte { return newFrame(MsgDialed, id+5).bytes() }, false},
		{"tunnel data for a ping", func(id uint64) []byte { return dataFrames(id+1, 10) }, false},
		{"tunnel frame type for a command", func(id uint64) []byte { return newFrame(MsgConnEOF, id+1).bytes() }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, a := newHostile(t, true)
			id, conn := openHostile(t, c, a)
			go func() { _ = c.Ping(context.Background()) }() // id+1: a call
			<-a.got
			a.send(tc.frame(id)) // nothing reads: no credit is granted back
			waitDone(t, c, ErrProtocol)
			rerr := make(chan error, 1)
			go func() {
				_, err := io.ReadAll(conn)
				rerr <- err
			}()
			select {
			case err := <-rerr:
				if !tc.ends && !errors.Is(err, container.ErrNotRunning) {
					t.Fatalf("Read: %v, want ErrNotRunning", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Read hangs after the protocol error")
			}
		})
	}
}

// TestHostileTunnelBeforeDialed: data before Dialed, and a silent agent.
func TestHostileTunnelBeforeDialed(t *testing.T) {
	t.Run("data", func(t *testing.T) {
		c, a := newHostile(t, true)
		id, _, errs := dialHostile(t, c, a)
		a.send(dataFrames(id, 10))
		waitDone(t, c, ErrProtocol)
		if err := <-errs; !errors.Is(err, container.ErrNotRunning) {
			t.Fatalf("DialPort: %v", err)
		}
	})
	t.Run("silent", func(t *testing.T) {
		c, a := newHostile(t, true)
		start := time.Now()
		_, _, errs := dialHostile(t, c, a)
		select {
		case err := <-errs:
			if !errors.Is(err, ErrNoAnswer) {
				t.Fatalf("DialPort to a silent agent: %v, want ErrNoAnswer", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("DialPort waits on a silent agent")
		}
		t.Logf("gave up after %v", time.Since(start))
		// It told the agent to close the tunnel should it dial late.
		select {
		case f := <-a.got:
			if f.typ != MsgConnClose || len(f.body) != 1 || f.body[0] != ConnCloseAll {
				t.Fatalf("after the timeout the host sent %v %v", f.typ, f.body)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no ConnClose after the dial's timeout")
		}
	})
	t.Run("refused", func(t *testing.T) {
		c, a := newHostile(t, true)
		id, _, errs := dialHostile(t, c, a)
		a.send(newFrame(MsgFailed, id).str("refused\x00\x01").byte1(FailRefused).bytes())
		if err := <-errs; !errors.Is(err, container.ErrPortRefused) {
			t.Fatalf("DialPort: %v", err)
		}
		// A late frame for the failed tunnel is dropped.
		a.send(newFrame(MsgDialed, id).bytes())
		if err := c.Err(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestHostileTunnelUnread: a full window of data on a tunnel nobody reads
// does not block the connection's read loop, and data for a tunnel closed
// meanwhile is dropped without buffering.
func TestHostileTunnelUnread(t *testing.T) {
	c, a := newHostile(t, true)
	id, conn := openHostile(t, c, a)
	id2, conn2 := openHostile(t, c, a)
	a.send(dataFrames(id, TunnelWindow))
	conn2.Close()
	<-a.got // ConnClose of conn2
	for range 100 {
		a.send(dataFrames(id2, TunnelWindow)) // late frames: dropped
	}
	res := make(chan error, 1)
	go func() { res <- c.Ping(context.Background()) }()
	f := <-a.got
	a.send(newFrame(MsgReply, f.id).str("").bytes())
	select {
	case err := <-res:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the read loop is blocked by an unread tunnel")
	}
	tu := conn.(*tunnel)
	tu.mu.Lock()
	buffered := tu.buffered
	tu.mu.Unlock()
	if buffered != TunnelWindow {
		t.Fatalf("buffered %d, want one window", buffered)
	}
	// Reading grants credit back.
	if _, err := io.ReadFull(conn, make([]byte, creditBatch)); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-a.got:
		d := decoder{b: f.body}
		if n := d.uvarint(); f.typ != MsgConnCredit || f.id != id || n != creditBatch {
			t.Fatalf("after a read the host sent %v id %d (%d)", f.typ, f.id, n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no credit granted after a read")
	}
}

// TestTunnelLimit: past MaxTunnels open tunnels DialPort fails.
func TestTunnelLimit(t *testing.T) {
	c, a := newHostile(t, true)
	go func() {
		for f := range a.got {
			if f.typ == MsgDial {
				a.send(newFrame(MsgDialed, f.id).bytes())
			}
		}
	}()
	for i := range MaxTunnels {
		if _, err := c.DialPort(context.Background(), 80); err != nil {
			t.Fatalf("tunnel %d: %v", i, err)
		}
	}
	if _, err := c.DialPort(context.Background(), 80); !errors.Is(err, ErrTunnelLimit) {
		t.Fatalf("tunnel %d: %v, want ErrTunnelLimit", MaxTunnels+1, err)
	}
}

// TestHostileTunnelTinyFrames: a window sent one byte per frame costs
// about a window of buffers, not a slice per byte.
func TestHostileTunnelTinyFrames(t *testing.T) {
	c, a := newHostile(t, true)
	id, conn := openHostile(t, c, a)
	one := newFrame(MsgTunnelData, id).raw([]byte{'x'}).bytes()
	var b []byte
	for range TunnelWindow {
		b = append(b, one...)
	}
	a.send(b)
	tu := conn.(*tunnel)
	deadline := time.Now().Add(10 * time.Second)
	for {
		tu.mu.Lock()
		buffered, chunks := tu.buffered, len(tu.buf)
		tu.mu.Unlock()
		if buffered == TunnelWindow {
			if chunks > 2*TunnelWindow/outputChunk {
				t.Fatalf("%d buffer chunks for one window of tiny frames", chunks)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes buffered of %d", buffered, TunnelWindow)
		}
		time.Sleep(5 * time.Millisecond)
	}
	a.send(newFrame(MsgConnEOF, id).bytes())
	got, err := io.ReadAll(conn)
	if err != nil || len(got) != TunnelWindow {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
}
