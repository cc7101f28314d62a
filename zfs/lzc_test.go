//go:build linux && cgo && libzfs_core

package zfs_test

import (
	"os"
	"testing"

	"github.com/turnbox/turnbox/snapshot"
	"github.com/turnbox/turnbox/snapshot/snapshottest"
	"github.com/turnbox/turnbox/zfs"
	"github.com/turnbox/turnbox/zfs/zfstest"
)

// TestLZCBackendSuite runs the backend suite over the libzfs_core driver.
// It needs kernel OpenZFS (/dev/zfs): on hosts without it (these build
// machines) it skips, and the OpenZFS VM job runs it.
func TestLZCBackendSuite(t *testing.T) {
	if _, err := os.Stat("/dev/zfs"); err != nil {
		t.Skip("no /dev/zfs: the libzfs_core driver runs in the OpenZFS VM job")
	}
	d, err := zfs.NewLZCDriver()
	if err != nil {
		t.Fatal(err)
	}
	pool := zfstest.NewPool(t, 2<<30)
	open := func(t *testing.T, pool string) snapshot.Backend {
		b, err := zfs.NewBackend(t.Context(), d, pool+"/"+sanitize(t.Name()), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close(); zfstest.DestroyAll(t, b.Parent()) })
		return b
	}
	snapshottest.Run(t, func(t *testing.T) snapshot.Backend { return open(t, pool) },
		snapshottest.WithCopyOnWrite(),
		snapshottest.WithFullDisk(func(t *testing.T) snapshot.Backend {
			return open(t, zfstest.NewPool(t, 64<<20))
		}))
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}
