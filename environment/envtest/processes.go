package envtest

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/turnbox/turnbox/environment"
)

func (s *suite) processTests() []test {
	return []test{
		{"StartPID", s.testProcStart},
		{"AttachTwiceAndAfterDisconnect", s.testProcAttach},
		{"Stdin", s.testProcStdin},
		{"Signal", s.testProcSignal},
		{"PTYResize", s.testProcPTY},
		{"CwdEnv", s.testProcCwdEnv},
		{"User", s.testProcUser},
		{"NotFoundAndBadInput", s.testProcErrors},
		{"BashPIDFollowable", s.testProcBashPID},
		{"RollbackEndsWithReason", s.testProcRollback},
		{"Timeout", s.testProcTimeout},
		{"PauseFreezes", s.testProcPause},
	}
}

// runner returns the session's ProcessRunner, skipping when the
// environment reports no Processes capability (after checking that the
// calls then fail with ErrCapabilityNotSupported).
func (s *suite) runner(t *testing.T) (environment.Environment, environment.ProcessRunner) {
	t.Helper()
	env, _ := s.session(t)
	pr, ok := env.(environment.ProcessRunner)
	if !env.Capabilities().Processes {
		if ok {
			ctx, cancel := s.ctx(t)
			defer cancel()
			_, err := pr.StartProcess(ctx, environment.ProcessConfig{Args: []string{"true"}})
			wantErr(t, "StartProcess without Processes", err, environment.ErrCapabilityNotSupported)
		}
		t.Skip("Capabilities.Processes is false")
	}
	if !ok {
		t.Fatal("Capabilities.Processes is true but the environment does not implement environment.ProcessRunner")
	}
	return env, pr
}

// start starts cfg and fails the test on error.
func (s *suite) start(t *testing.T, pr environment.ProcessRunner, cfg environment.ProcessConfig) *environment.ProcessInfo {
	t.Helper()
	ctx, cancel := s.ctx(t)
	defer cancel()
	info, err := pr.StartProcess(ctx, cfg)
	if err != nil {
		t.Fatalf("StartProcess(%+v): %v", cfg, err)
	}
	if info == nil || info.PID <= 0 {
		t.Fatalf("StartProcess(%+v) = %+v: no pid", cfg, info)
	}
	return info
}

// follow attaches to pid from off until the output holds want (or the
// process ends when want is ""), and returns the output and the exit seen.
func (s *suite) follow(t *testing.T, pr environment.ProcessRunner, pid int, off int64, want string) (string, *environment.ProcessExit) {
	t.Helper()
	ctx, cancel := s.ctx(t)
	defer cancel()
	var out strings.Builder
	var exit *environment.ProcessExit
	errFound := errors.New("found")
	next := off
	err := pr.AttachProcess(ctx, pid, off, func(ev environment.ProcessEvent) error {
		if ev.Offset != next && ev.Dropped == 0 && ev.Exit == nil {
			t.Errorf("event at offset %d, want %d (offsets must be contiguous)", ev.Offset, next)
		}
		next = ev.Offset + int64(len(ev.Data)) + ev.Dropped
		out.Write(ev.Data)
		exit = ev.Exit
		if want != "" && strings.Contains(out.String(), want) {
			return errFound
		}
		return nil
	})
	switch {
	case errors.Is(err, errFound):
	case err != nil:
		t.Fatalf("AttachProcess(%d, %d): %v (output so far %q)", pid, off, err, clip(out.String()))
	case want != "":
		t.Fatalf("AttachProcess(%d, %d) ended without %q in %q", pid, off, want, clip(out.String()))
	case exit == nil:
		t.Fatalf("AttachProcess(%d, %d) returned nil without an exit event", pid, off)
	}
	return out.String(), exit
}

func (s *suite) waitExit(t *testing.T, pr environment.ProcessRunner, pid int) *environment.ProcessExit {
	t.Helper()
	ctx, cancel := s.ctx(t)
	defer cancel()
	exit, err := pr.WaitProcess(ctx, pid)
	if err != nil {
		t.Fatalf("WaitProcess(%d): %v", pid, err)
	}
	return exit
}

