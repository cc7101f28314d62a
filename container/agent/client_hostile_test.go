package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
)

// The tests here play a hostile agent against the real Client over
// io.Pipe streams: the agent's side is raw bytes the test writes.

// shortBounds makes the tests' waits for a silent agent short.
var shortBounds = bounds{answer: 200 * time.Millisecond, killAll: 200 * time.Millisecond,
	killGrace: 200 * time.Millisecond, write: 300 * time.Millisecond}

// fakeAgent is the agent's end of a client's streams.
type fakeAgent struct {
	out *io.PipeWriter // frames to the host
	in  *io.PipeReader // frames from the host
	got chan frame     // frames the host sent (when draining)
}

// newHostile returns a client and its fake agent. With drain, a goroutine
// reads what the host sends into got; without, nobody reads it.
func newHostile(t *testing.T, drain bool) (*Client, *fakeAgent) {
	t.Helper()
	hostR, agentW := io.Pipe()
	agentR, hostW := io.Pipe()
	c := NewClient(hostR, hostW)
	c.bounds = shortBounds
	a := &fakeAgent{out: agentW, in: agentR, got: make(chan frame, 1024)}
	if drain {
		go func() {
			fr := newFrameReader(agentR)
			for {
				f, err := fr.read()
				if err != nil {
					return
				}
				select {
				case a.got <- f:
				default:
				}
			}
		}()
	}
	t.Cleanup(func() {
		c.Close()
		agentW.Close()
		agentR.Close()
	})
	return c, a
}

// send writes raw bytes to the host; errors (a closed connection) are
// ignored: the host may hang up on garbage at any time.
func (a *fakeAgent) send(b []byte) { _, _ = a.out.Write(b) }

// waitDone fails unless the client's connection ends within 5 s with an
// error wrapping container.ErrNotRunning (and want, if not nil).
func waitDone(t *testing.T, c *Client, want error) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the client kept the connection to a hostile agent")
	}
	err := c.Err()
	if !errors.Is(err, container.ErrNotRunning) || (want != nil && !errors.Is(err, want)) {
		t.Fatalf("connection error %v, want one wrapping ErrNotRunning and %v", err, want)
	}
}

func rawFrame(length uint32, rest []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, length)
	return append(b, rest...)
}

