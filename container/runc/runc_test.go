package runc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/runc"
	"github.com/turnbox/turnbox/snapshot/guard"
)

// signalWriter records writes and closes first on the first one.
type signalWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	first chan struct{}
	once  sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.once.Do(func() { close(w.first) })
	return w.buf.Write(p)
}

func TestEcho(t *testing.T) {
	rt := newRuntime(t)
	sb, _ := start(t, rt)
	if got := mustRun(t, sb, "echo hello"); got != "hello\n" {
		t.Fatalf("got %q", got)
	}
	if sb.Err() != nil {
		t.Fatalf("Err on a running sandbox: %v", sb.Err())
	}
}

func TestOutputStreamsBeforeExit(t *testing.T) {
	rt := newRuntime(t)
	sb, _ := start(t, rt)
	w := &signalWriter{first: make(chan struct{})}
	done := make(chan struct{})
	var st container.ExitStatus
	var err error
	go func() {
		defer close(done)
		st, err = sb.Exec(context.Background(), container.Process{
			Args:   []string{"sh", "-c", "echo first; sleep 3; echo second"},
			Stdout: w,
		})
	}()
	select {
	case <-w.first:
	case <-done:
		t.Fatal("Exec returned before any output was streamed")
	case <-time.After(2 * time.Second):
		t.Fatal("no output within 2s of a command that prints at once")
	}
	select {
	case <-done:
		t.Fatal("Exec returned while the command should still sleep")
	default:
	}
	<-done
	if err != nil || st.Code != 0 {
		t.Fatalf("Exec: %v %+v", err, st)
	}
	if got := w.buf.String(); got != "first\nsecond\n" {
		t.Fatalf("output %q", got)
	}
}

func TestExitCodes(t *testing.T) {
	rt := newRuntime(t)
	sb, _ := start(t, rt)
	for _, c := range []struct {
		script string
		code   int
	}{
		{"true", 0},
		{"exit 3", 3},
		{"false", 1},
		{"kill -9 $$", 137},
		{"kill -TERM $$", 128 + 15},
	} {
		st, _, _ := run(t, sb, c.script)
		if st.Code != c.code || st.TimedOut || st.OOMKilled {
			t.Errorf("%q: got %+v, want code %d", c.script, st, c.code)
		}
	}
	_, err := sb.Exec(context.Background(), container.Process{Args: []string{"/no/such/program"}})
	if err == nil {
		t.Errorf("Exec of a missing program: no error")
	}
	if _, err := sb.Exec(context.Background(), container.Process{}); !errors.Is(err, container.ErrInvalidSpec) {
		t.Errorf("Exec with no args: %v, want ErrInvalidSpec", err)
	}
}

func TestEnv(t *testing.T) {
	rt := newRuntime(t)
	sb, _ := start(t, rt, withEnv("BASE=one", "OVER=base"))
	var out bytes.Buffer
	st, err := sb.Exec(context.Background(), container.Process{
		Args:   []string{"sh", "-c", `echo "$BASE $OVER $EXTRA"; echo "$PATH"`},
		Env:    []string{"OVER=proc", "EXTRA=x"},
		Stdout: &out,
	})
	if err != nil || st.Code != 0 {
		t.Fatalf("Exec: %v %+v", err, st)
	}
	lines := strings.Split(out.String(), "\n")
	if lines[0] != "one proc x" {
		t.Errorf("env: got %q, want %q", lines[0], "one proc x")
	}
	if !strings.Contains(lines[1], "/bin") {
		t.Errorf("PATH %q", lines[1])
	}
}

