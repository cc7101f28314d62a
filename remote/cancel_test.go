package remote_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
)

// slowFirstRun appends a line to the workspace file runs each time it runs
// (the side effect that counts runs), prints start, sleeps 30 s on its first
// run only, then prints end. A retry with the same tool call id must carry
// the same command, so only the first run is slow.
const slowFirstRun = `echo run >> runs; echo start; if [ "$(wc -l < runs)" -eq 1 ]; then sleep 30; fi; echo end`

// cancelClients are the protocols a client can speak to the server.
func cancelClients(srv *testServer) map[string]turnboxv1connect.SandboxServiceClient {
	return map[string]turnboxv1connect.SandboxServiceClient{
		"connect": remote.NewClient(srv.URL),
		"grpc":    remote.NewClient(srv.URL, remote.WithGRPC()),
	}
}

// runs reports how many times slowFirstRun has run in env's workspace,
// through a call without a tool call id (never cached).
func runs(t *testing.T, env environment.Environment) int {
	t.Helper()
	return strings.Count(bash(t, env, "", "cat runs 2>/dev/null || true").Content, "run\n")
}

// checkComplete fails unless resp is the whole, successful output of
// slowFirstRun.
func checkComplete(t *testing.T, what string, resp *environment.ToolResponse, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if resp.Content != "start\nend\n" || resp.ExitCode != 0 || resp.IsError || resp.TimedOut {
		t.Fatalf("%s: %+v, want the complete output start, end and exit 0", what, resp)
	}
}

// TestToolCallCancelStreamRetry: a streaming call canceled by its client
// mid-command is not remembered: its retry with the same tool call id runs
// the command again and returns its complete result, and a retry after
// that returns the cached result without running it a third time.
func TestToolCallCancelStreamRetry(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	for name, svc := range cancelClients(srv) {
		t.Run(name, func(t *testing.T) {
			env := newEnv(t, svc)
			req := mustRequest(t, "stream-1", environment.BashParams{Command: slowFirstRun})
			ctx, cancel := context.WithCancel(t.Context())
			started := make(chan struct{})
			var once sync.Once
			errc := make(chan error, 1)
			go func() {
				_, err := env.ExecuteTool(ctx, req, func(p environment.ToolProgress) {
					if strings.Contains(string(p.Data), "start") {
						once.Do(func() { close(started) })
					}
				})
				errc <- err
			}()
			select {
			case <-started:
			case <-time.After(20 * time.Second):
				t.Fatal("no progress from the stream")
			}
			cancel()
			select {
			case err := <-errc:
				if err == nil {
					t.Fatal("canceled stream returned no error")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("canceled stream still running after 10 s")
			}
			var progress strings.Builder
			resp, err := env.ExecuteTool(t.Context(), req, func(p environment.ToolProgress) { progress.Write(p.Data) })
			checkComplete(t, "retry after the cancel", resp, err)
			if n := runs(t, env); n != 2 {
				t.Errorf("command ran %d times after a cancel and a retry, want 2", n)
			}
			resp, err = env.ExecuteTool(t.Context(), req, nil)
			checkComplete(t, "retry of the finished call", resp, err)
			if n := runs(t, env); n != 2 {
				t.Errorf("finished call ran again on retry: %d runs, want 2", n)
			}
		})
	}
}

// TestToolCallCancelUnaryRetry: a unary call whose deadline passes
// mid-command is not remembered: a retry with a longer deadline runs the
// command and succeeds, and a retry after that is answered from the cache.
func TestToolCallCancelUnaryRetry(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	for name, svc := range cancelClients(srv) {
		t.Run(name, func(t *testing.T) {
			env := newEnv(t, svc)
			req := mustRequest(t, "unary-1", environment.BashParams{Command: slowFirstRun})
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			defer cancel()
			start := time.Now()
			if _, err := env.ExecuteTool(ctx, req, nil); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("call past its deadline: %v, want context.DeadlineExceeded", err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Fatalf("call with a 500 ms deadline took %v", d)
			}
			ctx, cancel = context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			resp, err := env.ExecuteTool(ctx, req, nil)
			checkComplete(t, "retry with a longer deadline", resp, err)
			resp, err = env.ExecuteTool(ctx, req, nil)
			checkComplete(t, "retry of the finished call", resp, err)
			if n := runs(t, env); n != 2 {
				t.Errorf("command ran %d times, want 2 (the canceled run and the retry)", n)
			}
		})
	}
}

// TestToolCallCancelFinishedResults: results of calls that finished are
// cached whatever they report: a command exiting non-zero, one killed by
// its own timeout (TimedOut), and a tool error each run once.
func TestToolCallCancelFinishedResults(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	env := newEnv(t, remote.NewClient(srv.URL))
	for _, tc := range []struct {
		id string
		p  environment.ToolParams
		ok func(*environment.ToolResponse) bool
	}{
		{"exit-3", environment.BashParams{Command: "echo run >> runs; exit 3"},
			func(r *environment.ToolResponse) bool { return r.ExitCode == 3 && r.IsError }},
		{"own-timeout", environment.BashParams{Command: "echo run >> runs; sleep 30", TimeoutMS: 200},
			func(r *environment.ToolResponse) bool { return r.TimedOut && r.IsError }},
	} {
		req := mustRequest(t, tc.id, tc.p)
		for i := range 2 {
			resp, err := env.ExecuteTool(t.Context(), req, nil)
			if err != nil || !tc.ok(resp) {
				t.Fatalf("%s call %d: %+v, %v", tc.id, i, resp, err)
			}
		}
	}
	if n := runs(t, env); n != 2 {
		t.Errorf("%d runs of two calls sent twice each, want 2", n)
	}
	// A tool error (reading a missing file) is a result too; it stays
	// cached after the file appears.
	req := mustRequest(t, "read-missing", environment.ReadFileParams{Path: "missing.txt"})
	first, err := env.ExecuteTool(t.Context(), req, nil)
	if err != nil || !first.IsError {
		t.Fatalf("reading a missing file: %+v, %v", first, err)
	}
	bash(t, env, "", "echo here > missing.txt")
	again, err := env.ExecuteTool(t.Context(), req, nil)
	if err != nil || again.Content != first.Content || !again.IsError {
		t.Errorf("retried tool error: %+v, %v; want the cached %+v", again, err, first)
	}
}

// TestToolCallCancelDuplicateTakesOver: a duplicate that waits for a call
// with its id gets that call's result if it finishes; if its caller cancels
// it instead, the duplicate runs the command itself and returns the
// complete result.
func TestToolCallCancelDuplicateTakesOver(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	env := newEnv(t, remote.NewClient(srv.URL))
	req := mustRequest(t, "dup-1", environment.BashParams{Command: slowFirstRun})
	ctx, cancel := context.WithCancel(t.Context())
	started := make(chan struct{})
	var once sync.Once
	firstErr := make(chan error, 1)
	go func() {
		_, err := env.ExecuteTool(ctx, req, func(environment.ToolProgress) { once.Do(func() { close(started) }) })
		firstErr <- err
	}()
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("no progress from the first call")
	}
	type result struct {
		resp *environment.ToolResponse
		err  error
	}
	dup := make(chan result, 1)
	go func() {
		resp, err := env.ExecuteTool(t.Context(), req, nil)
		dup <- result{resp, err}
	}()
	time.Sleep(200 * time.Millisecond) // the duplicate waits for the first
	select {
	case r := <-dup:
		t.Fatalf("duplicate returned while the first call ran: %+v, %v", r.resp, r.err)
	default:
	}
	cancel()
	if err := <-firstErr; err == nil {
		t.Fatal("canceled call returned no error")
	}
	select {
	case r := <-dup:
		checkComplete(t, "duplicate after the first call was canceled", r.resp, r.err)
	case <-time.After(20 * time.Second):
		t.Fatal("duplicate still waiting 20 s after the first call was canceled")
	}
	if n := runs(t, env); n != 2 {
		t.Errorf("%d runs, want 2 (the canceled call and the duplicate)", n)
	}
}

