package remote_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
	"github.com/turnbox/turnbox/remote/server"
)

// newEnv returns an environment bound to a new session over svc, destroyed
// when the test ends.
func newEnv(t *testing.T, svc turnboxv1connect.SandboxServiceClient) *remote.NativeSandboxEnvironment {
	t.Helper()
	env := remote.NewNativeSandboxEnvironment(svc, remote.DefaultConfig(), nil)
	if err := env.Create(t.Context(), environment.SessionConfig{}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { _ = env.Destroy(context.Background()) })
	return env
}

func bash(t *testing.T, env environment.Environment, id, cmd string) *environment.ToolResponse {
	t.Helper()
	req, err := environment.NewToolRequest(id, environment.BashParams{Command: cmd})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := env.ExecuteTool(t.Context(), req, nil)
	if err != nil {
		t.Fatalf("bash %q: %v", cmd, err)
	}
	return resp
}

func TestAuth(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "", server.WithAuthTokens(testToken, "second-token"))
	for name, opts := range map[string][]remote.ClientOption{
		"missing": nil,
		"wrong":   {remote.WithBearerToken("not-the-token")},
		"prefix":  {remote.WithBearerToken(testToken[:5])},
	} {
		t.Run(name, func(t *testing.T) {
			env := remote.NewNativeSandboxEnvironment(remote.NewClient(srv.URL, opts...), remote.DefaultConfig(), nil)
			err := env.Create(t.Context(), environment.SessionConfig{})
			if !errors.Is(err, remote.ErrUnauthenticated) || connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Fatalf("Create with a %s token: %v (code %v), want ErrUnauthenticated", name, err, connect.CodeOf(err))
			}
			if strings.Contains(err.Error(), testToken) {
				t.Errorf("error leaks the token: %v", err)
			}
			if st := env.State(); st != environment.StateUnbound {
				t.Errorf("State = %s after a refused Create", st)
			}
		})
	}
	if n := len(host.Sessions()); n != 0 {
		t.Errorf("refused calls left %d sessions", n)
	}
	for _, tok := range []string{testToken, "second-token"} {
		env := newEnv(t, remote.NewClient(srv.URL, remote.WithBearerToken(tok)))
		if out := bash(t, env, "", "echo hi").Content; out != "hi\n" {
			t.Errorf("bash = %q", out)
		}
	}
	// /healthz needs no token; /metrics does.
	get := func(path, token string) (int, string) {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz", ""); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, _ := get("/metrics", ""); code != http.StatusUnauthorized {
		t.Errorf("/metrics without a token = %d", code)
	}
	code, body := get("/metrics", testToken)
	if code != 200 || !strings.Contains(body, "turnbox_rpc_requests_total") || !strings.Contains(body, `code="unauthenticated"`) {
		t.Errorf("/metrics = %d, body lacks the rpc counters:\n%s", code, body)
	}
	for _, want := range []string{"# HELP go_goroutines ", "# HELP process_start_time_seconds ", "--idle-pause"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q (the Go and process collectors, HELP naming flags)", want)
		}
	}
	srv.srv.Drain()
	if code, _ := get("/healthz", ""); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz while draining = %d", code)
	}
}

func TestUnknownSession(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	client := remote.NewClient(srv.URL)
	env := remote.NewNativeSandboxEnvironment(client, remote.DefaultConfig(), nil)
	err := env.AttachSession("no-such-session")
	if !errors.Is(err, environment.ErrSessionNotFound) || connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("AttachSession(unknown) = %v (code %v)", err, connect.CodeOf(err))
	}
	ctx := t.Context()
	_, err = rpc(ctx, client.ExecuteTool, &turnboxv1.ExecuteToolRequest{SessionId: "no-such-session",
		Request: &turnboxv1.ToolRequest{ToolCallId: "c1", ToolName: "bash", Input: []byte(`{"command":"true"}`)}})
	if !errors.Is(err, environment.ErrSessionNotFound) || !errors.Is(err, environment.ErrNotActive) {
		t.Errorf("ExecuteTool on an unknown session = %v, want ErrNotActive and ErrSessionNotFound", err)
	}
	_, err = rpc(ctx, client.GetSession, &turnboxv1.GetSessionRequest{SessionId: "../etc"})
	if !errors.Is(err, environment.ErrInvalidArgument) || connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("GetSession(../etc) = %v", err)
	}
	_, err = rpc(ctx, client.Rollback, &turnboxv1.RollbackRequest{SessionId: "nope"})
	if !errors.Is(err, environment.ErrSessionNotFound) {
		t.Errorf("Rollback on an unknown session = %v", err)
	}
}

