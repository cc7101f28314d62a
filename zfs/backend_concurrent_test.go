package zfs_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/turnbox/turnbox/zfs"
	"github.com/turnbox/turnbox/zfs/zfstest"
)

// TestConcurrentForks forks one snapshot eight times at once, while the
// source takes a snapshot and another volume is created, and makes two
// forks under one name at once: every call succeeds, every fork has the
// snapshot's content (spare containers and named ones alike), exactly one
// of the same-name pair wins and the other fails with ErrExists.
//
// It runs on the command driver, and on libzfs_core where that driver is
// built in and kernel OpenZFS is there (the VM job).
func TestConcurrentForks(t *testing.T) {
	pool := zfstest.NewPool(t, 1<<30)
	t.Run("command", func(t *testing.T) { testConcurrentForks(t, newBackend(t, pool).Backend) })
	t.Run("libzfs_core", func(t *testing.T) {
		d, err := zfs.NewLZCDriver()
		if err != nil {
			t.Skipf("libzfs_core driver: %v", err)
		}
		b, err := zfs.NewBackend(t.Context(), d, pool+"/lzcforks", filepath.Join(t.TempDir(), "vols"), zfs.WithOwnedDriver())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close(); zfstest.DestroyAll(t, pool+"/lzcforks") })
		testConcurrentForks(t, b)
	})
}

func testConcurrentForks(t *testing.T, b *zfs.Backend) {
	ctx := t.Context()
	v, err := b.CreateVolume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v.Path, "f"), []byte("s"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Snapshot(ctx, "v", "s"); err != nil {
		t.Fatal(err)
	}
	const forks = 8
	var wg sync.WaitGroup
	errs := make([]error, forks+4)
	for i := range forks {
		wg.Go(func() {
			_, errs[i] = b.CloneVolume(ctx, fmt.Sprint("f", i), "v", "s")
		})
	}
	wg.Go(func() {
		if err := os.WriteFile(filepath.Join(v.Path, "f"), []byte("t"), 0o644); err != nil {
			errs[forks] = err
			return
		}
		_, errs[forks] = b.Snapshot(ctx, "v", "t")
	})
	wg.Go(func() { _, errs[forks+1] = b.CreateVolume(ctx, "other") })
	wg.Go(func() { _, errs[forks+2] = b.CloneVolume(ctx, "dup", "v", "s") })
	wg.Go(func() { _, errs[forks+3] = b.CloneVolume(ctx, "dup", "v", "s") })
	wg.Wait()
	for i, err := range errs[:forks+2] {
		if err != nil {
			t.Errorf("call %d: %v", i, err)
		}
	}
	d1, d2 := errs[forks+2], errs[forks+3]
	if (d1 == nil) == (d2 == nil) || !errors.Is(errors.Join(d1, d2), zfs.ErrExists) {
		t.Errorf("two forks named dup at once: %v and %v; want one success and one ErrExists", d1, d2)
	}
	for i := range forks {
		name := fmt.Sprint("f", i)
		f, err := b.Volume(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(filepath.Join(f.Path, "f")); err != nil || string(got) != "s" {
			t.Errorf("fork %s: f = %q, %v; want s", name, got, err)
		}
	}
	vols, err := b.Volumes(ctx)
	if err != nil || len(vols) != forks+3 {
		t.Errorf("Volumes = %d (%v), want %d (v, other, dup and the forks)", len(vols), err, forks+3)
	}
	snaps, err := b.Snapshots(ctx, "v")
	if err != nil || len(snaps) != 2 {
		t.Errorf("snapshots of v = %v, %v; want s and t", snaps, err)
	}
}
