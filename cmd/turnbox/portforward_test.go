package main

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/turnbox/turnbox/environment"
)

func TestParseForward(t *testing.T) {
	for _, c := range []struct {
		arg         string
		local, port int
		ok          bool
	}{
		{"8080", 8080, 8080, true}, {"0:8080", 0, 8080, true}, {"9000:80", 9000, 80, true},
		{"x", 0, 0, false}, {"80:", 0, 0, false}, {"-1:80", 0, 0, false}, {"80:70000", 0, 0, false}, {"a:80", 0, 0, false},
	} {
		local, port, err := parseForward(c.arg)
		if (err == nil) != c.ok || (c.ok && (local != c.local || port != c.port)) {
			t.Errorf("parseForward(%q) = %d, %d, %v", c.arg, local, port, err)
		}
		if err != nil && !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("parseForward(%q): %v, want ErrInvalidArgument", c.arg, err)
		}
	}
}

// serveForward splices each local connection to one dial makes, passes
// the half-close on, survives a failed dial, and ends with ctx.
func TestServeForward(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var dials atomic.Int32
	dial := func(ctx context.Context) (net.Conn, error) {
		if dials.Add(1) == 1 {
			return nil, environment.ErrPortRefused
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", echo.Addr().String())
	}
	done := make(chan error, 1)
	go func() { done <- serveForward(ctx, ln, dial, func(string, ...any) {}) }()

	first, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = first.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := first.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("a connection whose dial failed read %d bytes, %v; want it closed", n, err)
	}
	first.Close()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("through the forward"))
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "through the forward" {
		t.Errorf("echoed %q, %v", got, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serveForward after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serveForward did not end with its context")
	}
}
