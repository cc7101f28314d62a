package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/agent"
	"github.com/turnbox/turnbox/container/containertest"
)

// listen starts a TCP server on 127.0.0.1 that runs serve for every
// connection (and closes it after); it stops at the test's end.
func listen(t testing.TB, serve func(c *net.TCPConn)) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c.(*net.TCPConn))
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// echo copies what it reads back until end of file, then half-closes.
func echo(c *net.TCPConn) {
	_, _ = io.Copy(c, c)
	_ = c.CloseWrite()
}

func dialPort(t testing.TB, c *agent.Client, port int) net.Conn {
	t.Helper()
	conn, err := c.DialPort(context.Background(), port)
	if err != nil {
		t.Fatalf("DialPort(%d): %v", port, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// closeWrite half-closes conn through the interface HTTP proxies use.
func closeWrite(t testing.TB, conn net.Conn) {
	t.Helper()
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok {
		t.Fatalf("%T has no CloseWrite", conn)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
}

func TestDialPortEcho(t *testing.T) {
	c, _ := pair(t)
	port := listen(t, echo)
	conn := dialPort(t, c, port)
	if got, want := conn.RemoteAddr().String(), fmt.Sprintf("agent:%d", port); got != want {
		t.Errorf("RemoteAddr %q, want %q", got, want)
	}
	for i := range 3 {
		msg := fmt.Sprintf("ping %d", i)
		if _, err := conn.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q: %q, %v", msg, buf, err)
		}
	}
}

// TestDialPortHalfClose: after the client's CloseWrite the server reads
// end of file and still answers.
func TestDialPortHalfClose(t *testing.T) {
	c, _ := pair(t)
	port := listen(t, func(c *net.TCPConn) {
		b, err := io.ReadAll(c)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "got %d bytes: %s", len(b), b)
	})
	conn := dialPort(t, c, port)
	if _, err := conn.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	closeWrite(t, conn)
	if _, err := conn.Write([]byte("x")); err == nil {
		t.Error("Write after CloseWrite succeeded")
	}
	b, err := io.ReadAll(conn)
	if err != nil || string(b) != "got 7 bytes: request" {
		t.Fatalf("answer %q, %v", b, err)
	}
}

// TestDialPortTransfer sends 20 MB through an echo server and checks
// what comes back.
func TestDialPortTransfer(t *testing.T) {
	c, _ := pair(t)
	conn := dialPort(t, c, listen(t, echo))
	data := make([]byte, 20<<20)
	_, _ = rand.Read(data)
	want := sha256.Sum256(data)
	werr := make(chan error, 1)
	go func() {
		_, err := conn.Write(data)
		if err == nil {
			err = conn.(interface{ CloseWrite() error }).CloseWrite()
		}
		werr <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, conn)
	if err != nil {
		t.Fatalf("read after %d bytes: %v", n, err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if n != int64(len(data)) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("got %d bytes back of %d, sha256 equal: %v", n, len(data), bytes.Equal(h.Sum(nil), want[:]))
	}
}

func TestDialPortRefused(t *testing.T) {
	c, _ := pair(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if _, err := c.DialPort(ctxT(t), port); !errors.Is(err, container.ErrPortRefused) {
		t.Fatalf("DialPort to a closed port: %v, want ErrPortRefused", err)
	}
	for _, p := range []int{0, -1, 65536} {
		if _, err := c.DialPort(ctxT(t), p); !errors.Is(err, container.ErrInvalidSpec) {
			t.Errorf("DialPort(%d): %v, want ErrInvalidSpec", p, err)
		}
	}
	// The connection is fine after the failures.
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

// TestDialPortStalledReader: a tunnel whose reader takes nothing while its
// server floods it stalls only itself: a command's output and other
// tunnels keep flowing.
func TestDialPortStalledReader(t *testing.T) {
	c, _ := pair(t)
	flooded := make(chan int64, 1)
	flood := listen(t, func(c *net.TCPConn) {
		_ = c.SetWriteDeadline(time.Now().Add(20 * time.Second))
		n, _ := io.Copy(c, zeros{})
		flooded <- n
	})
	stalled := dialPort(t, c, flood)
	_ = stalled // never read until the end
	port := listen(t, echo)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- echoOnce(c, port, fmt.Sprintf("tunnel %d ", i), 256<<10)
		}()
	}
	var out syncBuffer
	start := time.Now()
	st, err := c.Exec(ctxT(t), container.Process{Args: []string{"head", "-c", "16000000", "/dev/zero"}, Stdout: &out})
	if err != nil || st.Code != 0 || len(out.String()) != 16000000 {
		t.Fatalf("Exec while a tunnel is stalled: %+v, %d bytes, %v", st, len(out.String()), err)
	}
	t.Logf("16 MB of command output in %v with a stalled tunnel", time.Since(start))
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// The stalled tunnel still delivers once read.
	buf := make([]byte, 1<<20)
	if _, err := io.ReadFull(stalled, buf); err != nil {
		t.Fatalf("read the stalled tunnel: %v", err)
	}
	stalled.Close()
	select {
	case n := <-flooded:
		// The server could write one window plus the kernel's socket
		// buffers plus what was read, not an unbounded amount.
		t.Logf("the flooding server wrote %d bytes", n)
	case <-time.After(30 * time.Second):
		t.Fatal("the flooding server was not stopped by Close")
	}
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

// echoOnce sends size bytes through an echo server and checks them.
func echoOnce(c *agent.Client, port int, prefix string, size int) error {
	conn, err := c.DialPort(context.Background(), port)
	if err != nil {
		return err
	}
	defer conn.Close()
	data := []byte(strings.Repeat(prefix, size/len(prefix)+1)[:size])
	go func() {
		_, _ = conn.Write(data)
		_ = conn.(interface{ CloseWrite() error }).CloseWrite()
	}()
	got, err := io.ReadAll(conn)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("%s: %d bytes back of %d, or different", prefix, len(got), len(data))
	}
	return nil
}

func TestDialPortDeadlines(t *testing.T) {
	c, _ := pair(t)
	conn := dialPort(t, c, listen(t, echo))
	_ = conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past its deadline: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Read returned %v after a 50 ms deadline", d)
	}
	_ = conn.SetReadDeadline(time.Time{})
	if _, err := conn.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(conn, b); err != nil || b[0] != 'x' {
		t.Fatalf("read after clearing the deadline: %q %v", b, err)
	}
}

// TestDialPortNetConn runs x/net's conformance tests of net.Conn on a
// tunnel and the server's end of its socket.
func TestDialPortNetConn(t *testing.T) {
	c, _ := pair(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	nettest.TestConn(t, func() (net.Conn, net.Conn, func(), error) {
		conn, err := c.DialPort(context.Background(), port)
		if err != nil {
			return nil, nil, nil, err
		}
		srv, err := ln.Accept()
		if err != nil {
			conn.Close()
			return nil, nil, nil, err
		}
		return conn, srv, func() { conn.Close(); srv.Close() }, nil
	})
}

// TestDialPortAgentDies: when the agent's connection ends, a blocked Read
// and later Writes fail with ErrNotRunning.
func TestDialPortAgentDies(t *testing.T) {
	toAgentR, toAgentW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fromAgentR, fromAgentW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- agent.Serve(toAgentR, fromAgentW) }()
	c := agent.NewClient(fromAgentR, toAgentW)
	defer c.Close()
	conn := dialPort(t, c, listen(t, echo))
	rerr := make(chan error, 1)
	go func() {
		_, err := conn.Read(make([]byte, 10))
		rerr <- err
	}()
	time.Sleep(50 * time.Millisecond)
	fromAgentW.Close() // the agent's output ends, as if it died
	select {
	case err := <-rerr:
		if !errors.Is(err, container.ErrNotRunning) {
			t.Fatalf("Read after the agent died: %v, want ErrNotRunning", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked after the agent died")
	}
	if _, err := conn.Write([]byte("x")); !errors.Is(err, container.ErrNotRunning) {
		t.Fatalf("Write after the agent died: %v", err)
	}
	toAgentW.Close()
	<-served
}

// BenchmarkDialPort compares a tunnel through an in-process agent with a
// direct loopback TCP connection to the same echo server (see
// containertest.BenchPortEcho). Run with:
//
//	go test -run '^$' -bench DialPort -count 5 ./container/agent
func BenchmarkDialPort(b *testing.B) {
	c, _ := pair(b)
	port := listen(b, echo)
	containertest.BenchPortEcho(b, []containertest.PortDialer{
		{Name: "tunnel", Dial: func(ctx context.Context) (net.Conn, error) { return c.DialPort(ctx, port) }},
		{Name: "direct", Dial: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		}},
	})
}

// TestDialPortSurvivesKillAll: KillAll kills processes, not the agent's
// own tunnel sockets.
func TestDialPortSurvivesKillAll(t *testing.T) {
	c, _ := pair(t)
	conn := dialPort(t, c, listen(t, echo))
	if err := c.KillAll(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 10)
	if _, err := io.ReadFull(conn, b); err != nil || string(b) != "still here" {
		t.Fatalf("after KillAll: %q %v", b, err)
	}
}
