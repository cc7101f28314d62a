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

// crashChildEnv makes the test binary act as a host process that works
// until it is killed (see TestCrashRecovery).
const crashChildEnv = "TURNBOX_CRASH_CHILD_STATE"

// crashChild runs turns forever: each turn writes turn-<n>.txt and a
// growing log, snapshots, and then acknowledges the snapshot id and the
// expected content on stdout. Only acknowledged snapshots are promised.
func crashChild(dir string) {
	ctx := context.Background()
	h, err := embedded.NewHost(ctx, embedded.Config{StateDir: dir, ContainerRuntime: embedded.ContainerRuntimeNone, Logger: quietLogger()})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(2)
	}
	e, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "crashy"})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(2)
	}
	for turn := 1; ; turn++ {
		content := strings.Repeat(fmt.Sprintf("turn %d\n", turn), turn%50+1)
		for _, p := range []environment.ToolParams{
			environment.WriteFileParams{Path: fmt.Sprintf("turn-%d.txt", turn), Content: content},
			environment.BashParams{Command: fmt.Sprintf("echo %d >> log.txt; dd if=/dev/zero of=blob bs=4k count=%d 2>/dev/null", turn, turn%20+1)},
		} {
			req, _ := environment.NewToolRequest(callID(), p)
			if _, err := e.ExecuteTool(ctx, req, nil); err != nil {
				fmt.Println("ERROR", err)
				os.Exit(2)
			}
		}
		info, err := e.TurnComplete(ctx, "")
		if err != nil {
			fmt.Println("ERROR", err)
			os.Exit(2)
		}
		fmt.Printf("ACK %s %d\n", info.ID, turn)
	}
}

// TestCrashRecovery kills a host process with SIGKILL in the middle of its
// turns, opens a new host on the same state directory and checks that
// every snapshot the dead host acknowledged is listed and holds exactly
// the files of its turn.
func TestCrashRecovery(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashRecovery$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	// Kill at a moment that varies with timing: mid-write, mid-snapshot
	// or between turns.
	acked := ackedUntilKilled(t, cmd, 12, 60*time.Second, func(n int) time.Duration { return time.Duration(n%7) * time.Millisecond })
	if len(acked) < 3 {
		t.Fatalf("child acknowledged only %d snapshots before the deadline", len(acked))
	}

	h := newHost(t, embedded.Config{StateDir: dir})
	e := h.NewEnvironment()
	if err := e.AttachSession("crashy"); err != nil {
		t.Fatalf("session lost in the crash: %v", err)
	}
	snaps, err := e.ListSnapshots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, s := range snaps {
		listed[s.ID] = true
	}
	ctx := context.Background()
	for id, turn := range acked {
		if !listed[id] {
			t.Fatalf("acknowledged snapshot %s (turn %d) missing after the crash; have %v", id, turn, listed)
		}
		if err := e.Rollback(ctx, id); err != nil {
			t.Fatalf("rollback to acknowledged %s: %v", id, err)
		}
		want := strings.Repeat(fmt.Sprintf("turn %d\n", turn), turn%50+1)
		if got := call(t, e, environment.ReadFileParams{Path: fmt.Sprintf("turn-%d.txt", turn)}).Content; got != want {
			t.Fatalf("snapshot %s: turn-%d.txt = %q, want %q", id, turn, got, want)
		}
		log := call(t, e, environment.ReadFileParams{Path: "log.txt"}).Content
		if n := strings.Count(log, "\n"); n != turn {
			t.Fatalf("snapshot %s: log.txt has %d lines, want %d", id, n, turn)
		}
		if resp := call(t, e, environment.ReadFileParams{Path: fmt.Sprintf("turn-%d.txt", turn+1)}); !resp.IsError {
			t.Fatalf("snapshot %s holds a file of a later turn", id)
		}
	}
	// Nothing the crash left half-made is visible: the backend holds only
	// the ledger's snapshots, and the host keeps working.
	bsnaps, err := h.Storage().Snapshots(ctx, "crashy")
	if err != nil {
		t.Fatal(err)
	}
	if len(bsnaps) != len(snaps) {
		t.Fatalf("backend has %d snapshots, ledger %d", len(bsnaps), len(snaps))
	}
	if _, err := e.TurnComplete(ctx, "after crash"); err != nil {
		t.Fatal(err)
	}
}

// ackedUntilKilled runs cmd, a child host printing "ACK <snapshot id>
// <turn>" for each snapshot it took (and "ERROR ..." on failure), and
// kills it with SIGKILL after wait(n) once it acknowledged want
// snapshots or after within; it returns the acknowledged snapshots.
func ackedUntilKilled(t *testing.T, cmd *exec.Cmd, want int, within time.Duration, wait func(n int) time.Duration) map[string]int {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]int{}
	sc := bufio.NewScanner(out)
	deadline := time.Now().Add(within)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "ERROR") {
			_ = cmd.Process.Kill()
			t.Fatalf("child: %s", line)
		}
		var id string
		var turn int
		if _, err := fmt.Sscanf(line, "ACK %s %d", &id, &turn); err == nil {
			acked[id] = turn
		}
		if len(acked) >= want || time.Now().After(deadline) {
			time.Sleep(wait(len(acked)))
			_ = cmd.Process.Signal(syscall.SIGKILL)
			break
		}
	}
	_ = cmd.Wait()
	return acked
}
