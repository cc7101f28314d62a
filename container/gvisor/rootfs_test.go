package gvisor_test

import (
	"errors"
	"os"
	"testing"

	"github.com/turnbox/turnbox/container"
)

// TestRootFSWithoutMountpointsRefused: runsc would create the agent's and
// the volume's mount points in the root's host directory; Start refuses a
// root without them (ErrInvalidSpec) and writes nothing into it.
func TestRootFSWithoutMountpointsRefused(t *testing.T) {
	e := newEnv(t)
	bare := t.TempDir()
	spec := e.spec("bare-root")
	spec.RootFS = bare
	sb, err := e.rt.StartSandbox(ctxT(t), spec)
	if err == nil {
		sb.Stop(ctxT(t))
		t.Fatal("Start with a root without mount points: nil error, want ErrInvalidSpec")
	}
	if !errors.Is(err, container.ErrInvalidSpec) {
		t.Errorf("err = %v, want ErrInvalidSpec", err)
	}
	if ents, _ := os.ReadDir(bare); len(ents) != 0 {
		t.Errorf("a refused Start wrote %d entries into the root directory (first %s)", len(ents), ents[0].Name())
	}
}
