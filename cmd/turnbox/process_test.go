package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote/server"
)

// TestParseSignal: names with or without SIG, any case, and numbers;
// anything else is an invalid argument.
func TestParseSignal(t *testing.T) {
	for in, want := range map[string]int{"TERM": 15, "sigkill": 9, "SIGUSR1": 10, "2": 2, "64": 64} {
		if got, err := parseSignal(in); err != nil || got != want {
			t.Errorf("parseSignal(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "65", "-1", "NOPE"} {
		if _, err := parseSignal(in); err == nil {
			t.Errorf("parseSignal(%q) accepted", in)
		}
	}
}

// TestCLIStartInProcess: in-process, start prints the pid and follows the
// process to its end; a failing exit fails the command.
func TestCLIStartInProcess(t *testing.T) {
	state := t.TempDir()
	if out, err := runCLI(t, state, "session", "create", "--id", "p1"); err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	out, err := runCLI(t, state, "--log-level", "error", "session", "start", "p1", "--env", "X=from-env", "--", "sh", "-c", "echo $X; exit 2")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err == nil || len(lines) < 2 || lines[1] != "from-env" || !strings.Contains(out, "exit 2") {
		t.Fatalf("start: err %v, output %q: want the pid, the output and a failure naming exit 2", err, out)
	}
	if pid, perr := strconv.Atoi(lines[0]); perr != nil || pid <= 0 {
		t.Fatalf("first line %q is not a pid", lines[0])
	}
}

// TestCLIProcessesThroughServer: with --server and a token, processes
// outlive the command: start returns the pid at once, attach --stdin
// feeds and follows, signal ends one, ps lists both ended.
func TestCLIProcessesThroughServer(t *testing.T) {
	const token = "cli-test-token"
	host, err := embedded.NewHost(context.Background(), embedded.Config{StateDir: t.TempDir(), ContainerRuntime: embedded.ContainerRuntimeNone,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close(context.Background())
	_, err = host.CreateSession(context.Background(), environment.SessionConfig{SessionID: "srv1"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := server.New(host, server.WithAuthTokens(token)).HTTPServer(true)
	go hs.Serve(ln)
	defer hs.Close()
	url := "http://" + ln.Addr().String()
	run := func(stdin string, args ...string) string {
		t.Helper()
		// --server goes before a "--" that ends the flags.
		args = append([]string{"--log-level", "error", args[0], args[1], args[2], "--server", url}, args[3:]...)
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), runMainEnv+"=1", "TURNBOX_TOKEN="+token)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("turnbox %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	cat := run("", "session", "start", "srv1", "--stdin", "--", "cat")
	sleeper := run("", "session", "start", "srv1", "--", "sleep", "60")
	if got := run("typed\n", "session", "attach", "srv1", cat, "--stdin"); got != "typed" {
		t.Fatalf("attach --stdin: %q", got)
	}
	run("", "session", "signal", "srv1", sleeper, "TERM")
	deadline := time.Now().Add(10 * time.Second)
	for {
		var list []environment.ProcessInfo
		if err := json.Unmarshal([]byte(run("", "session", "ps", "srv1", "--json")), &list); err != nil {
			t.Fatal(err)
		}
		codes := map[string]int{}
		for _, p := range list {
			if p.Exit != nil {
				codes[strconv.Itoa(p.PID)] = p.Exit.Code
			}
		}
		if c, ok := codes[cat]; ok && c == 0 && codes[sleeper] == 143 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ps: %+v; want %s exit 0 and %s exit 143", list, cat, sleeper)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
