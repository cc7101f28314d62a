package e2b

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	processpb "github.com/turnbox/turnbox/remote/gen/envd/process"
	"github.com/turnbox/turnbox/remote/gen/envd/process/processpbconnect"
	"github.com/turnbox/turnbox/remote/server"
)

var testSecret = bytes.Repeat([]byte{7}, 32)

func TestSandboxTarget(t *testing.T) {
	s := &Server{domain: "sb.example.test"}
	for _, c := range []struct {
		host, hdrID, hdrPort string
		id                   string
		port                 int
		ok                   bool
	}{
		{host: "49983-abc123.sb.example.test", id: "abc123", port: 49983, ok: true},
		{host: "49983-abc123.sb.example.test:8080", id: "abc123", port: 49983, ok: true},
		{host: "3000-ABC123.SB.example.test", id: "abc123", port: 3000, ok: true},
		{host: "abc123.sb.example.test"},
		{host: "x-abc123.sb.example.test"},
		{host: "49983-a.b.sb.example.test"},
		{host: "49983-abc123.other.test"},
		{host: "127.0.0.1:8080"},
		{host: "127.0.0.1:8080", hdrID: "abc-123", id: "abc-123", port: EnvdPort, ok: true},
		{host: "127.0.0.1:8080", hdrID: "abc", hdrPort: "3000", id: "abc", port: 3000, ok: true},
		{host: "127.0.0.1:8080", hdrID: "abc", hdrPort: "x", id: "abc", port: -1, ok: true},
	} {
		r := httptest.NewRequest(http.MethodGet, "/health", nil)
		r.Host = c.host
		if c.hdrID != "" {
			r.Header.Set("E2b-Sandbox-Id", c.hdrID)
		}
		if c.hdrPort != "" {
			r.Header.Set("E2b-Sandbox-Port", c.hdrPort)
		}
		id, port, ok := s.sandboxTarget(r)
		if ok != c.ok || (ok && (id != c.id || port != c.port)) {
			t.Errorf("host %q headers %q/%q: got %q %d %v, want %q %d %v", c.host, c.hdrID, c.hdrPort, id, port, ok, c.id, c.port, c.ok)
		}
	}
	// Without a domain, host names route nothing.
	r := httptest.NewRequest(http.MethodGet, "/health", nil)
	r.Host = "49983-abc123.sb.example.test"
	if _, _, ok := (&Server{}).sandboxTarget(r); ok {
		t.Error("a server without a domain routed by host name")
	}
}

func TestCredentials(t *testing.T) {
	host := newRouterHost(t)
	if _, err := New(host); err == nil {
		t.Fatal("New without a secret succeeded")
	}
	s, err := New(host, WithAccessTokenSecret(testSecret), WithAPIKeys("e2b_aa", " e2b_bb \n", ""))
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]bool{"e2b_aa": true, "e2b_bb": true, "": false, "e2b_a": false, "e2b_aaa": false, "E2B_AA": false} {
		if got := s.validAPIKey(key); got != want {
			t.Errorf("validAPIKey(%q) = %v, want %v", key, got, want)
		}
	}
	tok := s.accessToken("abc")
	if !s.validAccessToken("abc", tok) || s.validAccessToken("abd", tok) || s.validAccessToken("abc", tok+"x") || s.validAccessToken("abc", "") {
		t.Error("access tokens are not bound to their sandbox")
	}
	other, _ := New(host, WithAccessTokenSecret(bytes.Repeat([]byte{8}, 32)))
	if other.validAccessToken("abc", tok) {
		t.Error("a token from another secret was accepted")
	}
	again, _ := New(host, WithAccessTokenSecret(testSecret))
	if !again.validAccessToken("abc", tok) {
		t.Error("the same secret gave another token (tokens must survive restarts)")
	}
}

