package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote/server"
)

// transcript splits runInProcess's transcript into stdout, stderr and
// the exit line.
func transcript(t *testing.T, tr string) (stdout, stderr, exit string) {
	t.Helper()
	_, rest, _ := strings.Cut(tr, "\n--- stdout\n")
	stdout, rest, _ = strings.Cut(rest, "--- stderr\n")
	stderr, exit, _ = strings.Cut(rest, "--- exit ")
	return stdout, stderr, strings.TrimSpace(exit)
}

// TestExecTruncatedOnce: output past the cap is printed once (the
// streamed part), followed by a notice on stderr, not the response again.
func TestExecTruncatedOnce(t *testing.T) {
	state := t.TempDir()
	base := []string{"--state-dir", state, "--runtime", "none", "--log-level", "error", "session"}
	runInProcess(t, state, nil, append(base, "create", "--id", "t1")...)
	out, errOut, exit := transcript(t, runInProcess(t, state, nil, append(base, "exec", "t1", "--", "head -c 400000 /dev/zero | tr '\\0' a")...))
	if exit != "0" || len(out) < 100000 || len(out) > 400000 || strings.Count(out, "a") != len(out) {
		t.Fatalf("exit %s, %d bytes of stdout: want the streamed output once, nothing else", exit, len(out))
	}
	if !strings.Contains(errOut, "output truncated") {
		t.Errorf("stderr %q: want the truncation notice", errOut)
	}
}

