package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/agent"
	"github.com/turnbox/turnbox/container/containertest"
)

// pair runs an agent in-process over two os.Pipe pairs and returns a
// client connected to it. The agent stops when the test ends.
func pair(t testing.TB, opts ...agent.Option) (*agent.Client, <-chan error) {
	t.Helper()
	toAgentR, toAgentW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fromAgentR, fromAgentW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		err := agent.Serve(toAgentR, fromAgentW, opts...)
		fromAgentW.Close()
		toAgentR.Close()
		served <- err
	}()
	c := agent.NewClient(fromAgentR, toAgentW)
	t.Cleanup(func() {
		c.Close()
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Error("agent did not stop after the client closed")
		}
	})
	return c, served
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// syncBuffer is a bytes.Buffer safe for a writer and a concurrent reader.
type syncBuffer = containertest.Buffer

func run(t *testing.T, c *agent.Client, p container.Process) (container.ExitStatus, string, string) {
	t.Helper()
	var out, errb syncBuffer
	p.Stdout, p.Stderr = &out, &errb
	st, err := c.Exec(ctxT(t), p)
	if err != nil {
		t.Fatalf("Exec %q: %v", p.Args, err)
	}
	return st, out.String(), errb.String()
}

func TestPing(t *testing.T) {
	c, _ := pair(t)
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if pid := c.AgentPID(); pid != os.Getpid() {
		t.Errorf("AgentPID = %d, want %d", pid, os.Getpid())
	}
}

func TestExecOutputAndCodes(t *testing.T) {
	c, _ := pair(t)
	st, out, errs := run(t, c, container.Process{Args: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}})
	if out != "out\n" || errs != "err\n" || st.Code != 3 || st.TimedOut {
		t.Fatalf("got %+v out=%q err=%q", st, out, errs)
	}
	st, _, _ = run(t, c, container.Process{Args: []string{"true"}})
	if st.Code != 0 {
		t.Fatalf("true: %+v", st)
	}
	st, _, _ = run(t, c, container.Process{Args: []string{"sh", "-c", "kill -TERM $$"}})
	if st.Code != 128+int(syscall.SIGTERM) {
		t.Fatalf("killed by TERM: %+v", st)
	}
}

