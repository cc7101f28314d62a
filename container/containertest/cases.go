package containertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/snapshot/guard"
)

// testExecExitCodes: output goes to the right stream, exit codes and
// signals come back, and a command that cannot start is an error.
func (s *suite) testExecExitCodes(t *testing.T) {
	b := s.start(t, nil)
	st, out, errs := Sh(t, b.sb, "echo hello; echo oops >&2; exit 7")
	if st.Code != 7 || out != "hello\n" || errs != "oops\n" || st.TimedOut || st.OOMKilled {
		t.Errorf("exit 7: %+v stdout %q stderr %q", st, out, errs)
	}
	if st, _, _ := Sh(t, b.sb, "kill -9 $$"); st.Code != 137 || st.OOMKilled {
		t.Errorf("kill -9: %+v, want code 137 and no OOM", st)
	}
	st, err := b.sb.Exec(ctxT(t), container.Process{Args: []string{"/no/such/program"}})
	if err == nil && st.Code == 0 {
		t.Errorf("a missing program: %+v, want an error or a failing code", st)
	}
	if errors.Is(err, container.ErrNotRunning) {
		t.Errorf("a missing program: %v: the sandbox must stay up", err)
	}
	if _, err := b.sb.Exec(ctxT(t), container.Process{}); !errors.Is(err, container.ErrInvalidSpec) {
		t.Errorf("empty Args: %v, want ErrInvalidSpec", err)
	}
	if got := MustSh(t, b.sb, "echo still"); got != "still\n" {
		t.Errorf("after the failures: %q", got)
	}
}

