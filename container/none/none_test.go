package none_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/none"
	"github.com/turnbox/turnbox/internal/testenv"
)

func start(t *testing.T, opts ...none.Option) (*none.Runtime, container.Sandbox, string) {
	t.Helper()
	rt, err := none.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	ws := filepath.Join(t.TempDir(), "workspace")
	if err := os.Mkdir(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	id := "t" + strings.ReplaceAll(strings.ToLower(t.Name()), "/", "-")
	sb, err := rt.Start(context.Background(), container.Spec{ID: id, Workspace: ws, Env: []string{"FOO=bar"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Stop(context.Background()) })
	return rt, sb, ws
}

func run(t *testing.T, sb container.Sandbox, script string, timeout time.Duration) (string, container.ExitStatus) {
	t.Helper()
	var out bytes.Buffer
	st, err := sb.Exec(context.Background(), container.Process{Args: []string{"sh", "-c", script}, Stdout: &out, Stderr: &out, Timeout: timeout})
	if err != nil {
		t.Fatalf("exec %q: %v", script, err)
	}
	return out.String(), st
}

func TestExecBasics(t *testing.T) {
	_, sb, ws := start(t)
	out, st := run(t, sb, `echo "$FOO"; pwd; exit 3`, 0)
	if st.Code != 3 || out != "bar\n"+ws+"\n" {
		t.Fatalf("got code %d out %q", st.Code, out)
	}
	if _, err := sb.Exec(context.Background(), container.Process{Args: []string{"true"}, Dir: "/etc"}); err == nil {
		t.Fatal("exec with a dir outside the workspace succeeded")
	}
}

func TestTimeoutKillsTree(t *testing.T) {
	rt, sb, ws := start(t)
	// The grandchild escapes the process group with setsid; only the cgroup
	// catches it.
	script := `setsid sh -c 'echo $$ > grandchild.pid; exec sleep 60' & sleep 60`
	if !rt.CgroupsEnabled() {
		script = `sh -c 'echo $$ > grandchild.pid; exec sleep 60' & sleep 60`
	}
	begin := time.Now()
	_, st := run(t, sb, script, 300*time.Millisecond)
	if !st.TimedOut || time.Since(begin) > 5*time.Second {
		t.Fatalf("timed out=%v after %v", st.TimedOut, time.Since(begin))
	}
	pid, err := os.ReadFile(filepath.Join(ws, "grandchild.pid"))
	if err != nil {
		t.Fatal(err)
	}
	if alive(strings.TrimSpace(string(pid))) {
		t.Fatalf("grandchild %s survived the timeout", pid)
	}
}

func TestPauseFreezes(t *testing.T) {
	testenv.RequireRoot(t)
	rt, sb, ws := start(t)
	testenv.Require(t, rt.CgroupsEnabled(), "a writable cgroup v2 hierarchy at "+none.DefaultCgroupRoot)
	ctx := context.Background()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = sb.Exec(ctx, container.Process{Args: []string{"sh", "-c", `i=0; while [ $i -lt 400 ]; do i=$((i+1)); echo $i > counter; sleep 0.01; done`}})
	}()
	// Wait until the writer runs (a loaded machine may take a while to
	// start it), then freeze it.
	counter := filepath.Join(ws, "counter")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(counter); len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the counter loop did not start within 10 s")
		}
	}
	if err := sb.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	// A writer frozen between `>` truncating the file and echo writing it
	// leaves it empty: equal reads are what a freeze guarantees.
	a, _ := os.ReadFile(counter)
	time.Sleep(300 * time.Millisecond)
	b, _ := os.ReadFile(counter)
	if string(a) != string(b) {
		t.Fatalf("counter moved while paused: %q -> %q", a, b)
	}
	if err := sb.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		c, _ := os.ReadFile(counter)
		if len(c) > 0 && string(c) != string(b) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter did not move within 5 s of resume: %q", c)
		}
	}
	if err := sb.KillAll(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("KillAll did not end the running command")
	}
}

func TestReapOrphans(t *testing.T) {
	testenv.RequireRoot(t)
	// A root of its own: Reap removes every sandbox in the root, and other
	// test binaries may have live sandboxes in the default one.
	root := filepath.Join(none.CgroupBase, "test-reap-"+strconv.Itoa(os.Getpid()))
	rt, sb, _ := start(t, none.WithCgroupRoot(root))
	t.Cleanup(func() { _ = rt.Close() })
	testenv.Require(t, rt.CgroupsEnabled(), "a writable cgroup v2 hierarchy")
	ctx := context.Background()
	go sb.Exec(ctx, container.Process{Args: []string{"sleep", "60"}})
	time.Sleep(100 * time.Millisecond)
	ids, err := rt.List(ctx)
	if err != nil || !contains(ids, sb.ID()) {
		t.Fatalf("List = %v, %v; want %s", ids, err, sb.ID())
	}
	if err := rt.Reap(ctx, map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	ids, _ = rt.List(ctx)
	if contains(ids, sb.ID()) {
		t.Fatalf("sandbox %s still listed after Reap", sb.ID())
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// alive reports whether pid is a live process (not gone, not a zombie
// waiting for its new parent to reap it).
func alive(pid string) bool {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// Pause racing the start of commands must neither hang the process (a
// child cloned into a frozen cgroup never execs) nor start a command in a
// frozen sandbox: each Exec either runs or fails with ErrPaused.
func TestPauseRacingExec(t *testing.T) {
	testenv.RequireRoot(t)
	rt, sb, _ := start(t)
	testenv.Require(t, rt.CgroupsEnabled(), "a writable cgroup v2 hierarchy")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		for i := 0; i < 200 && ctx.Err() == nil; i++ {
			if _, err := sb.Exec(ctx, container.Process{Args: []string{"true"}}); err != nil && !errors.Is(err, container.ErrPaused) {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := 0; i < 100; i++ {
		if err := sb.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		if err := sb.Resume(ctx); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("Exec hung while racing Pause")
	}
}
