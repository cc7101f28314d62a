package embedded_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newHost(t *testing.T, cfg embedded.Config) *embedded.Host {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	if cfg.ContainerRuntime == "" {
		cfg.ContainerRuntime = embedded.ContainerRuntimeNone
	}
	h, err := embedded.NewHost(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(context.Background()) })
	return h
}

// callSeq numbers the tests' tool calls: the host answers a repeated
// tool call id from its cache instead of running the call again.
var callSeq atomic.Int64

// callID returns a tool call id no other call of the test binary uses.
func callID() string { return "t-" + strconv.FormatInt(callSeq.Add(1), 10) }

func call(t *testing.T, e environment.Environment, p environment.ToolParams) *environment.ToolResponse {
	t.Helper()
	req, err := environment.NewToolRequest(callID(), p)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.ExecuteTool(context.Background(), req, nil)
	if err != nil {
		t.Fatalf("%s: %v", p.ToolName(), err)
	}
	return resp
}

// A host closed and opened again on the same state directory has every
// session, snapshot and file; Close destroyed nothing.
func TestRecoveryAfterReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	h, err := embedded.NewHost(ctx, embedded.Config{StateDir: dir, Logger: quietLogger(), ContainerRuntime: embedded.ContainerRuntimeNone})
	if err != nil {
		t.Fatal(err)
	}
	e, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "keep-me"})
	if err != nil {
		t.Fatal(err)
	}
	call(t, e, environment.WriteFileParams{Path: "a.txt", Content: "one"})
	s1, err := e.TurnComplete(ctx, "one")
	if err != nil {
		t.Fatal(err)
	}
	call(t, e, environment.WriteFileParams{Path: "a.txt", Content: "two"})
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ExecuteTool(ctx, environment.ToolRequest{ToolName: "read_file", Input: []byte(`{"path":"a.txt"}`)}, nil); err == nil {
		t.Fatal("tool call on a closed host succeeded")
	}

	h2 := newHost(t, embedded.Config{StateDir: dir})
	e2 := h2.NewEnvironment()
	if err := e2.AttachSession("keep-me"); err != nil {
		t.Fatal(err)
	}
	if got := call(t, e2, environment.ReadFileParams{Path: "a.txt"}).Content; got != "two" {
		t.Fatalf("after reopen a.txt = %q, want two", got)
	}
	snaps, err := e2.ListSnapshots(ctx)
	if err != nil || len(snaps) != 1 || snaps[0].ID != s1.ID || snaps[0].Name != "one" {
		t.Fatalf("snapshots after reopen: %+v, %v", snaps, err)
	}
	if err := e2.Rollback(ctx, s1.ID); err != nil {
		t.Fatal(err)
	}
	if got := call(t, e2, environment.ReadFileParams{Path: "a.txt"}).Content; got != "one" {
		t.Fatalf("after rollback a.txt = %q, want one", got)
	}
	s2, err := e2.TurnComplete(ctx, "")
	if err != nil || s2.Turn != 2 {
		t.Fatalf("next turn after reopen = %+v, %v; want turn 2", s2, err)
	}
}

// A volume with no ledger record (a crash between creating it and
// recording it) is deleted on start; recorded sessions are untouched.
func TestRecoveryDeletesOrphanedVolumes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	h := newHost(t, embedded.Config{StateDir: dir})
	if _, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "real"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Storage().CreateVolume(ctx, "orphan"); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	h2 := newHost(t, embedded.Config{StateDir: dir})
	vols, err := h2.Storage().Volumes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vols) != 1 || vols[0].Name != "real" {
		t.Fatalf("volumes after recovery = %+v, want only \"real\"", vols)
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, embedded.Config{MaxSessions: 1})
	for _, id := range []string{"../x", "a/b", "..", "with space", string(make([]byte, 65))} {
		if _, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: id}); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("CreateSession(%q): %v, want ErrInvalidArgument", id, err)
		}
	}
	if _, err := h.CreateSession(ctx, environment.SessionConfig{FromSnapshot: "nope@1"}); !errors.Is(err, environment.ErrSnapshotNotFound) {
		t.Errorf("from unknown snapshot: %v", err)
	}
	if len(h.Sessions()) != 0 {
		t.Fatalf("failed creates left sessions: %+v", h.Sessions())
	}
	e, err := h.CreateSession(ctx, environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.CreateSession(ctx, environment.SessionConfig{}); !errors.Is(err, environment.ErrLimitExceeded) {
		t.Fatalf("session over MaxSessions: %v, want ErrLimitExceeded", err)
	}
	before := call(t, e, environment.BashParams{Command: "ls -A | wc -l"}).Content
	for _, req := range []environment.ToolRequest{
		{ToolName: "rm_rf", Input: []byte(`{}`)},
		{ToolName: "write_file", Input: []byte(`{"path":"../escape.txt","content":"x"}`)},
		{ToolName: "write_file", Input: []byte(`{"path":"/etc/turnbox-escape","content":"x"}`)},
		{ToolName: "write_file", Input: []byte(`{"content":"x"}`)},
		{ToolName: "bash", Input: []byte(`{"command":"touch x","workdir":"../.."}`)},
	} {
		if _, err := e.ExecuteTool(ctx, req, nil); err == nil {
			t.Errorf("%s %s succeeded", req.ToolName, req.Input)
		}
	}
	if after := call(t, e, environment.BashParams{Command: "ls -A | wc -l"}).Content; after != before {
		t.Fatalf("workspace changed by refused calls: %q -> %q", before, after)
	}
	if _, err := os.Stat("/etc/turnbox-escape"); err == nil {
		t.Fatal("write escaped to /etc")
	}
	info, _ := h.Session(e.SessionID())
	if _, err := os.Stat(filepath.Join(filepath.Dir(info.Path), "escape.txt")); err == nil {
		t.Fatal("write escaped the workspace")
	}
}

func TestMetrics(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, embedded.Config{})
	e, err := h.CreateSession(ctx, environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	call(t, e, environment.BashParams{Command: "true"})
	call(t, e, environment.BashParams{Command: "exit 3"})
	call(t, e, environment.ReadFileParams{Path: "missing.txt"})
	if _, err := e.ExecuteTool(ctx, environment.ToolRequest{ToolName: "nope", Input: []byte(`{}`)}, nil); err == nil {
		t.Fatal("unknown tool accepted")
	}
	if _, err := e.TurnComplete(ctx, ""); err != nil {
		t.Fatal(err)
	}
	families, err := h.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.Counter != nil:
				got[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				got[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				got[key] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	for key, want := range map[string]float64{
		"turnbox_sessions": 1,
		"turnbox_tool_calls_total,outcome=ok,tool=bash":              1,
		"turnbox_tool_calls_total,outcome=tool_error,tool=bash":      1,
		"turnbox_tool_calls_total,outcome=tool_error,tool=read_file": 1,
		"turnbox_tool_calls_total,outcome=rejected,tool=invalid":     1,
		"turnbox_operation_seconds,op=create":                        1,
		"turnbox_operation_seconds,op=snapshot":                      1,
		"turnbox_snapshot_freeze_seconds":                            1,
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
}
