package gvisor_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/agent/agenttest"
	"github.com/turnbox/turnbox/container/containertest"
	"github.com/turnbox/turnbox/container/gvisor"
	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/internal/testenv"
)

var (
	rootfsOnce sync.Once
	rootfsDir  string
	rootfsErr  error
)

// busybox returns a busybox root filesystem shared by the tests.
func busybox(t testing.TB) string {
	t.Helper()
	rootfsOnce.Do(func() {
		rootfsDir, rootfsErr = os.MkdirTemp("", "turnbox-gvisor-rootfs-")
		if rootfsErr == nil {
			rootfsErr = rootfs.BuildBusybox(rootfsDir)
		}
	})
	if rootfsErr != nil {
		t.Fatal(rootfsErr)
	}
	return rootfsDir
}

// env is one test's runtime and sandbox inputs.
type env struct {
	rt        *gvisor.Runtime
	runsc     string
	rootfs    string
	workspace string
}

func newEnv(t testing.TB, opts ...gvisor.Option) *env {
	t.Helper()
	testenv.RequireRoot(t)
	runsc := testenv.RequireBinary(t, "runsc")
	_, err := rootfs.FindBusybox()
	testenv.Require(t, err == nil, "static busybox (apt install busybox-static)")
	dir := t.TempDir()
	ws := filepath.Join(dir, "vol", "ws")
	if err := os.MkdirAll(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	opts = append([]gvisor.Option{
		gvisor.WithRunsc(runsc),
		gvisor.WithAgent(agenttest.Build(t)),
		gvisor.WithRoot(filepath.Join(dir, "root")),
	}, opts...)
	rt, err := gvisor.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return &env{rt: rt, runsc: runsc, rootfs: busybox(t), workspace: ws}
}

// dumpSandbox logs what the sandbox id holds (runsc ps) and the end of its
// agent's log, to tell a starved agent from a stuck one.
func (e *env) dumpSandbox(t *testing.T, id string) {
	t.Helper()
	ps, err := exec.Command(e.runsc, "--root", filepath.Join(e.rt.Root(), "state"), "ps", id).CombinedOutput()
	t.Logf("runsc ps (%v):\n%s", err, lastLines(string(ps), 40))
	log, err := os.ReadFile(filepath.Join(e.rt.Root(), "bundles", id, "agent.log"))
	t.Logf("agent.log (%v):\n%s", err, lastLines(string(log), 40))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (e *env) spec(id string) container.Spec {
	return container.Spec{ID: id, RootFS: e.rootfs, Workspace: e.workspace, Env: []string{"TURNBOX_TEST=1"}}
}

func (e *env) start(t testing.TB, spec container.Spec) *gvisor.Sandbox {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sb, err := e.rt.StartSandbox(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sb.Stop(context.Background()); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return sb
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestCgroupFreezer: WithCgroupFreezer(true) pauses through the cgroup's
// freezer (the suite's PauseResume covers the default, the control
// socket).
func TestCgroupFreezer(t *testing.T) {
	e := newEnv(t, gvisor.WithCgroupFreezer(true))
	sb := e.start(t, e.spec("pause"))
	if !sb.UsesCgroupFreezer() {
		t.Fatal("UsesCgroupFreezer = false with WithCgroupFreezer(true)")
	}
	counter := filepath.Join(e.workspace, "counter")
	go func() {
		_, _ = sb.Exec(context.Background(), container.Process{Args: []string{"sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /workspace/counter.tmp; mv /workspace/counter.tmp /workspace/counter; sleep 0.01; done"}})
	}()
	read := func() int {
		b, _ := os.ReadFile(counter)
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	deadline := time.Now().Add(20 * time.Second)
	for read() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("counter does not advance")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := sb.Pause(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	before := read()
	time.Sleep(300 * time.Millisecond)
	if after := read(); after != before {
		t.Fatalf("counter advanced while paused: %d -> %d", before, after)
	}
	if err := sb.Resume(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for read() <= before {
		if time.Now().After(deadline) {
			t.Fatal("counter does not advance after Resume")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := sb.KillAll(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

// runscProcs returns the host pids of runsc processes using root.
func runscProcs(root string) []int {
	out, _ := exec.Command("pgrep", "-f", "runsc.*"+root).Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

func cgroupDirs(id string) []string {
	m, _ := filepath.Glob("/sys/fs/cgroup/*/turnbox-gvisor-*/" + id)
	return m
}

// TestStopCleansUp: Stop leaves no runsc process, cgroup or state behind
// (the suite's StopIdempotent checks what the sandbox reports).
func TestStopCleansUp(t *testing.T) {
	e := newEnv(t)
	sb := e.start(t, e.spec("stopme"))
	if len(cgroupDirs("stopme")) == 0 {
		t.Fatal("no cgroup found for the running sandbox")
	}
	if len(runscProcs(e.rt.Root())) == 0 {
		t.Fatal("no runsc processes found for the running sandbox")
	}
	if err := sb.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(runscProcs(e.rt.Root())) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("runsc processes left: %v", runscProcs(e.rt.Root()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := cgroupDirs("stopme"); len(d) > 0 {
		t.Fatalf("cgroups left: %v", d)
	}
	if ids, err := e.rt.List(ctxT(t)); err != nil || len(ids) != 0 {
		t.Fatalf("List after Stop: %v %v", ids, err)
	}
}

// TestReap plays the documented restart path: a second runtime on the
// same root (a restarted host) reaps every sandbox the first one started,
// whose handles then report themselves dead, and starts a fresh sandbox
// for the same session.
func TestReap(t *testing.T) {
	e := newEnv(t)
	a := e.start(t, e.spec("one"))
	b := e.start(t, e.spec("two"))
	rt2, err := gvisor.New(gvisor.WithRunsc(e.runsc), gvisor.WithAgent(agenttest.Build(t)), gvisor.WithRoot(e.rt.Root()))
	if err != nil {
		t.Fatal(err)
	}
	ids, err := rt2.List(ctxT(t))
	if err != nil || strings.Join(ids, ",") != "one,two" {
		t.Fatalf("List = %v %v", ids, err)
	}
	if err := rt2.Reap(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if ids, _ = rt2.List(ctxT(t)); len(ids) != 0 {
		t.Fatalf("after Reap: %v", ids)
	}
	if p := runscProcs(e.rt.Root()); len(p) > 0 {
		t.Fatalf("runsc processes left after Reap: %v", p)
	}
	for _, sb := range []*gvisor.Sandbox{a, b} {
		select {
		case <-sb.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("reaped sandbox %s: Done not closed", sb.ID())
		}
		if !errors.Is(sb.Err(), container.ErrNotRunning) {
			t.Fatalf("reaped sandbox %s: Err = %v", sb.ID(), sb.Err())
		}
		if d := cgroupDirs(sb.ID()); len(d) > 0 {
			t.Fatalf("cgroups left: %v", d)
		}
	}
	sb, err := rt2.Start(ctxT(t), e.spec("one"))
	if err != nil {
		t.Fatalf("a fresh sandbox for a reaped session: %v", err)
	}
	t.Cleanup(func() { _ = sb.Stop(context.Background()) })
	if got := containertest.MustSh(t, sb, "echo fresh"); got != "fresh\n" {
		t.Fatalf("fresh sandbox: %q", got)
	}
}

func TestCheckpoint(t *testing.T) {
	e := newEnv(t)
	sb := e.start(t, e.spec("ckpt"))
	dir := filepath.Join(t.TempDir(), "img")
	if err := sb.Checkpoint(ctxT(t), dir); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) == 0 {
		t.Fatal("empty checkpoint image")
	}
	if _, out, _ := containertest.Sh(t, sb, "echo still"); out != "still\n" {
		t.Fatal("sandbox not running after checkpoint")
	}
}

// TestSuite runs the container conformance suite on the gVisor runtime.
func TestSuite(t *testing.T) {
	containertest.Run(t, func(t *testing.T) container.Runtime { return newEnv(t).rt },
		containertest.WithRootFS(func(t *testing.T) string { return busybox(t) }),
		containertest.WithKill(func(t *testing.T, sb container.Sandbox) {
			pid := sb.(*gvisor.Sandbox).Pid()
			if pid <= 0 {
				t.Fatal("no runsc sandbox pid")
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatalf("killing the sandbox: %v", err)
			}
		}),
		containertest.WithLimits(),
		containertest.WithSealedVolume(gvisor.VolumeMount),
		containertest.WithOwnRoot())
}

func TestSecurityIsolation(t *testing.T) {
	e := newEnv(t)
	secretDir := t.TempDir()
	secret := filepath.Join(secretDir, "secret")
	if err := os.WriteFile(secret, []byte("TOPSECRET\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sb := e.start(t, e.spec("sec"))

	// A host file outside the rootfs and the workspace is not reachable,
	// by its host path or by escaping the volume mount.
	_, out, _ := containertest.Sh(t, sb, "cat "+secret+" 2>&1; cat /workspace/../../"+filepath.Base(secretDir)+"/secret 2>&1; cat /.turnbox/vol/../../secret 2>&1; grep -rs TOPSECRET /.turnbox /workspace /etc /root /tmp /home /var | head -1")
	if strings.Contains(out, "TOPSECRET") {
		t.Fatalf("sandbox read a host file: %q", out)
	}

	// Only the sandbox's processes are visible.
	_, out, _ = containertest.Sh(t, sb, "ls /proc | grep -c '^[0-9]'")
	if n, _ := strconv.Atoi(strings.TrimSpace(out)); n == 0 || n > 5 {
		t.Fatalf("sandbox sees %s processes", out)
	}
	_, out, _ = containertest.Sh(t, sb, "cat /proc/1/cmdline | tr '\\0' ' '")
	if !strings.HasPrefix(out, gvisor.AgentPath) {
		t.Fatalf("pid 1 is %q, want the agent", out)
	}
	_, out, _ = containertest.Sh(t, sb, "for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr '\\0' ' '; echo; done")
	if strings.Contains(out, "runsc") || strings.Contains(out, "go test") {
		t.Fatalf("host processes visible:\n%s", out)
	}
	// Kernel is gVisor's, not the host's.
	if _, out, _ = containertest.Sh(t, sb, "dmesg 2>/dev/null | head -1; uname -r"); strings.Contains(out, "6.18") && !strings.Contains(out, "gVisor") {
		t.Logf("uname/dmesg inside: %q", out)
	}

	// Network none: loopback only.
	_, out, _ = containertest.Sh(t, sb, "ls /sys/class/net 2>/dev/null || cat /proc/net/dev")
	if f := strings.Fields(out); len(f) != 1 || f[0] != "lo" {
		if !strings.Contains(out, "lo:") || strings.Count(out, ":") != 1 {
			t.Fatalf("network interfaces: %q", out)
		}
	}
	// The rootfs is not writable from the sandbox on the host.
	containertest.Sh(t, sb, "rm -f /bin/ls; echo x > /bin/new")
	if _, err := os.Lstat(filepath.Join(e.rootfs, "bin/ls")); err != nil {
		t.Fatalf("sandbox removed a rootfs file on the host: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(e.rootfs, "bin/new")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("sandbox wrote into the host rootfs: %v", err)
	}
}

func TestNetworkHost(t *testing.T) {
	e := newEnv(t)
	spec := e.spec("nethost")
	spec.Network = container.NetworkHost
	sb := e.start(t, spec)
	_, out, _ := containertest.Sh(t, sb, "cat /proc/net/dev")
	if strings.Count(out, ":") < 2 {
		t.Fatalf("host network shows only %q", out)
	}
}

func TestPidsLimitContainsForkBomb(t *testing.T) {
	e := newEnv(t)
	spec := e.spec("forkbomb")
	spec.Limits.Pids = 64
	sb := e.start(t, spec)

	// Commands must not hold CAP_SYS_RESOURCE (bit 24), which would
	// exempt them from the sandbox's RLIMIT_NPROC.
	if _, out, _ := containertest.Sh(t, sb, "grep -E '^Cap(Eff|Bnd)' /proc/self/status"); strings.Count(out, "\n") != 2 {
		t.Fatalf("capabilities: %q", out)
	} else {
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			v, err := strconv.ParseUint(f[len(f)-1], 16, 64)
			if err != nil || v&(1<<24) != 0 {
				t.Fatalf("command holds CAP_SYS_RESOURCE: %q", line)
			}
		}
	}

	// Count the sandbox's tasks from outside while the bomb runs: gVisor's
	// pids cgroup does not count zombies, the sandbox's RLIMIT_NPROC does.
	stop := make(chan struct{})
	peak := make(chan int, 1)
	go func() {
		max := 0
		defer func() { peak <- max }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			out, err := exec.Command(e.runsc, "--root", filepath.Join(e.rt.Root(), "state"), "ps", spec.ID).Output()
			if err != nil {
				continue
			}
			if n := strings.Count(string(out), "\n") - 1; n > max {
				max = n
			}
		}
	}()
	start := time.Now()
	st, err := sb.Exec(ctxT(t), container.Process{
		Args:    []string{"sh", "-c", "bomb() { bomb | bomb & }; bomb; sleep 2"},
		Timeout: 5 * time.Second,
	})
	took := time.Since(start)
	close(stop)
	max := <-peak
	t.Logf("fork bomb: %+v %v after %v; at most %d tasks", st, err, took, max)
	if err != nil {
		t.Fatalf("fork bomb: %v", err)
	}
	// The agent's threads (~10) and the zombie reserve (64) come on top.
	if limit := int(spec.Limits.Pids) + 64 + 32; max > limit {
		t.Errorf("the sandbox held %d tasks, limit %d", max, limit)
	}
	killStart := time.Now()
	if err := sb.KillAll(ctxT(t)); err != nil {
		e.dumpSandbox(t, spec.ID)
		t.Fatalf("KillAll after fork bomb: %v", err)
	}
	t.Logf("KillAll after the fork bomb took %v", time.Since(killStart))
	if _, out, _ := containertest.Sh(t, sb, "echo survived"); out != "survived\n" {
		t.Fatalf("sandbox did not survive the fork bomb: %q", out)
	}
	select {
	case <-sb.Done():
		t.Fatalf("sandbox died: %v", sb.Err())
	default:
	}
}
