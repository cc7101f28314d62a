package containertest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
)

var portCases = []testCase{
	{"DialPort", (*suite).testDialPort},
}

// freePort returns a TCP port nothing listens on now (on the host's
// loopback: the none runtime shares the host's network).
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// dialWhenUp dials port through pd until something listens, failing
// after 20 s.
func dialWhenUp(t testing.TB, pd container.PortDialer, port int) net.Conn {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := pd.DialPort(ctxT(t), port)
		if err == nil {
			t.Cleanup(func() { conn.Close() })
			return conn
		}
		if !errors.Is(err, container.ErrPortRefused) || time.Now().After(deadline) {
			t.Fatalf("DialPort(%d): %v", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// EchoServer starts an echo server in sb (busybox nc -ll -e cat: it
// writes back what it reads and closes the connection at end of file)
// and returns its port and a dialer of sb's, once it answers. The server
// is killed at the test's end.
func EchoServer(t testing.TB, sb container.Sandbox) (int, container.PortDialer) {
	t.Helper()
	ps, ok := sb.(container.ProcessStarter)
	if !ok {
		t.Fatalf("%T does not implement container.ProcessStarter", sb)
	}
	pd, ok := sb.(container.PortDialer)
	if !ok {
		t.Fatalf("%T does not implement container.PortDialer", sb)
	}
	port := freePort(t)
	startProc(t, ps, container.ProcessSpec{Process: container.Process{
		Args: []string{"busybox", "nc", "-ll", "-p", strconv.Itoa(port), "-e", "busybox", "cat"}}})
	dialWhenUp(t, pd, port).Close()
	return port, pd
}

// testDialPort: a port nothing listens on is refused, a bad one invalid;
// an echo server a process of the sandbox runs (EchoServer) is reached,
// echoes 4 MiB intact, sees the half-close and ends the connection,
// twice.
func (s *suite) testDialPort(t *testing.T) {
	b, _ := s.starter(t)
	pd, ok := b.sb.(container.PortDialer)
	if !ok {
		t.Fatalf("%T does not implement container.PortDialer", b.sb)
	}
	if _, err := pd.DialPort(ctxT(t), freePort(t)); !errors.Is(err, container.ErrPortRefused) {
		t.Fatalf("DialPort with nothing listening: %v, want ErrPortRefused", err)
	}
	if _, err := pd.DialPort(ctxT(t), 0); !errors.Is(err, container.ErrInvalidSpec) {
		t.Fatalf("DialPort(0): %v, want ErrInvalidSpec", err)
	}
	port, _ := EchoServer(t, b.sb)
	data := make([]byte, 4<<20)
	_, _ = rand.Read(data)
	for i := range 2 {
		conn := dialWhenUp(t, pd, port)
		_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
		werr := make(chan error, 1)
		go func() {
			_, err := conn.Write(data)
			if err == nil {
				err = conn.(interface{ CloseWrite() error }).CloseWrite()
			}
			werr <- err
		}()
		got, err := io.ReadAll(conn)
		if err != nil {
			t.Fatalf("connection %d: read after %d bytes: %v", i, len(got), err)
		}
		if err := <-werr; err != nil {
			t.Fatalf("connection %d: write: %v", i, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("connection %d: %d bytes echoed of %d, or not the same", i, len(got), len(data))
		}
	}
	if err := b.sb.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := pd.DialPort(ctxT(t), port); !errors.Is(err, container.ErrNotRunning) {
		t.Fatalf("DialPort of a stopped sandbox: %v, want ErrNotRunning", err)
	}
}
