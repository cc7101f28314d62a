//go:build linux && cgo && libzfs_core

package zfs_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/turnbox/turnbox/zfs"
	"github.com/turnbox/turnbox/zfs/zfstest"
)

// BenchmarkDrivers times the same ZFS operations through the command
// driver and the libzfs_core driver, on the backend (a volume of 100
// small files). It needs kernel OpenZFS: the OpenZFS VM job
// (scripts/zfs-vm/run.sh, TURNBOX_ZFS_VM_BENCH=1) runs it.
func BenchmarkDrivers(b *testing.B) {
	if _, err := os.Stat("/dev/zfs"); err != nil {
		b.Skip("no /dev/zfs: runs in the OpenZFS VM job")
	}
	lzc, err := zfs.NewLZCDriver()
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range []zfs.Driver{zfs.NewCommandDriver(), lzc} {
		b.Run(d.Name(), func(b *testing.B) {
			pool := zfstest.NewPool(b, 1<<30)
			be, err := zfs.NewBackend(b.Context(), d, pool+"/tb", filepath.Join(b.TempDir(), "vols"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { be.Close(); zfstest.DestroyAll(b, pool+"/tb") })
			v, err := be.CreateVolume(b.Context(), "v")
			if err != nil {
				b.Fatal(err)
			}
			for i := 0; i < 100; i++ {
				if err := os.WriteFile(filepath.Join(v.Path, fmt.Sprintf("f%03d", i)), make([]byte, 4096), 0o644); err != nil {
					b.Fatal(err)
				}
			}
			n := 0
			b.Run("snapshot", func(b *testing.B) {
				for b.Loop() {
					n++
					if _, err := be.Snapshot(b.Context(), "v", fmt.Sprintf("s%d", n)); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("rollback-newest", func(b *testing.B) {
				n++
				last := fmt.Sprintf("s%d", n)
				if _, err := be.Snapshot(b.Context(), "v", last); err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					if err := os.WriteFile(filepath.Join(v.Path, "scratch"), []byte("x"), 0o644); err != nil {
						b.Fatal(err)
					}
					if err := be.Rollback(b.Context(), "v", last); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("rollback-older", func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					// Alternate between two snapshots: every rollback is a
					// clone-and-swap.
					if err := be.Rollback(b.Context(), "v", fmt.Sprintf("s%d", 1+i%2)); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
