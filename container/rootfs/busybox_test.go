package rootfs_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/internal/testenv"
)

func TestBuildBusybox(t *testing.T) {
	_, err := rootfs.FindBusybox()
	testenv.Require(t, err == nil, "static busybox (apt install busybox-static)")
	dir, err := os.MkdirTemp(t.TempDir(), "img") // 0700, as callers make it
	if err != nil {
		t.Fatal(err)
	}
	if err := rootfs.BuildBusybox(dir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("image root: %v %v, want mode 0755 (every user traverses /)", fi.Mode(), err)
	}
	// Building twice is fine (replaces).
	if err := rootfs.BuildBusybox(dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"bin/sh", "bin/ls", "bin/cat", "bin/sleep", "etc/passwd", "workspace", "proc"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); err != nil {
			t.Errorf("missing %s: %v", p, err)
		}
	}
	// The runtimes' mount points are there: starting a sandbox writes
	// nothing into the image.
	if err := rootfs.CheckMountpoints(dir); err != nil {
		t.Error(err)
	}
	// The default user: in passwd and group, with a home of its own.
	passwd, _ := os.ReadFile(filepath.Join(dir, "etc/passwd"))
	group, _ := os.ReadFile(filepath.Join(dir, "etc/group"))
	if !strings.Contains(string(passwd), "\nuser:x:1000:1000:user:/home/user:/bin/sh\n") ||
		!strings.Contains(string(passwd), "root:x:0:0:root:/root:/bin/sh\n") ||
		!strings.Contains(string(group), "\nuser:x:1000:\n") {
		t.Errorf("passwd %q, group %q: want root and user 1000", passwd, group)
	}
	fi, err := os.Lstat(filepath.Join(dir, "home/user"))
	if err != nil || !fi.IsDir() {
		t.Fatalf("home/user: %v %v", fi, err)
	}
	if st := fi.Sys().(*syscall.Stat_t); os.Geteuid() == 0 && (st.Uid != rootfs.DefaultUID || st.Gid != rootfs.DefaultUID) {
		t.Errorf("home/user owned by %d:%d, want %d", st.Uid, st.Gid, rootfs.DefaultUID)
	}
	out, err := exec.Command(filepath.Join(dir, "bin/sh"), "-c", "echo ok").Output()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("sh from rootfs: %q %v", out, err)
	}
}

// TestBuildBusyboxAddsBash: with the host's bash-static, the image has a
// real /bin/bash (E2B's clients run /bin/bash -l -c CMD), not a link.
func TestBuildBusyboxAddsBash(t *testing.T) {
	_, err := rootfs.FindBusybox()
	testenv.Require(t, err == nil, "static busybox (apt install busybox-static)")
	var bash string
	for _, p := range rootfs.BashStaticCandidates {
		if _, err := os.Stat(p); err == nil {
			bash = p
			break
		}
	}
	testenv.Require(t, bash != "", "static bash (apt install bash-static)")
	dir := t.TempDir()
	if err := rootfs.BuildBusybox(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(filepath.Join(dir, "bin/bash"))
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o755 {
		t.Fatalf("bin/bash: %v %v, want a regular 0755 file", fi, err)
	}
	out, err := exec.Command(filepath.Join(dir, "bin/bash"), "-c", `echo "${BASH_VERSINFO[0]}"`).Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("bash from rootfs: %q %v", out, err)
	}
}
