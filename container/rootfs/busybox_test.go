package rootfs_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/internal/testenv"
)

func TestBuildBusybox(t *testing.T) {
	_, err := rootfs.FindBusybox()
	testenv.Require(t, err == nil, "static busybox (apt install busybox-static)")
	dir := t.TempDir()
	if err := rootfs.BuildBusybox(dir); err != nil {
		t.Fatal(err)
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
	out, err := exec.Command(filepath.Join(dir, "bin/sh"), "-c", "echo ok").Output()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("sh from rootfs: %q %v", out, err)
	}
}