// testStreamsBeforeExit: output reaches the writer while the command runs.
func (s *suite) testStreamsBeforeExit(t *testing.T) {
	b := s.start(t, nil)
	var out Buffer
	done := make(chan error, 1)
	go func() {
		_, err := b.sb.Exec(ctxT(t), container.Process{
			Args:   []string{"sh", "-c", "echo first; while [ ! -e gate ]; do sleep 0.01; done; echo second"},
			Stdout: &out,
		})
		done <- err
	}()
	deadline := time.Now().Add(20 * time.Second)
	for out.String() != "first\n" {
		if time.Now().After(deadline) {
			t.Fatalf("no output before the command's exit: %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("the command ended early: %v", err)
	default:
	}
	if err := os.WriteFile(filepath.Join(b.ws, "gate"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if out.String() != "first\nsecond\n" {
		t.Errorf("output: %q", out.String())
	}
}

// testEnvAndDir: the spec's environment, the Process's additions over
// it, and Dir (absolute or relative to the workspace; never outside).
func (s *suite) testEnvAndDir(t *testing.T) {
	b := s.start(t, nil)
	if got := MustSh(t, b.sb, "echo $TURNBOX_SUITE"); got != "base\n" {
		t.Errorf("spec Env: %q", got)
	}
	if err := os.MkdirAll(filepath.Join(b.ws, "sub", "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, dir := range []string{"/workspace/sub/dir", "sub/dir"} {
		var out Buffer
		name := fmt.Sprintf("here%d", i)
		st, err := b.sb.Exec(ctxT(t), container.Process{
			Args: []string{"sh", "-c", "echo $X $TURNBOX_SUITE; echo hi > " + name},
			Env:  []string{"X=y", "TURNBOX_SUITE=over"}, Dir: dir, Stdout: &out,
		})
		if err != nil || st.Code != 0 || out.String() != "y over\n" {
			t.Errorf("Dir %q: %+v %v %q", dir, st, err, out.String())
		}
		if got, err := os.ReadFile(filepath.Join(b.ws, "sub", "dir", name)); err != nil || string(got) != "hi\n" {
			t.Errorf("Dir %q: a file written in it, on the host: %q %v", dir, got, err)
		}
	}
	for _, dir := range []string{"/etc", "/workspace/../etc", "/workspacex", "../etc"} {
		_, err := b.sb.Exec(ctxT(t), container.Process{Args: []string{"true"}, Dir: dir})
		if !errors.Is(err, container.ErrInvalidSpec) {
			t.Errorf("Dir %q: %v, want ErrInvalidSpec", dir, err)
		}
	}
}

// testWorkspaceVisibility: a file written on the host is seen inside, one
// written inside is seen on the host, and a tree exchanged into place on
// the host (as a rollback does) is what the next command sees.
func (s *suite) testWorkspaceVisibility(t *testing.T) {
	b := s.start(t, nil)
	if err := os.WriteFile(filepath.Join(b.ws, "from-host"), []byte("host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := MustSh(t, b.sb, "cat from-host; echo sandbox > from-sandbox"); got != "host\n" {
		t.Errorf("host file inside: %q", got)
	}
	if got, err := os.ReadFile(filepath.Join(b.ws, "from-sandbox")); err != nil || string(got) != "sandbox\n" {
		t.Errorf("sandbox file on the host: %q %v", got, err)
	}
	swapWorkspace(t, b.ws, map[string]string{"f": "new\n"})
	if got := MustSh(t, b.sb, "cat f; echo w > g"); got != "new\n" {
		t.Errorf("after the workspace was exchanged the sandbox sees %q, want new", got)
	}
	if got, err := os.ReadFile(filepath.Join(b.ws, "g")); err != nil || string(got) != "w\n" {
		t.Errorf("write after the exchange, on the host: %q %v", got, err)
	}
}

// testConcurrentExecs: many commands at once each get their own output
// and exit code.
func (s *suite) testConcurrentExecs(t *testing.T) {
	b := s.start(t, nil)
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			var out Buffer
			st, err := b.sb.Exec(ctxT(t), container.Process{Args: []string{"sh", "-c", fmt.Sprintf("sleep 0.2; echo %d; exit %d", i, i%5)}, Stdout: &out})
			if err != nil || st.Code != i%5 || out.String() != fmt.Sprintf("%d\n", i) {
				t.Errorf("exec %d: %+v %v %q", i, st, err, out.String())
			}
		})
	}
	wg.Wait()
}

// testTimeoutKillsTree: a timeout kills the command and everything it
// started, a process that left its session included, promptly.
func (s *suite) testTimeoutKillsTree(t *testing.T) {
	b := s.start(t, nil)
	var out Buffer
	start := time.Now()
	st, err := b.sb.Exec(ctxT(t), container.Process{
		Args:   []string{"sh", "-c", "(" + ticker("t1") + ") & setsid sh -c '" + ticker("t2") + "' & echo started; wait"},
		Stdout: &out, Timeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !st.TimedOut || st.Code != 137 || out.String() != "started\n" {
		t.Errorf("timed-out command: %+v %q, want TimedOut, code 137", st, out.String())
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("a 1 s timeout returned after %v", d)
	}
	waitStill(t, filepath.Join(b.ws, "t1"), "after the timeout")
	waitStill(t, filepath.Join(b.ws, "t2"), "after the timeout (setsid)")
	// The context's end kills too.
	ctx, cancel := context.WithTimeout(ctxT(t), 500*time.Millisecond)
	defer cancel()
	st, err = b.sb.Exec(ctx, container.Process{Args: []string{"sleep", "1000"}})
	if err != nil || !st.TimedOut {
		t.Errorf("canceled context: %+v %v, want TimedOut", st, err)
	}
}

// testKillAll: KillAll kills every command and what they left behind, and
// the sandbox runs the next command.
func (s *suite) testKillAll(t *testing.T) {
	b := s.start(t, nil)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			st, err := b.sb.Exec(ctxT(t), container.Process{Args: []string{"sh", "-c", fmt.Sprintf("(%s) & wait", ticker(fmt.Sprintf("k%d", i)))}})
			// SIGKILL (137). gVisor may hang up the command first (129):
			// its ProcessGroup.handleOrphan sends SIGHUP and SIGCONT to
			// a group without ancestors whenever a member exits while
			// another is stopped (KillAll stops all, then kills), where
			// Linux does only when the group becomes orphaned.
			if err != nil || (st.Code != 137 && st.Code != 129) {
				t.Errorf("a killed command: %+v %v, want code 137 (or 129)", st, err)
			}
		})
	}
	MustSh(t, b.sb, "setsid sh -c '"+ticker("daemon")+"' >/dev/null 2>&1 </dev/null &")
	for _, f := range []string{"k0", "k1", "k2", "daemon"} {
		waitGrowing(t, filepath.Join(b.ws, f))
	}
	if err := b.sb.KillAll(ctxT(t)); err != nil {
		t.Fatalf("KillAll: %v", err)
	}
	wg.Wait()
	for _, f := range []string{"k0", "k1", "k2", "daemon"} {
		waitStill(t, filepath.Join(b.ws, f), "after KillAll")
	}
	if got := MustSh(t, b.sb, "echo alive"); got != "alive\n" {
		t.Errorf("after KillAll: %q", got)
	}
	wantStatus(t, b.sb, container.StatusRunning)
}

// pauseOrSkip pauses sb, or checks the unsupported runtime's sentinel and
// skips.
func pauseOrSkip(t *testing.T, sb container.Sandbox) {
	t.Helper()
	err := sb.Pause(ctxT(t))
	if errors.Is(err, container.ErrUnsupported) {
		if rerr := sb.Resume(ctxT(t)); !errors.Is(rerr, container.ErrUnsupported) {
			t.Errorf("Resume on a runtime without Pause: %v, want ErrUnsupported", rerr)
		}
		if got := MustSh(t, sb, "echo up"); got != "up\n" {
			t.Errorf("after an unsupported Pause: %q", got)
		}
		t.Skipf("Pause: %v", err)
	}
	if err != nil {
		t.Fatalf("Pause: %v", err)
	}
}

// testPauseResume: Pause freezes every process; meanwhile Exec, KillAll
// and Idle return ErrPaused at once; Pause and Resume are idempotent;
// Resume thaws.
func (s *suite) testPauseResume(t *testing.T) {
	b := s.start(t, nil)
	tick := filepath.Join(b.ws, "tick")
	running := make(chan error, 1)
	go func() {
		_, err := b.sb.Exec(ctxT(t), container.Process{Args: []string{"sh", "-c", ticker("tick")}})
		running <- err
	}()
	waitGrowing(t, tick)
	pauseOrSkip(t, b.sb)
	wantStatus(t, b.sb, container.StatusPaused)
	if growing(tick) {
		t.Error("a process kept running while paused")
	}
	if err := b.sb.Pause(ctxT(t)); err != nil {
		t.Errorf("Pause on a paused sandbox: %v, want nil", err)
	}
	start := time.Now()
	if _, err := b.sb.Exec(ctxT(t), container.Process{Args: []string{"true"}}); !errors.Is(err, container.ErrPaused) {
		t.Errorf("Exec while paused: %v, want ErrPaused", err)
	}
	if err := b.sb.KillAll(ctxT(t)); !errors.Is(err, container.ErrPaused) {
		t.Errorf("KillAll while paused: %v, want ErrPaused", err)
	}
	if ic, ok := b.sb.(container.IdleChecker); ok {
		if _, err := ic.Idle(ctxT(t)); !errors.Is(err, container.ErrPaused) {
			t.Errorf("Idle while paused: %v, want ErrPaused", err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("calls on a paused sandbox took %v: they must not wait for Resume", d)
	}
	if err := b.sb.Resume(ctxT(t)); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	wantStatus(t, b.sb, container.StatusRunning)
	waitGrowing(t, tick)
	if err := b.sb.Resume(ctxT(t)); err != nil {
		t.Errorf("Resume on a running sandbox: %v, want nil", err)
	}
	if err := b.sb.KillAll(ctxT(t)); err != nil {
		t.Fatalf("KillAll after Resume: %v", err)
	}
	if err := <-running; err != nil {
		t.Errorf("the command that was paused: %v", err)
	}
	if got := MustSh(t, b.sb, "echo thawed"); got != "thawed\n" {
		t.Errorf("after Resume: %q", got)
	}
}

// wantStopped checks everything a stopped sandbox must say.
func wantStopped(t *testing.T, sb container.Sandbox) {
	t.Helper()
	select {
	case <-sb.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after Stop")
	}
	wantStatus(t, sb, container.StatusStopped)
	if _, err := sb.Exec(ctxT(t), container.Process{Args: []string{"true"}}); !errors.Is(err, container.ErrNotRunning) {
		t.Errorf("Exec after Stop: %v, want ErrNotRunning", err)
	}
	if err := sb.KillAll(ctxT(t)); !errors.Is(err, container.ErrNotRunning) {
		t.Errorf("KillAll after Stop: %v, want ErrNotRunning", err)
	}
	if err := sb.Pause(ctxT(t)); !errors.Is(err, container.ErrNotRunning) && !errors.Is(err, container.ErrUnsupported) {
		t.Errorf("Pause after Stop: %v, want ErrNotRunning", err)
	}
	if err := sb.Stop(ctxT(t)); err != nil {
		t.Errorf("second Stop: %v, want nil", err)
	}
}

// testStopIdempotent: Stop kills what runs, closes Done and leaves Err
// nil; every later call says the sandbox is not running; Stop again
// (also concurrently) returns the first Stop's result.
func (s *suite) testStopIdempotent(t *testing.T) {
	b := s.start(t, nil)
	go func() {
		_, _ = b.sb.Exec(context.Background(), container.Process{Args: []string{"sh", "-c", ticker("tick")}})
	}()
	waitGrowing(t, filepath.Join(b.ws, "tick"))
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- b.sb.Stop(ctxT(t)) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("Stop: %v", err)
		}
	}
	waitStill(t, filepath.Join(b.ws, "tick"), "after Stop")
	wantStopped(t, b.sb)
	if err := b.sb.Err(); err != nil {
		t.Errorf("Err after a clean Stop: %v, want nil", err)
	}
}

// testStopPaused: a paused sandbox stops promptly.
func (s *suite) testStopPaused(t *testing.T) {
	b := s.start(t, nil)
	pauseOrSkip(t, b.sb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.sb.Stop(ctx); err != nil {
		t.Fatalf("Stop of a paused sandbox: %v", err)
	}
	wantStopped(t, b.sb)
}

// testKilled: a sandbox killed from outside fails its running command
// with ErrNotRunning, closes Done, reports failed, and Stop cleans up.
func (s *suite) testKilled(t *testing.T) {
	if s.cfg.kill == nil {
		t.Skip("the runtime's sandboxes cannot be killed from outside (no WithKill)")
	}
	b := s.start(t, nil)
	res := make(chan error, 1)
	go func() {
		_, err := b.sb.Exec(ctxT(t), container.Process{Args: []string{"sleep", "1000"}})
		res <- err
	}()
	time.Sleep(200 * time.Millisecond)
	s.cfg.kill(t, b.sb)
	select {
	case err := <-res:
		if !errors.Is(err, container.ErrNotRunning) {
			t.Errorf("the running command: %v, want ErrNotRunning", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the running command did not return")
	}
	select {
	case <-b.sb.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed")
	}
	if !errors.Is(b.sb.Err(), container.ErrNotRunning) {
		t.Errorf("Err = %v, want ErrNotRunning", b.sb.Err())
	}
	wantStatus(t, b.sb, container.StatusFailed)
	if _, err := b.sb.Exec(ctxT(t), container.Process{Args: []string{"true"}}); !errors.Is(err, container.ErrNotRunning) {
		t.Errorf("Exec on a dead sandbox: %v, want ErrNotRunning", err)
	}
	if err := b.sb.Stop(ctxT(t)); err != nil {
		t.Errorf("Stop of a dead sandbox: %v", err)
	}
}

// testIdle: an IdleChecker reports idle with nothing running and busy
// while a command (or a process it left) runs.
func (s *suite) testIdle(t *testing.T) {
	b := s.start(t, nil)
	ic, ok := b.sb.(container.IdleChecker)
	if !ok {
		t.Skip("the sandbox is no container.IdleChecker")
	}
	waitIdle := func(want bool, what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			idle, err := ic.Idle(ctxT(t))
			if err != nil {
				t.Fatalf("Idle %s: %v", what, err)
			}
			if idle == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("Idle %s = %v, want %v", what, idle, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitIdle(true, "at start")
	MustSh(t, b.sb, "setsid sleep 1000 >/dev/null 2>&1 </dev/null &")
	waitIdle(false, "with a background process")
	if err := b.sb.KillAll(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	waitIdle(true, "after KillAll")
}

// testInvalidSpec: a malformed Spec fails Start with ErrInvalidSpec.
func (s *suite) testInvalidSpec(t *testing.T) {
	rt := s.newRuntime(t)
	ws := filepath.Join(t.TempDir(), "vol", "ws")
	if err := os.MkdirAll(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	var rootfs string
	if s.cfg.rootfs != nil {
		rootfs = s.cfg.rootfs(t)
	}
	for name, spec := range map[string]container.Spec{
		"bad id":            {ID: "a/b", RootFS: rootfs, Workspace: ws},
		"missing workspace": {ID: sandboxID(t), RootFS: rootfs, Workspace: filepath.Join(ws, "absent")},
	} {
		sb, err := rt.Start(ctxT(t), spec)
		if !errors.Is(err, container.ErrInvalidSpec) {
			t.Errorf("%s: %v, want ErrInvalidSpec", name, err)
		}
		if sb != nil {
			// A typed nil in the interface would be as wrong: the caller
			// must be able to test the result against nil.
			t.Errorf("%s: Start failed but returned a sandbox (%T)", name, sb)
		}
	}
}

// testPidsLimit: a fork bomb under Limits.Pids leaves the sandbox usable.
func (s *suite) testPidsLimit(t *testing.T) {
	if !s.cfg.limits {
		t.Skip("the runtime does not enforce limits (no WithLimits)")
	}
	b := s.start(t, func(sp *container.Spec) { sp.Limits.Pids = 64 })
	st, err := b.sb.Exec(ctxT(t), container.Process{
		Args: []string{"sh", "-c", "bomb() { bomb | bomb & }; bomb; sleep 5"}, Timeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatalf("fork bomb: %v", err)
	}
	t.Logf("fork bomb: %+v", st)
	if err := b.sb.KillAll(ctxT(t)); err != nil {
		t.Fatalf("KillAll after the fork bomb: %v", err)
	}
	if got := MustSh(t, b.sb, "echo survived"); got != "survived\n" {
		t.Errorf("after the fork bomb: %q", got)
	}
	wantStatus(t, b.sb, container.StatusRunning)
}

// testMemoryLimit: a command over Limits.MemoryBytes is killed and
// reported OOMKilled; the sandbox lives on.
func (s *suite) testMemoryLimit(t *testing.T) {
	if !s.cfg.limits {
		t.Skip("the runtime does not enforce limits (no WithLimits)")
	}
	b := s.start(t, func(sp *container.Spec) { sp.Limits.MemoryBytes = 128 << 20 })
	st, err := b.sb.Exec(ctxT(t), container.Process{
		Args: []string{"sh", "-c", "x=0123456789abcdef; while true; do x=$x$x; done"}, Timeout: 60 * time.Second,
	})
	if err != nil {
		t.Fatalf("memory hog: %v (sandbox: %v)", err, b.sb.Err())
	}
	if st.Code == 0 || st.TimedOut || !st.OOMKilled {
		t.Errorf("memory hog: %+v, want killed and OOMKilled", st)
	}
	if got := MustSh(t, b.sb, "echo survived"); got != "survived\n" {
		t.Errorf("after the memory hog: %q", got)
	}
	s.processMemoryLimit(t, b)
}

// testSealedVolumeDir: the workspace's directory is sealed while the
// sandbox lives (nothing inside can rename the workspace or add a link
// beside it) and unsealed once it stopped.
func (s *suite) testSealedVolumeDir(t *testing.T) {
	if s.cfg.volumeMount == "" {
		t.Skip("the runtime does not seal the volume's directory (no WithSealedVolume)")
	}
	b := s.start(t, nil)
	dir := filepath.Dir(b.ws)
	if sealed, err := guard.Sealed(dir); err != nil || !sealed {
		t.Fatalf("while the sandbox runs: sealed=%v err=%v, want sealed", sealed, err)
	}
	m := s.cfg.volumeMount
	out := MustSh(t, b.sb, "mv "+m+"/"+filepath.Base(b.ws)+" "+m+"/x 2>&1; ln -s / "+m+"/y 2>&1; true")
	if strings.Count(out, "not permitted") != 2 {
		t.Errorf("renaming and linking beside the workspace from inside: %q, want 'Operation not permitted' twice", out)
	}
	if err := b.sb.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if sealed, err := guard.Sealed(dir); err != nil || sealed {
		t.Errorf("after Stop: sealed=%v err=%v, want unsealed", sealed, err)
	}
}