// TestErrorsMapBack: every sentinel a call can fail with comes back as the
// same sentinel, with the documented code.
func TestErrorsMapBack(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "", server.WithMaxMessageBytes(64<<10))
	client := remote.NewClient(srv.URL)
	env := newEnv(t, client)
	ctx := t.Context()
	check := func(what string, err, want error, code connect.Code) {
		t.Helper()
		if !errors.Is(err, want) || connect.CodeOf(err) != code {
			t.Errorf("%s: err = %v (code %v), want %v with code %v", what, err, connect.CodeOf(err), want, code)
		}
	}
	_, err := env.ExecuteTool(ctx, environment.ToolRequest{ToolCallID: "u", ToolName: "nope", Input: []byte(`{}`)}, nil)
	check("unknown tool", err, environment.ErrUnknownTool, connect.CodeInvalidArgument)
	_, err = env.ExecuteTool(ctx, environment.ToolRequest{ToolCallID: "p", ToolName: "read_file", Input: []byte(`{"path":"../../etc/passwd"}`)}, nil)
	check("path escape", err, environment.ErrPathEscapes, connect.CodeInvalidArgument)
	_, err = env.ExecuteTool(ctx, environment.ToolRequest{ToolCallID: "j", ToolName: "bash", Input: []byte(`{"command":`)}, nil)
	check("malformed input", err, environment.ErrInvalidArgument, connect.CodeInvalidArgument)
	check("unknown snapshot", env.Rollback(ctx, "no-such-snap"), environment.ErrSnapshotNotFound, connect.CodeNotFound)
	other := remote.NewNativeSandboxEnvironment(client, remote.DefaultConfig(), nil)
	check("duplicate id", other.Create(ctx, environment.SessionConfig{SessionID: env.SessionID()}), environment.ErrAlreadyExists, connect.CodeAlreadyExists)
	want := remote.NewNativeSandboxEnvironment(client, remote.NativeSandboxConfig{StorageBackend: remote.StorageBackendZFS}, nil)
	check("required backend", want.Create(ctx, environment.SessionConfig{}), environment.ErrCapabilityNotSupported, connect.CodeUnimplemented)
	if !env.Capabilities().Pause {
		check("pause unsupported", env.Pause(ctx), environment.ErrCapabilityNotSupported, connect.CodeUnimplemented)
	}
	// Oversized: the request is refused before it reaches the host.
	_, err = env.ExecuteTool(ctx, mustRequest(t, "big", environment.WriteFileParams{Path: "big", Content: strings.Repeat("x", 100<<10)}), nil)
	check("oversized request", err, environment.ErrLimitExceeded, connect.CodeResourceExhausted)
	if out := bash(t, env, "", "ls big 2>&1 || echo missing").Content; !strings.Contains(out, "missing") {
		t.Errorf("the oversized write happened: %q", out)
	}
	// Destroyed: NotActive and SessionNotFound, code NotFound as on
	// every method.
	if err := env.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = rpc(ctx, client.PauseSession, &turnboxv1.PauseSessionRequest{SessionId: env.SessionID()})
	if !errors.Is(err, environment.ErrNotActive) || !errors.Is(err, environment.ErrSessionNotFound) || connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("PauseSession on a destroyed session = %v (code %v)", err, connect.CodeOf(err))
	}
	var rerr *remote.Error
	if !errors.As(err, &rerr) {
		t.Errorf("errors.As(*remote.Error) failed for %T", err)
	}
}

