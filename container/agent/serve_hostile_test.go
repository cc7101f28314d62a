package agent

import (
	"io"
	"testing"
	"time"
)

// TestServeBadControlFrames sends the agent malformed and stray v3
// frames: a truncated Exec or one with an oversized terminal is refused
// with Failed, and Signal, Resize, Stdin for unknown ids or with bad
// bodies are ignored; the agent keeps serving.
func TestServeBadControlFrames(t *testing.T) {
	toAgentR, toAgentW := io.Pipe()
	fromAgentR, fromAgentW := io.Pipe()
	served := make(chan error, 1)
	go func() { served <- Serve(toAgentR, fromAgentW, WithInit(false)); fromAgentW.Close() }()
	fr := newFrameReader(fromAgentR)
	next := func() frame {
		t.Helper()
		got := make(chan frame, 1)
		go func() {
			f, err := fr.read()
			if err != nil {
				t.Error(err)
			}
			got <- f
		}()
		select {
		case f := <-got:
			return f
		case <-time.After(10 * time.Second):
			t.Fatal("no frame from the agent")
			return frame{}
		}
	}
	send := func(b []byte) {
		if _, err := toAgentW.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if f := next(); f.typ != MsgHello {
		t.Fatalf("first frame %v", f.typ)
	}
	truncated := newFrame(MsgExec, 1).strs([]string{"true"}).strs(nil).str("").uvarint(0).byte1(execFlagPTY).bytes()
	huge := newFrame(MsgExec, 2).strs([]string{"true"}).strs(nil).str("").uvarint(0).byte1(execFlagPTY).str("").uvarint(1 << 20).uvarint(5).bytes()
	badUser := newFrame(MsgExec, 3).strs([]string{"true"}).strs(nil).str("").uvarint(0).byte1(0).str("no-such-user-here").uvarint(0).uvarint(0).bytes()
	for id, b := range map[uint64][]byte{1: truncated, 2: huge, 3: badUser} {
		send(b)
		f := next()
		d := decoder{b: f.body}
		msg := d.str()
		reason := d.byte1()
		if f.typ != MsgFailed || f.id != id || d.err != nil {
			t.Fatalf("request %d: %v %d %v, want Failed", id, f.typ, f.id, d.err)
		}
		if id > 1 && reason != FailInvalid {
			t.Errorf("request %d: reason %d (%s), want FailInvalid", id, reason, msg)
		}
	}
	for _, b := range [][]byte{
		newFrame(MsgSignal, 9).uvarint(15).bytes(),
		newFrame(MsgSignal, 9).bytes(),
		newFrame(MsgSignal, 9).uvarint(0).bytes(),
		newFrame(MsgResize, 9).uvarint(1 << 40).bytes(),
		newFrame(MsgResize, 9).bytes(),
		newFrame(MsgStdin, 9).raw([]byte("x")).bytes(),
		newFrame(MsgStdinClose, 9).bytes(),
		newFrame(0x3f, 9).bytes(),
	} {
		send(b)
	}
	send(newFrame(MsgPing, 10).bytes())
	if f := next(); f.typ != MsgReply || f.id != 10 {
		t.Fatalf("after the stray frames: %v %d, want the Ping's Reply", f.typ, f.id)
	}
	toAgentW.Close()
	go func() { _, _ = io.Copy(io.Discard, fromAgentR) }()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("agent did not stop")
	}
}
