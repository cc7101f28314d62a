// Package runtimes makes a container runtime (container.Runtime) by name:
// gvisor, runc or none, and detects which one a machine can run. It is the
// one place that knows every runtime, so that hosts, the CLI and tests
// choose one from configuration without importing each.
package runtimes

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/agent"
	"github.com/turnbox/turnbox/container/gvisor"
	"github.com/turnbox/turnbox/container/none"
	"github.com/turnbox/turnbox/container/runc"
)

// Runtime names.
const (
	// GVisor runs each sandbox in a gVisor (runsc) sandbox.
	GVisor = "gvisor"
	// Runc runs each sandbox in a runc (libcontainer) container.
	Runc = "runc"
	// None runs commands as host processes: NO ISOLATION.
	None = "none"
)

// Options configure the runtime Open makes.
type Options struct {
	// Root is the runtime's state directory (gvisor, runc). Required
	// for them.
	Root string
	// AgentPath is the turnbox-agent binary of the isolated runtimes
	// ("" finds it: agent.FindBinary).
	AgentPath string
	// Instance identifies the host that owns the runtime (its state
	// directory, say). The none runtime keeps its sandboxes in a cgroup
	// of their own per instance, so that a host reaps only its own
	// orphans, never another host's sandboxes.
	Instance string
	// Logger receives the none runtime's logs (default slog.Default()).
	Logger *slog.Logger
}

// Open makes the runtime called name.
func Open(name string, o Options) (container.Runtime, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Root == "" && (name == GVisor || name == Runc) {
		return nil, fmt.Errorf("%s runtime: no state directory given", name)
	}
	var rt container.Runtime
	var err error
	switch name {
	case None:
		sum := sha256.Sum256([]byte(o.Instance))
		cg := filepath.Join(none.CgroupBase, hex.EncodeToString(sum[:6]))
		rt, err = none.New(none.WithLogger(o.Logger), none.WithCgroupRoot(cg))
	case GVisor:
		// runsc's own pause, not a direct cgroup freeze: freezing the
		// sandbox's cgroup crashed the next command after a thaw
		// (TestCommandsAfterSnapshots), so correctness wins over the
		// faster path until that is understood.
		rt, err = gvisor.New(gvisor.WithRoot(o.Root), gvisor.WithAgent(o.AgentPath), gvisor.WithCgroupFreezer(false))
	case Runc:
		rt, err = runc.New(o.Root, runc.WithAgent(o.AgentPath))
	default:
		return nil, fmt.Errorf("unknown container runtime %q (%s, %s, %s)", name, GVisor, Runc, None)
	}
	if err != nil {
		return nil, fmt.Errorf("%s runtime: %w", name, err)
	}
	return rt, nil
}

// Detect picks the runtime to use when none is named: gvisor when this
// process is root and finds runsc on PATH and the agent binary (agentPath,
// or agent.FindBinary's search), else none. With none, the error says why
// gvisor cannot run (the caller should say loudly that none isolates
// nothing).
func Detect(agentPath string) (string, error) {
	_, runscErr := exec.LookPath("runsc")
	_, agentErr := agent.FindBinary(agentPath)
	var rootErr error
	if os.Geteuid() != 0 {
		rootErr = errors.New("not running as root")
	}
	if runscErr == nil && agentErr == nil && rootErr == nil {
		return GVisor, nil
	}
	var errs []error
	if runscErr != nil {
		errs = append(errs, fmt.Errorf("runsc: %w", runscErr))
	}
	if agentErr != nil {
		errs = append(errs, fmt.Errorf("agent: %w", agentErr))
	}
	return None, errors.Join(append(errs, rootErr)...)
}
