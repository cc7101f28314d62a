// Package testenv decides what a test does when a system dependency (root,
// runsc, btrfs, zfs-fuse, ...) is absent: it skips loudly on a developer
// machine and fails in CI, where .ci/run installs every dependency and a
// skipped test would hide a missing install step. CI is detected by the CI
// or TURNBOX_REQUIRE_ALL environment variables being non-empty.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// Strict reports whether missing dependencies must fail tests (CI).
func Strict() bool {
	return os.Getenv("CI") != "" || os.Getenv("TURNBOX_REQUIRE_ALL") != ""
}

// Require skips (or, in CI, fails) the test unless ok. what names the
// missing dependency and how to get it.
func Require(t testing.TB, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if Strict() {
		t.Fatalf("REQUIRED DEPENDENCY MISSING in CI: %s", what)
	}
	t.Skipf("SKIPPING: missing dependency: %s (set CI=1 to make this a failure)", what)
}

// RequireRoot requires euid 0.
func RequireRoot(t testing.TB) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "root (run the tests as root)")
}

// RequireBinary requires an executable on PATH and returns its path.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Require(t, err == nil, name+" on PATH (.ci/run installs it)")
	return p
}
