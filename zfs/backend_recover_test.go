package zfs_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/zfs"
	"github.com/turnbox/turnbox/zfs/zfstest"
)

// TestReopenRepairs leaves the states a crash can leave and checks that
// NewBackend repairs them from its one listing of the parent: a swap cut
// short after the active generation was unmounted (nothing mounted at
// Path), an old generation mounted at Path instead of the newest, and a
// DestroyVolume cut short after marking the container.
func TestReopenRepairs(t *testing.T) {
	pool := zfstest.NewPool(t, 1<<30)
	ctx := t.Context()
	d := zfs.NewCommandDriver()
	parent, root := pool+"/rr", filepath.Join(t.TempDir(), "vols")
	t.Cleanup(func() { zfstest.DestroyAll(t, parent) })
	open := func(d zfs.Driver) *zfs.Backend {
		t.Helper()
		b, err := zfs.NewBackend(ctx, d, parent, root)
		if err != nil {
			t.Fatal(err)
		}
		b.WaitIdle()
		return b
	}
	b := open(d)
	v, err := b.CreateVolume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"1", "2"} {
		if err := os.WriteFile(filepath.Join(v.Path, "f"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Snapshot(ctx, "v", "s"+s); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Rollback(ctx, "v", "s1"); err != nil { // clone-and-swap: g2 active
		t.Fatal(err)
	}
	old, err := b.SnapshotDataset("v", "s2")
	if err != nil {
		t.Fatal(err)
	}
	oldGen, _, _ := zfs.SplitSnapshot(old)
	active, err := b.ActiveDataset("v")
	if err != nil || active == oldGen {
		t.Fatalf("active generation %s (%v), want a new one after the swap", active, err)
	}
	if _, err := b.CreateVolume(ctx, "doomed"); err != nil {
		t.Fatal(err)
	}
	doomed := b.VolumeDataset("doomed")
	b.Close()

	mounted := func(ds string) string {
		t.Helper()
		x, err := d.Get(ctx, []string{ds}, []string{"mountpoint", "mounted"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return x[0].Props["mountpoint"] + " " + x[0].Props["mounted"]
	}
	want := func(what, content string) {
		t.Helper()
		got, err := os.ReadFile(filepath.Join(v.Path, "f"))
		if err != nil || string(got) != content {
			mi, _ := os.ReadFile("/proc/self/mountinfo")
			var lines []string
			for l := range strings.Lines(string(mi)) {
				if strings.Contains(l, root) {
					lines = append(lines, strings.TrimSpace(l))
				}
			}
			t.Fatalf("%s: f = %q, %v; want %q (%s: %s, %s: %s; mounts under %s: %q)", what, got, err, content,
				active, mounted(active), oldGen, mounted(oldGen), root, lines)
		}
	}

	// 1. The swap stopped after unmounting the active generation.
	if err := d.SetProps(ctx, active, map[string]string{"mountpoint": "none"}); err != nil {
		t.Fatal(err)
	}
	b = open(d)
	want("after reopening with nothing mounted", "1")
	if got := mounted(active); got != v.Path+" yes" {
		t.Errorf("newest generation after repair: %s, want %s yes", got, v.Path)
	}
	b.Close()

	// 1b. The same, and the repair's `zfs set mountpoint` succeeds once
	// without mounting anything (seen on zfs-fuse under load).
	if err := d.SetProps(ctx, active, map[string]string{"mountpoint": "none"}); err != nil {
		t.Fatal(err)
	}
	b = open(zfs.NewCommandDriver(zfs.WithZFSCommand(setMountpointOnceSilently(t))))
	want("after reopening with nothing mounted, and a mount that did not happen", "1")
	b.Close()

	// 2. The old generation mounted at Path, the newest not.
	if err := d.SetProps(ctx, active, map[string]string{"mountpoint": "none"}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetProps(ctx, oldGen, map[string]string{"mountpoint": v.Path}); err != nil {
		t.Fatal(err)
	}
	want("the old generation mounted", "2")
	// 3. And a DestroyVolume cut short after marking the container.
	if err := d.SetProps(ctx, doomed, map[string]string{zfs.PropDestroying: "1"}); err != nil {
		t.Fatal(err)
	}
	b = open(d)
	defer b.Close()
	want("after reopening with the old generation mounted", "1")
	if got := mounted(oldGen); got != "none no" {
		t.Errorf("old generation after repair: %s, want none no", got)
	}
	if ok, err := d.Exists(ctx, doomed); err != nil || ok {
		t.Errorf("container of a half-destroyed volume after reopening: exists %v, %v", ok, err)
	}
	vols, err := b.Volumes(ctx)
	if err != nil || len(vols) != 1 || vols[0].Name != "v" {
		t.Errorf("Volumes after reopening = %v, %v; want only v", vols, err)
	}
}

// setMountpointOnceSilently returns a zfs command that runs the real zfs,
// except that the first `zfs set mountpoint=<path>` it gets exits 0
// without doing anything.
func setMountpointOnceSilently(t *testing.T) string {
	t.Helper()
	prog, dir := wrapZFS(t, func(dir string) string {
		return fmt.Sprintf(`if [ "$1" = set ] && [ -e %[1]q ]; then
	case "$2" in mountpoint=/*) rm -f %[1]q; exit 0;; esac
fi`, filepath.Join(dir, "once"))
	})
	if err := os.WriteFile(filepath.Join(dir, "once"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return prog
}
