package runc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/containertest"
	"github.com/turnbox/turnbox/container/runc"
)

// sleepers returns the number of sleep processes in the sandbox.
func sleepers(t *testing.T, sb container.Sandbox) int {
	t.Helper()
	st, out, _ := containertest.Sh(t, sb, "cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^sleep$'")
	if st.Code > 1 {
		t.Fatalf("counting sleepers: %+v", st)
	}
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("count %q: %v", out, err)
	}
	return n
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

// TestSuite runs the container conformance suite on the runc runtime.
func TestSuite(t *testing.T) {
	containertest.Run(t, func(t *testing.T) container.Runtime { return newRuntime(t) },
		containertest.WithRootFS(func(t *testing.T) string { return busyboxRootfs(t) }),
		containertest.WithKill(func(t *testing.T, sb container.Sandbox) {
			if err := syscall.Kill(runc.InitPid(sb), syscall.SIGKILL); err != nil {
				t.Fatalf("killing the agent: %v", err)
			}
		}),
		containertest.WithLimits(),
		containertest.WithSealedVolume(runc.VolumeDir),
		containertest.WithOwnRoot())
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
	if got := containertest.MustSh(t, sb, "grep pids /proc/self/cgroup"); !strings.HasSuffix(strings.TrimSpace(got), "/sandbox/turnbox-exec") {
		t.Errorf("command's pids cgroup: %q", got)
	}
	// The sandbox cannot raise the limit that binds it.
	if st, _, _ := containertest.Sh(t, sb, "ls /sys/fs/cgroup/pids/../pids.max || echo 100000 > /sys/fs/cgroup/x"); st.Code == 0 {
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
	if got := containertest.MustSh(t, sb, "echo ok"); got != "ok\n" {
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
	live, _ := start(t, rt)
	gone, _ := start(t, rt)
	goneState := readState(t, rt, gone.ID())

	// A second runtime on the same root plays a restarted host: it reaps
	// every sandbox the first one left, running or not.
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
	want := map[string]bool{live.ID(): true, gone.ID(): true, junk: true, orphan: true, stray: true}
	for _, id := range ids {
		delete(want, id)
	}
	if len(want) != 0 {
		t.Errorf("List = %v, missing %v", ids, want)
	}

	if err := rt2.Reap(context.Background()); err != nil {
		t.Fatalf("Reap: %v", err)
	}
	if ids, _ = rt2.List(context.Background()); len(ids) != 0 {
		t.Errorf("List after Reap = %v, want none", ids)
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
	// The first runtime's handles of the reaped sandboxes report them
	// dead and stop cleanly.
	for _, sb := range []container.Sandbox{live, gone} {
		select {
		case <-sb.Done():
		case <-time.After(5 * time.Second):
			t.Errorf("reaped sandbox %s: Done not closed", sb.ID())
		}
		if !errors.Is(sb.Err(), container.ErrNotRunning) {
			t.Errorf("reaped sandbox %s: Err = %v, want ErrNotRunning", sb.ID(), sb.Err())
		}
		if err := sb.Stop(context.Background()); err != nil {
			t.Errorf("Stop of reaped sandbox %s: %v", sb.ID(), err)
		}
	}
}
