package zfs_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/zfs"
	"github.com/turnbox/turnbox/zfs/zfstest"
)

// containers lists the datasets right under parent (the containers), sorted.
func containers(t *testing.T, d zfs.Driver, parent string) []string {
	t.Helper()
	ds, err := d.Get(t.Context(), []string{parent}, []string{"type"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, x := range ds {
		if x.Name != parent && x.Type() == "filesystem" {
			out = append(out, strings.TrimPrefix(x.Name, parent+"/"))
		}
	}
	sort.Strings(out)
	return out
}

func spareCount(names []string) int {
	n := 0
	for _, c := range names {
		if strings.HasPrefix(c, "_s") {
			n++
		}
	}
	return n
}

// TestSpareContainers checks the spare containers behind CreateVolume and
// CloneVolume: they are taken and made again, volumes in them survive a
// reopen (named by their generations' property, not the container's
// name), DestroyVolume removes a spare-held volume, a spare destroyed
// behind the backend's back makes it fall back to a named container, and
// WithSpareContainers(0) makes none.
func TestSpareContainers(t *testing.T) {
	pool := zfstest.NewPool(t, 1<<30)
	ctx := t.Context()
	d := zfs.NewCommandDriver()
	parent, root := pool+"/sp", filepath.Join(t.TempDir(), "vols")
	open := func(opts ...zfs.Option) *zfs.Backend {
		t.Helper()
		b, err := zfs.NewBackend(ctx, d, parent, root, opts...)
		if err != nil {
			t.Fatal(err)
		}
		b.WaitIdle()
		return b
	}
	t.Cleanup(func() { zfstest.DestroyAll(t, parent) })
	b := open(zfs.WithSpareContainers(2))
	if ready, taken := b.SpareContainers(); ready != 2 || taken != 0 {
		t.Fatalf("after open: %d spares ready, %d taken; want 2, 0", ready, taken)
	}
	if got := containers(t, d, parent); len(got) != 2 || spareCount(got) != 2 {
		t.Fatalf("containers after open: %v, want two spares", got)
	}
	v, err := b.CreateVolume(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if ds := b.VolumeDataset("a"); !strings.HasPrefix(ds, parent+"/_s") {
		t.Errorf("volume a is in %s, want a spare container", ds)
	}
	if err := os.WriteFile(filepath.Join(v.Path, "f"), []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Snapshot(ctx, "a", "s"); err != nil {
		t.Fatal(err)
	}
	c, err := b.CloneVolume(ctx, "b", "a", "s")
	if err != nil {
		t.Fatal(err)
	}
	b.WaitIdle()
	if ready, taken := b.SpareContainers(); ready != 2 || taken != 2 {
		t.Fatalf("after a create and a clone: %d spares ready, %d taken; want 2, 2", ready, taken)
	}
	if got := containers(t, d, parent); len(got) != 4 || spareCount(got) != 4 {
		t.Fatalf("containers: %v, want 4 (two volumes, two spares), all _s", got)
	}
	b.Close()

	// Reopened: both volumes found by their generations' property, the two
	// empty containers are the spares again, nothing new is made.
	b = open(zfs.WithSpareContainers(2))
	if ready, _ := b.SpareContainers(); ready != 2 {
		t.Fatalf("after reopening: %d spares, want 2", ready)
	}
	if got := containers(t, d, parent); len(got) != 4 {
		t.Fatalf("containers after reopening: %v, want 4", got)
	}
	vols, err := b.Volumes(ctx)
	if err != nil || len(vols) != 2 || vols[0].Name != "a" || vols[1].Name != "b" {
		t.Fatalf("Volumes after reopening = %v, %v; want a, b", vols, err)
	}
	if got, err := os.ReadFile(filepath.Join(c.Path, "f")); err != nil || string(got) != "one" {
		t.Fatalf("clone b after reopening: f = %q, %v", got, err)
	}
	if snaps, err := b.Snapshots(ctx, "a"); err != nil || len(snaps) != 1 || snaps[0].Name != "s" {
		t.Fatalf("snapshots of a after reopening = %v, %v", snaps, err)
	}
	// a's snapshot is b's origin: destroying a promotes b.
	if err := b.DestroyVolume(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	b.WaitIdle()
	if got := containers(t, d, parent); len(got) != 3 {
		t.Fatalf("containers after destroying a: %v, want 3 (b and two spares)", got)
	}
	if got, err := os.ReadFile(filepath.Join(c.Path, "f")); err != nil || string(got) != "one" {
		t.Fatalf("clone b after its source was destroyed: f = %q, %v", got, err)
	}

	// Spares destroyed behind the backend's back: the next volume falls
	// back to a container named after it.
	for _, n := range containers(t, d, parent) {
		if strings.HasPrefix(n, "_s") && parent+"/"+n != b.VolumeDataset("b") {
			if err := d.Destroy(ctx, parent+"/"+n, zfs.DestroyOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := b.CreateVolume(ctx, "c"); err != nil {
		t.Fatalf("CreateVolume with its spare gone: %v", err)
	}
	if ds := b.VolumeDataset("c"); ds != parent+"/c" {
		t.Errorf("volume c is in %s, want %s/c (the spare was gone)", ds, parent)
	}
	b.WaitIdle()
	b.Close()

	// No spares: containers are named after their volumes, none is made.
	b = open(zfs.WithSpareContainers(0))
	defer b.Close()
	for i := range 2 {
		name := fmt.Sprint("n", i)
		if _, err := b.CreateVolume(ctx, name); err != nil {
			t.Fatal(err)
		}
		if ds := b.VolumeDataset(name); ds != parent+"/"+name {
			t.Errorf("WithSpareContainers(0): volume %s is in %s", name, ds)
		}
	}
	b.WaitIdle()
	// The spare the previous backend made after c is listed (ready) but
	// this backend neither takes it nor makes more.
	if ready, taken := b.SpareContainers(); ready != 1 || taken != 0 {
		t.Errorf("WithSpareContainers(0): %d ready, %d taken; want 1 (left by the earlier backend), 0", ready, taken)
	}
}