func TestExecEnvDir(t *testing.T) {
	dir := t.TempDir()
	c, _ := pair(t, agent.WithBaseEnv([]string{"PATH=" + os.Getenv("PATH"), "A=base", "B=base"}), agent.WithDefaultDir(dir))
	_, out, _ := run(t, c, container.Process{Args: []string{"sh", "-c", "echo $A $B; pwd"}, Env: []string{"B=mine"}})
	if want := "base mine\n" + dir + "\n"; out != want {
		t.Fatalf("out %q, want %q", out, want)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	_, out, _ = run(t, c, container.Process{Args: []string{"pwd"}, Dir: sub})
	if out != sub+"\n" {
		t.Fatalf("pwd in %s: %q", sub, out)
	}
}

func TestExecStdin(t *testing.T) {
	c, _ := pair(t)
	big := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB, many frames
	st, out, _ := run(t, c, container.Process{Args: []string{"cat"}, Stdin: strings.NewReader(big)})
	if st.Code != 0 || out != big {
		t.Fatalf("cat: %+v, %d bytes back of %d", st, len(out), len(big))
	}
	// No stdin: the command sees end of input at once.
	st, out, _ = run(t, c, container.Process{Args: []string{"wc", "-c"}})
	if strings.TrimSpace(out) != "0" {
		t.Fatalf("wc -c without stdin: %q %+v", out, st)
	}
}

func TestExecNotFound(t *testing.T) {
	c, _ := pair(t)
	_, err := c.Exec(ctxT(t), container.Process{Args: []string{"no-such-command-turnbox"}})
	if !errors.Is(err, agent.ErrStart) {
		t.Fatalf("err = %v, want ErrStart", err)
	}
	if _, err := c.Exec(ctxT(t), container.Process{}); !errors.Is(err, container.ErrInvalidSpec) {
		t.Fatalf("empty args: %v", err)
	}
}

// TestStreamsBeforeExit checks that output arrives while the command still
// runs.
func TestStreamsBeforeExit(t *testing.T) {
	c, _ := pair(t)
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctxT(t), container.Process{
			Args:   []string{"sh", "-c", "echo first; while [ ! -e " + gate + " ]; do sleep 0.01; done; echo second"},
			Stdout: &out,
		})
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for out.String() != "first\n" {
		if time.Now().After(deadline) {
			t.Fatalf("no streamed output before exit: %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("exited before the gate opened: %v", err)
	default:
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if out.String() != "first\nsecond\n" {
		t.Fatalf("out %q", out.String())
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(st, ')')
	f := strings.Fields(string(st[i+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// treeCommand starts a tree: a background child in the same group, and a
// grandchild that moved to its own process group (setsid would escape the
// session; a new group does not escape it). It prints their pids.
const treeCommand = `sleep 1000 & echo $!; sh -c 'set -m; sleep 1001 & echo $!; wait' & sleep 0.2; wait`

func waitPids(t *testing.T, out *syncBuffer, n int) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f := strings.Fields(out.String())
		if len(f) >= n {
			var pids []int
			for _, s := range f[:n] {
				pid, err := strconv.Atoi(s)
				if err != nil {
					t.Fatalf("bad pid %q", s)
				}
				pids = append(pids, pid)
			}
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("pids not printed: %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func assertGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d survived", pid)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func TestTimeoutKillsTree(t *testing.T) {
	c, _ := pair(t)
	var out syncBuffer
	start := time.Now()
	st, err := c.Exec(ctxT(t), container.Process{Args: []string{"sh", "-c", treeCommand}, Stdout: &out, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if !st.TimedOut || st.Code != 137 {
		t.Fatalf("status %+v", st)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("timeout took %v", d)
	}
	assertGone(t, waitPids(t, &out, 2))
}

func TestCancelKillsTree(t *testing.T) {
	c, _ := pair(t)
	var out syncBuffer
	ctx, cancel := context.WithCancel(ctxT(t))
	res := make(chan container.ExitStatus, 1)
	go func() {
		st, err := c.Exec(ctx, container.Process{Args: []string{"sh", "-c", treeCommand}, Stdout: &out})
		if err != nil {
			t.Error(err)
		}
		res <- st
	}()
	pids := waitPids(t, &out, 2)
	cancel()
	st := <-res
	if !st.TimedOut {
		t.Fatalf("status %+v", st)
	}
	assertGone(t, pids)
}

func TestKillAll(t *testing.T) {
	c, _ := pair(t)
	var out syncBuffer
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := c.Exec(ctxT(t), container.Process{Args: []string{"sh", "-c", "sleep 1000 & echo $!; wait"}, Stdout: &out})
			if err != nil || st.Code != 137 {
				t.Errorf("killed exec: %+v %v", st, err)
			}
		}()
	}
	// A command that left a background process behind and exited.
	run(t, c, container.Process{Args: []string{"sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $! >" + filepath.Join(t.TempDir(), "x")}})
	pids := waitPids(t, &out, 3)
	if err := c.KillAll(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	assertGone(t, pids)
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatal("agent not usable after KillAll:", err)
	}
}

func TestConcurrentExecs(t *testing.T) {
	c, _ := pair(t)
	const n = 20
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out syncBuffer
			want := fmt.Sprintf("%d-%s", i, strings.Repeat("x", 100<<10))
			st, err := c.Exec(ctxT(t), container.Process{Args: []string{"sh", "-c", "sleep 0.1; printf %s \"$V\"; exit " + strconv.Itoa(i%7)}, Env: []string{"V=" + want}, Stdout: &out})
			if err != nil || st.Code != i%7 || out.String() != want {
				t.Errorf("exec %d: %+v %v (%d bytes)", i, st, err, len(out.String()))
			}
		}()
	}
	wg.Wait()
}

// TestAgentDeath checks that a dead agent fails running and later calls
// with ErrNotRunning and closes Done.
func TestAgentDeath(t *testing.T) {
	toAgentR, toAgentW, _ := os.Pipe()
	fromAgentR, fromAgentW, _ := os.Pipe()
	served := make(chan error, 1)
	go func() { served <- agent.Serve(toAgentR, fromAgentW) }()
	c := agent.NewClient(fromAgentR, toAgentW)
	defer c.Close()
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctxT(t), container.Process{Args: []string{"sleep", "1000"}})
		res <- err
	}()
	time.Sleep(100 * time.Millisecond)
	// The agent's output stream breaking is what a host sees when the
	// agent process is killed.
	fromAgentW.Close()
	select {
	case err := <-res:
		if !errors.Is(err, container.ErrNotRunning) {
			t.Fatalf("Exec err = %v, want ErrNotRunning", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Exec did not fail after the agent died")
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed")
	}
	if !errors.Is(c.Err(), container.ErrNotRunning) {
		t.Fatalf("Err = %v", c.Err())
	}
	if _, err := c.Exec(ctxT(t), container.Process{Args: []string{"true"}}); !errors.Is(err, container.ErrNotRunning) {
		t.Fatalf("Exec after death: %v", err)
	}
	toAgentW.Close() // let Serve finish
	toAgentR.Close()
	<-served
}

func TestBackgroundHolderDoesNotBlock(t *testing.T) {
	c, _ := pair(t)
	start := time.Now()
	st, out, _ := run(t, c, container.Process{Args: []string{"sh", "-c", "echo hi; sleep 1000 &"}})
	if st.Code != 0 || out != "hi\n" {
		t.Fatalf("%+v %q", st, out)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("exec with a background output holder took %v", d)
	}
	if err := c.KillAll(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

var _ io.Closer = (*os.File)(nil)

// BenchmarkExecTrue measures an Exec round trip of `true` with the agent
// in-process (no sandbox): the protocol's and fork+exec's cost.
func BenchmarkExecTrue(b *testing.B) {
	toAgentR, toAgentW, _ := os.Pipe()
	fromAgentR, fromAgentW, _ := os.Pipe()
	go agent.Serve(toAgentR, fromAgentW)
	c := agent.NewClient(fromAgentR, toAgentW)
	defer c.Close()
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		if st, err := c.Exec(ctx, container.Process{Args: []string{"true"}}); err != nil || st.Code != 0 {
			b.Fatal(st, err)
		}
	}
}

// TestMemoryLimit: a command past WithMemoryLimit is killed and reported
// as OOMKilled, its tree with it; the next command and one within the
// limit are not.
func TestMemoryLimit(t *testing.T) {
	c, _ := pair(t, agent.WithMemoryLimit(32<<20), agent.WithInit(false))
	st, out, _ := run(t, c, container.Process{Args: []string{"sh", "-c", "dd if=/dev/zero of=/dev/null bs=256M count=8 2>/dev/null; echo survived"}})
	if !st.OOMKilled || st.Code == 0 || strings.Contains(out, "survived") {
		t.Fatalf("memory hog: %+v, output %q; want OOMKilled and no survivor", st, out)
	}
	st, out, _ = run(t, c, container.Process{Args: []string{"sh", "-c", "dd if=/dev/zero of=/dev/null bs=4M count=4 2>/dev/null; echo small"}})
	if st.OOMKilled || st.Code != 0 || out != "small\n" {
		t.Fatalf("command within the limit: %+v, output %q", st, out)
	}
}