// TestHostileFrames feeds frames no agent sends: each must end the
// connection with a protocol error, and a call in flight must return.
func TestHostileFrames(t *testing.T) {
	cases := []struct {
		name  string
		bytes []byte
		want  error
	}{
		{"oversized length", rawFrame(MaxFrameSize+1, nil), ErrProtocol},
		{"max length", rawFrame(0xffffffff, []byte{1, 2, 3}), ErrProtocol},
		{"length too short", rawFrame(1, []byte{byte(MsgReply)}), ErrProtocol},
		{"bad request id", rawFrame(3, []byte{byte(MsgReply), 0xff, 0xff}), ErrProtocol},
		{"unknown type", newFrame(0x99, 1).bytes(), ErrProtocol},
		{"host-to-agent type", newFrame(MsgExec, 1).strs([]string{"x"}).bytes(), ErrProtocol},
		{"never issued id", newFrame(MsgReply, 77).str("").bytes(), ErrProtocol},
		{"reply id 0", newFrame(MsgReply, 0).str("").bytes(), ErrProtocol},
		{"hello with garbage", newFrame(MsgHello, 0).raw([]byte{0xff}).bytes(), ErrProtocol},
		{"hello with huge pid", newFrame(MsgHello, 0).uvarint(ProtocolVersion).uvarint(1 << 40).bytes(), ErrProtocol},
		{"second hello", append(newFrame(MsgHello, 0).uvarint(ProtocolVersion).uvarint(1).bytes(),
			newFrame(MsgHello, 0).uvarint(ProtocolVersion).uvarint(1).bytes()...), ErrProtocol},
		{"version 5 hello", newFrame(MsgHello, 0).uvarint(5).uvarint(1).bytes(), ErrVersion},
		{"version 3 hello", newFrame(MsgHello, 0).uvarint(3).uvarint(1).bytes(), ErrVersion},
		{"started for a ping", newFrame(MsgStarted, 1).uvarint(5).bytes(), ErrProtocol},
		{"host-to-agent signal", newFrame(MsgSignal, 1).uvarint(9).bytes(), ErrProtocol},
		{"reply with bad string", newFrame(MsgReply, 1).uvarint(1 << 30).bytes(), ErrProtocol},
		{"output for a ping", newFrame(MsgOutput, 1).byte1(StreamStdout).raw([]byte("x")).bytes(), ErrProtocol},
		{"stops mid-frame", rawFrame(100, []byte{byte(MsgReply), 1, 0}), nil},
		{"stops mid-header", []byte{0, 0}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, a := newHostile(t, true)
			res := make(chan error, 1)
			go func() { res <- c.Ping(context.Background()) }()
			<-a.got // the Ping (id 1) is out
			a.send(tc.bytes)
			if tc.want == nil {
				a.out.Close() // the stream ends mid-frame
			}
			waitDone(t, c, tc.want)
			select {
			case err := <-res:
				if !errors.Is(err, container.ErrNotRunning) {
					t.Fatalf("Ping: %v, want ErrNotRunning", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Ping hangs after the protocol error")
			}
		})
	}
}

// TestHostileExecFrames feeds bad frames to an Exec call: it must fail
// with an error wrapping ErrProtocol and ErrNotRunning, and the whole
// connection ends.
func TestHostileExecFrames(t *testing.T) {
	cases := []struct {
		name  string
		frame []byte
	}{
		{"exit code out of range", newFrame(MsgExited, 1).varint(1 << 40).uvarint(0).byte1(0).uvarint(1).bytes()},
		{"negative exit code", newFrame(MsgExited, 1).varint(-5).uvarint(0).byte1(0).uvarint(1).bytes()},
		{"signal out of range", newFrame(MsgExited, 1).varint(0).uvarint(1 << 62).byte1(0).uvarint(1).bytes()},
		{"duration overflows", newFrame(MsgExited, 1).varint(0).uvarint(0).byte1(0).uvarint(1 << 63).bytes()},
		{"unknown exit flags", newFrame(MsgExited, 1).varint(0).uvarint(0).byte1(0xf0).uvarint(1).bytes()},
		{"short exited", newFrame(MsgExited, 1).varint(0).bytes()},
		{"unknown stream", newFrame(MsgOutput, 1).byte1(9).raw([]byte("x")).bytes()},
		{"empty output", newFrame(MsgOutput, 1).bytes()},
		{"reply to exec", newFrame(MsgReply, 1).str("").bytes()},
		{"failed with bad string", newFrame(MsgFailed, 1).uvarint(500).raw([]byte("short")).bytes()},
		{"failed without reason", newFrame(MsgFailed, 1).str("no").bytes()},
		{"failed with unknown reason", newFrame(MsgFailed, 1).str("no").byte1(7).bytes()},
		{"started for an exec", newFrame(MsgStarted, 1).uvarint(5).bytes()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, a, res := execOnHostile(t)
			a.send(tc.frame)
			select {
			case err := <-res:
				if !errors.Is(err, ErrProtocol) || !errors.Is(err, container.ErrNotRunning) {
					t.Fatalf("Exec: %v, want ErrProtocol and ErrNotRunning", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Exec hangs on a bad frame")
			}
			waitDone(t, c, ErrProtocol)
		})
	}
}

// TestHostileMessage checks that an agent's message reaches an error
// bounded and quoted.
func TestHostileMessage(t *testing.T) {
	c, a, res := execOnHostile(t)
	a.send(newFrame(MsgFailed, 1).str("\x1b[2J" + strings.Repeat("A", 100000)).byte1(FailStart).bytes())
	err := <-res
	if !errors.Is(err, ErrStart) || len(err.Error()) > 2*maxMessage || strings.Contains(err.Error(), "\x1b") {
		t.Fatalf("Exec: %d-byte error %.80q, want ErrStart, bounded, quoted", len(err.Error()), err)
	}
	if c.Err() != nil {
		t.Fatalf("a Failed frame ended the connection: %v", c.Err())
	}
}

// TestSilentAgent: an agent that reads but never answers. Every call
// returns within its bound, whatever the caller's context.
func TestSilentAgent(t *testing.T) {
	c, _ := newHostile(t, true)
	for name, call := range map[string]func() error{
		"Ping": func() error { return c.Ping(context.Background()) },
		"Ping with deadline": func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			return c.Ping(ctx)
		},
		"KillAll": func() error { return c.KillAll(context.Background()) },
		"Idle": func() error {
			idle, err := c.Idle(context.Background())
			if idle {
				t.Error("Idle true without an answer")
			}
			return err
		},
	} {
		start := time.Now()
		err := call()
		if !errors.Is(err, ErrNoAnswer) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: %v, want ErrNoAnswer", name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s took %v", name, d)
		}
	}

	if c.Err() != nil {
		t.Errorf("a silent agent ended the connection: %v", c.Err())
	}
}

