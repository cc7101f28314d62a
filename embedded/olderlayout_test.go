package embedded_test

import (
	"context"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// TestOlderLayoutSessions: sessions made by an older host (their volume
// is their workspace) keep working beside sessions with their own root:
// commands, file tools, rollback, fork (which keeps the older layout) and
// a host restart.
func TestOlderLayoutSessions(t *testing.T) {
	for _, c := range []struct {
		storage embedded.StorageBackend
		runtime embedded.ContainerRuntime
	}{
		{embedded.StorageBackendLocalDisk, embedded.ContainerRuntimeNone},
		{embedded.StorageBackendBtrfs, embedded.ContainerRuntimeRunc},
		{embedded.StorageBackendLocalDisk, embedded.ContainerRuntimeGVisor},
	} {
		t.Run(string(c.storage)+"-"+string(c.runtime), func(t *testing.T) {
			cfg := matrixConfig(t, c.storage, c.runtime)
			h, err := embedded.NewHost(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			checkOlderLayout(t, h, c.runtime != embedded.ContainerRuntimeNone)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := h.Close(ctx); err != nil {
				t.Fatal(err)
			}
			h = openCheckedHost(t, cfg)
			e := h.NewEnvironment()
			if err := e.AttachSession("older"); err != nil {
				t.Fatal(err)
			}
			if got := call(t, e, environment.BashParams{Command: "cat f"}).Content; got != "hi\n" {
				t.Fatalf("the older session after a restart: %q", got)
			}
		})
	}
}

func checkOlderLayout(t *testing.T, h *embedded.Host, isolated bool) {
	t.Helper()
	ctx := context.Background()
	restore := embedded.SetOlderLayout()
	old, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "older"})
	restore()
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := h.Session("older"); info.Root != "" {
		t.Fatalf("older session has a root tree %q", info.Root)
	}
	if got := call(t, old, environment.BashParams{Command: "echo hi > f; cat f"}).Content; got != "hi\n" {
		t.Fatalf("older session: %q", got)
	}
	if got := call(t, old, environment.ReadFileParams{Path: "f"}).Content; got != "hi\n" {
		t.Fatalf("read_file in the older session: %q", got)
	}
	snap, err := old.CreateSnapshot(ctx, "one")
	if err != nil {
		t.Fatal(err)
	}
	call(t, old, environment.WriteFileParams{Path: "g", Content: "later"})
	if err := old.Rollback(ctx, snap.ID); err != nil {
		t.Fatal(err)
	}
	if resp := call(t, old, environment.ReadFileParams{Path: "g"}); !resp.IsError {
		t.Fatal("rollback kept a later file")
	}
	fork, err := h.Fork(ctx, snap.ID, environment.SessionConfig{SessionID: "fork-of-old"})
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := h.Session("fork-of-old"); info.Root != "" {
		t.Fatalf("the older session's fork has a root tree %q", info.Root)
	}
	if got := call(t, fork, environment.BashParams{Command: "cat f"}).Content; got != "hi\n" {
		t.Fatalf("fork of the older session: %q", got)
	}
	fresh, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "fresh"})
	if err != nil {
		t.Fatal(err)
	}
	info, _ := h.Session("fresh")
	if info.Root == "" {
		t.Fatal("a new session has no root tree")
	}
	if isolated {
		if got := call(t, fresh, environment.BashParams{Command: "echo x > /etc/y; cat /etc/y"}).Content; got != "x\n" {
			t.Fatalf("a new session's root: %q", got)
		}
	}
}
