package runc_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/agent/agenttest"
	"github.com/turnbox/turnbox/container/containertest"
	"github.com/turnbox/turnbox/container/runc"
	"github.com/turnbox/turnbox/internal/testenv"
)

// medians collects per-operation durations and reports their median.
type medians []time.Duration

func (m *medians) report(b *testing.B, unit string) {
	if len(*m) == 0 {
		return
	}
	s := slices.Clone(*m)
	slices.Sort(s)
	b.ReportMetric(float64(s[len(s)/2].Microseconds())/1000, unit)
}

// BenchmarkProcessStart compares starting a background process up to its
// pid with a one-shot Exec of true (see containertest.BenchProcessStart).
func BenchmarkProcessStart(b *testing.B) {
	sb, _ := start(b, newRuntime(b))
	containertest.BenchProcessStart(b, sb)
}

// BenchmarkPTYEcho measures a keystroke's echo through a PTY (see
// containertest.BenchPTYEcho).
func BenchmarkPTYEcho(b *testing.B) {
	sb, _ := start(b, newRuntime(b))
	containertest.BenchPTYEcho(b, sb)
}

// BenchmarkExec measures an Exec round trip of `true` through the agent
// and, for comparison in the same run, a `runc exec` process per call into
// a running container made with the runc binary.
func BenchmarkExec(b *testing.B) {
	b.Run("agent", func(b *testing.B) {
		rt := newRuntime(b)
		sb, _ := start(b, rt)
		ctx := context.Background()
		p := container.Process{Args: []string{"true"}}
		var m medians
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			st, err := sb.Exec(ctx, p)
			m = append(m, time.Since(t0))
			if err != nil || st.Code != 0 {
				b.Fatalf("Exec: %v %+v", err, st)
			}
		}
		b.StopTimer()
		m.report(b, "median-ms")
	})
	b.Run("runc-exec", func(b *testing.B) {
		runcBin := testenv.RequireBinary(b, "runc")
		testenv.RequireRoot(b)
		dir := b.TempDir()
		id := "bench-" + filepath.Base(dir)
		spec := container.Spec{ID: id, RootFS: busyboxRootfs(b), Workspace: workspace(b)}
		skel := filepath.Join(dir, "bundle", "rootfs")
		ociSpec, err := runc.BaselineSpec(spec, skel, agenttest.Build(b), "/turnbox-bench/"+id, []string{"sleep", "1000000"})
		if err != nil {
			b.Fatal(err)
		}
		js, err := json.Marshal(ociSpec)
		if err != nil {
			b.Fatal(err)
		}
		bundle := filepath.Join(dir, "bundle")
		if err := os.WriteFile(filepath.Join(bundle, "config.json"), js, 0o644); err != nil {
			b.Fatal(err)
		}
		state := filepath.Join(dir, "state")
		runcCmd := func(args ...string) *exec.Cmd {
			return exec.Command(runcBin, append([]string{"--root", state}, args...)...)
		}
		// A detached container keeps its stdio: give it a file, not the
		// pipe CombinedOutput would wait on.
		logf, err := os.Create(filepath.Join(dir, "run.log"))
		if err != nil {
			b.Fatal(err)
		}
		defer logf.Close()
		run := runcCmd("run", "-d", "--bundle", bundle, id)
		run.Stdout, run.Stderr = logf, logf
		if err := run.Run(); err != nil {
			out, _ := os.ReadFile(logf.Name())
			b.Fatalf("runc run: %v\n%s", err, out)
		}
		b.Cleanup(func() {
			_ = runcCmd("kill", id, "KILL").Run()
			if out, err := runcCmd("delete", "-f", id).CombinedOutput(); err != nil {
				b.Errorf("runc delete: %v\n%s", err, out)
			}
		})
		var m medians
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			out, err := runcCmd("exec", id, "true").CombinedOutput()
			m = append(m, time.Since(t0))
			if err != nil {
				b.Fatalf("runc exec: %v\n%s", err, out)
			}
		}
		b.StopTimer()
		m.report(b, "median-ms")
	})
}

// BenchmarkStartToFirstExec measures Start plus the first Exec of `true`
// (Stop is not timed).
func BenchmarkStartToFirstExec(b *testing.B) {
	rt := newRuntime(b)
	rootfs := busyboxRootfs(b)
	ws := workspace(b)
	ctx := context.Background()
	var m medians
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		spec := container.Spec{ID: newID(b), RootFS: rootfs, Workspace: ws}
		t0 := time.Now()
		sb, err := rt.Start(ctx, spec)
		if err != nil {
			b.Fatalf("Start: %v", err)
		}
		st, err := sb.Exec(ctx, container.Process{Args: []string{"true"}})
		m = append(m, time.Since(t0))
		if err != nil || st.Code != 0 {
			b.Fatalf("Exec: %v %+v", err, st)
		}
		b.StopTimer()
		if err := sb.Stop(ctx); err != nil {
			b.Fatalf("Stop: %v", err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	m.report(b, "median-ms")
}

// BenchmarkPauseResume measures a Pause followed by a Resume.
func BenchmarkPauseResume(b *testing.B) {
	rt := newRuntime(b)
	sb, _ := start(b, rt)
	ctx := context.Background()
	var m medians
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := sb.Pause(ctx); err != nil {
			b.Fatalf("Pause: %v", err)
		}
		if err := sb.Resume(ctx); err != nil {
			b.Fatalf("Resume: %v", err)
		}
		m = append(m, time.Since(t0))
	}
	b.StopTimer()
	m.report(b, "median-ms")
}
