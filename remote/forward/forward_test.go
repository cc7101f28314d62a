package forward_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote/forward"
)

// loopbackDial reaches port on 127.0.0.1 whatever the session: the
// sandboxes of these tests are loopback listeners.
func loopbackDial(ctx context.Context, _ string, port int) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", environment.ErrPortRefused, err)
	}
	return c, nil
}

// listen serves h (or, with raw, hands each connection to raw) on a
// loopback port until the test ends.
func listen(t *testing.T, h http.Handler, raw func(net.Conn)) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if raw != nil {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go raw(c)
			}
		}()
	} else {
		hs := &http.Server{Handler: h}
		go func() { _ = hs.Serve(ln) }()
		t.Cleanup(func() { _ = hs.Close() })
	}
	return ln.Addr().(*net.TCPAddr).Port
}

// front serves f for the session and port in the request's path
// (/<session>/<port>) on an httptest server.
func front(t *testing.T, f *forward.Forwarder) string {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var session string
		var port int
		_, _ = fmt.Sscanf(strings.ReplaceAll(r.URL.Path, "/", " "), "%s %d", &session, &port)
		f.Forward(w, r, session, port, "/")
	}))
	t.Cleanup(ts.Close)
	return ts.URL
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestCapPerSession: past MaxConnsPerSession requests in flight, a
// session's next request is refused with 503 while another session's
// goes through.
func TestCapPerSession(t *testing.T) {
	release := make(chan struct{})
	var entered sync.WaitGroup
	entered.Add(2)
	port := listen(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Block") != "" {
			entered.Done()
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	}), nil)
	f := forward.New(loopbackDial, forward.Options{MaxConnsPerSession: 2})
	t.Cleanup(f.Close)
	url := front(t, f)
	var done sync.WaitGroup
	for range 2 {
		done.Add(1)
		go func() {
			defer done.Done()
			req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/a/%d", url, port), nil)
			req.Header.Set("X-Block", "1")
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	entered.Wait()
	if status, body := get(t, fmt.Sprintf("%s/a/%d", url, port)); status != http.StatusServiceUnavailable || !strings.Contains(body, "limit_exceeded") {
		t.Errorf("past the cap: %d %s, want 503 limit_exceeded", status, body)
	}
	if status, body := get(t, fmt.Sprintf("%s/b/%d", url, port)); status != http.StatusOK {
		t.Errorf("another session: %d %s", status, body)
	}
	close(release)
	done.Wait()
	if status, body := get(t, fmt.Sprintf("%s/a/%d", url, port)); status != http.StatusOK {
		t.Errorf("after the requests ended: %d %s", status, body)
	}
}

// TestHostileSandbox: a sandbox that never answers gets 504 after
// ResponseHeaderTimeout; one that sends headers without end is cut off
// at MaxResponseHeaderBytes (502), without the forwarder buffering them.
func TestHostileSandbox(t *testing.T) {
	silent := listen(t, nil, func(c net.Conn) {
		defer c.Close()
		_, _ = io.Copy(io.Discard, c)
	})
	endless := listen(t, nil, func(c net.Conn) {
		defer c.Close()
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		line := "X-Junk: " + strings.Repeat("a", 1000) + "\r\n"
		for {
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
	})
	f := forward.New(loopbackDial, forward.Options{ResponseHeaderTimeout: 300 * time.Millisecond, MaxResponseHeaderBytes: 8 << 10})
	t.Cleanup(f.Close)
	url := front(t, f)
	start := time.Now()
	if status, body := get(t, fmt.Sprintf("%s/s/%d", url, silent)); status != http.StatusGatewayTimeout {
		t.Errorf("silent sandbox: %d %s, want 504", status, body)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("silent sandbox answered after %v", d)
	}
	if status, body := get(t, fmt.Sprintf("%s/s/%d", url, endless)); status != http.StatusBadGateway {
		t.Errorf("endless headers: %d %s, want 502", status, body)
	}
	if status, body := get(t, fmt.Sprintf("%s/s/%d", url, freePort(t))); status != http.StatusBadGateway || !strings.Contains(body, "port_refused") {
		t.Errorf("nothing listening: %d %s", status, body)
	}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestParseHost(t *testing.T) {
	for _, c := range []struct {
		host, domain, id string
		port             int
		ok               bool
	}{
		{"8080-s1.ports.test", "ports.test", "s1", 8080, true},
		{"8080-my-session.Ports.Test:7420", "ports.test.", "my-session", 8080, true},
		{"8080-s1.ports.test.", "ports.test", "s1", 8080, true},
		{"8080-s1.ports.test", "", "", 0, false},
		{"8080-s1.xports.test", "ports.test", "", 0, false},
		{"ports.test", "ports.test", "", 0, false},
		{"s1.ports.test", "ports.test", "", 0, false},
		{"x-s1.ports.test", "ports.test", "", 0, false},
		{"8080-.ports.test", "ports.test", "", 0, false},
		{"8080-a.b.ports.test", "ports.test", "", 0, false},
	} {
		id, port, ok := forward.ParseHost(c.host, c.domain)
		if ok != c.ok || id != c.id || port != c.port {
			t.Errorf("ParseHost(%q, %q) = %q %d %v, want %q %d %v", c.host, c.domain, id, port, ok, c.id, c.port, c.ok)
		}
	}
}
