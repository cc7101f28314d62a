package agent_test

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/agent"
)

// TestProcessSpawnPaths starts a process in a PTY as another user through
// both ways an init agent starts commands, its launcher (launcher.c) and
// its own fork (SysProcAttr): both set the user, its groups, the
// controlling terminal and its size.
func TestProcessSpawnPaths(t *testing.T) {
	for name, env := range map[string][]string{"launcher": nil, "fork": {"TURNBOX_AGENT_LAUNCHER=0"}} {
		t.Run(name, func(t *testing.T) {
			c := initAgent(t, env...)
			if name == "launcher" {
				waitLauncher(t, c, "")
			}
			var out syncBuffer
			rp, err := c.StartProcess(ctxT(t), container.ProcessSpec{
				Process: container.Process{Args: []string{"sh", "-c",
					`tty; stty size; echo "$(id -u) $(id -g) $(id -G) $HOME"; : < /dev/tty && echo ctty`}, Dir: "/", Stdout: &out},
				User: "1234:2345",
				PTY:  &container.TermSize{Rows: 33, Cols: 77},
			})
			if err != nil {
				t.Fatal(err)
			}
			st, err := rp.Wait(ctxT(t))
			if err != nil || st.Code != 0 {
				t.Fatalf("%+v %v, output %q", st, err, out.String())
			}
			want := `^/dev/pts/\d+\r\n33 77\r\n1234 2345 2345 /\r\nctty\r\n$`
			if !regexp.MustCompile(want).MatchString(out.String()) {
				t.Errorf("output %q, want %q", out.String(), want)
			}
		})
	}
}

// TestProcessInProcess runs the process calls against an agent in this
// process: signal, stdin, the start report's pid, and an unknown user.
func TestProcessInProcess(t *testing.T) {
	c, _ := pair(t)
	var out syncBuffer
	rp, err := c.StartProcess(ctxT(t), container.ProcessSpec{
		Process:   container.Process{Args: []string{"sh", "-c", `echo $$; read x; echo "got $x"; exec sleep 1000`}, Stdout: &out},
		OpenStdin: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.HasSuffix(out.String(), "\n") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := strings.TrimSpace(out.String()); got != strconv.Itoa(rp.PID()) {
		t.Errorf("the process says its pid is %q, PID() = %d", got, rp.PID())
	}
	if err := rp.WriteStdin(ctxT(t), []byte("hi\n")); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(out.String(), "got hi\n") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := rp.Signal(ctxT(t), 15); err != nil {
		t.Fatal(err)
	}
	st, err := rp.Wait(ctxT(t))
	if err != nil || st.Code != 143 || st.Signal != 15 || st.TimedOut {
		t.Errorf("after SIGTERM: %+v %v, output %q", st, err, out.String())
	}
	_, err = c.StartProcess(ctxT(t), container.ProcessSpec{Process: container.Process{Args: []string{"true"}}, User: "no-such-user-here"})
	if !errors.Is(err, container.ErrInvalidSpec) || !errors.Is(err, agent.ErrStart) {
		t.Errorf("unknown user: %v, want ErrInvalidSpec and ErrStart", err)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Errorf("after an unknown user: %v", err)
	}
}
