package gvisor_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/containertest"

	"github.com/turnbox/turnbox/container/gvisor"
)

// Run with: go test -run '^$' -bench . -count 5 ./container/gvisor
// The exec benchmarks (agent, runsc-exec, runsc-run) run in one process so
// that their ratios are comparable on a noisy machine.

func BenchmarkExec(b *testing.B) {
	e := newEnv(b)
	b.Run("agent", func(b *testing.B) { gvisor.BenchExec(b, e.rt, e.spec("bexec")) })
	b.Run("agent-pids-limit", func(b *testing.B) { gvisor.BenchExec(b, e.rt, withPids(e.spec("bexecp"))) })
	b.Run("agent-no-launcher", func(b *testing.B) { gvisor.BenchExec(b, e.rt, withoutLauncher(e.spec("bexecn"))) })
	b.Run("runsc-exec", func(b *testing.B) { gvisor.BenchRunscExec(b, e.rt, e.spec("brexec")) })
	b.Run("runsc-run", func(b *testing.B) { gvisor.BenchRunscRun(b, e.rt, e.spec("brrun")) })
}

// BenchmarkProcessStart compares starting a background process up to its
// pid with a one-shot Exec of true (see containertest.BenchProcessStart).
func BenchmarkProcessStart(b *testing.B) {
	e := newEnv(b)
	containertest.BenchProcessStart(b, e.start(b, e.spec("bproc")))
}

// BenchmarkPTYEcho measures a keystroke's echo through a PTY (see
// containertest.BenchPTYEcho).
func BenchmarkPTYEcho(b *testing.B) {
	e := newEnv(b)
	containertest.BenchPTYEcho(b, e.start(b, e.spec("bpty")))
}

func BenchmarkStartToFirstExec(b *testing.B) {
	e := newEnv(b)
	b.Run("no-limits", func(b *testing.B) { gvisor.BenchStart(b, e.rt, e.spec("bstart")) })
	b.Run("pids-limit", func(b *testing.B) { gvisor.BenchStart(b, e.rt, withPids(e.spec("bstartp"))) })
}

// withoutLauncher makes the agent start commands itself (Go's fork+exec)
// instead of through its launcher, for comparison.
func withoutLauncher(s container.Spec) container.Spec {
	s.Env = append(s.Env, "TURNBOX_AGENT_LAUNCHER=0")
	return s
}

// withPids sets embedded's default pids limit, which makes the agent set
// up a pids cgroup and RLIMIT_NPROC and fork from a dedicated thread.
func withPids(s container.Spec) container.Spec {
	s.Limits.Pids = 1024
	return s
}

func BenchmarkPauseResume(b *testing.B) {
	e := newEnv(b)
	b.Run("control-socket", func(b *testing.B) { gvisor.BenchPauseResume(b, e.rt, e.spec("bpk"), gvisor.PauseControl) })
	b.Run("cgroup-freezer", func(b *testing.B) { gvisor.BenchPauseResume(b, e.rt, e.spec("bpf"), gvisor.PauseCgroupFreezer) })
	b.Run("runsc-cli", func(b *testing.B) { gvisor.BenchPauseResume(b, e.rt, e.spec("bpc"), gvisor.PauseRunscCLI) })
}

// BenchmarkExecOwnRoot compares an Exec of `true` in a sandbox whose
// commands run in the image (the older layout) with one whose commands
// run chrooted into their own root in the bound volume (container.Spec
// Root), interleaved call by call so that both see the same load.
func BenchmarkExecOwnRoot(b *testing.B) {
	e := newEnv(b)
	tree := filepath.Join(b.TempDir(), "rvol", "tree")
	if err := os.MkdirAll(filepath.Dir(tree), 0o755); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", e.rootfs, tree).CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	rootSpec := e.spec("bexecroot")
	rootSpec.Root, rootSpec.Workspace = tree, filepath.Join(tree, "workspace")
	sbs := []*gvisor.Sandbox{e.start(b, e.spec("bexecimg")), e.start(b, rootSpec)}
	ctx := context.Background()
	trips := make([][]time.Duration, len(sbs))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j, sb := range sbs {
			t0 := time.Now()
			if st, err := sb.Exec(ctx, container.Process{Args: []string{"true"}}); err != nil || st.Code != 0 {
				b.Fatalf("exec: %+v %v", st, err)
			}
			trips[j] = append(trips[j], time.Since(t0))
		}
	}
	b.StopTimer()
	for j, name := range []string{"image", "own-root"} {
		d := slices.Clone(trips[j])
		slices.Sort(d)
		b.ReportMetric(float64(d[len(d)/2])/1e6, name+"-p50-ms")
		b.ReportMetric(float64(d[len(d)*9/10])/1e6, name+"-p90-ms")
	}
}

// BenchmarkDialPort measures a tunnel (Sandbox.DialPort) to an echo
// server inside a gVisor sandbox with loopback only (see
// containertest.BenchPortEcho; compare with the in-process agent's
// BenchmarkDialPort in container/agent).
func BenchmarkDialPort(b *testing.B) {
	e := newEnv(b)
	sb := e.start(b, e.spec("bport"))
	port, pd := containertest.EchoServer(b, sb)
	containertest.BenchPortEcho(b, []containertest.PortDialer{
		{Name: "tunnel", Dial: func(ctx context.Context) (net.Conn, error) { return pd.DialPort(ctx, port) }},
	})
}
