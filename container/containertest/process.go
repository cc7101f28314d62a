package containertest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
)

// WithoutProcesses skips the process cases (container.ProcessStarter),
// logging reason: for a runtime whose sandboxes do not implement it yet.
func WithoutProcesses(reason string) Option {
	return func(c *config) { c.noProcesses = reason }
}

var processCases = []testCase{
	{"ProcessStartReturnsPID", (*suite).testProcessStart},
	{"ProcessStdin", (*suite).testProcessStdin},
	{"ProcessSignal", (*suite).testProcessSignal},
	{"ProcessKillTree", (*suite).testProcessKillTree},
	{"ProcessPTY", (*suite).testProcessPTY},
	{"ProcessUser", (*suite).testProcessUser},
	{"ProcessInvalid", (*suite).testProcessInvalid},
	{"ProcessDone", (*suite).testProcessDone},
	{"ProcessWaitCanceled", (*suite).testProcessWaitCanceled},
	{"ProcessStatus", (*suite).testProcessStatus},
}

// starter starts a sandbox (with spec tweaked by edit, if any) and
// returns it with its ProcessStarter.
func (s *suite) starter(t *testing.T, edit ...func(*container.Spec)) (box, container.ProcessStarter) {
	t.Helper()
	if s.cfg.noProcesses != "" {
		t.Skipf("skipped by the runtime: %s", s.cfg.noProcesses)
	}
	b := s.start(t, func(spec *container.Spec) {
		for _, e := range edit {
			e(spec)
		}
	})
	ps, ok := b.sb.(container.ProcessStarter)
	if !ok {
		t.Fatalf("%T does not implement container.ProcessStarter", b.sb)
	}
	return b, ps
}

// startProc starts spec, failing the test on an error; the process is
// killed at the test's end if it still runs.
func startProc(t testing.TB, ps container.ProcessStarter, spec container.ProcessSpec) container.RunningProcess {
	t.Helper()
	rp, err := ps.StartProcess(ctxT(t), spec)
	if err != nil {
		t.Fatalf("StartProcess %q: %v", spec.Args, err)
	}
	t.Cleanup(func() {
		if rp.Kill(context.Background()) == nil {
			_, _ = rp.Wait(context.Background())
		}
	})
	return rp
}

