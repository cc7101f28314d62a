package agent

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestServeTunnelHostileHost: a host that sends a tunnel's data without
// waiting for credit, to a server that reads nothing, gets the tunnel
// closed (ConnClosed saying why) once a window is queued: the agent
// never buffers more. A bad port is refused with FailInvalid, and frames
// for unknown tunnels are ignored.
func TestServeTunnelHostileHost(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			time.Sleep(30 * time.Second) // reads nothing
		}
	}()
	toAgentR, toAgentW := io.Pipe()
	fromAgentR, fromAgentW := io.Pipe()
	served := make(chan error, 1)
	go func() { served <- Serve(toAgentR, fromAgentW, WithInit(false)); fromAgentW.Close() }()
	frames := make(chan frame, 4096)
	go func() {
		fr := newFrameReader(fromAgentR)
		for {
			f, err := fr.read()
			if err != nil {
				close(frames)
				return
			}
			frames <- f
		}
	}()
	next := func(skipCredit bool) frame {
		t.Helper()
		for {
			select {
			case f := <-frames:
				if skipCredit && f.typ == MsgTunnelCredit {
					continue
				}
				return f
			case <-time.After(20 * time.Second):
				t.Fatal("no frame from the agent")
			}
		}
	}
	send := func(b []byte) { _, _ = toAgentW.Write(b) }
	if f := next(false); f.typ != MsgHello {
		t.Fatalf("first frame %v", f.typ)
	}
	send(newFrame(MsgDial, 1).uvarint(0).bytes())
	if f := next(false); f.typ != MsgFailed || f.id != 1 || f.body[len(f.body)-1] != FailInvalid {
		t.Fatalf("Dial of port 0: %v %d %v", f.typ, f.id, f.body)
	}
	send(newFrame(MsgConnData, 7).raw([]byte("stray")).bytes())
	send(newFrame(MsgConnCredit, 7).uvarint(1 << 60).bytes())
	send(newFrame(MsgConnClose, 7).byte1(ConnCloseAll).bytes())
	send(newFrame(MsgDial, 2).uvarint(uint64(ln.Addr().(*net.TCPAddr).Port)).bytes())
	if f := next(false); f.typ != MsgDialed || f.id != 2 {
		t.Fatalf("Dial: %v %d", f.typ, f.id)
	}
	flood := make(chan struct{})
	go func() {
		defer close(flood)
		chunk := newFrame(MsgConnData, 2).raw(make([]byte, outputChunk)).bytes()
		for range (256 << 20) / outputChunk {
			if _, err := toAgentW.Write(chunk); err != nil {
				return
			}
		}
	}()
	f := next(true)
	d := decoder{b: f.body}
	if msg := d.str(); f.typ != MsgConnClosed || f.id != 2 || !strings.Contains(msg, "credit") {
		t.Fatalf("after the flood: %v %d %q, want ConnClosed about credit", f.typ, f.id, msg)
	}
	<-flood // the agent kept reading: the flood was dropped, not queued
	send(newFrame(MsgPing, 3).bytes())
	if f := next(true); f.typ != MsgReply || f.id != 3 {
		t.Fatalf("after the flood: %v %d, want the Ping's Reply", f.typ, f.id)
	}
	toAgentW.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("agent did not stop")
	}
}