// TestSilentAgentExec: an agent that never reports a command's end. After
// the kill's grace period the host gives up on the agent: Exec fails with
// ErrNoAnswer and ErrNotRunning and the connection ends.
func TestSilentAgentExec(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration // the command's Timeout
		cancel  bool          // cancel the context instead
	}{
		{"cancelled", 0, true},
		{"timeout without deadline", 100 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, a := newHostile(t, true)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				time.AfterFunc(100*time.Millisecond, cancel)
			}
			start := time.Now()
			st, err := c.Exec(ctx, container.Process{Args: []string{"sleep", "1000"}, Timeout: tc.timeout})
			if !errors.Is(err, ErrNoAnswer) || !errors.Is(err, container.ErrNotRunning) || !st.TimedOut {
				t.Errorf("Exec: %+v %v, want TimedOut, ErrNoAnswer and ErrNotRunning", st, err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("Exec took %v", d)
			}
			waitDone(t, c, ErrNoAnswer)
			kills := 0
			for len(a.got) > 0 {
				if f := <-a.got; f.typ == MsgKill {
					kills++
				}
			}
			if kills != 1 {
				t.Errorf("the host sent %d Kill frames, want 1", kills)
			}
		})
	}
}

// TestAgentStopsReading: an agent that never reads its input. A blocked
// write ends the connection after the write bound, and calls return.
func TestAgentStopsReading(t *testing.T) {
	c, _ := newHostile(t, false)
	start := time.Now()
	err := c.Ping(context.Background())
	if !errors.Is(err, container.ErrNotRunning) {
		t.Fatalf("Ping to an agent that does not read: %v, want ErrNotRunning", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Ping took %v", d)
	}
	waitDone(t, c, nil)
}

// blockingWriter blocks every Write until release is closed.
type blockingWriter struct {
	release chan struct{}
	n       atomic.Int64
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	w.n.Add(int64(len(p)))
	return len(p), nil
}

// TestFloodIsBounded: an agent floods output for a command whose output
// the host consumes slowly. The host queues at most MaxQueuedBytes (plus
// a frame and its read buffer) and then stops reading; once the consumer
// catches up, all the output arrives.
func TestFloodIsBounded(t *testing.T) {
	c, a := newHostile(t, true)
	w := &blockingWriter{release: make(chan struct{})}
	res := make(chan error, 1)
	go func() {
		_, err := c.Exec(context.Background(), container.Process{Args: []string{"yes"}, Stdout: w})
		res <- err
	}()
	<-a.got
	chunk := newFrame(MsgOutput, 1).byte1(StreamStdout).raw(bytes.Repeat([]byte("y"), MaxFrameSize-16)).bytes()
	var sent atomic.Int64
	flooded := make(chan struct{})
	const total = 2 * MaxQueuedBytes
	go func() {
		defer close(flooded)
		for sent.Load() < total {
			if _, err := a.out.Write(chunk); err != nil {
				return
			}
			sent.Add(int64(len(chunk)))
		}
		a.send(newFrame(MsgExited, 1).varint(0).uvarint(0).byte1(0).uvarint(1).bytes())
	}()
	time.Sleep(500 * time.Millisecond)
	if s := sent.Load(); s > MaxQueuedBytes+3*int64(len(chunk)) {
		t.Fatalf("the host took %d bytes from an agent whose output it does not consume (bound %d)", s, MaxQueuedBytes)
	}
	close(w.release)
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("Exec: %v", err)
		}
	case <-time.After(60 * time.Second):
		c.mu.Lock()
		cl := c.calls[1]
		c.mu.Unlock()
		cl.mu.Lock()
		t.Fatalf("Exec did not end after the flood; sent %d, consumed %d, queued %d in %d events", sent.Load(), w.n.Load(), cl.queued, len(cl.events))
	}
	<-flooded
	chunks := sent.Load() / int64(len(chunk))
	if got, want := w.n.Load(), chunks*int64(MaxFrameSize-16); got != want {
		t.Fatalf("consumer got %d bytes of output, want %d", got, want)
	}
}