func TestWorkdir(t *testing.T) {
	rt := newRuntime(t)
	sb, spec := start(t, rt)
	if err := os.MkdirAll(filepath.Join(spec.Workspace, "sub/dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := mustRun(t, sb, "pwd"); got != container.WorkspaceDir+"\n" {
		t.Errorf("default dir: %q", got)
	}
	var out bytes.Buffer
	st, err := sb.Exec(context.Background(), container.Process{
		Args: []string{"sh", "-c", "pwd; echo hi > here"}, Dir: "/workspace/sub/dir", Stdout: &out,
	})
	if err != nil || st.Code != 0 {
		t.Fatalf("Exec: %v %+v", err, st)
	}
	if got := out.String(); got != "/workspace/sub/dir\n" {
		t.Errorf("Dir: pwd %q", got)
	}
	if b, err := os.ReadFile(filepath.Join(spec.Workspace, "sub/dir/here")); err != nil || string(b) != "hi\n" {
		t.Errorf("file written in Dir, on the host: %q %v", b, err)
	}
	for _, d := range []string{"/tmp", "/workspace/../etc", "workspace", "/workspacex"} {
		_, err := sb.Exec(context.Background(), container.Process{Args: []string{"true"}, Dir: d})
		if !errors.Is(err, container.ErrInvalidSpec) {
			t.Errorf("Dir %q: %v, want ErrInvalidSpec", d, err)
		}
	}
}

// sleepers returns the number of sleep processes in the sandbox.
func sleepers(t *testing.T, sb container.Sandbox) int {
	t.Helper()
	st, out, _ := run(t, sb, "cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^sleep$'")
	if st.Code > 1 {
		t.Fatalf("counting sleepers: %+v", st)
	}
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("count %q: %v", out, err)
	}
	return n
}

func TestTimeoutKillsTree(t *testing.T) {
	rt := newRuntime(t)
	sb, _ := start(t, rt)
	t0 := time.Now()
	var out bytes.Buffer
	st, err := sb.Exec(context.Background(), container.Process{
		Args:    []string{"sh", "-c", "sleep 1000 & (sleep 1001 &) ; echo started; sleep 1002"},
		Timeout: 300 * time.Millisecond,
		Stdout:  &out,
	})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if !st.TimedOut {
		t.Errorf("TimedOut not set: %+v", st)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("timeout took %v", d)
	}
	if out.String() != "started\n" {
		t.Errorf("output %q", out.String())
	}
	// The whole tree must be gone.
	deadline := time.Now().Add(3 * time.Second)
	for {
		n := sleepers(t, sb)
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sleep processes after timeout: %s", n, mustRun(t, sb, "ps"))
		}
		time.Sleep(50 * time.Millisecond)
	}

	// ctx cancellation kills too.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	st, err = sb.Exec(ctx, container.Process{Args: []string{"sleep", "1000"}})
	if err != nil || !st.TimedOut {
		t.Errorf("ctx deadline: %v %+v", err, st)
	}
}

// TestTimeoutKillsSetsidDescendants: a descendant that left the
// command's session (setsid) is still part of the command's tree and must
// die with it. This is the agent's job (container/agent kills the
// command's process group and session).
func TestTimeoutKillsSetsidDescendants(t *testing.T) {
	rt := newRuntime(t)
	sb, _ := start(t, rt)
	st, err := sb.Exec(context.Background(), container.Process{
		Args:    []string{"sh", "-c", "setsid sleep 1001 & sleep 1002"},
		Timeout: 300 * time.Millisecond,
	})
	if err != nil || !st.TimedOut {
		t.Fatalf("Exec: %v %+v", err, st)
	}
	deadline := time.Now().Add(3 * time.Second)
	for sleepers(t, sb) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a setsid descendant survived the command's timeout: %s", mustRun(t, sb, "ps"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestConcurrentExecs(t *testing.T) {
	rt := newRuntime(t)
	sb, _ := start(t, rt)
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			st, err := sb.Exec(context.Background(), container.Process{
				Args: []string{"sh", "-c", fmt.Sprintf("sleep 0.5; echo %d", i)}, Stdout: &out,
			})
			if err != nil || st.Code != 0 || out.String() != fmt.Sprintf("%d\n", i) {
				errs <- fmt.Errorf("exec %d: %v %+v %q", i, err, st, out.String())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("%d concurrent 0.5s commands took %v: not concurrent", n, d)
	}
}

