package gvisor

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/turnbox/turnbox/internal/testenv"
)

// TestCgroupHierarchies: the mount table lists every cgroup hierarchy, a
// cgroup made under a parent in each is found as leaked, and
// removeCgroup removes it from all of them.
func TestCgroupHierarchies(t *testing.T) {
	testenv.RequireRoot(t)
	hs := hierarchies()
	testenv.Require(t, len(hs) > 0, "a mounted cgroup hierarchy")
	for _, h := range hs {
		if _, err := os.Stat(filepath.Join(h, "cgroup.procs")); err != nil {
			t.Fatalf("hierarchy %s: %v", h, err)
		}
	}
	parent := "turnbox-gvisor-test-" + strconv.Itoa(os.Getpid())
	cg := filepath.Join("/", parent, "leaked")
	made := 0
	for _, h := range hs {
		if err := os.MkdirAll(filepath.Join(h, cg), 0o755); err == nil {
			made++
		}
	}
	testenv.Require(t, made > 0, "a writable cgroup hierarchy")
	t.Cleanup(func() {
		for _, h := range hs {
			_ = os.Remove(filepath.Join(h, cg))
			_ = os.Remove(filepath.Join(h, parent))
		}
	})
	if got := leakedCgroups(parent); !slices.Contains(got, cg) {
		t.Fatalf("leakedCgroups(%s) = %v, want %s", parent, got, cg)
	}
	if err := removeCgroup(cg); err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if _, err := os.Stat(filepath.Join(h, cg)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left in %s: %v", cg, h, err)
		}
	}
	if got := leakedCgroups(parent); len(got) != 0 {
		t.Fatalf("after removeCgroup: %v", got)
	}
}
