package gvisor_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/agent/agenttest"
	"github.com/turnbox/turnbox/container/gvisor"
	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/internal/testenv"
	"github.com/turnbox/turnbox/snapshot/guard"
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

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func sh(t testing.TB, sb container.Sandbox, script string) (container.ExitStatus, string, string) {
	t.Helper()
	var out, errb syncBuffer
	st, err := sb.Exec(ctxT(t), container.Process{Args: []string{"sh", "-c", script}, Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatalf("Exec %q: %v", script, err)
	}
	return st, out.String(), errb.String()
}

func TestExecBasics(t *testing.T) {
	e := newEnv(t)
	sb := e.start(t, e.spec("basics"))

	st, out, errs := sh(t, sb, "echo hello; echo oops >&2; exit 7")
	if st.Code != 7 || out != "hello\n" || errs != "oops\n" {
		t.Fatalf("got %+v %q %q", st, out, errs)
	}
	_, out, _ = sh(t, sb, "echo $TURNBOX_TEST; pwd")
	if out != "1\n/workspace\n" {
		t.Fatalf("env/pwd: %q", out)
	}
	var o syncBuffer
	if err := os.MkdirAll(filepath.Join(e.workspace, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	st, err := sb.Exec(ctxT(t), container.Process{Args: []string{"sh", "-c", "echo $X; pwd"}, Env: []string{"X=y", "TURNBOX_TEST=2"}, Dir: "sub", Stdout: &o})
	if err != nil || st.Code != 0 || o.String() != "y\n/workspace/sub\n" {
		t.Fatalf("env+dir: %+v %v %q", st, err, o.String())
	}
	if _, err := sb.Exec(ctxT(t), container.Process{Args: []string{"true"}, Dir: "/etc"}); !errors.Is(err, container.ErrInvalidSpec) {
		t.Fatalf("Dir outside workspace: %v", err)
	}
	// Writes in the workspace reach the host; writes elsewhere do not
	// touch the host's root filesystem.
	sh(t, sb, "echo from-sandbox > /workspace/f; echo x > /etc/scratch")
	if b, _ := os.ReadFile(filepath.Join(e.workspace, "f")); string(b) != "from-sandbox\n" {
		t.Fatalf("workspace file on host: %q", b)
	}
	if _, err := os.Stat(filepath.Join(e.rootfs, "etc/scratch")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("sandbox wrote into the host rootfs: %v", err)
	}
}

func TestStreamsBeforeExit(t *testing.T) {
	e := newEnv(t)
	sb := e.start(t, e.spec("stream"))
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		_, err := sb.Exec(ctxT(t), container.Process{Args: []string{"sh", "-c", "echo first; while [ ! -e /workspace/gate ]; do sleep 0.01; done; echo second"}, Stdout: &out})
		done <- err
	}()
	deadline := time.Now().Add(20 * time.Second)
	for out.String() != "first\n" {
		if time.Now().After(deadline) {
			t.Fatalf("no output before exit: %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("exited early: %v", err)
	default:
	}
	if err := os.WriteFile(filepath.Join(e.workspace, "gate"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if out.String() != "first\nsecond\n" {
		t.Fatalf("%q", out.String())
	}
}

// countProcs returns the number of processes the sandbox sees but the
// agent (pid 1).
func countProcs(t testing.TB, sb container.Sandbox) int {
	t.Helper()
	_, out, _ := sh(t, sb, `n=0; for p in /proc/[0-9]*; do read -r c < $p/comm; [ "$c" = turnbox-launch ] || n=$((n+1)); done; echo $n`)
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("count: %q", out)
	}
	// Minus the agent and the counting shell itself (the agent's
	// launcher, named turnbox-launch, is not counted: it is restarted in
	// the background after KillAll).
	return n - 2
}

func TestTimeoutKillsTree(t *testing.T) {
	e := newEnv(t)
	sb := e.start(t, e.spec("timeout"))
	start := time.Now()
	var out syncBuffer
	st, err := sb.Exec(ctxT(t), container.Process{
		Args:    []string{"sh", "-c", `sleep 1000 & sh -c 'set -m; sleep 1001 & wait' & echo started; wait`},
		Stdout:  &out,
		Timeout: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !st.TimedOut || st.Code != 137 || out.String() != "started\n" {
		t.Fatalf("%+v %q", st, out.String())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
	deadline := time.Now().Add(5 * time.Second)
	for countProcs(t, sb) != 0 {
		if time.Now().After(deadline) {
			_, ps, _ := sh(t, sb, "ps")
			t.Fatalf("processes survived the timeout:\n%s", ps)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConcurrentExecs(t *testing.T) {
	e := newEnv(t)
	sb := e.start(t, e.spec("concurrent"))
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out syncBuffer
			st, err := sb.Exec(ctxT(t), container.Process{Args: []string{"sh", "-c", fmt.Sprintf("sleep 0.2; echo %d; exit %d", i, i%5)}, Stdout: &out})
			if err != nil || st.Code != i%5 || out.String() != fmt.Sprintf("%d\n", i) {
				t.Errorf("exec %d: %+v %v %q", i, st, err, out.String())
			}
		}()
	}
	wg.Wait()
}

func TestPauseResume(t *testing.T) {
	for _, freezer := range []bool{true, false} {
		t.Run(fmt.Sprintf("freezer=%v", freezer), func(t *testing.T) {
			e := newEnv(t, gvisor.WithCgroupFreezer(freezer))
			sb := e.start(t, e.spec("pause"))
			if sb.UsesCgroupFreezer() != freezer {
				t.Fatalf("UsesCgroupFreezer = %v", sb.UsesCgroupFreezer())
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
		})
	}
}

func TestKillAll(t *testing.T) {
	e := newEnv(t)
	sb := e.start(t, e.spec("killall"))
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := sb.Exec(ctxT(t), container.Process{Args: []string{"sh", "-c", "sleep 1000 & wait"}})
			if err != nil || st.Code != 137 {
				t.Errorf("killed exec: %+v %v", st, err)
			}
		}()
	}
	// A daemon that left its session entirely.
	sh(t, sb, "setsid sleep 1000 >/dev/null 2>&1 < /dev/null &")
	deadline := time.Now().Add(10 * time.Second)
	for countProcs(t, sb) < 7 {
		if time.Now().After(deadline) {
			_, ps, _ := sh(t, sb, "ps")
			t.Fatalf("processes did not start:\n%s", ps)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := sb.KillAll(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if n := countProcs(t, sb); n != 0 {
		_, ps, _ := sh(t, sb, "ps")
		t.Fatalf("%d processes survived KillAll:\n%s", n, ps)
	}
}

// TestRenameSwap checks that a tree renamed into place at the workspace
// path on the host is what the next command sees.
func TestRenameSwap(t *testing.T) {
	e := newEnv(t)
	if err := os.WriteFile(filepath.Join(e.workspace, "f"), []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sb := e.start(t, e.spec("swap"))
	if _, out, _ := sh(t, sb, "cat /workspace/f"); out != "old\n" {
		t.Fatalf("before: %q", out)
	}
	// As a backend's rollback does: a tree made outside the volume's
	// (sealed) directory, exchanged into place.
	sibling := filepath.Join(t.TempDir(), "restore")
	if err := os.Mkdir(sibling, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sibling, "f"), []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := guard.Unsealed(filepath.Dir(e.workspace), func() error {
		return unix.Renameat2(unix.AT_FDCWD, sibling, unix.AT_FDCWD, e.workspace, unix.RENAME_EXCHANGE)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, out, _ := sh(t, sb, "cat /workspace/f"); out != "new\n" {
		t.Fatalf("after rename-swap the sandbox sees %q, want new", out)
	}
	// And writes go to the new tree.
	sh(t, sb, "echo w > /workspace/g")
	if b, _ := os.ReadFile(filepath.Join(e.workspace, "g")); string(b) != "w\n" {
		t.Fatalf("write after swap: %q", b)
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
	if err := sb.Stop(ctxT(t)); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	select {
	case <-sb.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if sb.Err() != nil {
		t.Fatalf("Err after Stop = %v", sb.Err())
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
	if _, err := sb.Exec(ctxT(t), container.Process{Args: []string{"true"}}); !errors.Is(err, container.ErrNotRunning) {
		t.Fatalf("Exec after Stop: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(e.workspace, "..", "ws")); err == nil {
		_ = b
	}
}

func TestListReap(t *testing.T) {
	e := newEnv(t)
	a := e.start(t, e.spec("keep"))
	b := e.start(t, e.spec("drop"))
	ids, err := e.rt.List(ctxT(t))
	if err != nil || strings.Join(ids, ",") != "drop,keep" {
		t.Fatalf("List = %v %v", ids, err)
	}
	if err := e.rt.Reap(ctxT(t), map[string]bool{"keep": true}); err != nil {
		t.Fatal(err)
	}
	ids, _ = e.rt.List(ctxT(t))
	if strings.Join(ids, ",") != "keep" {
		t.Fatalf("after Reap: %v", ids)
	}
	select {
	case <-b.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("reaped sandbox's Done not closed")
	}
	if !errors.Is(b.Err(), container.ErrNotRunning) {
		t.Fatalf("reaped sandbox Err = %v", b.Err())
	}
	if d := cgroupDirs("drop"); len(d) > 0 {
		t.Fatalf("cgroups left: %v", d)
	}
	if _, out, _ := sh(t, a, "echo alive"); out != "alive\n" {
		t.Fatal("kept sandbox broken")
	}
}

// TestAgentKilled kills the sandbox's processes from the host: Exec must
// fail with ErrNotRunning and Done must close.
func TestAgentKilled(t *testing.T) {
	e := newEnv(t)
	sb := e.start(t, e.spec("victim"))
	res := make(chan error, 1)
	go func() {
		_, err := sb.Exec(ctxT(t), container.Process{Args: []string{"sleep", "1000"}})
		res <- err
	}()
	time.Sleep(200 * time.Millisecond)
	for _, pid := range runscProcs(e.rt.Root()) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	select {
	case err := <-res:
		if !errors.Is(err, container.ErrNotRunning) {
			t.Fatalf("Exec err = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Exec did not fail")
	}
	select {
	case <-sb.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed")
	}
	if !errors.Is(sb.Err(), container.ErrNotRunning) {
		t.Fatalf("Err = %v", sb.Err())
	}
	if _, err := sb.Exec(ctxT(t), container.Process{Args: []string{"true"}}); !errors.Is(err, container.ErrNotRunning) {
		t.Fatalf("Exec on a dead sandbox: %v", err)
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
	if _, out, _ := sh(t, sb, "echo still"); out != "still\n" {
		t.Fatal("sandbox not running after checkpoint")
	}
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
	_, out, _ := sh(t, sb, "cat "+secret+" 2>&1; cat /workspace/../../"+filepath.Base(secretDir)+"/secret 2>&1; cat /.turnbox/vol/../../secret 2>&1; grep -rs TOPSECRET /.turnbox /workspace /etc /root /tmp /home /var | head -1")
	if strings.Contains(out, "TOPSECRET") {
		t.Fatalf("sandbox read a host file: %q", out)
	}

	// Only the sandbox's processes are visible.
	_, out, _ = sh(t, sb, "ls /proc | grep -c '^[0-9]'")
	if n, _ := strconv.Atoi(strings.TrimSpace(out)); n == 0 || n > 5 {
		t.Fatalf("sandbox sees %s processes", out)
	}
	_, out, _ = sh(t, sb, "cat /proc/1/cmdline | tr '\\0' ' '")
	if !strings.HasPrefix(out, gvisor.AgentPath) {
		t.Fatalf("pid 1 is %q, want the agent", out)
	}
	_, out, _ = sh(t, sb, "for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr '\\0' ' '; echo; done")
	if strings.Contains(out, "runsc") || strings.Contains(out, "go test") {
		t.Fatalf("host processes visible:\n%s", out)
	}
	// Kernel is gVisor's, not the host's.
	if _, out, _ = sh(t, sb, "dmesg 2>/dev/null | head -1; uname -r"); strings.Contains(out, "6.18") && !strings.Contains(out, "gVisor") {
		t.Logf("uname/dmesg inside: %q", out)
	}

	// Network none: loopback only.
	_, out, _ = sh(t, sb, "ls /sys/class/net 2>/dev/null || cat /proc/net/dev")
	if f := strings.Fields(out); len(f) != 1 || f[0] != "lo" {
		if !strings.Contains(out, "lo:") || strings.Count(out, ":") != 1 {
			t.Fatalf("network interfaces: %q", out)
		}
	}
	// The rootfs is not writable from the sandbox on the host.
	sh(t, sb, "rm -f /bin/ls; echo x > /bin/new")
	if _, err := os.Lstat(filepath.Join(e.rootfs, "bin/ls")); err != nil {
		t.Fatalf("sandbox removed a rootfs file on the host: %v", err)
	}
}

func TestNetworkHost(t *testing.T) {
	e := newEnv(t)
	spec := e.spec("nethost")
	spec.Network = container.NetworkHost
	sb := e.start(t, spec)
	_, out, _ := sh(t, sb, "cat /proc/net/dev")
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
	if _, out, _ := sh(t, sb, "grep -E '^Cap(Eff|Bnd)' /proc/self/status"); strings.Count(out, "\n") != 2 {
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
		t.Fatalf("KillAll after fork bomb: %v", err)
	}
	t.Logf("KillAll after the fork bomb took %v", time.Since(killStart))
	if _, out, _ := sh(t, sb, "echo survived"); out != "survived\n" {
		t.Fatalf("sandbox did not survive the fork bomb: %q", out)
	}
	select {
	case <-sb.Done():
		t.Fatalf("sandbox died: %v", sb.Err())
	default:
	}
}

func TestMemoryLimitOOM(t *testing.T) {
	e := newEnv(t)
	spec := e.spec("oom")
	spec.Limits.MemoryBytes = 256 << 20
	sb := e.start(t, spec)
	// Grow a shell variable without bound.
	st, err := sb.Exec(ctxT(t), container.Process{
		Args:    []string{"sh", "-c", "x=0123456789abcdef; while true; do x=$x$x; done"},
		Timeout: 60 * time.Second,
	})
	if err != nil {
		t.Fatalf("Exec: %v (sandbox err %v)", err, sb.Err())
	}
	t.Logf("memory hog: %+v", st)
	if st.Code == 0 || st.TimedOut {
		t.Fatalf("memory hog was not killed: %+v", st)
	}
	if !st.OOMKilled {
		t.Fatalf("memory hog killed but not reported as OOMKilled: %+v", st)
	}
	if _, out, _ := sh(t, sb, "echo survived"); out != "survived\n" {
		t.Fatalf("sandbox did not survive the memory hog: %q", out)
	}
}

// TestVolumeDirSealed: the directory the sandbox binds at VolumeMount is
// sealed while the sandbox lives and unsealed once it stopped.
func TestVolumeDirSealed(t *testing.T) {
	e := newEnv(t)
	sb := e.start(t, e.spec("sealed"))
	dir := filepath.Dir(e.workspace)
	if sealed, err := guard.Sealed(dir); err != nil || !sealed {
		t.Fatalf("while the sandbox runs: sealed=%v err=%v, want sealed", sealed, err)
	}
	ws := gvisor.VolumeMount + "/" + filepath.Base(e.workspace)
	if _, out, _ := sh(t, sb, "mv "+ws+" "+gvisor.VolumeMount+"/x 2>&1; true"); !strings.Contains(out, "not permitted") {
		t.Errorf("renaming beside the workspace from inside: %q, want 'Operation not permitted'", out)
	}
	if err := sb.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sealed, err := guard.Sealed(dir); err != nil || sealed {
		t.Fatalf("after Stop: sealed=%v err=%v, want unsealed", sealed, err)
	}
}