func TestPauseResume(t *testing.T) {
	rt := newRuntime(t)
	sb, spec := start(t, rt)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sb.Exec(ctx, container.Process{Args: []string{"sh", "-c",
		"i=0; while true; do i=$((i+1)); echo $i > /workspace/counter.tmp; mv /workspace/counter.tmp /workspace/counter; sleep 0.01; done"}})
	counter := func() int {
		b, _ := os.ReadFile(filepath.Join(spec.Workspace, "counter"))
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	waitFor(t, "counter to run", func() bool { return counter() > 3 })

	if err := sb.Pause(context.Background()); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	c1 := counter()
	time.Sleep(300 * time.Millisecond)
	if c2 := counter(); c2 != c1 {
		t.Fatalf("counter moved while paused: %d -> %d", c1, c2)
	}
	// An Exec while paused blocks until Resume.
	execDone := make(chan string, 1)
	go func() {
		var out bytes.Buffer
		_, err := sb.Exec(context.Background(), container.Process{Args: []string{"echo", "after"}, Stdout: &out})
		if err != nil {
			execDone <- "error: " + err.Error()
		}
		execDone <- out.String()
	}()
	select {
	case got := <-execDone:
		t.Fatalf("Exec completed while paused: %q", got)
	case <-time.After(300 * time.Millisecond):
	}
	if err := sb.Resume(context.Background()); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	select {
	case got := <-execDone:
		if got != "after\n" {
			t.Fatalf("Exec after resume: %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Exec still blocked after Resume")
	}
	waitFor(t, "counter to move after resume", func() bool { return counter() > c1 })
	if err := sb.Resume(context.Background()); err != nil {
		t.Errorf("Resume of a running sandbox: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestKillAll(t *testing.T) {
	rt := newRuntime(t)
	sb, _ := start(t, rt)
	const n = 3
	results := make(chan container.ExitStatus, n)
	for i := 0; i < n; i++ {
		go func() {
			st, err := sb.Exec(context.Background(), container.Process{Args: []string{"sh", "-c", "setsid sleep 1000 & sleep 1000"}})
			if err != nil {
				t.Errorf("Exec: %v", err)
			}
			results <- st
		}()
	}
	waitFor(t, "sleepers", func() bool { return sleepers(t, sb) == 2*n })
	if err := sb.KillAll(context.Background()); err != nil {
		t.Fatalf("KillAll: %v", err)
	}
	for i := 0; i < n; i++ {
		select {
		case st := <-results:
			if st.Code == 0 {
				t.Errorf("killed command exited 0")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Exec did not return after KillAll")
		}
	}
	if got := sleepers(t, sb); got != 0 {
		t.Errorf("%d sleep processes after KillAll", got)
	}
	if got := mustRun(t, sb, "echo alive"); got != "alive\n" {
		t.Errorf("sandbox after KillAll: %q", got)
	}
}

func TestRenameSwapVisible(t *testing.T) {
	rt := newRuntime(t)
	sb, spec := start(t, rt)
	if err := os.WriteFile(filepath.Join(spec.Workspace, "f"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := mustRun(t, sb, "cat /workspace/f"); got != "old" {
		t.Fatalf("before swap: %q", got)
	}
	// A rollback: a restored tree, made outside the volume's (sealed)
	// directory, exchanged into place at the same path.
	next := filepath.Join(t.TempDir(), "next")
	dir := filepath.Dir(spec.Workspace)
	if err := os.Mkdir(next, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(next, "f"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := guard.Unsealed(dir, func() error {
		return unix.Renameat2(unix.AT_FDCWD, next, unix.AT_FDCWD, spec.Workspace, unix.RENAME_EXCHANGE)
	})
	if err != nil {
		t.Fatalf("renameat2: %v", err)
	}
	if got := mustRun(t, sb, "cat /workspace/f"); got != "new" {
		t.Fatalf("after swap: %q, want new", got)
	}
	// Writes from the sandbox land in the tree now at the path.
	mustRun(t, sb, "echo from-sandbox > /workspace/g")
	if b, err := os.ReadFile(filepath.Join(spec.Workspace, "g")); err != nil || string(b) != "from-sandbox\n" {
		t.Fatalf("sandbox write after swap: %q %v", b, err)
	}
	// A plain rename (remove old, rename new) works as well.
	if err := os.RemoveAll(next); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(next, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(next, "f"), []byte("newer"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = guard.Unsealed(dir, func() error {
		if err := os.RemoveAll(spec.Workspace); err != nil {
			return err
		}
		return os.Rename(next, spec.Workspace)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := mustRun(t, sb, "cat /workspace/f"); got != "newer" {
		t.Fatalf("after rename: %q, want newer", got)
	}
}

// containerState is the part of libcontainer's state.json tests look at.
type containerState struct {
	InitProcessPid int               `json:"init_process_pid"`
	CgroupPaths    map[string]string `json:"cgroup_paths"`
}

func readState(t *testing.T, rt *runc.Runtime, id string) containerState {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(rt.Root(), "state", id, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st containerState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if st.InitProcessPid <= 0 || len(st.CgroupPaths) == 0 {
		t.Fatalf("state.json without pid or cgroups: %s", b)
	}
	return st
}

func pidAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err != nil {
		return false
	}
	// A zombie is dead for our purposes.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func cgroupParent(t *testing.T) string {
	return fmt.Sprintf("/turnbox-test/%d-%d", os.Getpid(), time.Now().UnixNano())
}

func TestLimitsApplied(t *testing.T) {
	parent := cgroupParent(t)
	rt := newRuntime(t, runc.WithCgroupParent(parent))
	sb, _ := start(t, rt, withLimits(container.Limits{CPUs: 0.5, MemoryBytes: 256 << 20, Pids: 100}))
	for file, want := range map[string]string{
		"cpu/sandbox/cpu.cfs_quota_us":         "50000",
		"cpu/sandbox/cpu.cfs_period_us":        "100000",
		"memory/sandbox/memory.limit_in_bytes": strconv.Itoa(256 << 20),
		// The sandbox as a whole: the limit plus the agent's reserve.
		"pids/pids.max": "164",
		// The agent's cgroup for commands, which holds the agent's
		// forking thread too.
		"pids/sandbox/turnbox-exec/pids.max": "102", // the forking thread and the launcher live there too
	} {
		ctrl, rest, _ := strings.Cut(file, "/")
		p := filepath.Join("/sys/fs/cgroup", ctrl, parent, sb.ID(), rest)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if got := strings.TrimSpace(string(b)); got != want {
			t.Errorf("%s = %s, want %s", p, got, want)
		}
	}
	// Commands run in the agent's command cgroup, the agent outside it.
	if got := mustRun(t, sb, "grep pids /proc/self/cgroup"); !strings.HasSuffix(strings.TrimSpace(got), "/sandbox/turnbox-exec") {
		t.Errorf("command's pids cgroup: %q", got)
	}
	// The sandbox cannot raise the limit that binds it.
	if st, _, _ := run(t, sb, "ls /sys/fs/cgroup/pids/../pids.max || echo 100000 > /sys/fs/cgroup/x"); st.Code == 0 {
		t.Error("outer pids cgroup reachable or cgroup tmpfs writable")
	}
}

func TestStopCleansUp(t *testing.T) {
	parent := cgroupParent(t)
	rt := newRuntime(t, runc.WithCgroupParent(parent))
	sb, spec := start(t, rt, withLimits(container.Limits{MemoryBytes: 256 << 20, Pids: 100}))
	if err := os.WriteFile(filepath.Join(spec.Workspace, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Leave work running, including a process in its own session.
	go sb.Exec(context.Background(), container.Process{Args: []string{"sh", "-c", "setsid sleep 1000 & sleep 1000"}})
	waitFor(t, "sleepers", func() bool { return sleepers(t, sb) == 2 })
	st := readState(t, rt, sb.ID())
	pids := hostPIDs(t, st.CgroupPaths["freezer"])
	if len(pids) < 3 {
		t.Fatalf("cgroup lists %v", pids)
	}
	if ids, _ := rt.List(context.Background()); len(ids) != 1 || ids[0] != sb.ID() {
		t.Errorf("List = %v", ids)
	}

	if err := sb.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-sb.Done():
	default:
		t.Error("Done not closed after Stop")
	}
	if sb.Err() != nil {
		t.Errorf("Err after clean Stop: %v", sb.Err())
	}
	for _, pid := range pids {
		if pidAlive(pid) {
			t.Errorf("pid %d alive after Stop", pid)
		}
	}
	for ctrl, p := range st.CgroupPaths {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s (%s) left: %v", ctrl, p, err)
		}
	}
	if dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", parent, sb.ID())); len(dirs) != 0 {
		t.Errorf("cgroups left: %v", dirs)
	}
	for _, p := range []string{filepath.Join(rt.Root(), "state", sb.ID()), filepath.Join(rt.Root(), "roots", sb.ID())} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left: %v", p, err)
		}
	}
	if ids, _ := rt.List(context.Background()); len(ids) != 0 {
		t.Errorf("List after Stop = %v", ids)
	}
	if b, err := os.ReadFile(filepath.Join(spec.Workspace, "keep")); err != nil || string(b) != "x" {
		t.Errorf("workspace changed by Stop: %q %v", b, err)
	}
	if err := sb.Stop(context.Background()); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := sb.Exec(context.Background(), container.Process{Args: []string{"true"}}); !errors.Is(err, container.ErrNotRunning) {
		t.Errorf("Exec after Stop: %v, want ErrNotRunning", err)
	}
	if err := sb.Pause(context.Background()); !errors.Is(err, container.ErrNotRunning) {
		t.Errorf("Pause after Stop: %v, want ErrNotRunning", err)
	}
	// The id can be used again.
	spec.ID = sb.ID()
	sb2, err := rt.Start(context.Background(), spec)
	if err != nil {
		t.Fatalf("restart with the same id: %v", err)
	}
	if err := sb2.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func hostPIDs(t *testing.T, cgroupDir string) []int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cgroupDir, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		n, _ := strconv.Atoi(f)
		pids = append(pids, n)
	}
	return pids
}

func TestStopPaused(t *testing.T) {
	rt := newRuntime(t)
	sb, _ := start(t, rt)
	st := readState(t, rt, sb.ID())
	if err := sb.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sb.Stop(ctx); err != nil {
		t.Fatalf("Stop of a paused sandbox: %v", err)
	}
	if pidAlive(st.InitProcessPid) {
		t.Error("agent alive after Stop")
	}
	for _, p := range st.CgroupPaths {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("cgroup %s left", p)
		}
	}
}

func TestAgentKilled(t *testing.T) {
	rt := newRuntime(t)
	sb, _ := start(t, rt)
	st := readState(t, rt, sb.ID())
	// A command in flight when the agent dies must fail too.
	inflight := make(chan error, 1)
	go func() {
		_, err := sb.Exec(context.Background(), container.Process{Args: []string{"sleep", "1000"}})
		inflight <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := syscall.Kill(st.InitProcessPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sb.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the agent was killed")
	}
	if err := sb.Err(); !errors.Is(err, container.ErrNotRunning) {
		t.Errorf("Err = %v, want ErrNotRunning", err)
	}
	select {
	case err := <-inflight:
		if !errors.Is(err, container.ErrNotRunning) {
			t.Errorf("in-flight Exec: %v, want ErrNotRunning", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("in-flight Exec did not return")
	}
	if _, err := sb.Exec(context.Background(), container.Process{Args: []string{"true"}}); !errors.Is(err, container.ErrNotRunning) {
		t.Errorf("Exec after agent death: %v, want ErrNotRunning", err)
	}
	if err := sb.KillAll(context.Background()); !errors.Is(err, container.ErrNotRunning) {
		t.Errorf("KillAll after agent death: %v, want ErrNotRunning", err)
	}
	// Stop still cleans up the dead sandbox.
	if err := sb.Stop(context.Background()); err != nil {
		t.Errorf("Stop after agent death: %v", err)
	}
	for _, p := range st.CgroupPaths {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("cgroup %s left", p)
		}
	}
}

func TestStartErrors(t *testing.T) {
	rt := newRuntime(t)
	good := container.Spec{ID: newID(t), RootFS: busyboxRootfs(t), Workspace: workspace(t)}
	for name, mod := range map[string]func(*container.Spec){
		"bad id":        func(s *container.Spec) { s.ID = "a/b" },
		"empty id":      func(s *container.Spec) { s.ID = "" },
		"no rootfs":     func(s *container.Spec) { s.RootFS = "/no/such/dir" },
		"relative ws":   func(s *container.Spec) { s.Workspace = "ws" },
		"missing ws":    func(s *container.Spec) { s.Workspace = "/no/such/ws" },
		"bad network":   func(s *container.Spec) { s.Network = "bridge" },
		"negative pids": func(s *container.Spec) { s.Limits.Pids = -1 },
	} {
		s := good
		mod(&s)
		if _, err := rt.Start(context.Background(), s); !errors.Is(err, container.ErrInvalidSpec) {
			t.Errorf("%s: %v, want ErrInvalidSpec", name, err)
		}
	}
	sb, err := rt.Start(context.Background(), good)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Stop(context.Background())
	if _, err := rt.Start(context.Background(), good); !errors.Is(err, os.ErrExist) {
		t.Errorf("duplicate id: %v, want ErrExist", err)
	}
	if got := mustRun(t, sb, "echo ok"); got != "ok\n" {
		t.Errorf("first sandbox after a duplicate Start: %q", got)
	}
}

func TestNewNeedsAgent(t *testing.T) {
	t.Setenv("TURNBOX_AGENT", "/no/such/agent")
	if _, err := runc.New(t.TempDir()); !errors.Is(err, container.ErrRuntimeMissing) {
		t.Errorf("New without agent: %v, want ErrRuntimeMissing", err)
	}
}

func TestReap(t *testing.T) {
	parent := cgroupParent(t)
	rt := newRuntime(t, runc.WithCgroupParent(parent))
	kept, _ := start(t, rt)
	gone, _ := start(t, rt)
	goneState := readState(t, rt, gone.ID())

	// A second runtime on the same root plays a restarted host: it reaps
	// sandboxes the first one left.
	rt2 := newRuntimeAt(t, rt.Root(), runc.WithCgroupParent(parent))
	// Leftovers with broken state: a state dir with garbage, a skeleton,
	// a cgroup with a process in it.
	junk := "junk-1"
	if err := os.MkdirAll(filepath.Join(rt.Root(), "state", junk), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rt.Root(), "state", junk, "state.json"), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	orphan := "orphan-1"
	if err := os.MkdirAll(filepath.Join(rt.Root(), "roots", orphan, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	stray := "stray-1"
	strayCg := filepath.Join("/sys/fs/cgroup/pids", parent, stray)
	if err := os.MkdirAll(strayCg, 0o755); err != nil {
		t.Fatal(err)
	}
	sleeper := startInCgroup(t, strayCg)

	ids, err := rt2.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{kept.ID(): true, gone.ID(): true, junk: true, orphan: true, stray: true}
	for _, id := range ids {
		delete(want, id)
	}
	if len(want) != 0 {
		t.Errorf("List = %v, missing %v", ids, want)
	}

	if err := rt2.Reap(context.Background(), map[string]bool{kept.ID(): true}); err != nil {
		t.Fatalf("Reap: %v", err)
	}
	ids, _ = rt2.List(context.Background())
	if len(ids) != 1 || ids[0] != kept.ID() {
		t.Errorf("List after Reap = %v, want [%s]", ids, kept.ID())
	}
	if pidAlive(goneState.InitProcessPid) {
		t.Error("reaped sandbox's agent still alive")
	}
	for _, p := range goneState.CgroupPaths {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("reaped sandbox's cgroup %s left", p)
		}
	}
	if _, err := os.Stat(strayCg); err == nil {
		t.Error("stray cgroup left")
	}
	if err := sleeper.Wait(); err == nil {
		t.Error("process in stray cgroup not killed")
	}
	select {
	case <-gone.Done():
	case <-time.After(5 * time.Second):
		t.Error("reaped sandbox's Done not closed")
	}
	if got := mustRun(t, kept, "echo kept"); got != "kept\n" {
		t.Errorf("kept sandbox: %q", got)
	}
	// The first runtime's handle of the reaped sandbox stops cleanly.
	if err := gone.Stop(context.Background()); err != nil {
		t.Errorf("Stop of a reaped sandbox: %v", err)
	}
}

// TestVolumeDirSealed: the directory the sandbox binds at VolumeDir is
// sealed while the sandbox lives and unsealed once it stopped.
func TestVolumeDirSealed(t *testing.T) {
	rt := newRuntime(t)
	sb, spec := start(t, rt)
	dir := filepath.Dir(spec.Workspace)
	if sealed, err := guard.Sealed(dir); err != nil || !sealed {
		t.Fatalf("while the sandbox runs: sealed=%v err=%v, want sealed", sealed, err)
	}
	if out := mustRun(t, sb, "mv /workspace "+runc.VolumeDir+"/x 2>&1; ln -s / "+runc.VolumeDir+"/y 2>&1; true"); !strings.Contains(out, "not permitted") {
		t.Errorf("renaming beside the workspace from inside: %q, want 'Operation not permitted'", out)
	}
	if err := sb.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sealed, err := guard.Sealed(dir); err != nil || sealed {
		t.Fatalf("after Stop: sealed=%v err=%v, want unsealed", sealed, err)
	}
}
