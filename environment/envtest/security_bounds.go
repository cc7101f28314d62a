package envtest

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/turnbox/turnbox/environment"
)

// Hostile commands that attack the host's waits on the sandbox: a fork
// bomb, kill -1, a command that reaches the agent's pipes. After each, the
// session's operations must return within hostileBound even with a
// context without deadline, the host's processes must be untouched, and a
// second session must work.

// hostileBound is how long a session operation may take after a hostile
// command (the calls get context.Background()).
const hostileBound = 30 * time.Second

// forkBomb is the classic, in a tool call that times out quickly.
const forkBomb = `bomb(){ bomb|bomb& }; bomb; sleep 5`

// isolated skips t on runtimes that do not isolate commands from the
// host: a fork bomb or kill -1 there would hit the machine running the
// tests.
func isolated(t *testing.T, env environment.Environment) {
	t.Helper()
	if env.Capabilities().Isolation == environment.IsolationNone {
		t.Skip("the none runtime isolates nothing: a hostile command would hit the host")
	}
}

// bounded runs op with context.Background() and fails t unless it returns
// within hostileBound. It returns op's error.
func bounded(t *testing.T, what string, op func(ctx context.Context) error) error {
	t.Helper()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- op(context.Background()) }()
	select {
	case err := <-done:
		t.Logf("%s took %v (err %v)", what, time.Since(start).Round(time.Millisecond), err)
		return err
	case <-time.After(hostileBound):
		t.Fatalf("%s did not return within %v of a context without deadline", what, hostileBound)
		return nil
	}
}

// hostCanary starts a process on the host (when the suite runs on the
// session's host) and returns a check that it is still alive.
func (s *suite) hostCanary(t *testing.T) func() {
	if !s.cfg.hostLocal {
		return func() {}
	}
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting a host canary: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return func() {
		t.Helper()
		if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
			t.Errorf("a host process (pid %d) died during the hostile command: %v", cmd.Process.Pid, err)
		}
	}
}

// hostile runs a hostile command and returns whatever came of it: it may
// fail, time out or end the session's sandbox, but must return in time.
func (s *suite) hostile(t *testing.T, env environment.Environment, cmd string) {
	t.Helper()
	resp, err := s.exec(t, env, environment.BashParams{Command: cmd, TimeoutMS: 2000})
	if err == nil {
		t.Logf("hostile command: exit %d, timed out %v, %q", resp.ExitCode, resp.TimedOut, clip(resp.Content))
	} else {
		t.Logf("hostile command: %v", err)
	}
}

// usable checks that env's session runs commands: at once, or (when the
// hostile command killed its sandbox and the session reports it failed
// with ErrNotActive) after Resume, which starts a new sandbox.
func (s *suite) usable(t *testing.T, env environment.Environment) {
	t.Helper()
	var resp *environment.ToolResponse
	err := bounded(t, "a command after the attack", func(ctx context.Context) error {
		var err error
		// A short timeout: an agent that lost its input never starts the
		// command, and the host gives up on it a grace period after.
		resp, err = env.ExecuteTool(ctx, s.request(t, environment.BashParams{Command: "echo still-here", TimeoutMS: 3000}), nil)
		return err
	})
	if errors.Is(err, environment.ErrNotActive) {
		if st := env.State(); st != environment.StateFailed {
			t.Fatalf("command refused with %v but State() = %q, want failed", err, st)
		}
		if err := bounded(t, "Resume of the failed session", env.Resume); err != nil {
			t.Fatalf("Resume of a failed session: %v", err)
		}
		resp, err = s.exec(t, env, environment.BashParams{Command: "echo still-here"})
	}
	if err != nil || resp.IsError || !strings.Contains(resp.Content, "still-here") {
		t.Fatalf("the session does not run commands after the attack: %v %+v", err, resp)
	}
}

// othersUnaffected checks the host canary and that a second session
// (created before the attack) still works.
func (s *suite) othersUnaffected(t *testing.T, other environment.Environment, canary func()) {
	t.Helper()
	canary()
	if got := s.sh(t, other, "echo other-ok"); !strings.Contains(got, "other-ok") {
		t.Fatalf("second session: %q", got)
	}
}