// FuzzClient feeds arbitrary bytes as the agent's stream while a Ping and
// an Exec wait: the client must never panic or hang, whatever it reads.
func FuzzClient(f *testing.F) {
	f.Add(newFrame(MsgHello, 0).uvarint(ProtocolVersion).uvarint(1).bytes())
	f.Add(newFrame(MsgReply, 1).str("").bytes())
	f.Add(newFrame(MsgOutput, 2).byte1(StreamStdout).raw([]byte("hi")).bytes())
	f.Add(newFrame(MsgExited, 2).varint(0).uvarint(0).byte1(0).uvarint(5).bytes())
	f.Add(newFrame(MsgFailed, 2).str("no").byte1(FailStart).bytes())
	f.Add(newFrame(MsgStarted, 3).uvarint(5).bytes())
	f.Add(append(newFrame(MsgStarted, 3).uvarint(5).bytes(), newFrame(MsgOutput, 3).byte1(StreamStdout).raw([]byte("x")).bytes()...))
	f.Add(rawFrame(MaxFrameSize+1, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, a := newHostile(t, true)
		var wg sync.WaitGroup
		wg.Add(3)
		go func() { defer wg.Done(); _ = c.Ping(context.Background()) }()
		<-a.got
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			_, _ = c.Exec(context.Background(), container.Process{Args: []string{"x"}, Stdout: &out, Stderr: &out})
		}()
		<-a.got
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			rp, err := c.StartProcess(context.Background(), container.ProcessSpec{
				Process: container.Process{Args: []string{"x"}, Stdout: &out}, PTY: &container.TermSize{}})
			if err == nil {
				_ = rp.WriteStdin(context.Background(), []byte("x"))
				_, _ = rp.Wait(context.Background())
			}
		}()
		<-a.got
		a.send(data)
		a.out.Close()
		ended := make(chan struct{})
		go func() { wg.Wait(); close(ended) }()
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Fatal("calls hang after the agent's stream ended")
		}
	})
}

// execOnHostile starts an Exec on a client whose fake agent drains what
// the host sends, waits until the Exec frame went out, and returns the
// Exec's result channel.
func execOnHostile(t *testing.T) (*Client, *fakeAgent, <-chan error) {
	t.Helper()
	c, a := newHostile(t, true)
	res := make(chan error, 1)
	go func() {
		_, err := c.Exec(context.Background(), container.Process{Args: []string{"true"}})
		res <- err
	}()
	<-a.got
	return c, a, res
}

