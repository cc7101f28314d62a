package embedded_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/agent/agenttest"
	"github.com/turnbox/turnbox/container/containertest"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/internal/testenv"
)

// BenchmarkMemoryTurn measures, on localdisk × gvisor, sessions whose
// sandbox holds a process with 100 MiB of random data (memhog, of which
// 1 MiB changes before every snapshot). Per iteration, medians reported:
//
//   - turn-mem: TurnComplete of a SnapshotMemory session (memory image,
//     file snapshot and ledger record, image fsynced);
//   - turn-files: TurnComplete of a files-only session;
//   - bare-memsnap: the runtime's SnapshotMemory of the files-only
//     session's sandbox, nothing done while frozen (no file snapshot,
//     no fsync, no ledger);
//   - rollback-mem: Rollback of the memory session to its snapshot until
//     memhog answers from its restored memory.
//
// Run with: go test -tags seccomp -run '^$' -bench MemoryTurn -benchtime 5x ./embedded
func BenchmarkMemoryTurn(b *testing.B) {
	testenv.RequireRoot(b)
	testenv.RequireBinary(b, "runsc")
	ctx := context.Background()
	h, err := embedded.NewHost(ctx, embedded.Config{StateDir: b.TempDir(), StorageBackend: embedded.StorageBackendLocalDisk,
		ContainerRuntime: embedded.ContainerRuntimeGVisor, AgentPath: agenttest.Build(b), Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close(ctx)
	mem := startMemhog(b, h, true)
	files := startMemhog(b, h, false)
	sb, _ := embedded.SessionSandbox(h, files.SessionID()).(container.MemorySnapshotter)
	if sb == nil {
		b.Fatal("the files-only session's sandbox is not a MemorySnapshotter")
	}
	m := map[string][]time.Duration{}
	timed := func(name string, fn func() error) {
		t0 := time.Now()
		if err := fn(); err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		m[name] = append(m[name], time.Since(t0))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		askMemhog(b, mem, 1)
		var snap *environment.SnapshotInfo
		timed("turn-mem", func() (err error) { snap, err = mem.TurnComplete(ctx, ""); return err })
		askMemhog(b, files, 1)
		var fsnap *environment.SnapshotInfo
		timed("turn-files", func() (err error) { fsnap, err = files.TurnComplete(ctx, ""); return err })
		img := filepath.Join(b.TempDir(), "img")
		timed("bare-memsnap", func() error { return sb.SnapshotMemory(ctx, img, nil) })
		_ = os.RemoveAll(img)
		timed("rollback-mem", func() error {
			if err := mem.Rollback(ctx, snap.ID); err != nil {
				return err
			}
			askMemhog(b, mem, 0)
			return nil
		})
		b.ReportMetric(float64(snap.MemoryBytes)/1e6, "image-MB")
		for _, del := range []struct {
			e  *embedded.Environment
			id string
		}{{mem, snap.ID}, {files, fsnap.ID}} {
			if err := del.e.DeleteSnapshot(ctx, del.id); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	for name, d := range m {
		b.ReportMetric(containertest.MedianMS(d), name+"-ms")
	}
}

// startMemhog creates a session (with memory snapshots or not) running
// memhog with 100 MiB and waits until it answers.
func startMemhog(b *testing.B, h *embedded.Host, memory bool) *embedded.Environment {
	ctx := context.Background()
	e, err := h.CreateSession(ctx, environment.SessionConfig{SnapshotMemory: memory})
	if err != nil {
		b.Fatal(err)
	}
	info, err := h.Session(e.SessionID())
	if err != nil {
		b.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(info.Path, "memhog"), "../container/gvisor/testdata/memhog")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build memhog: %v: %s", err, out)
	}
	if _, err := e.StartProcess(ctx, environment.ProcessConfig{Args: []string{"/workspace/memhog", "-mb", "100"}}); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for runBash(b, e, "test -p /tmp/memhog && echo ok || true") != "ok\n" {
		if time.Now().After(deadline) {
			b.Fatal("memhog did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	askMemhog(b, e, 0)
	return e
}

// askMemhog has memhog in e's session rewrite mib MiB of its memory and
// answer.
func askMemhog(b *testing.B, e *embedded.Environment, mib int) {
	b.Helper()
	if out := runBash(b, e, `f=/tmp/r$$; mkfifo $f && echo "$f `+strconv.Itoa(mib)+`" > /tmp/memhog && cat $f; rm -f $f`); strings.TrimSpace(out) == "" {
		b.Fatal("memhog did not answer")
	}
}

// runBash runs a bash tool call and returns its output; a failed call
// fails the benchmark.
func runBash(b *testing.B, e environment.Environment, cmd string) string {
	b.Helper()
	req, err := environment.NewToolRequest(callID(), environment.BashParams{Command: cmd})
	if err != nil {
		b.Fatal(err)
	}
	r, err := e.ExecuteTool(context.Background(), req, nil)
	if err != nil || r.ExitCode != 0 {
		b.Fatalf("%s: %v %+v", cmd, err, r)
	}
	return r.Content
}
