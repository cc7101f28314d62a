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

// BenchmarkDrivers times the backend's operations through the command
// driver and the libzfs_core driver, each next to its raw baseline: the
// driver's single call on a plain dataset with no backend bookkeeping
// (for the command driver one `zfs` process, for libzfs_core one
// lzc_snapshot / lzc_rollback_to call, and lzc_clone plus the libzfs
// mount that `zfs clone` also does). Both trees hold 100 small files.
// It needs kernel OpenZFS: the OpenZFS VM job (scripts/zfs-vm/run.sh,
// TURNBOX_ZFS_VM_BENCH=1) runs it and turns the output into JSON.
//
//	BenchmarkDrivers/<driver>/snapshot          Backend.Snapshot
//	BenchmarkDrivers/<driver>/raw-snapshot      Driver.Snapshot
//	BenchmarkDrivers/<driver>/rollback-newest   Backend.Rollback, in place
//	BenchmarkDrivers/<driver>/raw-rollback      Driver.Rollback (newest)
//	BenchmarkDrivers/<driver>/rollback-older    Backend.Rollback, clone-and-swap
//	BenchmarkDrivers/<driver>/clone             Backend.CloneVolume
//	BenchmarkDrivers/<driver>/raw-clone         Driver.Clone (mounted)
//
// The small write before each rollback is not timed.
func BenchmarkDrivers(b *testing.B) {
	if _, err := os.Stat("/dev/zfs"); err != nil {
		b.Skip("no /dev/zfs: runs in the OpenZFS VM job")
	}
	lzc, err := zfs.NewLZCDriver()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { lzc.(*zfs.LZCDriver).Close() })
	for _, d := range []zfs.Driver{zfs.NewCommandDriver(), lzc} {
		b.Run(d.Name(), func(b *testing.B) {
			ctx := b.Context()
			pool := zfstest.NewPool(b, 512<<20)
			dir := b.TempDir()
			be, err := zfs.NewBackend(ctx, d, pool+"/tb", filepath.Join(dir, "vols"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { be.Close(); zfstest.DestroyAll(b, pool+"/tb") })
			v, err := be.CreateVolume(ctx, "v")
			if err != nil {
				b.Fatal(err)
			}
			raw, rawDir := pool+"/raw", filepath.Join(dir, "raw")
			if err := d.Create(ctx, raw, zfs.CreateOptions{Props: map[string]string{"mountpoint": rawDir}}); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { zfstest.DestroyAll(b, raw) })
			fill := func(dir string) {
				for i := 0; i < 100; i++ {
					if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", i)), make([]byte, 4096), 0o644); err != nil {
						b.Fatal(err)
					}
				}
			}
			fill(v.Path)
			fill(rawDir)
			scratch := func(b *testing.B, dir string) {
				b.StopTimer()
				if err := os.WriteFile(filepath.Join(dir, "scratch"), []byte("x"), 0o644); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			n := 0
			firstRaw := ""
			b.Run("snapshot", func(b *testing.B) {
				for b.Loop() {
					n++
					if _, err := be.Snapshot(ctx, "v", fmt.Sprintf("s%d", n)); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("raw-snapshot", func(b *testing.B) {
				for b.Loop() {
					n++
					snap := fmt.Sprintf("%s@r%d", raw, n)
					if err := d.Snapshot(ctx, snap, nil); err != nil {
						b.Fatal(err)
					}
					if firstRaw == "" {
						firstRaw = snap
					}
				}
			})
			b.Run("rollback-newest", func(b *testing.B) {
				n++
				last := fmt.Sprintf("s%d", n)
				if _, err := be.Snapshot(ctx, "v", last); err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					scratch(b, v.Path)
					if err := be.Rollback(ctx, "v", last); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("raw-rollback", func(b *testing.B) {
				n++
				last := fmt.Sprintf("%s@r%d", raw, n)
				if err := d.Snapshot(ctx, last, nil); err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					scratch(b, rawDir)
					if err := d.Rollback(ctx, last); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("rollback-older", func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					// Alternate between two old snapshots: every
					// rollback is a clone-and-swap.
					if err := be.Rollback(ctx, "v", fmt.Sprintf("s%d", 1+i%2)); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("clone", func(b *testing.B) {
				for b.Loop() {
					n++
					if _, err := be.CloneVolume(ctx, fmt.Sprintf("c%d", n), "v", "s1"); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("raw-clone", func(b *testing.B) {
				origin := firstRaw
				if origin == "" {
					b.Fatal("raw-snapshot made no snapshot to clone")
				}
				for b.Loop() {
					n++
					name := fmt.Sprintf("%s/rc%d", pool, n)
					if err := d.Clone(ctx, origin, name, zfs.CreateOptions{Props: map[string]string{"mountpoint": filepath.Join(dir, "rc", fmt.Sprint(n))}}); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
