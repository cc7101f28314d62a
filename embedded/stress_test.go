package embedded_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func countMounts(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// TestStress runs 50 sessions at once, 20 turns each (a command, a file
// write, a snapshot; every 5th turn a rollback, every 7th a fork that is
// used and destroyed), checks every session's final content, destroys
// everything and then checks that nothing leaked: goroutines, file
// descriptors, mounts, sessions, volumes, sandbox cgroups.
func TestStress(t *testing.T) {
	const sessions, turns = 50, 20
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	fds0, mounts0, gor0 := countFDs(t), countMounts(t), runtime.NumGoroutine()

	h := newHost(t, embedded.Config{})
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := stressSession(ctx, h, i, turns); err != nil {
				errs <- fmt.Errorf("session %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if n := len(h.Sessions()); n != 0 {
		t.Fatalf("%d sessions left after every session was destroyed", n)
	}
	if vols, err := h.Storage().Volumes(ctx); err != nil || len(vols) != 0 {
		t.Fatalf("volumes left: %v %v", vols, err)
	}
	if ids, err := h.Runtime().List(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("sandboxes left: %v %v", ids, err)
	}
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Goroutines and descriptors wind down asynchronously (pipe readers,
	// timers): allow a moment and a small slack.
	deadline := time.Now().Add(10 * time.Second)
	for {
		fds, gor := countFDs(t), runtime.NumGoroutine()
		if fds <= fds0+2 && gor <= gor0+5 {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("leak: fds %d -> %d, goroutines %d -> %d\n%s", fds0, fds, gor0, gor, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(100 * time.Millisecond)
	}
	if m := countMounts(t); m != mounts0 {
		t.Fatalf("mounts %d -> %d", mounts0, m)
	}
}

func stressSession(ctx context.Context, h *embedded.Host, i, turns int) error {
	e, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: fmt.Sprintf("stress-%02d", i)})
	if err != nil {
		return err
	}
	run := func(env environment.Environment, p environment.ToolParams) (*environment.ToolResponse, error) {
		req, err := environment.NewToolRequest(callID(), p)
		if err != nil {
			return nil, err
		}
		resp, err := env.ExecuteTool(ctx, req, nil)
		if err == nil && resp.IsError {
			err = fmt.Errorf("%s failed: %s", p.ToolName(), resp.Content)
		}
		return resp, err
	}
	var snaps []*environment.SnapshotInfo
	for turn := 1; turn <= turns; turn++ {
		if _, err := run(e, environment.BashParams{Command: fmt.Sprintf("echo %d >> log.txt", turn)}); err != nil {
			return fmt.Errorf("turn %d: %w", turn, err)
		}
		if _, err := run(e, environment.WriteFileParams{Path: fmt.Sprintf("t/%d.txt", turn), Content: strings.Repeat("x", turn*100)}); err != nil {
			return fmt.Errorf("turn %d: %w", turn, err)
		}
		s, err := e.TurnComplete(ctx, "")
		if err != nil {
			return fmt.Errorf("turn %d snapshot: %w", turn, err)
		}
		snaps = append(snaps, s)
		if turn%5 == 0 {
			// Roll back one turn and redo it: the log must match.
			if err := e.Rollback(ctx, snaps[len(snaps)-2].ID); err != nil {
				return fmt.Errorf("turn %d rollback: %w", turn, err)
			}
			if _, err := run(e, environment.BashParams{Command: fmt.Sprintf("echo %d >> log.txt", turn)}); err != nil {
				return err
			}
			if _, err := run(e, environment.WriteFileParams{Path: fmt.Sprintf("t/%d.txt", turn), Content: strings.Repeat("x", turn*100)}); err != nil {
				return err
			}
		}
		if turn%7 == 0 {
			f, err := e.Fork(ctx, s.ID, environment.SessionConfig{})
			if err != nil {
				return fmt.Errorf("turn %d fork: %w", turn, err)
			}
			if _, err := run(f, environment.BashParams{Command: "echo fork >> log.txt"}); err != nil {
				return err
			}
			if err := f.Destroy(ctx); err != nil {
				return err
			}
		}
	}
	resp, err := run(e, environment.ReadFileParams{Path: "log.txt"})
	if err != nil {
		return err
	}
	var want strings.Builder
	for turn := 1; turn <= turns; turn++ {
		fmt.Fprintf(&want, "%d\n", turn)
	}
	if resp.Content != want.String() {
		return fmt.Errorf("final log.txt = %q, want %q", resp.Content, want.String())
	}
	return e.Destroy(ctx)
}
