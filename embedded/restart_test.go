package embedded_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// killCgroupMembers SIGKILLs, from the host, every process whose cgroup
// path has a component <id> (a runc sandbox's cgroups are
// /turnbox/<hash>/<id>/sandbox) or that has <id> as an argument (gVisor's
// processes), and returns how many it killed.
func killCgroupMembers(t *testing.T, id string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		member := false
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasSuffix(line, "/"+id) || strings.Contains(line, "/"+id+"/") {
				member = true
			}
		}
		// gVisor's sandbox and gofer processes name the container in
		// their arguments.
		for _, arg := range strings.Split(string(cmdline), "\x00") {
			if arg == id || strings.HasSuffix(arg, "/"+id) {
				member = true
			}
		}
		if member && syscall.Kill(pid, syscall.SIGKILL) == nil {
			n++
		}
	}
	return n
}

// A sandbox killed from the host makes its session failed (calls fail
// with ErrNotActive); RestartSession starts a new sandbox on the same
// workspace; a session failed again can be destroyed.
func TestSandboxDeathAndRestart(t *testing.T) {
	for _, rt := range []embedded.ContainerRuntime{embedded.ContainerRuntimeRunc, embedded.ContainerRuntimeGVisor} {
		t.Run(string(rt), func(t *testing.T) { testSandboxDeath(t, rt) })
	}
}

func testSandboxDeath(t *testing.T, rt embedded.ContainerRuntime) {
	ctx := context.Background()
	cfg := matrixConfig(t, embedded.StorageBackendLocalDisk, rt)
	h := newHost(t, cfg)
	id := "dies-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	e, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: id})
	if err != nil {
		t.Fatal(err)
	}
	call(t, e, environment.WriteFileParams{Path: "keep.txt", Content: "kept"})
	snap, err := e.TurnComplete(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := call(t, e, environment.BashParams{Command: "cat keep.txt"}).Content; got != "kept" {
		t.Fatalf("cat = %q", got)
	}

	if n := killCgroupMembers(t, id); n == 0 {
		t.Fatal("found no process of the sandbox to kill")
	}
	waitUntil(t, "the session to fail", 20*time.Second, func() bool { return e.State() == environment.StateFailed })
	req, _ := environment.NewToolRequest("t", environment.BashParams{Command: "true"})
	if _, err := e.ExecuteTool(ctx, req, nil); !errors.Is(err, environment.ErrNotActive) {
		t.Fatalf("tool call on a failed session: %v, want ErrNotActive", err)
	}
	if got := counter(t, h, "turnbox_sandbox_deaths_total"); got != 1 {
		t.Fatalf("turnbox_sandbox_deaths_total = %v", got)
	}

	if err := h.RestartSession(ctx, id); err != nil {
		t.Fatalf("RestartSession: %v", err)
	}
	if st := e.State(); st != environment.StateActive {
		t.Fatalf("state after restart = %s", st)
	}
	if got := call(t, e, environment.BashParams{Command: "cat keep.txt"}).Content; got != "kept" {
		t.Fatalf("after restart cat = %q", got)
	}
	if err := e.Rollback(ctx, snap.ID); err != nil {
		t.Fatalf("rollback after restart: %v", err)
	}
	// RestartSession on an active session works too; on a paused one it
	// is refused.
	if err := h.RestartSession(ctx, id); err != nil {
		t.Fatalf("RestartSession of an active session: %v", err)
	}
	call(t, e, environment.BashParams{Command: "true"})
	if err := e.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.RestartSession(ctx, id); !errors.Is(err, environment.ErrNotActive) {
		t.Fatalf("RestartSession of a paused session: %v, want ErrNotActive", err)
	}
	if err := e.Resume(ctx); err != nil {
		t.Fatal(err)
	}

	// Failed again: Destroy deletes it.
	if n := killCgroupMembers(t, id); n == 0 {
		t.Fatal("found no process of the restarted sandbox to kill")
	}
	waitUntil(t, "the session to fail again", 20*time.Second, func() bool { return e.State() == environment.StateFailed })
	if err := e.Destroy(ctx); err != nil {
		t.Fatalf("Destroy of a failed session: %v", err)
	}
	if _, err := h.Session(id); !errors.Is(err, environment.ErrSessionNotFound) {
		t.Fatalf("session after Destroy: %v", err)
	}
}