func mustRequest(t *testing.T, id string, p environment.ToolParams) environment.ToolRequest {
	t.Helper()
	req, err := environment.NewToolRequest(id, p)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestMalformedRequests posts bodies no client would send.
func TestMalformedRequests(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "", server.WithMaxMessageBytes(1<<20))
	post := func(procedure, contentType string, body []byte) (int, string) {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", srv.URL+"/turnbox.v1.SandboxService/"+procedure, bytes.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	cases := []struct {
		procedure, contentType, body string
		status                       int
		code                         string
	}{
		{"ExecuteTool", "application/proto", "\xff\xff\xff\xff", 400, "invalid_argument"},
		{"ExecuteTool", "application/json", `{"sessionId": 7}`, 400, "invalid_argument"},
		{"ExecuteTool", "application/json", `not json`, 400, "invalid_argument"},
		{"ExecuteTool", "application/json", `{"sessionId":"x"}`, 400, "invalid_argument"}, // no request
		{"ExecuteTool", "application/json", `{"sessionId":"../x","request":{"toolName":"bash"}}`, 400, "invalid_argument"},
		{"CreateSession", "application/json", `{"config":{"sessionId":"bad/id"}}`, 400, "invalid_argument"},
		{"CreateSession", "application/json", `{"config":{"toolTimeout":"-5s"}}`, 400, "invalid_argument"},
		{"CreateSession", "application/json", `{"config":{"maxOutputBytes":"-1"}}`, 400, "invalid_argument"},
		{"CreateSession", "application/json", `{"config":{"env":{"A=B":"c"}}}`, 400, "invalid_argument"},
		{"CreateSession", "application/json", `{"config":{"sessionId":"` + strings.Repeat("a", 2<<20) + `"}}`, 429, "resource_exhausted"},
		{"NoSuchMethod", "application/json", `{}`, 404, ""},
	}
	for _, c := range cases {
		status, body := post(c.procedure, c.contentType, []byte(c.body))
		if status != c.status || (c.code != "" && !strings.Contains(body, `"code":"`+c.code+`"`)) {
			t.Errorf("%s %.60q: %d %.200s, want %d %s", c.procedure, c.body, status, body, c.status, c.code)
		}
	}
	if n := len(host.Sessions()); n != 0 {
		t.Errorf("malformed requests left %d sessions", n)
	}
}

// TestIdempotentToolCalls: a tool call id runs once, however often and
// however concurrently it is sent.
func TestIdempotentToolCalls(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	for name, svc := range map[string]turnboxv1connect.SandboxServiceClient{"remote": remote.NewClient(srv.URL), "grpc": remote.NewClient(srv.URL, remote.WithGRPC())} {
		t.Run(name, func(t *testing.T) {
			env := newEnv(t, svc)
			r1 := bash(t, env, "call-1", "echo x >> f; wc -l < f")
			r2 := bash(t, env, "call-1", "echo x >> f; wc -l < f")
			if r1.Content != "1\n" || r2.Content != r1.Content || r2.Duration != r1.Duration {
				t.Errorf("retried call: first %+v, second %+v", r1, r2)
			}
			// Streaming retry of the same id: the cached response, no output.
			var progress int
			resp, err := env.ExecuteTool(t.Context(), mustRequest(t, "call-1", environment.BashParams{Command: "echo x >> f; wc -l < f"}),
				func(environment.ToolProgress) { progress++ })
			if err != nil || resp.Content != "1\n" {
				t.Errorf("streamed retry: %+v, %v", resp, err)
			}
			// The same id for another call is refused.
			_, err = env.ExecuteTool(t.Context(), mustRequest(t, "call-1", environment.BashParams{Command: "echo y >> f"}), nil)
			if !errors.Is(err, environment.ErrInvalidArgument) {
				t.Errorf("id reused for another call: %v", err)
			}
			// Concurrent duplicates wait for the first.
			var wg sync.WaitGroup
			outs := make([]string, 8)
			for i := range outs {
				wg.Go(func() {
					req := mustRequest(t, "call-2", environment.BashParams{Command: "sleep 0.3; echo x >> g; wc -l < g"})
					resp, err := env.ExecuteTool(t.Context(), req, nil)
					if err != nil {
						t.Errorf("duplicate %d: %v", i, err)
						return
					}
					outs[i] = resp.Content
				})
			}
			wg.Wait()
			for i, o := range outs {
				if o != "1\n" {
					t.Errorf("duplicate %d saw %q, want 1 line", i, o)
				}
			}
			if out := bash(t, env, "", "cat f g").Content; out != "x\nx\n" {
				t.Errorf("files after the retries: %q", out)
			}
			// A call that could not run is not remembered: its retry runs.
			if env.Capabilities().Pause {
				if err := env.Pause(t.Context()); err != nil {
					t.Fatal(err)
				}
				_, err := env.ExecuteTool(t.Context(), mustRequest(t, "call-3", environment.BashParams{Command: "echo z > h"}), nil)
				if !errors.Is(err, environment.ErrNotActive) {
					t.Errorf("bash while paused: %v", err)
				}
				if err := env.Resume(t.Context()); err != nil {
					t.Fatal(err)
				}
				if r := bash(t, env, "call-3", "echo z > h; cat h"); r.Content != "z\n" {
					t.Errorf("retry after a refused call: %q", r.Content)
				}
			}
		})
	}
}

