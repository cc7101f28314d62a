package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// runTurnbox runs the CLI (this test binary re-executed as main, see
// runMainEnv) on stateDir with args and returns its stderr and error.
func runTurnbox(t *testing.T, stateDir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "TURNBOX_STATE_DIR="+stateDir, "TURNBOX_SERVER=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	return stderr.String(), err
}

// Errors name the flags and the state directory the user gave, not the
// host's Config fields, and carry no Go stack trace.
func TestErrorsNameFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--runtime", "none", "session", "exec", "nosuch", "--", "true"}, "searched the state directory "},
		{[]string{"--runtime", "none", "--storage", "zfs", "session", "ls"}, "--zfs-dataset"},
		{[]string{"--runtime", "none", "--storage", "btrfs", "session", "ls"}, "--storage-root"},
		{[]string{"--runtime", "none", "--pool", "-1", "session", "ls"}, "negative --pool"},
		{[]string{"--runtime", "none", "--dns", "192.0.2.1", "session", "ls"}, "--dns"},
		{[]string{"--runtime", "none", "--net-default", "egress", "--net-ceiling", "none", "session", "ls"}, "above --net-ceiling"},
		{[]string{"--runtime", "none", "--net-default", "egress", "session", "ls"}, "loopback only"},
		{[]string{"--runtime", "none", "--net-ceiling", "egress", "session", "create", "--net", "open"}, `ceiling "egress"`},
	} {
		dir := t.TempDir()
		stderr, err := runTurnbox(t, dir, tc.args...)
		if err == nil {
			t.Errorf("turnbox %s succeeded", strings.Join(tc.args, " "))
			continue
		}
		if !strings.Contains(stderr, tc.want) || strings.Contains(stderr, "Config.") {
			t.Errorf("turnbox %s: stderr %q; want it to contain %q and no Config field", strings.Join(tc.args, " "), stderr, tc.want)
		}
		if tc.want == "searched the state directory " && !strings.Contains(stderr, dir) {
			t.Errorf("not-found error %q does not name the state directory %s", stderr, dir)
		}
		if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, ".go:") {
			t.Errorf("turnbox %s printed a stack trace:\n%s", strings.Join(tc.args, " "), stderr)
		}
	}
}
