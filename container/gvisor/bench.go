package gvisor

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/turnbox/turnbox/container"
)

// The Bench* functions are benchmark bodies shared by this package's
// benchmarks and the turnbox bench command. Each takes a runtime and a
// spec whose RootFS holds /bin/true and /bin/sh (a busybox rootfs); the
// ones that need a running sandbox start it themselves, with the spec's ID.

// BenchExec measures an Exec round trip of `true` through the agent. It
// reports the median round trip (median-ms) and the median time the agent
// itself measured from fork to reaping the command (agent-ms): the
// difference is what the protocol and the agent's bookkeeping cost.
func BenchExec(b *testing.B, r *Runtime, spec container.Spec) {
	sb := mustStart(b, r, spec)
	defer sb.Stop(context.Background())
	ctx := context.Background()
	p := container.Process{Args: []string{"true"}}
	trip := make([]time.Duration, 0, b.N)
	inside := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		st, err := sb.Exec(ctx, p)
		if err != nil || st.Code != 0 {
			b.Fatalf("exec: %+v %v", st, err)
		}
		trip = append(trip, time.Since(t0))
		inside = append(inside, st.Duration)
	}
	b.StopTimer()
	b.ReportMetric(medianMS(trip), "median-ms")
	b.ReportMetric(medianMS(inside), "agent-ms")
}

// medianMS returns the median of d in milliseconds.
func medianMS(d []time.Duration) float64 {
	if len(d) == 0 {
		return 0
	}
	d = slices.Clone(d)
	slices.Sort(d)
	return float64(d[len(d)/2]) / float64(time.Millisecond)
}

// BenchRunscExec measures the baseline: one `runsc exec` process per call
// running `true` in the same kind of running sandbox.
func BenchRunscExec(b *testing.B, r *Runtime, spec container.Spec) {
	sb := mustStart(b, r, spec)
	defer sb.Stop(context.Background())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.RunscExecTrue(context.Background(), spec.ID, spec.Network); err != nil {
			b.Fatal(err)
		}
	}
}

// RunscExecTrue runs the "runsc-exec" baseline once: a `runsc exec` process
// running /bin/true in the running sandbox id.
func (r *Runtime) RunscExecTrue(ctx context.Context, id string, network container.Network) error {
	args := r.RunscArgs(network, "exec", "--cwd", "/", id, "/bin/true")
	if out, err := exec.CommandContext(ctx, r.cfg.runsc, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("runsc exec: %v: %s", err, out)
	}
	return nil
}

// RunscRunBaseline prepares the "runsc-run" baseline (the reference
// design: a fresh `runsc run` of /bin/true per call, with spec's rootfs and
// flags). run(i) runs it once; cleanup removes the bundle.
func (r *Runtime) RunscRunBaseline(spec container.Spec) (run func(ctx context.Context, i int) error, cleanup func(), err error) {
	bundle, err := os.MkdirTemp(r.bundleDir, ".bench-run-")
	if err != nil {
		return nil, nil, err
	}
	cleanup = func() {
		os.RemoveAll(bundle)
		r.releaseShared()
	}
	s := r.ociSpec(spec)
	s.Process.Args = []string{"/bin/true"}
	s.Linux.CgroupsPath = ""
	if err := writeSpec(bundle, s); err != nil {
		cleanup()
		return nil, nil, err
	}
	run = func(ctx context.Context, i int) error {
		id := fmt.Sprintf("%s-run-%d", spec.ID, i)
		args := r.RunscArgs(spec.Network, "run", "--bundle", bundle, id)
		if out, err := exec.CommandContext(ctx, r.cfg.runsc, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("runsc run: %v: %s", err, out)
		}
		return nil
	}
	return run, cleanup, nil
}

// BenchRunscRun measures the reference design's baseline: a fresh `runsc
// run` of `true` per call (with the same rootfs and flags).
func BenchRunscRun(b *testing.B, r *Runtime, spec container.Spec) {
	run, cleanup, err := r.RunscRunBaseline(spec)
	if err != nil {
		b.Fatal(err)
	}
	defer cleanup()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := run(context.Background(), i); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
}

// BenchStart measures sandbox start to the first completed Exec, plus
// nothing else: Stop is outside the timer.
func BenchStart(b *testing.B, r *Runtime, spec container.Spec) {
	ctx := context.Background()
	base := spec.ID
	for i := 0; i < b.N; i++ {
		spec.ID = fmt.Sprintf("%s-%d", base, i)
		sb, err := r.StartSandbox(ctx, spec)
		if err != nil {
			b.Fatal(err)
		}
		if st, err := sb.Exec(ctx, container.Process{Args: []string{"true"}}); err != nil || st.Code != 0 {
			b.Fatalf("first exec: %+v %v", st, err)
		}
		b.StopTimer()
		if err := sb.Stop(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// PauseMode selects how BenchPauseResume pauses and resumes.
type PauseMode int

const (
	// PauseControl is the runtime's own path: the sandbox's control
	// socket.
	PauseControl PauseMode = iota
	// PauseCgroupFreezer freezes the sandbox's cgroup (not safe with
	// systrap; measured for comparison).
	PauseCgroupFreezer
	// PauseRunscCLI is the baseline: a `runsc pause` and a `runsc resume`
	// process per cycle.
	PauseRunscCLI
)

// BenchPauseResume measures a Pause+Resume cycle in the given mode.
func BenchPauseResume(b *testing.B, r *Runtime, spec container.Spec, mode PauseMode) {
	saved := r.cfg.freezer
	r.cfg.freezer = mode == PauseCgroupFreezer
	sb := mustStart(b, r, spec)
	r.cfg.freezer = saved
	defer sb.Stop(context.Background())
	if mode == PauseCgroupFreezer && !sb.UsesCgroupFreezer() {
		b.Skipf("cgroup freezer not available for this sandbox")
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.PauseResumeOnce(ctx, sb, mode); err != nil {
			b.Fatal(err)
		}
	}
}

// PauseResumeOnce pauses and resumes sb once in the given mode.
func (r *Runtime) PauseResumeOnce(ctx context.Context, sb *Sandbox, mode PauseMode) error {
	if mode == PauseRunscCLI {
		if _, err := r.runsc(ctx, "pause", sb.ID()); err != nil {
			return err
		}
		_, err := r.runsc(ctx, "resume", sb.ID())
		return err
	}
	if err := sb.Pause(ctx); err != nil {
		return err
	}
	return sb.Resume(ctx)
}

func mustStart(b *testing.B, r *Runtime, spec container.Spec) *Sandbox {
	b.Helper()
	sb, err := r.StartSandbox(context.Background(), spec)
	if err != nil {
		b.Fatal(err)
	}
	return sb
}

func writeSpec(bundle string, s *specs.Spec) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600)
}
