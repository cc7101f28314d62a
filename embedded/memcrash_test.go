package embedded_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// memCrashChildEnv makes the test binary act as a gvisor host process
// taking memory snapshots until it is killed (TestMemoryCrashRecovery);
// memCrashAgentEnv passes it the agent binary.
const (
	memCrashChildEnv = "TURNBOX_MEMCRASH_CHILD_STATE"
	memCrashAgentEnv = "TURNBOX_MEMCRASH_AGENT"
)

// memCrashChild starts memCounter in a memory session and runs turns
// forever: each asks the counter once (it then holds the turn number in
// memory) and takes a memory snapshot, acknowledged on stdout.
func memCrashChild(dir string) {
	ctx := context.Background()
	fail := func(err error) {
		fmt.Println("ERROR", err)
		os.Exit(2)
	}
	h, err := embedded.NewHost(ctx, embedded.Config{StateDir: dir, StorageBackend: embedded.StorageBackendLocalDisk,
		ContainerRuntime: embedded.ContainerRuntimeGVisor, AgentPath: os.Getenv(memCrashAgentEnv), Logger: quietLogger()})
	if err != nil {
		fail(err)
	}
	e, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "crashy", SnapshotMemory: true})
	if err != nil {
		fail(err)
	}
	run := func(cmd string) string {
		req, _ := environment.NewToolRequest(callID(), environment.BashParams{Command: cmd})
		r, err := e.ExecuteTool(ctx, req, nil)
		if err != nil {
			fail(err)
		}
		return r.Content
	}
	run("mkdir -p sub && echo orig > sub/marker")
	if _, err := e.StartProcess(ctx, environment.ProcessConfig{Args: []string{"sh", "-c", memCounter}}); err != nil {
		fail(err)
	}
	for run("test -p /tmp/req && echo ok") != "ok\n" {
		time.Sleep(20 * time.Millisecond)
	}
	for turn := 1; ; turn++ {
		run(`f=/tmp/r$$; mkfifo $f && echo $f > /tmp/req && cat $f; rm -f $f`)
		info, err := e.TurnComplete(ctx, "")
		if err != nil {
			fail(err)
		}
		fmt.Printf("ACK %s %d\n", info.ID, turn)
	}
}

// TestMemoryCrashRecovery kills a gvisor host with SIGKILL in the middle
// of its memory snapshots, opens a new host on the same state directory
// and checks that every acknowledged snapshot is restorable with its
// memory (the counter answers turn+1), and that no image is left that
// the ledger does not name.
func TestMemoryCrashRecovery(t *testing.T) {
	if dir := os.Getenv(memCrashChildEnv); dir != "" {
		memCrashChild(dir)
		return
	}
	cfg := matrixConfig(t, embedded.StorageBackendLocalDisk, embedded.ContainerRuntimeGVisor)
	cmd := exec.Command(os.Args[0], "-test.run=^TestMemoryCrashRecovery$")
	cmd.Env = append(os.Environ(), memCrashChildEnv+"="+cfg.StateDir, memCrashAgentEnv+"="+cfg.AgentPath)
	// Mid-snapshot, most likely: the next one starts at once.
	acked := ackedUntilKilled(t, cmd, 5, 90*time.Second, func(n int) time.Duration { return time.Duration(30+n*17) * time.Millisecond })
	if len(acked) < 2 {
		t.Fatalf("child acknowledged only %d snapshots", len(acked))
	}
	h := openCheckedHost(t, cfg)
	e := h.NewEnvironment()
	if err := e.AttachSession("crashy"); err != nil {
		t.Fatal(err)
	}
	snaps, err := e.ListSnapshots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	imgs, _ := filepath.Glob(filepath.Join(cfg.StateDir, "memory", "crashy", "*"))
	if len(imgs) != len(snaps) {
		t.Errorf("%d images for %d snapshots: %v", len(imgs), len(snaps), imgs)
	}
	for id, turn := range acked {
		if err := e.Rollback(context.Background(), id); err != nil {
			t.Fatalf("rollback to acknowledged %s: %v", id, err)
		}
		expectAsk(t, id, e, fmt.Sprintf("%d orig", turn+1))
	}
}
