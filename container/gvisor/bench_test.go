package gvisor_test

import (
	"testing"

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
