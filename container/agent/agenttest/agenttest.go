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

// Build compiles cmd/turnbox-agent statically (CGO_ENABLED=0) once per test
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
		cmd := exec.Command(goTool(), "build", "-trimpath", "-o", out, "github.com/turnbox/turnbox/cmd/turnbox-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
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
