package zfs_test

import (
	"errors"
	"testing"

	"github.com/turnbox/turnbox/zfs"
)

func TestOpenDriver(t *testing.T) {
	for _, name := range []string{"", zfs.DriverCommand} {
		d, err := zfs.OpenDriver(name)
		if err != nil || d.Name() != zfs.DriverCommand {
			t.Fatalf("OpenDriver(%q) = %v, %v; want the command driver", name, d, err)
		}
	}
	if _, err := zfs.OpenDriver("fuse"); !errors.Is(err, zfs.ErrUnknownDriver) {
		t.Fatalf("OpenDriver(fuse): err = %v, want ErrUnknownDriver", err)
	}
	// libzfs_core: a driver with that name, or (no build tag, no
	// /dev/zfs) an error wrapping ErrUnsupported.
	d, err := zfs.OpenDriver(zfs.DriverLZC)
	switch {
	case err == nil:
		if d.Name() != zfs.DriverLZC {
			t.Fatalf("OpenDriver(%s) gave driver %q", zfs.DriverLZC, d.Name())
		}
		if c, ok := d.(interface{ Close() error }); ok {
			c.Close()
		}
	case !errors.Is(err, zfs.ErrUnsupported):
		t.Fatalf("OpenDriver(%s): err = %v, want nil or ErrUnsupported", zfs.DriverLZC, err)
	}
}
