package embedded_test

import (
	"context"
	"errors"
	"testing"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// TestLimits: the host's limits default to the documented values, are
// reported by Capabilities (not enforced on none), a session's own limits
// lower them, are reported by Session and survive a restart, and limits
// above the host's or negative are refused without creating anything.
func TestLimits(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	h := newHost(t, embedded.Config{StateDir: dir})
	caps := h.Capabilities()
	want := environment.Limits{MemoryBytes: embedded.DefaultMemoryBytes, CPUs: embedded.DefaultCPUs, Pids: embedded.DefaultPids}
	if caps.Limits != want || caps.LimitsEnforced {
		t.Fatalf("capabilities limits %+v enforced %v, want %+v not enforced (none runtime, localdisk)", caps.Limits, caps.LimitsEnforced, want)
	}
	own := environment.Limits{MemoryBytes: 256 << 20, CPUs: 0.5, Pids: 64, DiskBytes: 8 << 20}
	if _, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "l", Limits: own}); err != nil {
		t.Fatal(err)
	}
	if info, _ := h.Session("l"); info.Limits != own || info.DiskQuotaBytes != own.DiskBytes {
		t.Fatalf("session limits %+v (quota %d), want %+v", info.Limits, info.DiskQuotaBytes, own)
	}
	if _, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "d"}); err != nil {
		t.Fatal(err)
	}
	if info, _ := h.Session("d"); info.Limits != want {
		t.Fatalf("default session limits %+v, want %+v", info.Limits, want)
	}
	for _, l := range []environment.Limits{{MemoryBytes: 4 << 30}, {CPUs: 2}, {Pids: 4096}, {Pids: -1}, {MemoryBytes: -1}} {
		_, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "bad", Limits: l})
		if !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("limits %+v: err = %v, want ErrInvalidArgument", l, err)
		}
		if _, err := h.Session("bad"); !errors.Is(err, environment.ErrSessionNotFound) {
			t.Errorf("limits %+v: refused session exists (%v)", l, err)
		}
	}
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// A lower host limit after a restart wins over the session's own.
	h2 := newHost(t, embedded.Config{StateDir: dir, Limits: container.Limits{MemoryBytes: 128 << 20, CPUs: -1}})
	got, _ := h2.Session("l")
	want2 := environment.Limits{MemoryBytes: 128 << 20, CPUs: 0.5, Pids: 64, DiskBytes: 8 << 20}
	if got.Limits != want2 {
		t.Fatalf("after restart with lower host limits: %+v, want %+v", got.Limits, want2)
	}
	if c := h2.Capabilities().Limits; c.CPUs != 0 || c.MemoryBytes != 128<<20 {
		t.Fatalf("host limits with CPUs -1 (none): %+v", c)
	}
}