// serveHost serves a new none-runtime host over HTTP with token and
// returns its URL.
func serveHost(t testing.TB, token string) (*embedded.Host, string) {
	t.Helper()
	host, err := embedded.NewHost(context.Background(), embedded.Config{StateDir: t.TempDir(), ContainerRuntime: embedded.ContainerRuntimeNone,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close(context.Background()) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := server.New(host, server.WithAuthTokens(token)).HTTPServer(true)
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return host, "http://" + ln.Addr().String()
}

// TestSessionCommandsThroughServer: with $TURNBOX_SERVER and a token
// file every session command reaches the server's host (the CLI opens no
// host of its own: its state dir stays empty), exec forwards piped stdin
// and exits with the command's status.
func TestSessionCommandsThroughServer(t *testing.T) {
	const token = "golden-token"
	host, url := serveHost(t, token)
	tokFile := t.TempDir() + "/token"
	if err := os.WriteFile(tokFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TURNBOX_SERVER", url)
	local := t.TempDir()
	run := func(stdin *string, args ...string) (string, string, string) {
		t.Helper()
		a := append([]string{"--state-dir", local, "--log-level", "error", "session", args[0], "--token-file", tokFile}, args[1:]...)
		return transcript(t, runInProcess(t, local, stdin, a...))
	}
	if out, errOut, exit := run(nil, "create", "--id", "r1", "--label", "k=v", "--json"); exit != "0" || !strings.Contains(out, `"id": "r1"`) {
		t.Fatalf("create: exit %s %q %q", exit, out, errOut)
	}
	if _, err := host.Session("r1"); err != nil {
		t.Fatalf("the server's host has no session r1: %v", err)
	}
	if out, _, exit := run(nil, "exec", "r1", "--", "echo hi; exit 5"); exit != "5" || out != "hi\n" {
		t.Errorf("exec: exit %s, stdout %q; want 5 and hi", exit, out)
	}
	if out, _, exit := run(ptr("piped\n"), "exec", "r1", "--", "cat"); exit != "0" || out != "piped\n" {
		t.Errorf("exec with stdin: exit %s, stdout %q", exit, out)
	}
	if out, errOut, exit := run(nil, "exec", "r1", "--timeout", "1s", "--", "echo start; sleep 10"); exit != "124" || out != "start\n" || !strings.Contains(errOut, "timed out") {
		t.Errorf("exec past its timeout: exit %s, stdout %q, stderr %q; want 124, start once, a notice", exit, out, errOut)
	}
	run(nil, "snapshot", "r1")
	if out, _, exit := run(nil, "fork", "r1@1", "--id", "r2"); exit != "0" || out != "r2\n" {
		t.Errorf("fork: exit %s %q", exit, out)
	}
	out, _, _ := run(nil, "ls", "--json")
	if strings.Count(out, `"id": `) != 2 || !strings.Contains(out, `"parent_snapshot": "r1@1"`) {
		t.Errorf("ls --json: %s; want r1 and r2 forked from r1@1", out)
	}
	if out, errOut, exit := run(nil, "ls", "--label", "k=v", "--json"); exit != "0" || strings.Count(out, `"id": `) != 1 || !strings.Contains(out, `"k": "v"`) {
		t.Errorf("ls --label through a server: exit %s %q %q; want r1 with its label", exit, out, errOut)
	}
	if _, _, exit := run(nil, "rm", "r2"); exit != "0" {
		t.Errorf("rm: exit %s", exit)
	}
	if _, err := host.Session("r2"); err == nil {
		t.Error("rm through the server left r2")
	}
	if _, errOut, exit := run(nil, "info", "r2"); exit != "1" || !strings.Contains(errOut, "not found") {
		t.Errorf("info of a removed session: exit %s %q", exit, errOut)
	}
	if ents, _ := os.ReadDir(local); len(ents) != 0 {
		t.Errorf("the CLI wrote its own state dir through a server: %v", ents)
	}
}

// TestLockedLedgerSaysServer: a state dir whose ledger a running host
// holds gives an error that says to use --server.
func TestLockedLedgerSaysServer(t *testing.T) {
	state := t.TempDir()
	h, err := embedded.NewHost(context.Background(), embedded.Config{StateDir: state, ContainerRuntime: embedded.ContainerRuntimeNone,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	_, errOut, exit := transcript(t, runInProcess(t, state, nil, "--state-dir", state, "--runtime", "none", "session", "ls"))
	if exit != "1" || !strings.Contains(errOut, "locked") || !strings.Contains(errOut, "--server") {
		t.Errorf("exit %s, stderr %q: want the lock named and --server suggested", exit, errOut)
	}
}

// TestBadTokenFile: an empty token file is refused as an invalid argument.
func TestBadTokenFile(t *testing.T) {
	f := t.TempDir() + "/empty"
	if err := os.WriteFile(f, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tg := &target{server: "http://127.0.0.1:1", tokenFile: f}
	if _, err := tg.bearer(); !errors.Is(err, environment.ErrInvalidArgument) {
		t.Fatalf("bearer: %v", err)
	}
	if _, err := (&target{tokenFile: f + "-missing"}).bearer(); err == nil {
		t.Fatal("a missing token file was accepted")
	}
}

// TestHumanSize: binary units with one decimal; "-" for an unknown size.
func TestHumanSize(t *testing.T) {
	for n, want := range map[int64]string{0: "-", -1: "-", 1: "1 B", 1023: "1023 B", 1024: "1.0 KiB", 12897485: "12.3 MiB", 5 << 30: "5.0 GiB"} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestParseKVs: KEY=VALUE pairs; a pair without = or key is an invalid
// argument.
func TestParseKVs(t *testing.T) {
	m, err := parseKVs("label", []string{"a=1", "b=x=y", "c="})
	if err != nil || len(m) != 3 || m["b"] != "x=y" || m["c"] != "" {
		t.Fatalf("parseKVs: %v %v", m, err)
	}
	for _, bad := range []string{"a", "=1"} {
		if _, err := parseKVs("label", []string{bad}); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("parseKVs(%q): %v", bad, err)
		}
	}
	if !hasLabels(map[string]string{"a": "1", "b": "2"}, map[string]string{"a": "1"}) || hasLabels(map[string]string{"a": "1"}, map[string]string{"a": "2"}) {
		t.Error("hasLabels")
	}
}
