package embedded_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"testing"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/environment/envtest"
	"github.com/turnbox/turnbox/zfs"
	"github.com/turnbox/turnbox/zfs/zfstest"
)

// TestKernelZFSDrivers runs envtest on embedded sessions on kernel
// OpenZFS through each zfs driver (Config.ZFSDriver): the zfs command and
// libzfs_core. It needs /dev/zfs, which our machines' kernel lacks: the
// OpenZFS VM job (make test-zfs, scripts/zfs-vm) runs it, with the test
// binary built with -tags libzfs_core. Elsewhere it skips (the matrix
// covers zfs × none on zfs-fuse with the command driver).
func TestKernelZFSDrivers(t *testing.T) {
	if !zfstest.Kernel() {
		t.Skip("no /dev/zfs: runs in the OpenZFS VM job (make test-zfs)")
	}
	for _, driver := range []string{zfs.DriverCommand, zfs.DriverLZC} {
		t.Run(driver, func(t *testing.T) {
			cfg := matrixConfig(t, embedded.StorageBackendZFS, embedded.ContainerRuntimeNone)
			cfg.ZFSDriver = driver
			h := openCheckedHost(t, cfg)
			b, ok := h.Storage().(*zfs.Backend)
			if !ok {
				t.Fatalf("storage is %T, want *zfs.Backend", h.Storage())
			}
			if got := b.Driver().Name(); got != driver {
				t.Fatalf("driver %q, want %q", got, driver)
			}
			envtest.Run(t, func(t *testing.T) environment.Environment { return h.NewEnvironment() },
				envtest.WithPropertyChecks(propertyChecks(t)))
		})
	}
}

// TestZFSDriverRefused: an unknown driver name fails NewHost clearly.
func TestZFSDriverRefused(t *testing.T) {
	cfg := embedded.Config{StateDir: t.TempDir(), StorageBackend: embedded.StorageBackendZFS,
		ZFSDataset: "tank/tb", ZFSDriver: "fuse", ContainerRuntime: embedded.ContainerRuntimeNone, Logger: quietLogger()}
	if _, err := embedded.NewHost(context.Background(), cfg); !errors.Is(err, zfs.ErrUnknownDriver) {
		t.Fatalf("NewHost with ZFSDriver %q: err = %v, want ErrUnknownDriver", cfg.ZFSDriver, err)
	}
}

// propertyChecks is envtest's number of random sequences per property
// test: 4, or TURNBOX_ENVTEST_PROPERTY_CHECKS (the VM job under emulation
// may lower it).
func propertyChecks(t *testing.T) int {
	v := os.Getenv("TURNBOX_ENVTEST_PROPERTY_CHECKS")
	if v == "" {
		return 4
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("TURNBOX_ENVTEST_PROPERTY_CHECKS=%q: want a positive number", v)
	}
	return n
}
