package none_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
)

// syncBuf is a goroutine-safe output collector.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitFor polls until out contains want.
func waitFor(t *testing.T, out *syncBuf, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output %q never contained %q", out.String(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startProc(t *testing.T, sb container.Sandbox, spec container.ProcessSpec) container.RunningProcess {
	t.Helper()
	ps, ok := sb.(container.ProcessStarter)
	if !ok {
		t.Fatal("none sandbox does not implement container.ProcessStarter")
	}
	rp, err := ps.StartProcess(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rp.Kill(context.Background()) })
	return rp
}

func wait(t *testing.T, rp container.RunningProcess) container.ExitStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := rp.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestProcessStdin: input reaches a background process, CloseStdin ends
// it, and calls after the end report ErrProcessDone.
func TestProcessStdin(t *testing.T) {
	_, sb, _ := start(t)
	out := &syncBuf{}
	rp := startProc(t, sb, container.ProcessSpec{Process: container.Process{Args: []string{"cat"}, Stdout: out}, OpenStdin: true})
	if rp.PID() <= 0 {
		t.Fatalf("pid %d", rp.PID())
	}
	ctx := context.Background()
	if err := rp.WriteStdin(ctx, []byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "hello\n")
	if err := rp.CloseStdin(ctx); err != nil {
		t.Fatal(err)
	}
	if st := wait(t, rp); st.Code != 0 {
		t.Fatalf("exit %+v", st)
	}
	if err := rp.WriteStdin(ctx, []byte("x")); !errors.Is(err, container.ErrProcessDone) {
		t.Fatalf("WriteStdin after the end: %v, want ErrProcessDone", err)
	}
}

// TestProcessSignalAndKill: Signal ends a process with 128+n; Kill
// reports TimedOut; a process without stdin refuses WriteStdin.
func TestProcessSignalAndKill(t *testing.T) {
	_, sb, _ := start(t)
	ctx := context.Background()
	rp := startProc(t, sb, container.ProcessSpec{Process: container.Process{Args: []string{"sleep", "30"}}})
	if err := rp.WriteStdin(ctx, []byte("x")); !errors.Is(err, container.ErrInvalidSpec) {
		t.Fatalf("WriteStdin without OpenStdin: %v", err)
	}
	if err := rp.Signal(ctx, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if st := wait(t, rp); st.Code != 128+int(syscall.SIGTERM) || st.TimedOut {
		t.Fatalf("after SIGTERM: %+v", st)
	}
	rp = startProc(t, sb, container.ProcessSpec{Process: container.Process{Args: []string{"sleep", "30"}}})
	if err := rp.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if st := wait(t, rp); !st.TimedOut {
		t.Fatalf("after Kill: %+v, want TimedOut", st)
	}
}

// TestProcessPTY: a process in a PTY sees a terminal of the given size,
// sees a resize, echoes input, and ends on the terminal's EOF.
func TestProcessPTY(t *testing.T) {
	_, sb, _ := start(t)
	ctx := context.Background()
	out := &syncBuf{}
	rp := startProc(t, sb, container.ProcessSpec{
		Process: container.Process{Args: []string{"sh", "-c", `stty size; read x; stty size; echo "got:$x"; cat`}, Stdout: out},
		PTY:     &container.TermSize{Rows: 24, Cols: 80},
	})
	waitFor(t, out, "24 80")
	if err := rp.Resize(ctx, container.TermSize{Rows: 30, Cols: 100}); err != nil {
		t.Fatal(err)
	}
	if err := rp.WriteStdin(ctx, []byte("abc\r")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "30 100")
	waitFor(t, out, "got:abc")
	if err := rp.CloseStdin(ctx); err != nil {
		t.Fatal(err)
	}
	if st := wait(t, rp); st.Code != 0 {
		t.Fatalf("exit %+v, output %q", st, out.String())
	}
}

// TestProcessUser: a User the host cannot switch to is refused.
func TestProcessUser(t *testing.T) {
	_, sb, ws := start(t)
	// Let the other user reach the workspace (t.TempDir is 0700).
	for d := ws; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
	ps := sb.(container.ProcessStarter)
	_, err := ps.StartProcess(context.Background(), container.ProcessSpec{
		Process: container.Process{Args: []string{"true"}}, User: "no-such-user-xyz"})
	if err == nil {
		t.Fatal("an unknown user was accepted")
	}
	out := &syncBuf{}
	rp, err := ps.StartProcess(context.Background(), container.ProcessSpec{
		Process: container.Process{Args: []string{"id", "-u"}, Stdout: out}, User: "65534"})
	if errors.Is(err, container.ErrUnsupported) {
		t.Skip("not root: user switching unsupported, as documented")
	}
	if err != nil {
		t.Fatal(err)
	}
	wait(t, rp)
	if got := strings.TrimSpace(out.String()); got != "65534" {
		t.Fatalf("id -u = %q, want 65534", got)
	}
}