// TestOldAgentRefused: an agent announcing protocol version 3 ends the
// connection with an error that wraps ErrVersion, names both versions and
// says what to do; a call in flight fails with it.
func TestOldAgentRefused(t *testing.T) {
	c, a, res := execOnHostile(t)
	a.send(newFrame(MsgHello, 0).uvarint(3).uvarint(1).bytes())
	waitDone(t, c, ErrVersion)
	msg := c.Err().Error()
	for _, want := range []string{"version 3", "version 4", "rebuild turnbox-agent"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	if err := <-res; !errors.Is(err, ErrVersion) || !errors.Is(err, container.ErrNotRunning) {
		t.Errorf("Exec on an old agent: %v, want ErrVersion and ErrNotRunning", err)
	}
}

// startOnHostile starts a StartProcess on a client whose fake agent
// drains what the host sends and returns its result channel once the
// Exec frame went out.
func startOnHostile(t *testing.T) (*Client, *fakeAgent, <-chan startResult) {
	t.Helper()
	c, a := newHostile(t, true)
	res := make(chan startResult, 1)
	go func() {
		rp, err := c.StartProcess(context.Background(), container.ProcessSpec{Process: container.Process{Args: []string{"sleep", "9"}}})
		res <- startResult{rp, err}
	}()
	f := <-a.got
	if f.typ != MsgExec {
		t.Fatalf("first frame %v, want Exec", f.typ)
	}
	return c, a, res
}

type startResult struct {
	rp  container.RunningProcess
	err error
}

// TestHostileStartFrames feeds a start bad frames: StartProcess fails
// with ErrProtocol and ErrNotRunning and the connection ends.
func TestHostileStartFrames(t *testing.T) {
	cases := []struct {
		name  string
		frame []byte
	}{
		{"output before started", newFrame(MsgOutput, 1).byte1(StreamStdout).raw([]byte("x")).bytes()},
		{"exited before started", newFrame(MsgExited, 1).varint(0).uvarint(0).byte1(0).uvarint(1).bytes()},
		{"started with pid 0", newFrame(MsgStarted, 1).uvarint(0).bytes()},
		{"started with huge pid", newFrame(MsgStarted, 1).uvarint(1 << 40).bytes()},
		{"started without pid", newFrame(MsgStarted, 1).bytes()},
		{"reply to a start", newFrame(MsgReply, 1).str("").bytes()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, a, res := startOnHostile(t)
			a.send(tc.frame)
			select {
			case r := <-res:
				if r.rp != nil || !errors.Is(r.err, ErrProtocol) || !errors.Is(r.err, container.ErrNotRunning) {
					t.Fatalf("StartProcess: %v %v, want ErrProtocol and ErrNotRunning", r.rp, r.err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("StartProcess hangs on a bad frame")
			}
			waitDone(t, c, ErrProtocol)
		})
	}
}

// TestHostileRunningProcess: a second Started ends the connection and
// Wait reports it; a silent start is bounded and killed; FailInvalid is
// ErrInvalidSpec and keeps the connection.
func TestHostileRunningProcess(t *testing.T) {
	t.Run("second started", func(t *testing.T) {
		c, a, res := startOnHostile(t)
		a.send(newFrame(MsgStarted, 1).uvarint(42).bytes())
		r := <-res
		if r.err != nil || r.rp.PID() != 42 {
			t.Fatalf("StartProcess: %v, pid %v", r.err, r.rp)
		}
		a.send(newFrame(MsgStarted, 1).uvarint(43).bytes())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := r.rp.Wait(ctx); !errors.Is(err, ErrProtocol) {
			t.Fatalf("Wait: %v, want ErrProtocol", err)
		}
		waitDone(t, c, ErrProtocol)
		if err := r.rp.Signal(ctx, syscall.SIGTERM); !errors.Is(err, container.ErrProcessDone) {
			t.Errorf("Signal after the end: %v, want ErrProcessDone", err)
		}
	})
	t.Run("silent", func(t *testing.T) {
		c, a, res := startOnHostile(t)
		start := time.Now()
		r := <-res
		if !errors.Is(r.err, ErrNoAnswer) || time.Since(start) > 3*time.Second {
			t.Fatalf("StartProcess on a silent agent: %v after %v, want ErrNoAnswer within its bound", r.err, time.Since(start))
		}
		select {
		case f := <-a.got:
			if f.typ != MsgKill || f.id != 1 {
				t.Fatalf("after the failed start the host sent %v for %d, want Kill for 1", f.typ, f.id)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the host did not kill the process it gave up on")
		}
		waitDone(t, c, ErrNoAnswer) // nor did the agent report the kill
	})
	t.Run("invalid", func(t *testing.T) {
		c, a, res := startOnHostile(t)
		a.send(newFrame(MsgFailed, 1).str("unknown user").byte1(FailInvalid).bytes())
		r := <-res
		if !errors.Is(r.err, container.ErrInvalidSpec) || !errors.Is(r.err, ErrStart) {
			t.Fatalf("StartProcess: %v, want ErrInvalidSpec and ErrStart", r.err)
		}
		if c.Err() != nil {
			t.Fatalf("a Failed frame ended the connection: %v", c.Err())
		}
	})
}
