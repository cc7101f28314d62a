// Package agenttest builds the agent binary for tests of sandbox runtimes.
package agenttest

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	once     sync.Once
	built    string
	buildErr error
	output   []byte
)

// BuildFlags are the go build flags of a static agent with its launcher
// (cgo, linked statically); the build needs a C compiler and a static libc
// (Debian: gcc, libc6-dev).
var BuildFlags = []string{"-trimpath", "-tags", "netgo,osusergo", "-ldflags", "-extldflags=-static"}

// Build compiles cmd/turnbox-agent statically (with cgo) once per test
// binary and returns its path. It fails the test if the build fails. The
// binary is shared by every test in the process, so it lives in its own
// directory under os.TempDir rather than in a test's t.TempDir.
func Build(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		dir, err := os.MkdirTemp("", "turnbox-agent-")
		if err != nil {
			buildErr = err
			return
		}
		out := filepath.Join(dir, "turnbox-agent")
		cmd := exec.Command(goTool(), append(append([]string{"build"}, BuildFlags...), "-o", out, "github.com/turnbox/turnbox/cmd/turnbox-agent")...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		output, buildErr = cmd.CombinedOutput()
		built = out
	})
	if buildErr != nil {
		t.Fatalf("build turnbox-agent: %v\n%s", buildErr, output)
	}
	return built
}

// goTool finds the go command: on PATH, else the standard install.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}
