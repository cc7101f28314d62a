package agent

import (
	"context"
	"io"
	"testing"
	"time"
)

// newRestoredHostile is newHostile (draining) for NewRestoredClient.
func newRestoredHostile(t *testing.T, lastID uint64) (*Client, *fakeAgent) {
	t.Helper()
	hostR, agentW := io.Pipe()
	agentR, hostW := io.Pipe()
	c := NewRestoredClient(hostR, hostW, lastID)
	c.bounds = shortBounds
	a := &fakeAgent{out: agentW, in: agentR, got: make(chan frame, 16)}
	go func() {
		fr := newFrameReader(agentR)
		for {
			f, err := fr.read()
			if err != nil {
				return
			}
			a.got <- f
		}
	}()
	t.Cleanup(func() {
		c.Close()
		agentW.Close()
		agentR.Close()
	})
	return c, a
}

// recv returns the next frame the host sent, failing after 5 s.
func (a *fakeAgent) recv(t *testing.T) frame {
	t.Helper()
	select {
	case f := <-a.got:
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("the host sent no frame")
		return frame{}
	}
}

// TestRestoredClient: a restored agent's frames for the old connection's
// requests are dropped, not a protocol error, and the client's ids
// continue after the old connection's.
func TestRestoredClient(t *testing.T) {
	c, a := newRestoredHostile(t, 10)
	go a.send(newFrame(MsgOutput, 7).byte1(StreamStdout).raw([]byte("old")).bytes())
	go a.send(newFrame(MsgExited, 10).uvarint(0).bytes())
	errc := make(chan error, 1)
	go func() { errc <- c.Ping(context.Background()) }()
	f := a.recv(t)
	if f.typ != MsgPing || f.id != 11 {
		t.Fatalf("first request: %v id %d, want Ping id 11", f.typ, f.id)
	}
	a.send(newFrame(MsgReply, f.id).str("").bytes())
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if c.Err() != nil || c.LastRequestID() != 11 {
		t.Fatalf("after old frames: err %v, last id %d", c.Err(), c.LastRequestID())
	}
}

// TestQuiesce: fn runs only after the agent answered the Ping sent after
// every earlier frame, and no frame is written while fn runs.
func TestQuiesce(t *testing.T) {
	c, a := newRestoredHostile(t, 0)
	inFn, release := make(chan struct{}), make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- c.Quiesce(context.Background(), func() error {
			close(inFn)
			<-release
			return nil
		})
	}()
	f := a.recv(t)
	if f.typ != MsgPing {
		t.Fatalf("Quiesce sent %v, want Ping", f.typ)
	}
	select {
	case <-inFn:
		t.Fatal("fn ran before the agent answered")
	case <-time.After(50 * time.Millisecond):
	}
	a.send(newFrame(MsgReply, f.id).str("").bytes())
	<-inFn
	pingc := make(chan error, 1)
	go func() { pingc <- c.Ping(context.Background()) }()
	select {
	case f := <-a.got:
		t.Fatalf("a %v frame was written while fn ran", f.typ)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	f = a.recv(t)
	a.send(newFrame(MsgReply, f.id).str("").bytes())
	if err := <-pingc; err != nil {
		t.Fatalf("Ping after Quiesce: %v", err)
	}
}
