package envtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/environment"
)

// The writable root (Capabilities.WritableRoot): the whole root
// filesystem is the session's, snapshotted, rolled back and forked with
// the workspace.

func (s *suite) rootTests() []test {
	return []test{
		{"WritesSnapshotted", s.testRootWritesSnapshotted},
		{"ReadOnlyRoot", s.testRootReadOnly},
		{"HostInvisible", s.testRootHostInvisible},
		{"WorkspaceLinkStaysInRoot", s.testRootWorkspaceLink},
	}
}

// writableRoot skips where the environment has no writable root.
func writableRoot(t *testing.T, env environment.Environment) {
	t.Helper()
	if !env.Capabilities().WritableRoot {
		t.Skip("no writable root (Capabilities.WritableRoot false)")
	}
}

// rootFiles are files outside /workspace that a package install or a
// user touches, and a program installed like pip does.
var rootFiles = []string{"/etc/tb-conf", "/usr/local/lib/tb/mod.py", "/tmp/tb", "/home/user/tb", "/root/tb"}

// writeRoot writes v into every rootFiles file and installs a program
// /usr/local/bin/tb-tool that prints v.
func (s *suite) writeRoot(t *testing.T, env environment.Environment, v string) {
	t.Helper()
	cmd := "set -e; mkdir -p /usr/local/lib/tb /usr/local/bin /home/user /root\n"
	for _, f := range rootFiles {
		cmd += fmt.Sprintf("echo %s > %s\n", v, f)
	}
	cmd += fmt.Sprintf("printf '#!/bin/sh\\necho tool-%s\\n' > /usr/local/bin/tb-tool; chmod 755 /usr/local/bin/tb-tool", v)
	s.sh(t, env, cmd)
}

// wantRoot checks that rootFiles hold v and tb-tool prints it.
func (s *suite) wantRoot(t *testing.T, env environment.Environment, v string) {
	t.Helper()
	want := ""
	for range rootFiles {
		want += v + "\n"
	}
	want += "tool-" + v + "\n"
	if got := s.sh(t, env, "cat "+strings.Join(rootFiles, " ")+"; tb-tool"); got != want {
		t.Fatalf("root files and tool: %q, want %q", got, want)
	}
}

// testRootWritesSnapshotted: writes all over the root survive a snapshot,
// vanish on a rollback to an earlier one and show in a fork.
func (s *suite) testRootWritesSnapshotted(t *testing.T) {
	env, _ := s.session(t)
	writableRoot(t, env)
	s.writeRoot(t, env, "one")
	first := s.snapshot(t, env, "root-one")
	s.writeRoot(t, env, "two")
	s.sh(t, env, "echo late > /etc/tb-late")
	second := s.snapshot(t, env, "root-two")
	s.rollback(t, env, first.ID)
	s.wantRoot(t, env, "one")
	if got := s.sh(t, env, "test -e /etc/tb-late && echo present || echo gone"); got != "gone\n" {
		t.Errorf("/etc/tb-late after rolling back to before it: %q", got)
	}
	f, ok := env.(environment.Forker)
	if !ok || !env.Capabilities().Fork {
		return
	}
	child := s.fork(t, f, second.ID)
	s.wantRoot(t, child, "two")
	s.wantRoot(t, env, "one") // the parent is untouched by the fork
}

// testRootReadOnly: with ReadOnlyRoot writes outside /workspace fail
// with EROFS, /workspace stays writable by commands and tools.
func (s *suite) testRootReadOnly(t *testing.T) {
	env, _ := s.session(t, func(c *environment.SessionConfig) { c.ReadOnlyRoot = true })
	writableRoot(t, env)
	resp := s.call(t, env, environment.BashParams{Command: "echo x > /etc/tb-ro"})
	if !resp.IsError || !strings.Contains(resp.Content, "Read-only file system") {
		t.Errorf("writing /etc on a read-only root: exit %d %q, want Read-only file system", resp.ExitCode, clip(resp.Content))
	}
	s.sh(t, env, "echo w > /workspace/rw")
	s.wantContent(t, env, "rw", "w\n")
	s.write(t, env, "tool.txt", "t")
	if got := s.sh(t, env, "cat /workspace/tool.txt"); got != "t" {
		t.Errorf("tool write seen by a command: %q", got)
	}
	// A rollback brings a new tree: still read-only but for /workspace.
	snap := s.snapshot(t, env, "ro")
	s.write(t, env, "later.txt", "l")
	s.rollback(t, env, snap.ID)
	s.wantMissing(t, env, "later.txt")
	resp = s.call(t, env, environment.BashParams{Command: "echo x > /etc/tb-ro; echo y > /workspace/after && cat /workspace/after"})
	if !strings.Contains(resp.Content, "Read-only file system") || !strings.HasSuffix(resp.Content, "y\n") {
		t.Errorf("after a rollback: %q, want /etc read-only and /workspace writable", clip(resp.Content))
	}
}

// testRootHostInvisible: a command does not see the host's files.
func (s *suite) testRootHostInvisible(t *testing.T) {
	if !s.cfg.hostLocal {
		t.Skip("the suite does not run on the session's host")
	}
	env, _ := s.session(t)
	writableRoot(t, env)
	secret := filepath.Join(t.TempDir(), "tb-host-secret")
	if err := os.WriteFile(secret, []byte("TOPSECRET"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := s.sh(t, env, "cat "+secret+" 2>/dev/null; test -e "+filepath.Dir(secret)+" && echo dir-visible; echo done"); got != "done\n" {
		t.Errorf("a command sees the host's %s: %q", secret, got)
	}
}

// testRootWorkspaceLink: a command that replaces /workspace by a link
// (to /etc, to /) leaves the file tools inside the session's root: they
// follow it as the sandbox does, never onto the host.
func (s *suite) testRootWorkspaceLink(t *testing.T) {
	env, _ := s.session(t)
	writableRoot(t, env)
	name := "tb-link-" + strings.TrimPrefix(newID(), "envtest-")
	s.sh(t, env, "mv /workspace /workspace.old && ln -s /etc /workspace")
	resp, err := s.exec(t, env, environment.WriteFileParams{Path: name, Content: "via-link"})
	if err == nil && !resp.IsError {
		if got := s.sh(t, env, "cat /etc/"+name); got != "via-link" {
			t.Errorf("the tool wrote through /workspace -> /etc but /etc/%s holds %q", name, got)
		}
	}
	if _, err := os.Stat(filepath.Join("/etc", name)); err == nil {
		t.Fatalf("a file tool wrote the host's /etc/%s through the sandbox's /workspace link", name)
	}
	if !s.cfg.hostLocal {
		return
	}
	secret := filepath.Join(t.TempDir(), "tb-host-secret")
	if err := os.WriteFile(secret, []byte("TOPSECRET"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.sh(t, env, "rm /workspace && ln -s / /workspace")
	resp, err = s.exec(t, env, environment.ReadFileParams{Path: strings.TrimPrefix(secret, "/")})
	if err == nil && strings.Contains(resp.Content, "TOPSECRET") {
		t.Errorf("read_file through /workspace -> / read the host's %s", secret)
	}
}
