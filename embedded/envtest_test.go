package embedded_test

import (
	"context"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/environment/envtest"
)

// TestConformance runs the environment conformance suite against an
// embedded host with the default storage (localdisk) and runtime (none).
func TestConformance(t *testing.T) {
	host, err := embedded.NewHost(t.Context(), embedded.Config{StateDir: t.TempDir(), ContainerRuntime: embedded.ContainerRuntimeNone})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := host.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	envtest.Run(t, func(t *testing.T) environment.Environment { return host.NewEnvironment() })
}
