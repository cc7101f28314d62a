package embedded_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// slowFirstRun appends a line to the workspace file runs each time it runs
// (the side effect that counts runs), prints start and a random token,
// sleeps 30 s on its first run only, then prints end.
const slowFirstRun = `echo run >> runs; echo start; cat /proc/sys/kernel/random/uuid; if [ "$(wc -l < runs)" -eq 1 ]; then sleep 30; fi; echo end`

// runs reports how many times slowFirstRun ran in e's workspace.
func runs(t *testing.T, e environment.Environment) int {
	t.Helper()
	return strings.Count(call(t, e, environment.BashParams{Command: "cat runs 2>/dev/null || true"}).Content, "run\n")
}

func request(t *testing.T, id, cmd string) environment.ToolRequest {
	t.Helper()
	req, err := environment.NewToolRequest(id, environment.BashParams{Command: cmd})
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestIdempotentToolCallID: on the host itself, a repeated ToolCallID
// returns the cached response without running the command again; the id
// reused for another call is refused; another session, or a new session
// under a destroyed one's id, runs it afresh.
func TestIdempotentToolCallID(t *testing.T) {
	h := newHost(t, embedded.Config{})
	ctx := t.Context()
	e, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "idem"})
	if err != nil {
		t.Fatal(err)
	}
	const cmd = "echo run >> runs; cat /proc/sys/kernel/random/uuid"
	req := request(t, "call-1", cmd)
	first, err := e.ExecuteTool(ctx, req, nil)
	if err != nil || first.IsError {
		t.Fatalf("first call: %+v, %v", first, err)
	}
	again, err := e.ExecuteTool(ctx, req, nil)
	if err != nil || *again != *first {
		t.Fatalf("repeated call: %+v, %v; want the cached %+v", again, err, first)
	}
	if n := runs(t, e); n != 1 {
		t.Errorf("command ran %d times for one tool call id sent twice, want 1", n)
	}
	if got := counter(t, h, "turnbox_tool_call_dedup_total"); got != 1 {
		t.Errorf("turnbox_tool_call_dedup_total = %v, want 1", got)
	}
	if _, err := e.ExecuteTool(ctx, request(t, "call-1", "echo other"), nil); !errors.Is(err, environment.ErrInvalidArgument) {
		t.Errorf("id reused for another call: %v, want ErrInvalidArgument", err)
	}

	other, err := h.CreateSession(ctx, environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Destroy(context.WithoutCancel(ctx))
	if resp, err := other.ExecuteTool(ctx, req, nil); err != nil || resp.Content == first.Content {
		t.Errorf("same id in another session: %+v, %v; want a run of its own", resp, err)
	}

	if err := e.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	e, err = h.CreateSession(ctx, environment.SessionConfig{SessionID: "idem"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Destroy(context.WithoutCancel(ctx))
	if resp, err := e.ExecuteTool(ctx, req, nil); err != nil || resp.Content == first.Content {
		t.Errorf("new session under a destroyed one's id: %+v, %v; want a run of its own", resp, err)
	}
}

// TestToolCallCanceledRunsAgain: a call whose caller cancels it mid-command
// is not remembered: its retry with the same ToolCallID runs the command
// again and returns the complete result, and a retry after that returns
// the cached result without a third run.
func TestToolCallCanceledRunsAgain(t *testing.T) {
	h := newHost(t, embedded.Config{})
	e, err := h.CreateSession(t.Context(), environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Destroy(context.WithoutCancel(t.Context()))
	req := request(t, "slow-1", slowFirstRun)
	ctx, cancel := context.WithCancel(t.Context())
	started := make(chan struct{})
	var once sync.Once
	errc := make(chan error, 1)
	go func() {
		_, err := e.ExecuteTool(ctx, req, func(p environment.ToolProgress) {
			if strings.Contains(string(p.Data), "start") {
				once.Do(func() { close(started) })
			}
		})
		errc <- err
	}()
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("no progress from the call")
	}
	cancel()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("canceled call returned no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("canceled call still running after 10 s")
	}
	retry, err := e.ExecuteTool(t.Context(), req, nil)
	if err != nil || !strings.HasPrefix(retry.Content, "start\n") || !strings.HasSuffix(retry.Content, "end\n") || retry.ExitCode != 0 {
		t.Fatalf("retry after the cancel: %+v, %v; want the complete output", retry, err)
	}
	if n := runs(t, e); n != 2 {
		t.Errorf("command ran %d times after a cancel and a retry, want 2", n)
	}
	cached, err := e.ExecuteTool(t.Context(), req, nil)
	if err != nil || *cached != *retry {
		t.Errorf("retry of the finished call: %+v, %v; want the cached %+v", cached, err, retry)
	}
	if n := runs(t, e); n != 2 {
		t.Errorf("finished call ran again: %d runs, want 2", n)
	}
}
