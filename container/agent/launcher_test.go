package agent_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/agent"
	"github.com/turnbox/turnbox/container/agent/agenttest"
	"github.com/turnbox/turnbox/internal/testenv"
)

// initAgent runs the agent binary as init of a new PID namespace (with
// its own /proc), as in a sandbox, and returns a client connected to it.
func initAgent(t *testing.T, env ...string) *agent.Client {
	t.Helper()
	testenv.RequireRoot(t)
	unshare := testenv.RequireBinary(t, "unshare")
	cmd := exec.Command(unshare, "--pid", "--fork", "--mount-proc", agenttest.Build(t), "-dir", "/")
	cmd.Env = append(os.Environ(), env...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := agent.NewClient(out, in)
	t.Cleanup(func() {
		c.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("agent did not exit after its client closed")
		}
	})
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if pid := c.AgentPID(); pid != 1 {
		t.Fatalf("agent pid %d in its namespace, want 1", pid)
	}
	return c
}

// parent returns the argv[0] and pid of the process that started a
// command.
func parent(t *testing.T, c *agent.Client) (string, string) {
	t.Helper()
	st, out, errs := run(t, c, container.Process{Args: []string{"sh", "-c", `echo $PPID; tr '\0' ' ' < /proc/$PPID/cmdline`}})
	f := strings.Fields(out)
	if st.Code != 0 || len(f) < 2 {
		t.Fatalf("reading the parent's cmdline: %+v %q %s", st, out, errs)
	}
	return f[1], f[0]
}

// waitLauncher waits until commands are started by a launcher other than
// the one with pid not (it starts in the background) and returns its pid.
func waitLauncher(t *testing.T, c *agent.Client, not string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, pid := parent(t, c)
		if p == "turnbox-agent-launcher" && pid != not {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("commands are started by %q (pid %s), want a launcher other than pid %q", p, pid, not)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLauncher checks that an init agent built with cgo starts commands
// through its launcher, with the same semantics as forking them itself,
// and survives the launcher's death.
func TestLauncher(t *testing.T) {
	c := initAgent(t)
	first := waitLauncher(t, c, "")

	// Output, stdin, exit codes, signals, environment and directory.
	var out syncBuffer
	st, err := c.Exec(ctxT(t), container.Process{
		Args:  []string{"sh", "-c", `cat; echo "$X $(pwd)"; echo e >&2; exit 5`},
		Env:   []string{"X=x"},
		Dir:   "/tmp",
		Stdin: strings.NewReader("in\n"), Stdout: &out, Stderr: &out,
	})
	if err != nil || st.Code != 5 {
		t.Fatalf("exec: %+v %v", st, err)
	}
	if got := out.String(); !strings.Contains(got, "in\n") || !strings.Contains(got, "x /tmp\n") || !strings.Contains(got, "e\n") {
		t.Errorf("output %q", got)
	}
	if st, _, _ := run(t, c, container.Process{Args: []string{"sh", "-c", "kill -KILL $$"}}); st.Code != 137 {
		t.Errorf("killed by SIGKILL: %+v, want code 137", st)
	}
	// Commands start in their own session.
	if _, o, _ := run(t, c, container.Process{Args: []string{"sh", "-c", `set -- $(cat /proc/$$/stat); [ "$6" = "$$" ] && echo leader`}}); o != "leader\n" {
		t.Errorf("command is not its session's leader: %q", o)
	}

	// Start failures are reported as such, with the failing step.
	for _, p := range []container.Process{
		{Args: []string{"/nonexistent"}},
		{Args: []string{"true"}, Dir: "/nonexistent"},
		{Args: []string{"/etc/passwd"}},
	} {
		_, err := c.Exec(ctxT(t), p)
		if !errors.Is(err, agent.ErrStart) {
			t.Errorf("Exec %q in %q: %v, want ErrStart", p.Args, p.Dir, err)
		}
	}

	// A timeout kills the whole tree.
	st, err = c.Exec(ctxT(t), container.Process{Args: []string{"sh", "-c", "sleep 30 & sleep 30"}, Timeout: 200 * time.Millisecond})
	if err != nil || !st.TimedOut {
		t.Fatalf("timeout: %+v %v", st, err)
	}
	waitIdle(t, c)

	// A command kills the launcher while another runs: the running one
	// is adopted and reported, and the next command gets a new launcher.
	type result struct {
		st  container.ExitStatus
		err error
	}
	slow := make(chan result, 1)
	go func() {
		st, err := c.Exec(ctxT(t), container.Process{Args: []string{"sh", "-c", "sleep 1; exit 3"}})
		slow <- result{st, err}
	}()
	time.Sleep(200 * time.Millisecond)
	// (It waits before the kill so that the launcher has answered; a
	// command that kills its launcher before that is found by its
	// marker if it still runs, else reported as not started.)
	if st, _, errs := run(t, c, container.Process{Args: []string{"sh", "-c", "sleep 0.3; kill -KILL $PPID; sleep 0.5; exit 4"}}); st.Code != 4 {
		t.Errorf("the command that killed its launcher: %+v %s, want code 4", st, errs)
	}
	select {
	case r := <-slow:
		if r.err != nil || r.st.Code != 3 {
			t.Errorf("command running when its launcher died: %+v %v, want code 3", r.st, r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("command running when its launcher died was never reported")
	}
	second := waitLauncher(t, c, first)

	// The sandbox is idle with the launcher running; KillAll spares it.
	if st, err := c.Exec(ctxT(t), container.Process{Args: []string{"sh", "-c", "sleep 30 >/dev/null 2>&1 &"}}); err != nil || st.Code != 0 {
		t.Fatalf("background sleep: %+v %v", st, err)
	}
	if idle, err := c.Idle(ctxT(t)); err != nil || idle {
		t.Errorf("Idle with a background sleep = %v, %v; want false", idle, err)
	}
	if err := c.KillAll(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, c)
	if p, pid := parent(t, c); p != "turnbox-agent-launcher" || pid != second {
		t.Errorf("after KillAll, commands are started by %q (pid %s), want the launcher that ran before (pid %s)", p, pid, second)
	}
}

// TestLauncherOff checks the fallback: with the launcher turned off the
// agent starts commands itself.
func TestLauncherOff(t *testing.T) {
	c := initAgent(t, "TURNBOX_AGENT_LAUNCHER=0")
	if p, _ := parent(t, c); !strings.HasSuffix(p, "turnbox-agent") {
		t.Fatalf("commands are started by %q, want the agent", p)
	}
	if st, out, _ := run(t, c, container.Process{Args: []string{"sh", "-c", "echo ok"}}); st.Code != 0 || out != "ok\n" {
		t.Fatalf("exec: %+v %q", st, out)
	}
}

// waitIdle waits until no process but the agent (and its launcher) runs.
func waitIdle(t *testing.T, c *agent.Client) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		idle, err := c.Idle(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if idle {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("sandbox not idle after 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
