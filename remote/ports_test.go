package remote_test

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
	"github.com/turnbox/turnbox/remote/server"
)

// echoed is what the session's HTTP server answers.
type echoed struct {
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
}

func decodeEcho(t *testing.T, a portAnswer) echoed {
	t.Helper()
	if a.status != http.StatusOK {
		t.Fatalf("status %d: %s", a.status, a.body)
	}
	var e echoed
	if err := json.Unmarshal(a.body, &e); err != nil {
		t.Fatalf("%v: %s", err, a.body)
	}
	return e
}

// wantStatus checks a forwarded request's status and the error code of
// its JSON answer.
func wantStatus(t *testing.T, what string, a portAnswer, want int, code string) []byte {
	t.Helper()
	status, body := a.status, a.body
	if status != want {
		t.Fatalf("%s: status %d, want %d: %s", what, status, want, body)
	}
	if code != "" && !strings.Contains(string(body), `"code":"`+code+`"`) {
		t.Fatalf("%s: answer %s, want code %q", what, body, code)
	}
	return body
}

// TestPublishedPortHTTP: a server inside a session, reached through
// `turnbox serve` by path and by host name, with the API's auth unless
// public, never receiving the API token; refused unpublished (404), with
// nothing listening (502), paused (503) and destroyed (404).
func TestPublishedPortHTTP(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "", server.WithAuthTokens(testToken), server.WithPortDomain("ports.test"))
	env := portSession(t, host)
	id := env.SessionID()
	port := startPortServer(t, env, "http")
	base := fmt.Sprintf("%s/ports/%s/%d", srv.URL, id, port)

	wantStatus(t, "unpublished", portGet(t, base+"/", "", testToken, nil), http.StatusNotFound, "port_not_published")
	wantStatus(t, "unpublished without a token", portGet(t, base+"/", "", "", nil), http.StatusUnauthorized, "")

	publish(t, env, port, false)
	wantStatus(t, "without a token", portGet(t, base+"/", "", "", nil), http.StatusUnauthorized, "")
	wantStatus(t, "wrong token", portGet(t, base+"/", "", "wrong", nil), http.StatusUnauthorized, "")

	cookies := http.Header{"Cookie": {"turnbox_token=secret; app=1"}}
	e := decodeEcho(t, portGet(t, base+"/a/b%2Fc?x=1", "", testToken, cookies))
	if e.Path != "/a/b%2Fc?x=1" {
		t.Errorf("path form: the sandbox saw %q, want /a/b%%2Fc?x=1", e.Path)
	}
	for k, v := range e.Headers {
		if strings.EqualFold(k, "Authorization") || strings.Contains(v, testToken) || strings.Contains(v, "secret") {
			t.Errorf("the sandbox received %s: %s", k, v)
		}
	}
	if e.Headers["Cookie"] != "app=1" || e.Headers["X-Forwarded-For"] == "" {
		t.Errorf("headers the sandbox got: %v", e.Headers)
	}

	hostName := fmt.Sprintf("%d-%s.ports.test", port, id)
	e = decodeEcho(t, portGet(t, srv.URL+"/abs/path?q", hostName, testToken, nil))
	if e.Path != "/abs/path?q" || e.Headers["Host"] != hostName {
		t.Errorf("host form: the sandbox saw %q for host %q", e.Path, e.Headers["Host"])
	}
	wantStatus(t, "host form without a token", portGet(t, srv.URL+"/", hostName, "", nil), http.StatusUnauthorized, "")

	publish(t, env, port, true)
	decodeEcho(t, portGet(t, base+"/", "", "", nil))
	decodeEcho(t, portGet(t, srv.URL+"/", hostName, "", nil))

	idle := freePort(t)
	publish(t, env, idle, true)
	body := wantStatus(t, "nothing listening", portGet(t, fmt.Sprintf("%s/ports/%s/%d/", srv.URL, id, idle), "", "", nil), http.StatusBadGateway, "port_refused")
	if !strings.Contains(string(body), fmt.Sprintf("nothing listens on port %d in session %s", idle, id)) {
		t.Errorf("nothing listening: %s", body)
	}
	wantStatus(t, "invalid port", portGet(t, fmt.Sprintf("%s/ports/%s/70000/", srv.URL, id), "", testToken, nil), http.StatusBadRequest, "invalid_argument")
	wantStatus(t, "unknown session", portGet(t, srv.URL+"/ports/nosuchsession/80/", "", testToken, nil), http.StatusNotFound, "session_not_found")

	t.Run("paused", func(t *testing.T) {
		if !host.Capabilities().Pause {
			t.Skip("the host's runtime cannot pause here")
		}
		if err := env.Pause(t.Context()); err != nil {
			t.Fatal(err)
		}
		wantStatus(t, "paused", portGet(t, base+"/", "", "", nil), http.StatusServiceUnavailable, "not_active")
		if err := env.Resume(t.Context()); err != nil {
			t.Fatal(err)
		}
		decodeEcho(t, portGet(t, base+"/", "", "", nil))
	})

	metrics := string(portGet(t, srv.URL+"/metrics", "", testToken, nil).body)
	for _, m := range []string{`turnbox_port_forward_requests_total{result="ok"}`, `turnbox_port_forward_requests_total{result="unauthenticated"}`,
		`turnbox_port_forward_requests_total{result="port_refused"} 1`, "turnbox_port_forward_in_flight 0"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}

	if err := env.Destroy(t.Context()); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "destroyed", portGet(t, base+"/", "", testToken, nil), http.StatusNotFound, "session_not_found")
}