// testForkBombBounded: after a fork bomb, TurnComplete (CreateSnapshot),
// Fork, Rollback and Destroy each return within hostileBound with a
// context without deadline, and succeed.
func (s *suite) testForkBombBounded(t *testing.T) {
	env, _ := s.session(t)
	isolated(t, env)
	other, _ := s.session(t)
	canary := s.hostCanary(t)
	s.write(t, env, "before.txt", "before the bomb")
	before := s.snapshot(t, env, "before")

	s.hostile(t, env, forkBomb)
	var after *environment.SnapshotInfo
	if err := bounded(t, "CreateSnapshot after a fork bomb", func(ctx context.Context) error {
		var err error
		after, err = env.CreateSnapshot(ctx, "after-bomb")
		return err
	}); err != nil {
		t.Fatalf("CreateSnapshot after a fork bomb: %v", err)
	}
	if f, ok := env.(environment.Forker); ok && env.Capabilities().Fork {
		var fork environment.Environment
		if err := bounded(t, "Fork after a fork bomb", func(ctx context.Context) error {
			var err error
			fork, err = f.Fork(ctx, after.ID, s.sessionConfig())
			return err
		}); err != nil {
			t.Fatalf("Fork after a fork bomb: %v", err)
		}
		s.destroyAtEnd(t, fork)
		s.wantContent(t, fork, "before.txt", "before the bomb")
	}

	s.hostile(t, env, forkBomb)
	if err := bounded(t, "Rollback after a fork bomb", func(ctx context.Context) error {
		return env.Rollback(ctx, before.ID)
	}); err != nil {
		t.Fatalf("Rollback after a fork bomb: %v", err)
	}
	s.usable(t, env)
	s.wantContent(t, env, "before.txt", "before the bomb")

	s.hostile(t, env, forkBomb)
	if err := bounded(t, "Destroy after a fork bomb", env.Destroy); err != nil {
		t.Fatalf("Destroy after a fork bomb: %v", err)
	}
	s.othersUnaffected(t, other, canary)
}

// testKillEverything: kill -9 -1 from a command kills every process it
// may (inside the sandbox), the host's are untouched, and the session
// goes on (or reports itself failed and starts again on Resume).
func (s *suite) testKillEverything(t *testing.T) {
	env, _ := s.session(t)
	isolated(t, env)
	other, _ := s.session(t)
	canary := s.hostCanary(t)
	s.hostile(t, env, "sleep 300 & kill -9 -1; echo survived")
	s.usable(t, env)
	if err := bounded(t, "CreateSnapshot after kill -1", func(ctx context.Context) error {
		_, err := env.CreateSnapshot(ctx, "after-kill")
		return err
	}); err != nil {
		t.Fatalf("CreateSnapshot after kill -1: %v", err)
	}
	s.othersUnaffected(t, other, canary)
}

// agentPipeAttacks reach for the agent's pipes through /proc/1/fd (the
// agent is the sandbox's init): write garbage to them, steal the host's
// frames, close what can be closed.
var agentPipeAttacks = []struct{ name, cmd string }{
	{"garbage", `for f in /proc/1/fd/*; do printf '\377\377\377\377garbage' > "$f"; done 2>/dev/null; echo done`},
	{"fake-frames", `for f in /proc/1/fd/*; do printf '\000\000\000\003\105\001\000' > "$f"; done 2>/dev/null; echo done`},
	{"steal-input", `(cat /proc/1/fd/0 > /dev/null 2>&1 &); sleep 1; echo done`},
	{"close", `exec 0<&- 1>&- 2>&-; for f in /proc/1/fd/*; do exec 3<>"$f" 3>&-; done 2>/dev/null; exit 0`},
}

// testAgentPipes runs each attack on the agent's pipes: CreateSnapshot,
// Rollback and Destroy return within hostileBound (the session works, or
// reports a failed sandbox that Resume replaces), and nothing outside the
// session is hurt.
func (s *suite) testAgentPipes(t *testing.T) {
	probe, _ := s.session(t)
	isolated(t, probe)
	other, _ := s.session(t)
	canary := s.hostCanary(t)
	for _, a := range agentPipeAttacks {
		t.Run(a.name, func(t *testing.T) {
			env, _ := s.session(t)
			before := s.snapshot(t, env, "before")
			s.hostile(t, env, a.cmd)
			// The snapshot and the rollback may fail only because the
			// session failed. The rollback must kill whatever the attack
			// left running, with the agent's help or without it.
			err := bounded(t, "CreateSnapshot after the attack", func(ctx context.Context) error {
				_, err := env.CreateSnapshot(ctx, "after-"+a.name)
				return err
			})
			if err != nil && !errors.Is(err, environment.ErrNotActive) {
				t.Errorf("CreateSnapshot after the attack: %v", err)
			}
			err = bounded(t, "Rollback after the attack", func(ctx context.Context) error {
				return env.Rollback(ctx, before.ID)
			})
			if err != nil && !errors.Is(err, environment.ErrNotActive) {
				t.Errorf("Rollback after the attack: %v", err)
			}
			s.usable(t, env)
			if err := bounded(t, "Destroy after the attack", env.Destroy); err != nil {
				t.Errorf("Destroy after the attack: %v", err)
			}
		})
	}
	s.othersUnaffected(t, other, canary)
}
