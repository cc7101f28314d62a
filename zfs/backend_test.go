package zfs_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/turnbox/turnbox/snapshot"
	"github.com/turnbox/turnbox/snapshot/snapshottest"
	"github.com/turnbox/turnbox/zfs"
	"github.com/turnbox/turnbox/zfs/zfstest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	zfstest.Shutdown()
	os.Exit(code)
}

var parentSeq atomic.Int64

type opened struct {
	*zfs.Backend
	parent, root string
}

// newBackend opens a backend on a fresh parent dataset of pool.
func newBackend(t *testing.T, pool string) *opened {
	t.Helper()
	parent := fmt.Sprintf("%s/b%d", pool, parentSeq.Add(1))
	root := filepath.Join(t.TempDir(), "vols")
	b, err := zfs.NewBackend(t.Context(), zfs.NewCommandDriver(), parent, root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Close()
		zfstest.DestroyAll(t, parent)
	})
	return &opened{b, parent, root}
}

func TestBackendSuite(t *testing.T) {
	pool := zfstest.NewPool(t, 2<<30)
	var skip []snapshottest.Option
	if !zfstest.Kernel() {
		// zfs-fuse's daemon died under this race (a rollback's
		// unmount while a writer swaps symlinks in the volume) in a
		// CI run, taking every later zfs test with it. Kernel OpenZFS
		// runs the case in the VM suite (make test-zfs).
		skip = append(skip, snapshottest.WithSkip("zfs-fuse's daemon can crash under it; run on kernel OpenZFS (make test-zfs)", "SnapshotSymlinkRace"))
	}
	snapshottest.Run(t, func(t *testing.T) snapshot.Backend {
		return newBackend(t, pool)
	}, append(skip,
		snapshottest.WithCopyOnWrite(),
		snapshottest.WithFullDisk(func(t *testing.T) snapshot.Backend {
			small := zfstest.NewPool(t, 64<<20)
			return newBackend(t, small)
		}),
		snapshottest.WithReopen(func(t *testing.T, old snapshot.Backend) snapshot.Backend {
			o := old.(*opened)
			o.Close()
			b, err := zfs.NewBackend(t.Context(), zfs.NewCommandDriver(), o.parent, o.root)
			if err != nil {
				t.Fatalf("reopening: %v", err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		}),
	)...)
}

// TestRollbackScheme checks the generation bookkeeping behind rollback:
// in place to the newest snapshot, clone-and-swap to an older one, roll
// forward, and DestroyVolume of a source whose snapshots clones use.
func TestRollbackScheme(t *testing.T) {
	pool := zfstest.NewPool(t, 1<<30)
	b := newBackend(t, pool)
	ctx := t.Context()
	v, err := b.CreateVolume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(v.Path, "f"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := func(s string) {
		t.Helper()
		got, err := os.ReadFile(filepath.Join(v.Path, "f"))
		if err != nil || string(got) != s {
			t.Fatalf("f = %q, %v; want %q", got, err, s)
		}
	}
	active := func() string {
		t.Helper()
		ds, err := b.ActiveDataset("v")
		if err != nil {
			t.Fatal(err)
		}
		return ds
	}
	for i := 1; i <= 3; i++ {
		write(fmt.Sprint(i))
		if _, err := b.Snapshot(ctx, "v", fmt.Sprint("s", i)); err != nil {
			t.Fatal(err)
		}
	}
	g1 := active()
	write("dirty")
	if err := b.Rollback(ctx, "v", "s3"); err != nil {
		t.Fatal(err)
	}
	want("3")
	if active() != g1 {
		t.Errorf("rollback to the newest snapshot swapped datasets: %s -> %s", g1, active())
	}
	if err := b.Rollback(ctx, "v", "s1"); err != nil {
		t.Fatal(err)
	}
	want("1")
	g2 := active()
	if g2 == g1 {
		t.Errorf("rollback to an older snapshot did not swap")
	}
	if err := b.Rollback(ctx, "v", "s2"); err != nil {
		t.Fatal(err)
	}
	want("2")
	// g2 had no snapshots: it is gone.
	b.WaitIdle()
	if ok, _ := b.Driver().Exists(ctx, g2); ok {
		t.Errorf("snapshot-less generation %s survived a swap", g2)
	}
	write("4")
	if _, err := b.Snapshot(ctx, "v", "s4"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CloneVolume(ctx, "c", "v", "s1"); err != nil {
		t.Fatal(err)
	}
	// s1 has two clones now (the generation made by the rollback to s1
	// is gone, c remains); destroying it hides it.
	if err := b.DestroySnapshot(ctx, "v", "s1"); err != nil {
		t.Fatal(err)
	}
	if err := b.Rollback(ctx, "v", "s3"); err != nil {
		t.Fatal(err)
	}
	want("3")
	if err := b.Rollback(ctx, "v", "s4"); err != nil {
		t.Fatal(err)
	}
	want("4")
	if err := b.DestroyVolume(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	vols, err := b.Volumes(ctx)
	if err != nil || len(vols) != 1 || vols[0].Name != "c" {
		t.Fatalf("Volumes = %v, %v; want only c", vols, err)
	}
	c, _ := b.Volume(ctx, "c")
	got, err := os.ReadFile(filepath.Join(c.Path, "f"))
	if err != nil || string(got) != "1" {
		t.Fatalf("clone c after its source was destroyed: f = %q, %v", got, err)
	}
	// Nothing of v remains, and no hidden snapshot lingers.
	ds, err := b.Driver().Get(ctx, []string{b.parent}, []string{"type"}, -1)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		t.Logf("left: %s", d.Name)
		if _, short, ok := zfs.SplitSnapshot(d.Name); ok && short[0] == '_' {
			t.Errorf("hidden snapshot %s survived DestroyVolume", d.Name)
		}
	}
	if _, err := b.Snapshots(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	_ = context.Background
}