// TestPublishedPortRedirect: the path form without its trailing slash
// redirects to it, so that relative links resolve under the prefix.
func TestPublishedPortRedirect(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	env := portSession(t, host)
	port := startPortServer(t, env, "http")
	publish(t, env, port, false)
	e := decodeEcho(t, portGet(t, fmt.Sprintf("%s/ports/%s/%d?x=1", srv.URL, env.SessionID(), port), "", "", nil))
	if e.Path != "/?x=1" {
		t.Errorf("after the redirect the sandbox saw %q", e.Path)
	}
}

// TestPublishedPortTCP: the TCP form through remote.DialPort, with the
// client's half-close reaching the server in the session (which answers
// only after it), and refusals as sentinel errors.
func TestPublishedPortTCP(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "", server.WithAuthTokens(testToken))
	env := portSession(t, host)
	id := env.SessionID()
	port := startPortServer(t, env, "tcp")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	if _, err := remote.DialPort(ctx, srv.URL, testToken, id, port); !errors.Is(err, environment.ErrPortNotPublished) {
		t.Fatalf("unpublished: %v", err)
	}
	publish(t, env, port, false)
	if _, err := remote.DialPort(ctx, srv.URL, "", id, port); !errors.Is(err, remote.ErrUnauthenticated) {
		t.Fatalf("without a token: %v", err)
	}
	if _, err := remote.DialPort(ctx, srv.URL, testToken, "nosuch", port); !errors.Is(err, environment.ErrSessionNotFound) {
		t.Fatalf("unknown session: %v", err)
	}
	c, err := remote.DialPort(ctx, srv.URL, testToken, id, port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := strings.Repeat("hello through turnbox ", 10000)
	go func() {
		_, _ = io.WriteString(c, msg)
		_ = c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != strings.ToUpper(msg) {
		t.Fatalf("echo: got %d bytes, want %d", len(got), len(msg))
	}
	idle := freePort(t)
	publish(t, env, idle, false)
	if _, err := remote.DialPort(ctx, srv.URL, testToken, id, idle); !errors.Is(err, environment.ErrPortRefused) {
		t.Fatalf("nothing listening: %v", err)
	}
}

// wsAccept is the Sec-WebSocket-Accept answer to key (RFC 6455).
func wsAccept(key string) string {
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// startWSEcho serves a WebSocket upgrade on a loopback port (what a
// session's process listens with on the none runtime) and echoes the
// upgraded connection's bytes back.
func startWSEcho(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || r.Header.Get("Authorization") != "" {
			http.Error(w, "want a websocket upgrade without credentials", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", wsAccept(r.Header.Get("Sec-WebSocket-Key")))
		_, _ = io.Copy(c, brw)
	})}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// TestPublishedPortWebSocket: a WebSocket upgrade through the path form
// reaches the server and its bytes flow both ways.
func TestPublishedPortWebSocket(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "", server.WithAuthTokens(testToken))
	env := portSession(t, host)
	port := startWSEcho(t)
	publish(t, env, port, false)

	c, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	fmt.Fprintf(c, "GET /ports/%s/%d/ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n",
		env.SessionID(), port, testToken, key)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("upgrade: %s %v %s", resp.Status, resp.Header, b)
	}
	// A masked text frame "ping" (RFC 6455 5.2), echoed back as bytes.
	frame := []byte{0x81, 0x84, 1, 2, 3, 4, 'p' ^ 1, 'i' ^ 2, 'n' ^ 3, 'g' ^ 4}
	if _, err := c.Write(frame); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(frame))
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(frame) {
		t.Fatalf("echo: %x, want %x", got, frame)
	}
}

// TestPublishedPortIdlePaused: a request for a session its host froze
// for idleness (Config.IdlePause) wakes it, even when the forwarder holds
// a pooled connection to the port (which, frozen, would never answer).
func TestPublishedPortIdlePaused(t *testing.T) {
	host, err := embedded.NewHost(context.Background(), embedded.Config{StateDir: t.TempDir(),
		ContainerRuntime: embedded.ContainerRuntimeNone, Logger: quietLogger(), IdlePause: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeHost(t, host) })
	if !host.Capabilities().Pause {
		t.Skip("the host's runtime cannot pause here")
	}
	srv := startServer(t, host, "")
	env := portSession(t, host)
	// In the background of a bash call: a process of StartProcess would
	// keep the session awake.
	port := freePort(t)
	for _, p := range []environment.ToolParams{
		environment.WriteFileParams{Path: "srv.py", Content: portServerPy},
		environment.BashParams{Command: fmt.Sprintf("nohup python3 srv.py http %d >/dev/null 2>&1 &", port)},
	} {
		req, err := environment.NewToolRequest("call-"+p.ToolName(), p)
		if err != nil {
			t.Fatal(err)
		}
		if resp, err := env.ExecuteTool(t.Context(), req, nil); err != nil || resp.IsError {
			t.Fatal(resp, err)
		}
	}
	publish(t, env, port, true)
	url := fmt.Sprintf("%s/ports/%s/%d/", srv.URL, env.SessionID(), port)
	waitFor(t, func() bool { return portGet(t, url, "", "", nil).status == http.StatusOK }) // leaves a pooled connection
	waitFor(t, func() bool { info, _ := host.Session(env.SessionID()); return info.IdlePaused })
	done := make(chan portAnswer, 1)
	go func() { // not portGet: no t.Fatal off the test's goroutine
		a := portAnswer{}
		if resp, err := http.Get(url); err == nil {
			a.status = resp.StatusCode
			a.body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		done <- a
	}()
	select {
	case a := <-done:
		decodeEcho(t, a)
	case <-time.After(15 * time.Second):
		t.Fatal("a request to the idle-paused session got no answer")
	}
}

// waitFor polls cond every 20 ms for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
	}
}