// testProcStart: StartProcess returns at once with a pid; the process is
// listed as running, then as ended with its exit code.
func (s *suite) testProcStart(t *testing.T) {
	_, pr := s.runner(t)
	begin := time.Now()
	info := s.start(t, pr, environment.ProcessConfig{Command: "echo started; sleep 2; exit 3", Tag: "mine"})
	if d := time.Since(begin); d > 1500*time.Millisecond {
		t.Errorf("StartProcess took %v: it must not wait for the process", d)
	}
	ctx, cancel := s.ctx(t)
	defer cancel()
	list, err := pr.ListProcesses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list, func(p environment.ProcessInfo) bool { return p.PID == info.PID })
	if i < 0 || list[i].Tag != "mine" || list[i].Exit != nil {
		t.Fatalf("ListProcesses = %+v: want pid %d running with tag mine", list, info.PID)
	}
	out, exit := s.follow(t, pr, info.PID, 0, "")
	if out != "started\n" || exit.Code != 3 || exit.Killed {
		t.Fatalf("output %q exit %+v, want \"started\\n\" and code 3", out, exit)
	}
	list, _ = pr.ListProcesses(ctx)
	i = slices.IndexFunc(list, func(p environment.ProcessInfo) bool { return p.PID == info.PID })
	if i < 0 || list[i].Exit == nil || list[i].Exit.Code != 3 || list[i].OutputBytes != 8 {
		t.Fatalf("after the end, ListProcesses = %+v: want pid %d ended with code 3 and 8 bytes", list, info.PID)
	}
}

// testProcAttach: two attachers see the same output; one that
// disconnects misses nothing when it attaches again from its offset.
func (s *suite) testProcAttach(t *testing.T) {
	_, pr := s.runner(t)
	info := s.start(t, pr, environment.ProcessConfig{Args: []string{"cat"}, Stdin: true})
	ctx, cancel := s.ctx(t)
	defer cancel()
	var wg sync.WaitGroup
	outs := make([]string, 2)
	for i := range outs {
		wg.Go(func() { outs[i], _ = s.follow(t, pr, info.PID, 0, "one\n") })
	}
	if err := pr.SendInput(ctx, info.PID, []byte("one\n")); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if outs[0] != "one\n" || outs[1] != "one\n" {
		t.Fatalf("attachers saw %q and %q, want \"one\\n\" each", outs[0], outs[1])
	}
	// Both attachers are gone (disconnected); output goes on.
	if err := pr.SendInput(ctx, info.PID, []byte("two\n")); err != nil {
		t.Fatal(err)
	}
	if err := pr.CloseInput(ctx, info.PID); err != nil {
		t.Fatal(err)
	}
	out, exit := s.follow(t, pr, info.PID, 4, "")
	if out != "two\n" || exit.Code != 0 {
		t.Fatalf("re-attach from offset 4: %q exit %+v, want \"two\\n\" and code 0", out, exit)
	}
	if out, _ := s.follow(t, pr, info.PID, 0, ""); out != "one\ntwo\n" {
		t.Fatalf("re-attach from 0 after the end: %q", out)
	}
}

// testProcStdin: input arrives in order; closing it ends a reader; a
// process started without Stdin refuses input.
func (s *suite) testProcStdin(t *testing.T) {
	_, pr := s.runner(t)
	info := s.start(t, pr, environment.ProcessConfig{Command: "wc -c", Stdin: true})
	ctx, cancel := s.ctx(t)
	defer cancel()
	for range 3 {
		if err := pr.SendInput(ctx, info.PID, []byte("12345")); err != nil {
			t.Fatal(err)
		}
	}
	if err := pr.CloseInput(ctx, info.PID); err != nil {
		t.Fatal(err)
	}
	if out, _ := s.follow(t, pr, info.PID, 0, ""); strings.TrimSpace(out) != "15" {
		t.Fatalf("wc -c saw %q, want 15", out)
	}
	closed := s.start(t, pr, environment.ProcessConfig{Args: []string{"sleep", "30"}})
	defer pr.SignalProcess(ctx, closed.PID, int(syscall.SIGKILL))
	wantErr(t, "SendInput to a process without Stdin", pr.SendInput(ctx, closed.PID, []byte("x")), environment.ErrInvalidArgument)
	big := make([]byte, environment.MaxProcessInputBytes+1)
	wantErr(t, "SendInput over the bound", pr.SendInput(ctx, closed.PID, big), environment.ErrInvalidArgument)
}