// TestStreaming: progress arrives before the response; keepalives are not
// progress.
func TestStreaming(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "", server.WithKeepAliveInterval(40*time.Millisecond))
	env := newEnv(t, remote.NewClient(srv.URL))
	var mu sync.Mutex
	var got []string
	req := mustRequest(t, "s1", environment.BashParams{Command: "echo one; sleep 0.3; echo two >&2; sleep 0.2"})
	resp, err := env.ExecuteTool(t.Context(), req, func(p environment.ToolProgress) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, p.Stream+":"+string(p.Data))
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	joined := strings.Join(got, "")
	if !strings.Contains(joined, "stdout:one\n") || !strings.Contains(joined, "stderr:two\n") {
		t.Errorf("progress = %q", got)
	}
	if !strings.Contains(resp.Content, "one") || resp.ToolCallID != "s1" {
		t.Errorf("response = %+v", resp)
	}
}

// TestServerKilledMidStream: a client whose server dies mid-call gets a
// clean error promptly; the host keeps the session, and a new server on
// the same host serves it.
func TestServerKilledMidStream(t *testing.T) {
	dir := t.TempDir()
	host := openHost(t, dir)
	srv := startServer(t, host, "")
	client := remote.NewClient(srv.URL, remote.WithRetry(2, 10*time.Millisecond))
	env := newEnv(t, client)
	bash(t, env, "", "echo keep > kept.txt")
	started := make(chan struct{})
	var once sync.Once
	errc := make(chan error, 1)
	go func() {
		req := mustRequest(t, "long", environment.BashParams{Command: "echo started; sleep 30; echo done"})
		_, err := env.ExecuteTool(context.Background(), req, func(environment.ToolProgress) { once.Do(func() { close(started) }) })
		errc <- err
	}()
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("no progress from the stream")
	}
	killed := time.Now()
	srv.kill()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("stream survived its server")
		}
		if !errors.Is(err, remote.ErrUnavailable) {
			t.Errorf("err = %v (code %v), want ErrUnavailable", err, connect.CodeOf(err))
		}
		t.Logf("client error after %v: %v", time.Since(killed), err)
	case <-time.After(10 * time.Second):
		t.Fatal("client still waiting 10s after its server died")
	}
	// Calls to the dead server fail cleanly too.
	if err := remote.NewNativeSandboxEnvironment(client, remote.DefaultConfig(), nil).Create(t.Context(), environment.SessionConfig{}); !errors.Is(err, remote.ErrUnavailable) {
		t.Errorf("Create on a dead server: %v", err)
	}
	if n := len(host.Sessions()); n != 1 {
		t.Errorf("host has %d sessions, want 1: %+v", n, host.Sessions())
	}
	// A new server on the same address and host serves the session.
	startServer(t, host, srv.Addr)
	if out := bash(t, env, "", "cat kept.txt").Content; out != "keep\n" {
		t.Errorf("after restart: %q", out)
	}
}