func TestEnvdRouting(t *testing.T) {
	host := newRouterHost(t)
	s, err := New(host, WithAccessTokenSecret(testSecret), WithAPIKeys("e2b_aa"))
	if err != nil {
		t.Fatal(err)
	}
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	ts := httptest.NewServer(s.Handler(next))
	t.Cleanup(ts.Close)
	env, err := host.CreateSession(context.Background(), environment.SessionConfig{SessionID: "routed1"})
	if err != nil {
		t.Fatal(err)
	}
	do := func(id, token, path string) (int, apiError) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, ts.URL+path, nil)
		if id != "" {
			req.Header.Set("E2b-Sandbox-Id", id)
		}
		if token != "" {
			req.Header.Set("X-Access-Token", token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		var e apiError
		_ = json.Unmarshal(body, &e)
		return res.StatusCode, e
	}
	if code, _ := do("", "", "/healthz"); code != http.StatusTeapot {
		t.Errorf("a turnbox path: %d, want it passed on (418)", code)
	}
	if code, _ := do("", "", "/v2/sandboxes"); code != http.StatusUnauthorized && code != http.StatusNotImplemented {
		t.Errorf("a control path without a key: %d, want the control plane's answer", code)
	}
	if code, e := do("nosuch", s.accessToken("nosuch"), "/health"); code != http.StatusBadGateway || e.Code != http.StatusBadGateway {
		t.Errorf("an unknown sandbox: %d %+v, want 502 with a JSON body", code, e)
	}
	if code, _ := do("../x", s.accessToken("../x"), "/health"); code != http.StatusBadGateway {
		t.Errorf("a malformed sandbox id: %d, want 502", code)
	}
	if code, _ := do("nosuch", "", "/health"); code != http.StatusUnauthorized {
		t.Errorf("an unknown sandbox without a token: %d, want 401 (no existence oracle)", code)
	}
	if code, _ := do("routed1", "", "/health"); code != http.StatusUnauthorized {
		t.Errorf("no access token: %d, want 401", code)
	}
	if code, _ := do("routed1", s.accessToken("routed2"), "/health"); code != http.StatusUnauthorized {
		t.Errorf("another sandbox's token: %d, want 401", code)
	}
	if code, _ := do("routed1", s.accessToken("routed1"), "/health"); code != http.StatusNoContent {
		t.Errorf("routed by header: %d, want envd's 204", code)
	}
	// Routed by host name when the server has a domain.
	byHost, _ := New(host, WithAccessTokenSecret(testSecret), WithDomain("SB.Example.test."))
	for hostName, want := range map[string]int{
		"49983-routed1.sb.example.test": http.StatusNoContent,
		"49983-nosuch.sb.example.test":  http.StatusUnauthorized, // routed1's token
		"1-routed1.sb.example.test":     http.StatusBadGateway,   // nothing listens on port 1
		"sb.example.test":               http.StatusTeapot,
	} {
		req := httptest.NewRequest(http.MethodGet, "/health", nil)
		req.Host = hostName
		req.Header.Set("X-Access-Token", s.accessToken("routed1"))
		rec := httptest.NewRecorder()
		byHost.Handler(next).ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("host %s: %d, want %d", hostName, rec.Code, want)
		}
	}
	if err := env.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, _ := do("routed1", s.accessToken("routed1"), "/health"); code != http.StatusBadGateway {
		t.Errorf("a paused sandbox: %d, want 502", code)
	}
}

func newRouterHost(tb testing.TB) *embedded.Host {
	tb.Helper()
	host, err := embedded.NewHost(context.Background(), embedded.Config{StateDir: tb.TempDir(),
		ContainerRuntime: embedded.ContainerRuntimeNone, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = host.Close(ctx)
	})
	return host
}

// TestEnvdOverH2C: envd's Connect services over cleartext HTTP/2 (prior
// knowledge), on the http.Server `turnbox serve` runs, in the binary and
// gRPC protocols too.
func TestEnvdOverH2C(t *testing.T) {
	host := newRouterHost(t)
	s, err := New(host, WithAccessTokenSecret(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := host.CreateSession(context.Background(), environment.SessionConfig{SessionID: "h2c1"}); err != nil {
		t.Fatal(err)
	}
	hs := server.New(host).HTTPServer(true)
	hs.Handler = s.Handler(hs.Handler)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &p}}
	for name, opt := range map[string]connect.ClientOption{"connect": connect.WithProtoJSON(), "grpc": connect.WithGRPC()} {
		pc := processpbconnect.NewProcessClient(client, "http://"+ln.Addr().String(), opt)
		req := connect.NewRequest(&processpb.ListRequest{})
		req.Header().Set("E2b-Sandbox-Id", "h2c1")
		req.Header().Set("X-Access-Token", s.accessToken("h2c1"))
		if _, err := pc.List(context.Background(), req); err != nil {
			t.Fatalf("%s over h2c: %v", name, err)
		}
	}
}
