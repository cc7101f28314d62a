package embedded_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// waitUntil polls cond every 10 ms until it holds or the deadline passes.
func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func counter(t *testing.T, h *embedded.Host, name string) float64 {
	t.Helper()
	fams, err := h.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			m := f.GetMetric()[0]
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// fileSize returns the size of a file, or -1.
func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return -1
	}
	return fi.Size()
}

// A session idle for Config.IdlePause has its sandbox frozen for real (a
// background writer stops), and the next tool call thaws it without an
// error; a snapshot of an idle-paused session leaves it frozen; an explicit
// Pause still makes calls fail, and Resume works after it.
func TestIdlePause(t *testing.T) {
	for _, rt := range []embedded.ContainerRuntime{embedded.ContainerRuntimeNone, embedded.ContainerRuntimeGVisor} {
		t.Run(string(rt), func(t *testing.T) { testIdlePause(t, rt) })
	}
}

func testIdlePause(t *testing.T, rt embedded.ContainerRuntime) {
	ctx := context.Background()
	const idle = 150 * time.Millisecond
	cfg := matrixConfig(t, embedded.StorageBackendLocalDisk, rt)
	cfg.IdlePause = idle
	h := newHost(t, cfg)
	if !h.Capabilities().Pause {
		t.Skipf("the %s runtime cannot pause here (none needs a writable cgroup v2 hierarchy, as root)", rt)
	}
	e, err := h.CreateSession(ctx, environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	id := e.SessionID()
	info, _ := h.Session(id)
	ticks := filepath.Join(info.Path, "ticks")
	// A background writer: one line every 20 ms while the sandbox runs.
	// It shows the freeze is real. Under gVisor the sandbox's agent ends a
	// command's background processes with the command, so there is none
	// to watch (the freeze is the runtime's Pause, as for an explicit
	// Pause).
	call(t, e, environment.BashParams{Command: "nohup sh -c 'while :; do echo x >> ticks; sleep 0.02; done' >/dev/null 2>&1 &"})
	writer := rt == embedded.ContainerRuntimeNone
	idlePaused := func() bool { i, _ := h.Session(id); return i.IdlePaused }

	waitUntil(t, "the session to be idle-paused", 10*time.Second, idlePaused)
	if st := e.State(); st != environment.StateActive {
		t.Fatalf("idle-paused session's state = %s, want active", st)
	}
	if writer {
		frozen := fileSize(ticks)
		time.Sleep(200 * time.Millisecond)
		if got := fileSize(ticks); got != frozen {
			t.Fatalf("the background writer ran while idle-paused: %d -> %d bytes", frozen, got)
		}
	}
	if got := counter(t, h, "turnbox_sessions_idle_paused"); got != 1 {
		t.Fatalf("turnbox_sessions_idle_paused = %v", got)
	}

	// A snapshot needs no thaw and leaves the sandbox frozen.
	snap, err := e.TurnComplete(ctx, "")
	if err != nil {
		t.Fatalf("TurnComplete on an idle-paused session: %v", err)
	}
	if !idlePaused() {
		t.Fatal("TurnComplete thawed an idle-paused session")
	}

	// The next tool call thaws it transparently.
	if got := call(t, e, environment.BashParams{Command: "echo awake"}).Content; got != "awake\n" {
		t.Fatalf("first call after idle pause = %q", got)
	}
	if idlePaused() {
		t.Fatal("still idle-paused after a tool call")
	}
	if writer {
		before := fileSize(ticks)
		waitUntil(t, "the background writer to run again", 10*time.Second, func() bool { return fileSize(ticks) > before })
	}

	// Idle again, then Rollback: thawed, rolled back, usable.
	waitUntil(t, "the session to be idle-paused again", 10*time.Second, idlePaused)
	if err := e.Rollback(ctx, snap.ID); err != nil {
		t.Fatalf("Rollback of an idle-paused session: %v", err)
	}
	call(t, e, environment.BashParams{Command: "true"})

	// Idle, then an explicit Pause: calls fail until Resume.
	waitUntil(t, "the session to be idle-paused a third time", 10*time.Second, idlePaused)
	if err := e.Pause(ctx); err != nil {
		t.Fatalf("Pause of an idle-paused session: %v", err)
	}
	if e.State() != environment.StatePaused || idlePaused() {
		t.Fatalf("after Pause: state %s, idle-paused %v", e.State(), idlePaused())
	}
	req, _ := environment.NewToolRequest("t", environment.BashParams{Command: "true"})
	if _, err := e.ExecuteTool(ctx, req, nil); !errors.Is(err, environment.ErrNotActive) {
		t.Fatalf("tool call on an explicitly paused session: %v, want ErrNotActive", err)
	}
	if err := e.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	call(t, e, environment.BashParams{Command: "true"})

	if p, r := counter(t, h, "turnbox_idle_pauses_total"), counter(t, h, "turnbox_idle_resumes_total"); p < 3 || r < 2 {
		t.Fatalf("idle pauses %v, resumes %v; want >= 3 and >= 2", p, r)
	}
}

// Calls keep a session from idle-pausing: with calls closer together than
// IdlePause, it never pauses.
func TestIdlePauseNotWhileBusy(t *testing.T) {
	ctx := context.Background()
	const idle = 300 * time.Millisecond
	h := newHost(t, embedded.Config{IdlePause: idle})
	if !h.Capabilities().Pause {
		t.Skip("the none runtime cannot pause here")
	}
	e, err := h.CreateSession(ctx, environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	// One long call (longer than IdlePause) and then short ones.
	call(t, e, environment.BashParams{Command: "sleep 0.6"})
	for range 10 {
		call(t, e, environment.ReadFileParams{Path: "."})
		time.Sleep(idle / 10)
	}
	if got := counter(t, h, "turnbox_idle_pauses_total"); got != 0 {
		t.Fatalf("a busy session was idle-paused %v times", got)
	}
}