// waitOutput waits until out matches re, failing after 20 s.
func waitOutput(t *testing.T, out *Buffer, re string) {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(20 * time.Second)
	for !rx.MatchString(out.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("output %q does not match %q", out.String(), re)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitEnd waits for rp's end, failing on an error or after 20 s.
func waitEnd(t *testing.T, rp container.RunningProcess) container.ExitStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := rp.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return st
}

// testProcessStart: a long sleep returns its pid at once and runs until
// killed; Kill reports TimedOut.
func (s *suite) testProcessStart(t *testing.T) {
	b, ps := s.starter(t)
	start := time.Now()
	rp := startProc(t, ps, container.ProcessSpec{Process: container.Process{Args: []string{"sleep", "1000"}}})
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("StartProcess took %v for a sleep: it must not wait for the process", d)
	}
	if rp.PID() <= 0 {
		t.Errorf("PID() = %d", rp.PID())
	}
	if got := MustSh(t, b.sb, "cat /proc/"+strconv.Itoa(rp.PID())+"/cmdline | tr '\\0' ' '"); got != "sleep 1000 " {
		t.Errorf("pid %d is %q, want the sleep", rp.PID(), got)
	}
	select {
	case <-rp.Done():
		t.Fatal("Done before the sleep ended")
	case <-time.After(100 * time.Millisecond):
	}
	if err := rp.Kill(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if st := waitEnd(t, rp); !st.TimedOut || st.Code != 137 {
		t.Errorf("after Kill: %+v, want TimedOut and code 137", st)
	}
}

// testProcessStdin: what WriteStdin sends reaches the process, and
// CloseStdin gives it end of file.
func (s *suite) testProcessStdin(t *testing.T) {
	_, ps := s.starter(t)
	var out Buffer
	rp := startProc(t, ps, container.ProcessSpec{Process: container.Process{Args: []string{"cat"}, Stdout: &out}, OpenStdin: true})
	if err := rp.WriteStdin(ctxT(t), []byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, &out, "^hello\n$")
	big := strings.Repeat("0123456789abcdef", 8<<10) // several frames
	if err := rp.WriteStdin(ctxT(t), []byte(big)); err != nil {
		t.Fatal(err)
	}
	if err := rp.CloseStdin(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if st := waitEnd(t, rp); st.Code != 0 || st.TimedOut {
		t.Errorf("cat after CloseStdin: %+v, want code 0", st)
	}
	if out.String() != "hello\n"+big {
		t.Errorf("cat echoed %d bytes, want %d", len(out.String()), 6+len(big))
	}
}

// testProcessSignal: SIGTERM ends a sleep with code 143 and Signal 15.
func (s *suite) testProcessSignal(t *testing.T) {
	_, ps := s.starter(t)
	rp := startProc(t, ps, container.ProcessSpec{Process: container.Process{Args: []string{"sleep", "1000"}}})
	if err := rp.Signal(ctxT(t), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if st := waitEnd(t, rp); st.Code != 143 || st.Signal != 15 || st.TimedOut {
		t.Errorf("after SIGTERM: %+v, want code 143, signal 15, not TimedOut", st)
	}
}

// testProcessKillTree: Kill ends the process's background children too.
func (s *suite) testProcessKillTree(t *testing.T) {
	b, ps := s.starter(t)
	rp := startProc(t, ps, container.ProcessSpec{Process: container.Process{
		Args: []string{"sh", "-c", "(" + ticker("tick") + ") & sleep 1000 & wait"}}})
	p := filepath.Join(b.ws, "tick")
	waitGrowing(t, p)
	if err := rp.Kill(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if st := waitEnd(t, rp); !st.TimedOut {
		t.Errorf("after Kill: %+v, want TimedOut", st)
	}
	waitStill(t, p, "after Kill")
}

// testProcessPTY: a process in a PTY has a terminal of the given size,
// sees a Resize, and gets its input through WriteStdin.
func (s *suite) testProcessPTY(t *testing.T) {
	_, ps := s.starter(t)
	var out Buffer
	rp := startProc(t, ps, container.ProcessSpec{
		Process: container.Process{Args: []string{"sh", "-c", "tty; stty size; read x; echo got $x; stty size"}, Stdout: &out},
		PTY:     &container.TermSize{Rows: 24, Cols: 80},
	})
	waitOutput(t, &out, `^/dev/pts/\d+\r\n24 80\r\n`)
	if err := rp.Resize(ctxT(t), container.TermSize{Rows: 30, Cols: 100}); err != nil {
		t.Fatal(err)
	}
	if err := rp.WriteStdin(ctxT(t), []byte("abc\r")); err != nil {
		t.Fatal(err)
	}
	if st := waitEnd(t, rp); st.Code != 0 {
		t.Errorf("%+v, output %q", st, out.String())
	}
	// The terminal echoes the input (with a newline for the carriage
	// return) before the shell's answer.
	if !regexp.MustCompile(`\r\n24 80\r\nabc\r\ngot abc\r\n30 100\r\n$`).MatchString(out.String()) {
		t.Errorf("PTY output %q", out.String())
	}
	// CloseStdin sends end of file through the terminal.
	var out2 Buffer
	rp = startProc(t, ps, container.ProcessSpec{
		Process: container.Process{Args: []string{"sh", "-c", "cat; echo eof"}, Stdout: &out2},
		PTY:     &container.TermSize{Rows: 24, Cols: 80},
	})
	if err := rp.CloseStdin(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if st := waitEnd(t, rp); st.Code != 0 || !strings.Contains(out2.String(), "eof") {
		t.Errorf("cat in a PTY after CloseStdin: %+v, output %q", st, out2.String())
	}
}

// testProcessUser: User runs the process as a user of the image (its
// ids, groups and home) or as numeric ids; under a pids limit too, where
// runtimes may start commands another way. Without an image (none) the
// host's accounts apply: only numeric ids are checked, as root.
func (s *suite) testProcessUser(t *testing.T) {
	b, ps := s.starter(t, func(spec *container.Spec) {
		if s.cfg.limits {
			spec.Limits.Pids = 256
		}
	})
	if s.cfg.rootfs == nil {
		// Host processes start in the workspace, under the test's
		// private temporary directories: let other users in.
		for d := b.ws; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	cases := map[string]string{"1234:1234": "1234 1234 /\n"}
	if s.cfg.rootfs != nil {
		cases["user"] = "1000 1000 /home/user user\n"
		cases[""] = "0 0 /root\n"
	} else if os.Geteuid() != 0 {
		t.Skip("numeric users need root without an image")
	}
	for user, want := range cases {
		var out Buffer
		rp := startProc(t, ps, container.ProcessSpec{
			Process: container.Process{Args: []string{"sh", "-c", "echo $(id -u) $(id -g) $HOME $USER"}, Stdout: &out},
			User:    user,
		})
		if st := waitEnd(t, rp); st.Code != 0 || out.String() != want {
			t.Errorf("User %q: %+v, output %q, want %q", user, st, out.String(), want)
		}
	}
	var out Buffer
	rp := startProc(t, ps, container.ProcessSpec{
		Process: container.Process{Args: []string{"sh", "-c", "echo $HOME"}, Env: []string{"HOME=/mine"}, Stdout: &out},
		User:    "1234",
	})
	if waitEnd(t, rp); out.String() != "/mine\n" {
		t.Errorf("the caller's HOME is replaced: %q", out.String())
	}
}

// testProcessInvalid: bad specs and calls fail with ErrInvalidSpec and
// leave the sandbox up.
func (s *suite) testProcessInvalid(t *testing.T) {
	b, ps := s.starter(t)
	for name, spec := range map[string]container.ProcessSpec{
		"unknown user": {Process: container.Process{Args: []string{"true"}}, User: "no-such-user"},
		"empty args":   {},
		"dir outside":  {Process: container.Process{Args: []string{"true"}, Dir: "/etc"}},
	} {
		if rp, err := ps.StartProcess(ctxT(t), spec); !errors.Is(err, container.ErrInvalidSpec) {
			t.Errorf("%s: %v %v, want ErrInvalidSpec", name, rp, err)
		}
	}
	rp := startProc(t, ps, container.ProcessSpec{Process: container.Process{Args: []string{"sleep", "1000"}}})
	if err := rp.WriteStdin(ctxT(t), []byte("x")); !errors.Is(err, container.ErrInvalidSpec) {
		t.Errorf("WriteStdin without OpenStdin: %v, want ErrInvalidSpec", err)
	}
	if err := rp.Resize(ctxT(t), container.TermSize{Rows: 1, Cols: 1}); !errors.Is(err, container.ErrInvalidSpec) {
		t.Errorf("Resize without a PTY: %v, want ErrInvalidSpec", err)
	}
	if got := MustSh(t, b.sb, "echo still"); got != "still\n" {
		t.Errorf("after the failures: %q", got)
	}
}

// testProcessDone: every call on an ended process but Wait and Done
// fails with ErrProcessDone.
func (s *suite) testProcessDone(t *testing.T) {
	_, ps := s.starter(t)
	rp := startProc(t, ps, container.ProcessSpec{Process: container.Process{Args: []string{"sh", "-c", "exit 3"}},
		OpenStdin: true, PTY: &container.TermSize{Rows: 10, Cols: 10}})
	if st := waitEnd(t, rp); st.Code != 3 {
		t.Errorf("exit 3: %+v", st)
	}
	ctx := ctxT(t)
	for name, call := range map[string]func() error{
		"WriteStdin": func() error { return rp.WriteStdin(ctx, []byte("x")) },
		"CloseStdin": func() error { return rp.CloseStdin(ctx) },
		"Signal":     func() error { return rp.Signal(ctx, syscall.SIGTERM) },
		"Kill":       func() error { return rp.Kill(ctx) },
		"Resize":     func() error { return rp.Resize(ctx, container.TermSize{Rows: 5, Cols: 5}) },
	} {
		if err := call(); !errors.Is(err, container.ErrProcessDone) {
			t.Errorf("%s after the end: %v, want ErrProcessDone", name, err)
		}
	}
	if st, err := rp.Wait(ctx); err != nil || st.Code != 3 {
		t.Errorf("Wait again: %+v %v", st, err)
	}
}

// testProcessWaitCanceled: a Wait whose ctx ends returns its error and
// leaves the process running.
func (s *suite) testProcessWaitCanceled(t *testing.T) {
	b, ps := s.starter(t)
	rp := startProc(t, ps, container.ProcessSpec{Process: container.Process{Args: []string{"sh", "-c", ticker("tick")}}})
	p := filepath.Join(b.ws, "tick")
	waitGrowing(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := rp.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with an ending ctx: %v", err)
	}
	if !growing(p) {
		t.Fatal("the process stopped when a Wait gave up")
	}
	select {
	case <-rp.Done():
		t.Fatal("Done after a canceled Wait")
	default:
	}
}

// testProcessStatus: StartProcess, Signal and Kill on a paused sandbox
// fail with ErrPaused (where Pause is supported), StartProcess on a
// stopped one with ErrNotRunning; a process started before Pause goes on
// after Resume.
func (s *suite) testProcessStatus(t *testing.T) {
	b, ps := s.starter(t)
	spec := container.ProcessSpec{Process: container.Process{Args: []string{"true"}}}
	rp := startProc(t, ps, container.ProcessSpec{Process: container.Process{Args: []string{"sh", "-c", ticker("tick")}}})
	p := filepath.Join(b.ws, "tick")
	waitGrowing(t, p)
	err := b.sb.Pause(ctxT(t))
	switch {
	case errors.Is(err, container.ErrUnsupported):
		t.Log("Pause unsupported: the paused case is skipped")
	case err != nil:
		t.Fatal(err)
	default:
		if rp, err := ps.StartProcess(ctxT(t), spec); !errors.Is(err, container.ErrPaused) {
			t.Errorf("StartProcess on a paused sandbox: %v %v, want ErrPaused", rp, err)
		}
		// The frozen sandbox cannot act on its processes: calls say so
		// rather than wait for it.
		if err := rp.Signal(ctxT(t), syscall.SIGTERM); !errors.Is(err, container.ErrPaused) {
			t.Errorf("Signal on a paused sandbox: %v, want ErrPaused", err)
		}
		if err := rp.Kill(ctxT(t)); !errors.Is(err, container.ErrPaused) {
			t.Errorf("Kill on a paused sandbox: %v, want ErrPaused", err)
		}
		if err := b.sb.Resume(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		waitGrowing(t, p)
	}
	if err := b.sb.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if rp, err := ps.StartProcess(ctxT(t), spec); !errors.Is(err, container.ErrNotRunning) {
		t.Errorf("StartProcess on a stopped sandbox: %v %v, want ErrNotRunning", rp, err)
	}
	if _, err := rp.Wait(ctxT(t)); !errors.Is(err, container.ErrNotRunning) {
		t.Errorf("Wait for a process of a stopped sandbox: %v, want ErrNotRunning", err)
	}
}

// processMemoryLimit: a started process past the memory limit is
// reported OOMKilled, as an Exec is (part of the MemoryLimit case, on its
// sandbox).
func (s *suite) processMemoryLimit(t *testing.T, b box) {
	ps, ok := b.sb.(container.ProcessStarter)
	if s.cfg.noProcesses != "" || !ok {
		return
	}
	rp := startProc(t, ps, container.ProcessSpec{Process: container.Process{
		Args: []string{"sh", "-c", "x=0123456789abcdef; while true; do x=$x$x; done"}, Timeout: 60 * time.Second,
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 70*time.Second)
	defer cancel()
	st, err := rp.Wait(ctx)
	if err != nil || st.Code == 0 || st.TimedOut || !st.OOMKilled {
		t.Errorf("memory hog started as a process: %+v %v, want killed and OOMKilled", st, err)
	}
}
