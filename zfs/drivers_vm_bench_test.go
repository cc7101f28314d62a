//go:build linux && cgo && libzfs_core

package zfs_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/turnbox/turnbox/zfs"
	"github.com/turnbox/turnbox/zfs/zfstest"
)

// BenchmarkDrivers times the backend's operations through the command
// driver and the libzfs_core driver, each beside its raw baseline: the
// driver's single call on a plain dataset with no backend bookkeeping
// (for the command driver one `zfs` process, for libzfs_core one
// lzc_snapshot / lzc_rollback_to call, and lzc_clone plus the libzfs
// mount that `zfs clone` also does). Both trees hold 100 small files.
// It needs kernel OpenZFS: the OpenZFS VM job (scripts/zfs-vm/run.sh,
// TURNBOX_ZFS_VM_BENCH=1) runs it and turns the output into JSON.
//
// The paired benchmarks run the backend's operation and its baselines in
// the same iteration, in an order that rotates every iteration, so that
// drift (the pool filling, the host's load) hits all of them alike. They
// report the median of each as ms/<what> (ns/op is their sum):
//
//	snapshot         ms/backend   Backend.Snapshot (two user properties)
//	                 ms/raw       Driver.Snapshot, no properties
//	                 ms/raw+props Driver.Snapshot with the backend's two user properties
//	rollback-newest  ms/backend   Backend.Rollback to the newest snapshot (in place)
//	                 ms/raw       Driver.Rollback to the newest snapshot
//	clone-idle       ms/backend   Backend.CloneVolume after the backend went idle
//	                 ms/raw       Driver.Clone with a mountpoint (mounted)
//	destroy-volume   ms/backend   Backend.DestroyVolume of a fork with one snapshot
//	                 ms/raw       Driver.Destroy -r of a tree of that shape
//
// The small write before each rollback, the wait for idle and making
// what destroy-volume destroys are not timed. Three more are plain
// benchmarks with no raw counterpart:
//
//	rollback-older   Backend.Rollback to an older snapshot, clone-and-swap
//	clone            Backend.CloneVolume back to back (spare/op: the share
//	                 that found a spare container ready)
//	clone-4-at-once  four Backend.CloneVolume calls started together
func BenchmarkDrivers(b *testing.B) {
	lzc := openLZC(b)
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
			for _, dir := range []string{v.Path, rawDir} {
				for i := 0; i < 100; i++ {
					if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", i)), make([]byte, 4096), 0o644); err != nil {
						b.Fatal(err)
					}
				}
			}
			scratch := func(b *testing.B, dir string) {
				if err := os.WriteFile(filepath.Join(dir, "scratch"), []byte("x"), 0o644); err != nil {
					b.Fatal(err)
				}
			}
			n := 0
			next := func() int { n++; return n }
			for _, s := range []string{"s0", "old1", "old2"} {
				if _, err := be.Snapshot(ctx, "v", s); err != nil {
					b.Fatal(err)
				}
			}
			if err := d.Snapshot(ctx, raw+"@r0", nil); err != nil {
				b.Fatal(err)
			}
			b.Run("snapshot", func(b *testing.B) {
				paired(b, []step{
					{"backend", nil, func() error {
						_, err := be.Snapshot(ctx, "v", fmt.Sprint("s", next()))
						return err
					}},
					{"raw", nil, func() error { return d.Snapshot(ctx, fmt.Sprintf("%s@r%d", raw, next()), nil) }},
					{"raw+props", nil, func() error {
						// What Backend.Snapshot sets: the name and the
						// creation time in nanoseconds.
						i := next()
						return d.Snapshot(ctx, fmt.Sprintf("%s@r%d", raw, i), map[string]string{
							zfs.PropSnapshot: fmt.Sprint("r", i), zfs.PropCreated: strconv.FormatInt(time.Now().UnixNano(), 10)})
					}},
				})
			})
			b.Run("rollback-newest", func(b *testing.B) {
				last := fmt.Sprint("s", next())
				if _, err := be.Snapshot(ctx, "v", last); err != nil {
					b.Fatal(err)
				}
				rawLast := fmt.Sprintf("%s@r%d", raw, next())
				if err := d.Snapshot(ctx, rawLast, nil); err != nil {
					b.Fatal(err)
				}
				paired(b, []step{
					{"backend", func() { scratch(b, v.Path) }, func() error { return be.Rollback(ctx, "v", last) }},
					{"raw", func() { scratch(b, rawDir) }, func() error { return d.Rollback(ctx, rawLast) }},
				})
			})
			b.Run("clone-idle", func(b *testing.B) {
				paired(b, []step{
					{"backend", be.WaitIdle, func() error {
						_, err := be.CloneVolume(ctx, fmt.Sprint("c", next()), "v", "s0")
						return err
					}},
					{"raw", nil, func() error {
						i := next()
						return d.Clone(ctx, raw+"@r0", fmt.Sprintf("%s/rc%d", pool, i),
							zfs.CreateOptions{Props: map[string]string{"mountpoint": filepath.Join(dir, "rc", fmt.Sprint(i))}})
					}},
				})
			})
			b.Run("destroy-volume", func(b *testing.B) {
				// A fork with one snapshot, destroyed; the raw tree has the
				// same shape: a container, a clone in it, its snapshot.
				var name, tree string
				paired(b, []step{
					{"backend", func() {
						name = fmt.Sprint("d", next())
						if _, err := be.CloneVolume(ctx, name, "v", "s0"); err != nil {
							b.Fatal(err)
						}
						if _, err := be.Snapshot(ctx, name, "s"); err != nil {
							b.Fatal(err)
						}
						be.WaitIdle()
					}, func() error { return be.DestroyVolume(ctx, name) }},
					{"raw", func() {
						i := next()
						tree = fmt.Sprintf("%s/rd%d", pool, i)
						err := errors.Join(
							d.Create(ctx, tree, zfs.CreateOptions{Props: map[string]string{"mountpoint": "none"}}),
							d.Clone(ctx, raw+"@r0", tree+"/g1", zfs.CreateOptions{Props: map[string]string{"mountpoint": filepath.Join(dir, "rd", fmt.Sprint(i))}}),
							d.Snapshot(ctx, tree+"/g1@s", nil))
						if err != nil {
							b.Fatal(err)
						}
					}, func() error { return d.Destroy(ctx, tree, zfs.DestroyOptions{Recursive: true}) }},
				})
			})
			b.Run("rollback-older", func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					// Alternate between two old snapshots: every
					// rollback is a clone-and-swap.
					if err := be.Rollback(ctx, "v", fmt.Sprintf("old%d", 1+i%2)); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("clone-4-at-once", func(b *testing.B) {
				// Four forks of one snapshot started together, the
				// backend idle before (best-of-N exploration): ns/op is
				// the time until all four are mounted. The backend makes
				// them one at a time (CloneVolume holds opMu exclusively);
				// a version that let forks of one source run together
				// measured no gain in the VM (373 ms vs 4 x 80.5).
				for b.Loop() {
					b.StopTimer()
					be.WaitIdle()
					b.StartTimer()
					var wg sync.WaitGroup
					errs := make([]error, 4)
					for k := range errs {
						name := fmt.Sprint("c", next())
						wg.Go(func() { _, errs[k] = be.CloneVolume(ctx, name, "v", "s0") })
					}
					wg.Wait()
					if err := errors.Join(errs...); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("clone", func(b *testing.B) {
				// Back to back: the backend makes a new spare container in
				// the background after each fork, and in a tight loop that
				// create often takes the transaction group the next fork
				// would have joined, which then waits for two.
				be.WaitIdle()
				_, taken0 := be.SpareContainers()
				for b.Loop() {
					if _, err := be.CloneVolume(ctx, fmt.Sprint("c", next()), "v", "s0"); err != nil {
						b.Fatal(err)
					}
				}
				_, taken := be.SpareContainers()
				b.ReportMetric(float64(taken-taken0)/float64(b.N), "spare/op")
			})
		})
	}
}

// step is one timed operation of a paired benchmark: prep runs untimed
// before it.
type step struct {
	what string
	prep func()
	op   func() error
}

// paired runs every step once per iteration, starting from a different
// step each iteration, and reports each step's median as ms/<what>.
func paired(b *testing.B, steps []step) {
	times := make([][]time.Duration, len(steps))
	for it := 0; b.Loop(); it++ {
		for k := range steps {
			i := (it + k) % len(steps)
			s := steps[i]
			b.StopTimer()
			if s.prep != nil {
				s.prep()
			}
			b.StartTimer()
			start := time.Now()
			err := s.op()
			times[i] = append(times[i], time.Since(start))
			if err != nil {
				b.Fatalf("%s: %v", s.what, err)
			}
		}
	}
	for i, s := range steps {
		t := times[i]
		slices.Sort(t)
		med := t[len(t)/2]
		if len(t)%2 == 0 {
			med = (t[len(t)/2-1] + t[len(t)/2]) / 2
		}
		b.ReportMetric(float64(med)/1e6, "ms/"+s.what)
	}
}
