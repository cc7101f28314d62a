package embedded_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/snapshot"
)

// Config.PoolSize: new sessions and forks take started sandboxes (each on a volume of
// its own, which the session keeps), get their own environment variables
// per command, see only their own workspace, snapshot and roll back like
// any session, and survive a restart of the host; the pool refills, and
// Close deletes the sandboxes and volumes nobody claimed.
func TestPool(t *testing.T) {
	for _, c := range []struct {
		storage embedded.StorageBackend
		runtime embedded.ContainerRuntime
	}{
		{embedded.StorageBackendLocalDisk, embedded.ContainerRuntimeNone},
		{embedded.StorageBackendLocalDisk, embedded.ContainerRuntimeGVisor},
		{embedded.StorageBackendLocalDisk, embedded.ContainerRuntimeRunc},
		{embedded.StorageBackendBtrfs, embedded.ContainerRuntimeGVisor},
		{embedded.StorageBackendBtrfs, embedded.ContainerRuntimeRunc},
		// zfs: new sessions use the pool, forks do not (no Replacer).
		{embedded.StorageBackendZFS, embedded.ContainerRuntimeNone},
	} {
		t.Run(string(c.storage)+"-"+string(c.runtime), func(t *testing.T) { testPool(t, c.storage, c.runtime) })
	}
}

func poolClaims(t testing.TB, h *embedded.Host, result string) float64 {
	t.Helper()
	fams, err := h.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "turnbox_pool_claims_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func bash(t *testing.T, e environment.Environment, cmd string) string {
	t.Helper()
	r := call(t, e, environment.BashParams{Command: cmd})
	if r.ExitCode != 0 {
		t.Fatalf("%q: exit %d: %s", cmd, r.ExitCode, r.Content)
	}
	return r.Content
}

func testPool(t *testing.T, storage embedded.StorageBackend, rt embedded.ContainerRuntime) {
	ctx := context.Background()
	cfg := matrixConfig(t, storage, rt)
	forkPooled := storage != embedded.StorageBackendZFS
	cfg.PoolSize = 2
	h, err := embedded.NewHost(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			h.Close(ctx)
		}
	}()
	full := func() bool { return counter(t, h, "turnbox_pool_ready") == 2 }
	waitUntil(t, "the pool to fill", 2*time.Minute, full)

	e1, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "one", Env: map[string]string{"POOL_TEST": "one"}})
	if err != nil {
		t.Fatal(err)
	}
	e2, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "two", Env: map[string]string{"POOL_TEST": "two"}})
	if err != nil {
		t.Fatal(err)
	}
	if hits := poolClaims(t, h, "hit"); hits != 2 {
		t.Fatalf("pool hits = %v, want 2", hits)
	}
	if got := bash(t, e1, "echo $POOL_TEST; ls -A | wc -l; echo first > f"); strings.Fields(got)[0] != "one" || strings.Fields(got)[1] != "0" {
		t.Fatalf("session one: %q, want its env and an empty workspace", got)
	}
	if got := bash(t, e2, "echo $POOL_TEST; ls -A | wc -l"); strings.Fields(got)[0] != "two" || strings.Fields(got)[1] != "0" {
		t.Fatalf("session two: %q, want its env and an empty workspace (not session one's)", got)
	}
	snap, err := e1.TurnComplete(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	bash(t, e1, "echo second > f; echo x > g")
	if err := e1.Rollback(ctx, snap.ID); err != nil {
		t.Fatal(err)
	}
	if got := bash(t, e1, "cat f; ls"); got != "first\nf\n" {
		t.Fatalf("after rollback the sandbox sees %q", got)
	}
	// A fork takes a pooled sandbox too: the snapshot is swapped into its
	// volume, where the sandbox sees it.
	waitUntil(t, "the pool to refill", 2*time.Minute, full)
	fork, err := h.Fork(ctx, snap.ID, environment.SessionConfig{SessionID: "fork"})
	if err != nil {
		t.Fatal(err)
	}
	if hits, want := poolClaims(t, h, "hit"), map[bool]float64{true: 3, false: 2}[forkPooled]; hits != want {
		t.Fatalf("pool hits after a fork = %v, want %v", hits, want)
	}
	if got := bash(t, fork, "cat f; ls; echo forked > f"); got != "first\nf\n" {
		t.Fatalf("the fork's sandbox sees %q", got)
	}
	if got := bash(t, e1, "cat f"); got != "first\n" {
		t.Fatalf("the fork's write reached its parent: %q", got)
	}

	waitUntil(t, "the pool to refill", 2*time.Minute, full)
	vols, err := sessionVolumes(ctx, h)
	if err != nil || len(vols) != 5 {
		t.Fatalf("volumes with 3 sessions and 2 pooled sandboxes (and the image's): %+v, %v", vols, err)
	}

	closed = true
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	cfg.PoolSize = 0
	h2 := openCheckedHost(t, cfg)
	vols, err = sessionVolumes(ctx, h2)
	if err != nil || len(vols) != 3 {
		t.Fatalf("volumes after Close and reopen: %+v, %v; want the 3 sessions' only", vols, err)
	}
	e := h2.NewEnvironment()
	if err := e.AttachSession("one"); err != nil {
		t.Fatal(err)
	}
	if got := bash(t, e, "echo $POOL_TEST; cat f"); got != "one\nfirst\n" {
		t.Fatalf("session one after reopen: %q", got)
	}
}

// A create refused after it claimed a pooled sandbox (here: the host is
// at MaxSessions) hands the sandbox back instead of leaking or deleting it.
func TestPoolRefusedCreateGivesBack(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, embedded.Config{PoolSize: 1, MaxSessions: 1})
	waitUntil(t, "the pool to fill", time.Minute, func() bool { return h.PoolReady() == 1 })
	if _, err := h.CreateSession(ctx, environment.SessionConfig{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the pool to refill", time.Minute, func() bool { return h.PoolReady() == 1 })
	if _, err := h.CreateSession(ctx, environment.SessionConfig{}); !errors.Is(err, environment.ErrLimitExceeded) {
		t.Fatalf("create beyond MaxSessions: %v, want ErrLimitExceeded", err)
	}
	if n := h.PoolReady(); n != 1 {
		t.Fatalf("pool holds %d sandboxes after a refused create, want 1 (given back)", n)
	}
	vols, err := h.Storage().Volumes(ctx)
	if err != nil || len(vols) != 2 {
		t.Fatalf("volumes: %+v, %v; want the session's and the pooled one", vols, err)
	}
}

// sessionVolumes lists h's volumes but the images' base volumes.
func sessionVolumes(ctx context.Context, h *embedded.Host) ([]snapshot.Volume, error) {
	vols, err := h.Storage().Volumes(ctx)
	return slices.DeleteFunc(vols, func(v snapshot.Volume) bool { return strings.HasPrefix(v.Name, "image.") }), err
}