// TestCanceledCreateLeavesNothing: Create calls whose context ends at
// random moments leave only the sessions whose Create succeeded.
func TestCanceledCreateLeavesNothing(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	client := remote.NewClient(srv.URL)
	created := map[string]bool{}
	for i := range 30 {
		ctx, cancel := context.WithTimeout(t.Context(), time.Duration(i)*time.Millisecond/2)
		env := remote.NewNativeSandboxEnvironment(client, remote.DefaultConfig(), nil)
		if err := env.Create(ctx, environment.SessionConfig{}); err == nil {
			created[env.SessionID()] = true
		} else if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Create %d: %v", i, err)
		}
		cancel()
	}
	// The server discards in the background of a canceled handler.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var extra []string
		for _, s := range host.Sessions() {
			if !created[s.ID] {
				extra = append(extra, s.ID)
			}
		}
		if len(extra) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions left by canceled creates: %v", extra)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d of 30 creates succeeded", len(created))
}

// TestRetryUntilServerUp: idempotent calls retry while the server is
// unreachable; non-idempotent ones do not.
func TestRetryUntilServerUp(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	addr := srv.Addr
	srv.kill()
	client := remote.NewClient("http://"+addr, remote.WithRetry(20, 20*time.Millisecond))
	start := time.Now()
	if _, err := rpc(t.Context(), client.CreateSession, &turnboxv1.CreateSessionRequest{}); !errors.Is(err, remote.ErrUnavailable) {
		t.Errorf("CreateSession on a dead server: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("non-idempotent CreateSession took %v: retried?", d)
	}
	time.AfterFunc(150*time.Millisecond, func() { startServer(t, host, addr) })
	resp, err := rpc(t.Context(), client.Health, &turnboxv1.HealthRequest{})
	if err != nil || resp.GetStatus() != "SERVING" {
		t.Fatalf("Health while the server comes up: %v, %v", resp, err)
	}
}

// TestForkAndSnapshots exercises the optional interfaces over the wire.
func TestForkAndSnapshots(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	env := newEnv(t, remote.NewClient(srv.URL))
	bash(t, env, "", "echo 1 > a")
	s1, err := env.TurnComplete(t.Context(), "first")
	if err != nil || s1.Turn != 1 || s1.SessionID != env.SessionID() || s1.CreatedAt.IsZero() {
		t.Fatalf("TurnComplete = %+v, %v", s1, err)
	}
	bash(t, env, "", "echo 2 > a")
	if _, err := env.CreateSnapshot(t.Context(), "second"); err != nil {
		t.Fatal(err)
	}
	snaps, err := env.ListSnapshots(t.Context())
	if err != nil || len(snaps) != 2 || snaps[0].ID != s1.ID || snaps[1].Name != "second" {
		t.Fatalf("ListSnapshots = %+v, %v", snaps, err)
	}
	child, err := env.Fork(t.Context(), s1.ID, environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Destroy(context.Background()) })
	if out := bash(t, child, "", "cat a").Content; out != "1\n" {
		t.Errorf("fork sees %q", out)
	}
	if err := env.Rollback(t.Context(), s1.ID); err != nil {
		t.Fatal(err)
	}
	if out := bash(t, env, "", "cat a").Content; out != "1\n" {
		t.Errorf("after rollback %q", out)
	}
	info, err := rpc(t.Context(), remote.NewClient(srv.URL).ListSessions, &turnboxv1.ListSessionsRequest{})
	if err != nil || len(info.GetSessions()) != 2 {
		t.Errorf("ListSessions = %v, %v", info, err)
	}
}
