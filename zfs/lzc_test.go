//go:build linux && cgo && libzfs_core

package zfs_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/snapshot"
	"github.com/turnbox/turnbox/snapshot/snapshottest"
	"github.com/turnbox/turnbox/zfs"
	"github.com/turnbox/turnbox/zfs/zfstest"
)

// openLZC returns a libzfs_core driver, closed when tb ends. Without
// kernel OpenZFS (/dev/zfs: these build machines) it skips; the OpenZFS
// VM job runs it.
func openLZC(tb testing.TB) zfs.Driver {
	tb.Helper()
	if _, err := os.Stat("/dev/zfs"); err != nil {
		tb.Skip("no /dev/zfs: the libzfs_core driver runs in the OpenZFS VM job")
	}
	d, err := zfs.NewLZCDriver()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.(*zfs.LZCDriver).Close() })
	return d
}

// mustOK returns a check that fails t on a non-nil error.
func mustOK(t *testing.T) func(error) {
	return func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestLZCBackendSuite runs the backend suite over the libzfs_core driver.
// It needs kernel OpenZFS (/dev/zfs): on hosts without it (these build
// machines) it skips, and the OpenZFS VM job runs it.
func TestLZCBackendSuite(t *testing.T) {
	d := openLZC(t)
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

// TestLZCGetMatchesCommand checks that the libzfs_core driver's Get (in
// process, through libzfs) returns what the command driver's `zfs get -H
// -p` returns, in the same order, on a tree with nested filesystems, a
// name that sorts between a parent and its children ("a-x"), more than
// nine snapshots (createtxg order differs from name order), user
// properties on filesystems and snapshots, a clone, a deferred destroy,
// and the errors for a missing dataset and an unknown property. Then it
// checks the in-process recursive Destroy, refused (as the command is)
// while a clone outside depends on a snapshot.
func TestLZCGetMatchesCommand(t *testing.T) {
	ctx := t.Context()
	lzc := openLZC(t)
	cmd := zfs.NewCommandDriver()
	pool := zfstest.NewPool(t, 256<<20)
	root, dir := pool+"/t", t.TempDir()
	must := mustOK(t)
	must(cmd.Create(ctx, root, zfs.CreateOptions{Props: map[string]string{"mountpoint": "none"}}))
	must(cmd.Create(ctx, root+"/a", zfs.CreateOptions{Props: map[string]string{"mountpoint": dir + "/a", zfs.PropVolume: "vol a"}}))
	must(cmd.Create(ctx, root+"/a/g1", zfs.CreateOptions{Props: map[string]string{zfs.PropCreated: "123"}}))
	must(cmd.Create(ctx, root+"/a-x", zfs.CreateOptions{}))
	for i := 1; i <= 11; i++ {
		must(lzc.Snapshot(ctx, fmt.Sprintf("%s/a/g1@s%d", root, i), map[string]string{zfs.PropSnapshot: fmt.Sprintf("snap %d", i)}))
	}
	must(lzc.Snapshot(ctx, root+"@top", nil))
	must(lzc.Clone(ctx, root+"/a/g1@s2", root+"/c", zfs.CreateOptions{Props: map[string]string{"mountpoint": dir + "/c"}}))
	must(lzc.Destroy(ctx, root+"/a/g1@s2", zfs.DestroyOptions{Defer: true}))
	if out, err := exec.Command("zpool", "sync", pool).CombinedOutput(); err != nil {
		t.Fatalf("zpool sync: %v: %s", err, out)
	}
	propSets := [][]string{
		{"type", "origin", "mountpoint", "defer_destroy", "creation", zfs.PropVolume, zfs.PropSnapshot, zfs.PropCreated, zfs.PropDestroying},
		zfs.SpaceProps,
		{"mountpoint", "mounted"},
		{"createtxg", "type"},
		nil,
	}
	queries := []struct {
		names []string
		depth int
	}{
		{[]string{root}, -1},
		{[]string{root}, 0},
		{[]string{root}, 1},
		{[]string{root}, 2},
		{[]string{root + "/a", root + "/c"}, -1},
		{[]string{root, root + "/a"}, -1}, // overlapping: each dataset once
		{[]string{root + "/a/g1@s3"}, 0},
	}
	for _, props := range propSets {
		for _, q := range queries {
			want, err := cmd.Get(ctx, q.names, props, q.depth)
			if err != nil {
				t.Fatal(err)
			}
			got, err := lzc.Get(ctx, q.names, props, q.depth)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Get(%v, %v, %d):\nlibzfs_core %v\n    command %v", q.names, props, q.depth, got, want)
			}
		}
	}
	if _, err := lzc.Get(ctx, []string{root + "/nope"}, nil, 0); !errors.Is(err, zfs.ErrNotFound) {
		t.Errorf("Get of a missing dataset: %v, want ErrNotFound", err)
	}
	if _, err := lzc.Get(ctx, []string{root}, []string{"nosuchprop"}, 0); !errors.Is(err, zfs.ErrInvalidName) {
		t.Errorf("Get of an unknown property: %v, want ErrInvalidName", err)
	}
	if _, err := cmd.Get(ctx, []string{root}, []string{"nosuchprop"}, 0); err == nil {
		t.Errorf("the command's Get of an unknown property did not fail")
	}

	// Recursive destroy: refused while /c depends on a/g1@s2 (deferred
	// but alive), and nothing is lost; then c goes and a goes whole.
	if err := lzc.Destroy(ctx, root+"/a", zfs.DestroyOptions{Recursive: true}); !errors.Is(err, zfs.ErrBusy) {
		t.Fatalf("recursive destroy with a dependent clone: %v, want ErrBusy", err)
	}
	if ds, err := lzc.Get(ctx, []string{root + "/a"}, nil, -1); err != nil || len(ds) != 13 {
		t.Fatalf("after a refused recursive destroy: %d datasets (%v), want 13 (a, g1, 11 snapshots)", len(ds), err)
	}
	must(lzc.Destroy(ctx, root+"/c", zfs.DestroyOptions{}))
	must(lzc.Destroy(ctx, root+"/a", zfs.DestroyOptions{Recursive: true}))
	for _, n := range []string{root + "/a", root + "/a/g1", root + "/a/g1@s2"} {
		if ok, err := lzc.Exists(ctx, n); err != nil || ok {
			t.Errorf("%s after a recursive destroy: exists %v (%v)", n, ok, err)
		}
	}
	if _, err := os.Stat(dir + "/a/g1"); err == nil {
		if ents, _ := os.ReadDir(dir + "/a/g1"); len(ents) > 0 {
			t.Errorf("%s still has content after the destroy", dir+"/a/g1")
		}
	}
	if err := lzc.Destroy(ctx, root+"/a", zfs.DestroyOptions{Recursive: true}); !errors.Is(err, zfs.ErrNotFound) {
		t.Errorf("recursive destroy of a missing dataset: %v, want ErrNotFound", err)
	}
}

// TestDestroyTree checks the channel program that destroys a volume's
// tree in one transaction group, through both drivers (lzc_channel_program
// and `zfs program`): generations cloned from each other (destroyed clones
// first), mounted ones unmounted, a sibling left alone; a tree with a
// snapshot cloned from outside stops at that snapshot with ErrExists, its
// mark set; a missing root is ErrNotFound.
func TestDestroyTree(t *testing.T) {
	lzc := openLZC(t)
	for _, drv := range []zfs.Driver{zfs.NewCommandDriver(), lzc} {
		t.Run(drv.Name(), func(t *testing.T) { testDestroyTree(t, drv) })
	}
}

func testDestroyTree(t *testing.T, d zfs.Driver) {
	ctx := t.Context()
	pool := zfstest.NewPool(t, 256<<20)
	root, dir := pool+"/t", t.TempDir()
	must := mustOK(t)
	mp := func(p string) zfs.CreateOptions {
		return zfs.CreateOptions{Parents: true, Props: map[string]string{"mountpoint": p}}
	}
	must(d.Create(ctx, root, mp("none")))
	must(d.Create(ctx, root+"/c/g1", mp(dir+"/g1")))
	must(os.WriteFile(dir+"/g1/f", []byte("x"), 0o644))
	must(d.Snapshot(ctx, root+"/c/g1@s1", nil))
	must(d.Snapshot(ctx, root+"/c/g1@s2", nil))
	must(d.Clone(ctx, root+"/c/g1@s1", root+"/c/g2", mp(dir+"/g2")))
	must(d.Snapshot(ctx, root+"/c/g2@t1", nil))
	must(d.Clone(ctx, root+"/c/g2@t1", root+"/c/g3", mp("none")))
	must(d.Create(ctx, root+"/keep", mp("none")))
	must(d.Snapshot(ctx, root+"/keep@k", nil))

	must(zfs.DestroyTree(ctx, d, root+"/c", zfs.PropDestroying, "1"))
	for _, n := range []string{root + "/c", root + "/c/g1", root + "/c/g1@s1"} {
		if ok, err := d.Exists(ctx, n); err != nil || ok {
			t.Errorf("%s after destroyTree: exists %v, %v", n, ok, err)
		}
	}
	for _, n := range []string{root + "/keep", root + "/keep@k"} {
		if ok, err := d.Exists(ctx, n); err != nil || !ok {
			t.Errorf("%s (not in the tree) after destroyTree: exists %v, %v", n, ok, err)
		}
	}
	mounts, err := os.ReadFile("/proc/self/mounts")
	must(err)
	if strings.Contains(string(mounts), dir+"/g") {
		t.Errorf("a destroyed generation is still mounted under %s", dir)
	}

	must(d.Create(ctx, root+"/d/g1", mp("none")))
	must(d.Snapshot(ctx, root+"/d/g1@s", nil))
	must(d.Clone(ctx, root+"/d/g1@s", root+"/out", mp("none")))
	err = zfs.DestroyTree(ctx, d, root+"/d", zfs.PropDestroying, "1")
	if !errors.Is(err, zfs.ErrExists) || !strings.Contains(err.Error(), root+"/d/g1@s") {
		t.Errorf("destroyTree of a tree whose snapshot has a clone outside: %v, want ErrExists naming %s", err, root+"/d/g1@s")
	}
	x, err := d.Get(ctx, []string{root + "/d", root + "/out"}, []string{zfs.PropDestroying}, 0)
	must(err)
	if len(x) != 2 || x[0].Props[zfs.PropDestroying] != "1" {
		t.Errorf("after a destroyTree that stopped: %v; want %s marked and %s still there", x, root+"/d", root+"/out")
	}
	if err := zfs.DestroyTree(ctx, d, root+"/nope", "", ""); !errors.Is(err, zfs.ErrNotFound) {
		t.Errorf("destroyTree of a missing tree: %v, want ErrNotFound", err)
	}
}
