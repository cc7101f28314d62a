package zfs_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// wrapZFS writes, in a new directory, a zfs command that runs the shell
// code prelude(dir) (which sees the zfs arguments as $1...) and then the
// real zfs; it returns the command's path and the directory, where the
// prelude keeps its files.
func wrapZFS(t *testing.T, prelude func(dir string) string) (prog, dir string) {
	t.Helper()
	real, err := exec.LookPath("zfs")
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	prog = filepath.Join(dir, "zfs")
	script := fmt.Sprintf("#!/bin/sh\n%s\nexec %q \"$@\"\n", prelude(dir), real)
	if err := os.WriteFile(prog, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return prog, dir
}
