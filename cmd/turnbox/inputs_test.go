package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs this test binary as the turnbox CLI on stateDir.
func runCLI(t *testing.T, stateDir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"--state-dir", stateDir, "--runtime", "none"}, args...)...)
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestCLIRefusesPathInputs: image names that are paths, bad ids, env names
// and snapshot ids are refused as invalid arguments before the CLI opens
// (and so creates) the host's state directory.
func TestCLIRefusesPathInputs(t *testing.T) {
	for _, args := range [][]string{
		{"session", "create", "--id", "x", "--image", "/"},
		{"session", "create", "--id", "x", "--image", "../images/busybox"},
		{"session", "create", "--id", "../x"},
		{"session", "create", "--id", "x", "--env", "1X=y"},
		{"session", "create", "--id", "x", "--from", "/etc/passwd"},
		{"image", "build", "busybox", "../x"},
		{"image", "build", "busybox", "/tmp/x"},
	} {
		state := filepath.Join(t.TempDir(), "state")
		out, err := runCLI(t, state, args...)
		if err == nil {
			t.Errorf("turnbox %s: succeeded, want refused:\n%s", strings.Join(args, " "), out)
			continue
		}
		if !strings.Contains(out, "invalid argument") {
			t.Errorf("turnbox %s: output %q does not say invalid argument", strings.Join(args, " "), out)
		}
		if _, err := os.Lstat(state); err == nil {
			t.Errorf("turnbox %s: refused but created the state directory", strings.Join(args, " "))
		}
	}
	// The same state directory then works for valid input.
	state := t.TempDir()
	if out, err := runCLI(t, state, "session", "create", "--id", "ok-1"); err != nil {
		t.Fatalf("a valid create failed: %v\n%s", err, out)
	}
	out, err := runCLI(t, state, "session", "ls")
	if err != nil || !strings.Contains(out, "ok-1") {
		t.Fatalf("session ls: %v\n%s", err, out)
	}
}
