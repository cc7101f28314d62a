package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/turnbox/turnbox/container"
)

// BinaryName is the agent executable's file name.
const BinaryName = "turnbox-agent"

// EnvBinary names the environment variable that may hold the agent
// binary's path.
const EnvBinary = "TURNBOX_AGENT"

// FindBinary returns the path of the agent binary (cmd/turnbox-agent,
// built static; see its doc comment). It tries, in order: explicit (if not
// empty), $TURNBOX_AGENT, a turnbox-agent file next to the running
// executable, and PATH. The error wraps container.ErrRuntimeMissing.
func FindBinary(explicit string) (string, error) {
	check := func(p, from string) (string, error) {
		fi, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("agent binary from %s: %v: %w", from, err, container.ErrRuntimeMissing)
		}
		if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return "", fmt.Errorf("agent binary from %s: %s is not an executable file: %w", from, p, container.ErrRuntimeMissing)
		}
		return filepath.Abs(p)
	}
	if explicit != "" {
		return check(explicit, "configuration")
	}
	if p := os.Getenv(EnvBinary); p != "" {
		return check(p, "$"+EnvBinary)
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), BinaryName)
		if _, err := os.Stat(p); err == nil {
			return check(p, "next to "+exe)
		}
	}
	if p, err := exec.LookPath(BinaryName); err == nil {
		return check(p, "PATH")
	}
	return "", fmt.Errorf("agent binary %s not found (set $%s, put it next to the executable or on PATH; build it with make build, or see cmd/turnbox-agent): %w",
		BinaryName, EnvBinary, container.ErrRuntimeMissing)
}