// TestToolCallCancelDestroyMidCall: a call whose session is destroyed
// while its command runs fails with ErrNotActive instead of returning the
// killed command's output as a result.
func TestToolCallCancelDestroyMidCall(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	env := newEnv(t, remote.NewClient(srv.URL))
	req := mustRequest(t, "destroyed-1", environment.BashParams{Command: slowFirstRun})
	started := make(chan struct{})
	var once sync.Once
	errc := make(chan error, 1)
	go func() {
		resp, err := env.ExecuteTool(t.Context(), req, func(environment.ToolProgress) { once.Do(func() { close(started) }) })
		if err == nil {
			t.Errorf("call cut by Destroy returned a result: %+v", resp)
		}
		errc <- err
	}()
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("no progress from the call")
	}
	if err := env.Destroy(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, environment.ErrNotActive) {
			t.Errorf("call cut by Destroy: %v, want ErrNotActive", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("call still running 20 s after Destroy")
	}
}

// TestToolCallCancelSessionScope: cached results belong to one session: the
// same tool call id and input in another session runs there, and a session
// created under the id of one destroyed behind the server's back (on the
// host directly) does not see the old session's results.
func TestToolCallCancelSessionScope(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	client := remote.NewClient(srv.URL)
	const cmd = "cat /proc/sys/kernel/random/uuid"
	a, b := newEnv(t, client), newEnv(t, client)
	ra, rb := bash(t, a, "same-id", cmd), bash(t, b, "same-id", cmd)
	if ra.Content == rb.Content {
		t.Errorf("session b got session a's result %q", ra.Content)
	}
	env := remote.NewNativeSandboxEnvironment(client, remote.DefaultConfig(), nil)
	if err := env.Create(t.Context(), environment.SessionConfig{SessionID: "reused"}); err != nil {
		t.Fatal(err)
	}
	first := bash(t, env, "call", cmd)
	direct := host.NewEnvironment()
	if err := direct.AttachSession("reused"); err != nil {
		t.Fatal(err)
	}
	if err := direct.Destroy(t.Context()); err != nil {
		t.Fatal(err)
	}
	env = remote.NewNativeSandboxEnvironment(client, remote.DefaultConfig(), nil)
	if err := env.Create(t.Context(), environment.SessionConfig{SessionID: "reused"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Destroy(context.Background()) })
	if again := bash(t, env, "call", cmd); again.Content == first.Content {
		t.Errorf("new session under a reused id got the old session's result %q", first.Content)
	}
}