// testProcSignal: any signal by number reaches the process; a trapped
// one does not end it.
func (s *suite) testProcSignal(t *testing.T) {
	_, pr := s.runner(t)
	info := s.start(t, pr, environment.ProcessConfig{Command: `trap 'echo got-usr1' USR1; echo ready; while :; do sleep 0.05; done`})
	s.follow(t, pr, info.PID, 0, "ready\n")
	ctx, cancel := s.ctx(t)
	defer cancel()
	if err := pr.SignalProcess(ctx, info.PID, int(syscall.SIGUSR1)); err != nil {
		t.Fatal(err)
	}
	s.follow(t, pr, info.PID, 0, "got-usr1")
	if err := pr.SignalProcess(ctx, info.PID, int(syscall.SIGTERM)); err != nil {
		t.Fatal(err)
	}
	exit := s.waitExit(t, pr, info.PID)
	if exit.Code != 128+int(syscall.SIGTERM) || exit.Killed {
		t.Fatalf("after SIGTERM: %+v, want code %d", exit, 128+int(syscall.SIGTERM))
	}
}

// testProcPTY: a PTY process sees its size and a resize, and its input
// is echoed on its one stream.
func (s *suite) testProcPTY(t *testing.T) {
	env, pr := s.runner(t)
	if !env.Capabilities().PTY {
		t.Skip("Capabilities.PTY is false")
	}
	info := s.start(t, pr, environment.ProcessConfig{Command: `stty size; read x; stty size; echo "got:$x"`,
		PTY: &environment.TermSize{Rows: 24, Cols: 80}})
	if !info.PTY {
		t.Errorf("ProcessInfo.PTY is false for a PTY process")
	}
	s.follow(t, pr, info.PID, 0, "24 80")
	ctx, cancel := s.ctx(t)
	defer cancel()
	if err := pr.ResizeProcess(ctx, info.PID, environment.TermSize{Rows: 30, Cols: 100}); err != nil {
		t.Fatal(err)
	}
	if err := pr.SendInput(ctx, info.PID, []byte("typed\r")); err != nil {
		t.Fatal(err)
	}
	out, exit := s.follow(t, pr, info.PID, 0, "")
	for _, want := range []string{"typed", "30 100", "got:typed"} {
		if !strings.Contains(out, want) {
			t.Errorf("PTY output %q lacks %q", out, want)
		}
	}
	if exit.Code != 0 {
		t.Errorf("exit %+v", exit)
	}
	plain := s.start(t, pr, environment.ProcessConfig{Args: []string{"sleep", "30"}})
	defer pr.SignalProcess(ctx, plain.PID, int(syscall.SIGKILL))
	wantErr(t, "ResizeProcess without a PTY", pr.ResizeProcess(ctx, plain.PID, environment.TermSize{Rows: 1, Cols: 1}), environment.ErrInvalidArgument)
	wantErr(t, "ResizeProcess to 0x0", pr.ResizeProcess(ctx, info.PID, environment.TermSize{}), environment.ErrInvalidArgument)
}

