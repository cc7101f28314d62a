package embedded_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/embedded/ledger"
	"github.com/turnbox/turnbox/environment"
)

// recordSession makes session id on a fresh localdisk host in dir, closes
// the host and rewrites the session's ledger record with edit, as if it
// had been created on another backend or runtime.
func recordSession(t *testing.T, dir, id string, edit func(*ledger.SessionRecord)) {
	t.Helper()
	ctx := context.Background()
	h, err := embedded.NewHost(ctx, embedded.Config{StateDir: dir, Logger: quietLogger(), ContainerRuntime: embedded.ContainerRuntimeNone})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: id}); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	lg, err := ledger.Open(filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	if err := lg.UpdateSession(id, func(r *ledger.SessionRecord) error { edit(r); return nil }); err != nil {
		t.Fatal(err)
	}
}

// A host opened without a storage backend takes the one its ledger's
// sessions were created on; opened with another one, it refuses those
// sessions' calls with an error naming the flag to give, and keeps them.
func TestStorageBackendFromLedger(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	recordSession(t, dir, "on-zfs", func(r *ledger.SessionRecord) { r.Backend = string(embedded.StorageBackendZFS) })

	// No backend named: zfs, recorded, is opened (and needs its dataset).
	_, err := embedded.NewHost(ctx, embedded.Config{StateDir: dir, Logger: quietLogger(), ContainerRuntime: embedded.ContainerRuntimeNone})
	if err == nil || !strings.Contains(err.Error(), "zfs") {
		t.Fatalf("NewHost without a backend on a zfs ledger: %v; want the zfs backend opened", err)
	}

	h := newHost(t, embedded.Config{StateDir: dir, StorageBackend: embedded.StorageBackendLocalDisk})
	e := h.NewEnvironment()
	if err := e.AttachSession("on-zfs"); err != nil {
		t.Fatal(err)
	}
	req, err := environment.NewToolRequest(callID(), environment.ReadFileParams{Path: "a"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.ExecuteTool(ctx, req, nil)
	if !errors.Is(err, environment.ErrNotActive) || !strings.Contains(err.Error(), "--storage zfs") {
		t.Fatalf("call on a session of another backend: %v; want ErrNotActive naming --storage zfs", err)
	}
	if st := e.State(); st == environment.StateFailed {
		t.Fatalf("session of another backend reported %s", st)
	}
}

// A session made on another runtime is refused with an error naming the
// runtime to pass.
func TestRuntimeMismatchNamesFlag(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	recordSession(t, dir, "on-gvisor", func(r *ledger.SessionRecord) { r.Runtime = string(embedded.ContainerRuntimeGVisor) })
	h := newHost(t, embedded.Config{StateDir: dir})
	e := h.NewEnvironment()
	if err := e.AttachSession("on-gvisor"); err != nil {
		t.Fatal(err)
	}
	req, err := environment.NewToolRequest(callID(), environment.ReadFileParams{Path: "a"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.ExecuteTool(ctx, req, nil)
	if !errors.Is(err, environment.ErrNotActive) || !strings.Contains(err.Error(), "--runtime gvisor") {
		t.Fatalf("call on a session of another runtime: %v; want ErrNotActive naming --runtime gvisor", err)
	}
}

// A runtime chosen because none was named is announced in one line that
// names it.
func TestImplicitRuntimeAnnounced(t *testing.T) {
	var logs bytes.Buffer
	ctx := context.Background()
	h, err := embedded.NewHost(ctx, embedded.Config{
		StateDir:  t.TempDir(),
		Logger:    slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		AgentPath: "/nonexistent/turnbox-agent", // gvisor cannot be chosen: no test image build
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(ctx)
	kind := h.Runtime().Kind()
	var lines []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "runtime") && strings.Contains(l, "using") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], kind) {
		t.Fatalf("implicit runtime %s announced in %d lines, want 1 naming it:\n%s", kind, len(lines), logs.String())
	}
}
