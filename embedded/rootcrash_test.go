package embedded_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// createCrashChildEnv makes the test binary act as a host that creates
// sessions on runc until it is killed (see TestCrashMidCreateRoot); its
// value is "<state dir>,<agent path>".
const createCrashChildEnv = "TURNBOX_CREATE_CRASH_CHILD"

func createCrashChild(arg string) {
	dir, agentPath, _ := strings.Cut(arg, ",")
	ctx := context.Background()
	fmt.Println("BOOT")
	h, err := embedded.NewHost(ctx, embedded.Config{StateDir: dir, ContainerRuntime: embedded.ContainerRuntimeRunc, AgentPath: agentPath, Logger: quietLogger()})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(2)
	}
	fmt.Println("STARTED")
	for {
		e, err := h.CreateSession(ctx, environment.SessionConfig{})
		if err != nil {
			fmt.Println("ERROR", err)
			os.Exit(2)
		}
		fmt.Println("CREATED", e.SessionID())
	}
}

// TestCrashMidCreateRoot kills a host while it makes the default image's
// base volume and while it clones session roots from it, then checks
// that a new host on the same state leaks nothing: every volume is a
// session's or an image's, every image volume has its base snapshot once
// used, and creating sessions works.
func TestCrashMidCreateRoot(t *testing.T) {
	if arg := os.Getenv(createCrashChildEnv); arg != "" {
		createCrashChild(arg)
		return
	}
	cfg := matrixConfig(t, embedded.StorageBackendLocalDisk, embedded.ContainerRuntimeRunc)
	// Killed while the host starts (and makes the default image's base
	// volume: ~20-200 ms here), then while it creates sessions.
	for _, r := range []struct {
		lines int
		delay time.Duration
	}{{0, 30 * time.Millisecond}, {0, 90 * time.Millisecond}, {1, 0}, {3, 2 * time.Millisecond}} {
		runCreateCrashChild(t, cfg, r.lines, r.delay)
		checkNoCreateLeak(t, cfg)
	}
}

// runCreateCrashChild runs a create-crash child and kills it delay after
// it printed lines+1 lines (BOOT, STARTED, then one per session).
func runCreateCrashChild(t *testing.T, cfg embedded.Config, lines int, delay time.Duration) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashMidCreateRoot$")
	cmd.Env = append(os.Environ(), createCrashChildEnv+"="+cfg.StateDir+","+cfg.AgentPath)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	n := -1
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "ERROR") {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("child: %s", line)
		}
		if n++; n >= lines {
			time.Sleep(delay)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			break
		}
	}
	_ = cmd.Wait()
}

func checkNoCreateLeak(t *testing.T, cfg embedded.Config) {
	t.Helper()
	ctx := context.Background()
	h, err := embedded.NewHost(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := h.Close(cctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	e, err := h.CreateSession(ctx, environment.SessionConfig{})
	if err != nil {
		t.Fatalf("create after the crash: %v", err)
	}
	if got := call(t, e, environment.BashParams{Command: "echo x > /etc/after-crash && cat /etc/after-crash"}).Content; got != "x\n" {
		t.Fatalf("the new session's root: %q", got)
	}
	sessions := map[string]bool{}
	for _, s := range h.Sessions() {
		sessions[s.ID] = true
	}
	vols, err := h.Storage().Volumes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	images := 0
	for _, v := range vols {
		if strings.HasPrefix(v.Name, "image.") {
			images++
			snaps, err := h.Storage().Snapshots(ctx, v.Name)
			if err != nil || len(snaps) != 1 || snaps[0].Name != "base" {
				t.Errorf("image volume %s: snapshots %+v %v, want base alone", v.Name, snaps, err)
			}
			continue
		}
		if !sessions[v.Name] {
			t.Errorf("volume %s belongs to no session after recovery", v.Name)
		}
	}
	if images != 1 {
		t.Errorf("%d image volumes, want 1 (the default image's)", images)
	}
	// A killed host leaves its sessions' directories sealed until a
	// sandbox of theirs stops or they are destroyed: destroy them, so the
	// next round starts from the image volume alone (and the test's
	// directory can be removed).
	for id := range sessions {
		e := h.NewEnvironment()
		if err := e.AttachSession(id); err != nil {
			t.Fatal(err)
		}
		if err := e.Destroy(ctx); err != nil {
			t.Errorf("Destroy %s: %v", id, err)
		}
	}
}