// testProcCwdEnv: Cwd (relative to the workspace) and Env reach the
// process; stdout and stderr are told apart.
func (s *suite) testProcCwdEnv(t *testing.T) {
	env, pr := s.runner(t)
	s.sh(t, env, "mkdir -p sub/dir")
	info := s.start(t, pr, environment.ProcessConfig{Command: `basename "$(pwd)"; echo "$FOO" >&2`,
		Cwd: "sub/dir", Env: map[string]string{"FOO": "bar baz"}})
	ctx, cancel := s.ctx(t)
	defer cancel()
	streams := map[string]string{}
	err := pr.AttachProcess(ctx, info.PID, 0, func(ev environment.ProcessEvent) error {
		streams[ev.Stream] += string(ev.Data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if streams[environment.StreamStdout] != "dir\n" || streams[environment.StreamStderr] != "bar baz\n" {
		t.Fatalf("streams %q: want stdout \"dir\\n\" and stderr \"bar baz\\n\"", streams)
	}
	_, err = pr.StartProcess(ctx, environment.ProcessConfig{Args: []string{"true"}, Cwd: "../.."})
	wantErr(t, "StartProcess with a cwd above the workspace", err, environment.ErrPathEscapes)
}

// testProcUser: User runs the process as that user.
func (s *suite) testProcUser(t *testing.T) {
	env, pr := s.runner(t)
	if env.Capabilities().Isolation == environment.IsolationNone {
		t.Skip("isolation none runs host processes: user switching is tested in container/none")
	}
	info := s.start(t, pr, environment.ProcessConfig{Args: []string{"id", "-u"}, User: "65534"})
	out, exit := s.follow(t, pr, info.PID, 0, "")
	if strings.TrimSpace(out) != "65534" || exit.Code != 0 {
		t.Fatalf("id -u as 65534: %q exit %+v", out, exit)
	}
}

// testProcErrors: unknown pids give ErrProcessNotFound, bad input
// ErrInvalidArgument.
func (s *suite) testProcErrors(t *testing.T) {
	_, pr := s.runner(t)
	ctx, cancel := s.ctx(t)
	defer cancel()
	const pid = 1 << 30
	wantErr(t, "AttachProcess", pr.AttachProcess(ctx, pid, 0, func(environment.ProcessEvent) error { return nil }), environment.ErrProcessNotFound)
	wantErr(t, "SendInput", pr.SendInput(ctx, pid, []byte("x")), environment.ErrProcessNotFound)
	wantErr(t, "CloseInput", pr.CloseInput(ctx, pid), environment.ErrProcessNotFound)
	wantErr(t, "SignalProcess", pr.SignalProcess(ctx, pid, 15), environment.ErrProcessNotFound)
	wantErr(t, "ResizeProcess", pr.ResizeProcess(ctx, pid, environment.TermSize{Rows: 1, Cols: 1}), environment.ErrProcessNotFound)
	_, err := pr.WaitProcess(ctx, pid)
	wantErr(t, "WaitProcess", err, environment.ErrProcessNotFound)
	for _, cfg := range []environment.ProcessConfig{
		{},
		{Args: []string{"true"}, Command: "true"},
		{Args: []string{""}},
		{Command: "true", PTY: &environment.TermSize{}},
		{Command: "true", Env: map[string]string{"1BAD": "x"}},
		{Command: "true", Timeout: -1},
	} {
		_, err := pr.StartProcess(ctx, cfg)
		wantErr(t, "StartProcess with bad config", err, environment.ErrInvalidArgument)
	}
	info := s.start(t, pr, environment.ProcessConfig{Args: []string{"sleep", "30"}})
	defer pr.SignalProcess(ctx, info.PID, int(syscall.SIGKILL))
	for _, sig := range []int{0, -1, 65} {
		wantErr(t, "SignalProcess with a bad signal", pr.SignalProcess(ctx, info.PID, sig), environment.ErrInvalidArgument)
	}
	wantErr(t, "AttachProcess at a negative offset", pr.AttachProcess(ctx, info.PID, -1, func(environment.ProcessEvent) error { return nil }), environment.ErrInvalidArgument)
}

// testProcBashPID: a bash tool call reports its pid, and its output and
// exit can be followed by it afterwards.
func (s *suite) testProcBashPID(t *testing.T) {
	env, pr := s.runner(t)
	req := s.request(t, environment.BashParams{Command: "echo from-tool; exit 4"})
	resp, err := s.do(t, env, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.PID <= 0 {
		t.Fatalf("bash response has no PID: %+v", resp)
	}
	out, exit := s.follow(t, pr, resp.PID, 0, "")
	if out != "from-tool\n" || exit.Code != 4 {
		t.Fatalf("following the bash call's pid: %q exit %+v", out, exit)
	}
	ctx, cancel := s.ctx(t)
	defer cancel()
	list, err := pr.ListProcesses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(list, func(p environment.ProcessInfo) bool {
		return p.PID == resp.PID && p.Tag == "tool:"+req.ToolCallID
	}) {
		t.Fatalf("ListProcesses = %+v: no pid %d tagged tool:%s", list, resp.PID, req.ToolCallID)
	}
}

// testProcRollback: Rollback kills running processes and ends them with
// Killed and a reason naming the rollback.
func (s *suite) testProcRollback(t *testing.T) {
	env, pr := s.runner(t)
	if !env.Capabilities().Rollback {
		t.Skip("Capabilities.Rollback is false")
	}
	ctx, cancel := s.ctx(t)
	defer cancel()
	snap, err := env.CreateSnapshot(ctx, "before")
	if err != nil {
		t.Fatal(err)
	}
	info := s.start(t, pr, environment.ProcessConfig{Command: "echo up; sleep 60"})
	s.follow(t, pr, info.PID, 0, "up\n")
	if err := env.Rollback(ctx, snap.ID); err != nil {
		t.Fatal(err)
	}
	exit := s.waitExit(t, pr, info.PID)
	if !exit.Killed || !strings.Contains(exit.Reason, "rollback") || !strings.Contains(exit.Reason, snap.ID) {
		t.Fatalf("after Rollback: %+v, want Killed with a reason naming the rollback to %s", exit, snap.ID)
	}
}

// testProcTimeout: Timeout kills the process tree and says so.
func (s *suite) testProcTimeout(t *testing.T) {
	_, pr := s.runner(t)
	info := s.start(t, pr, environment.ProcessConfig{Args: []string{"sleep", "30"}, Timeout: 200 * time.Millisecond})
	exit := s.waitExit(t, pr, info.PID)
	if !exit.TimedOut || exit.Killed {
		t.Fatalf("after its timeout: %+v, want TimedOut (and not Killed, which names the host's kills)", exit)
	}
}

// testProcPause: Pause freezes processes: control calls fail with
// ErrNotActive and change nothing; after Resume all goes on.
func (s *suite) testProcPause(t *testing.T) {
	env, pr := s.runner(t)
	if !env.Capabilities().Pause {
		t.Skip("Capabilities.Pause is false")
	}
	info := s.start(t, pr, environment.ProcessConfig{Args: []string{"cat"}, Stdin: true})
	ctx, cancel := s.ctx(t)
	defer cancel()
	if err := env.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "SendInput while paused", pr.SendInput(ctx, info.PID, []byte("lost\n")), environment.ErrNotActive)
	wantErr(t, "SignalProcess while paused", pr.SignalProcess(ctx, info.PID, int(syscall.SIGTERM)), environment.ErrNotActive)
	_, err := pr.StartProcess(ctx, environment.ProcessConfig{Args: []string{"true"}})
	wantErr(t, "StartProcess while paused", err, environment.ErrNotActive)
	if _, err := pr.ListProcesses(ctx); err != nil {
		t.Errorf("ListProcesses while paused: %v", err)
	}
	if err := env.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pr.SendInput(ctx, info.PID, []byte("after\n")); err != nil {
		t.Fatal(err)
	}
	if err := pr.CloseInput(ctx, info.PID); err != nil {
		t.Fatal(err)
	}
	if out, exit := s.follow(t, pr, info.PID, 0, ""); out != "after\n" || exit.Code != 0 {
		t.Fatalf("after Resume: %q exit %+v, want only \"after\\n\" and code 0", out, exit)
	}
}
