package zfs_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/zfs"
	"github.com/turnbox/turnbox/zfs/zfstest"
)

// TestDestroyVolumeLetsOthersGoOn holds a DestroyVolume inside its first
// `zfs destroy` (or `zfs program`) and checks that other volumes can be snapshotted, rolled
// back and listed meanwhile (no other volume was cloned from the doomed
// one, so nothing else changes), that a caller waiting for the doomed
// volume gets ErrNotFound once it is gone, and that a reopened backend
// agrees.
func TestDestroyVolumeLetsOthersGoOn(t *testing.T) {
	pool := zfstest.NewPool(t, 1<<30)
	ctx := t.Context()
	parent, root := pool+"/dv", filepath.Join(t.TempDir(), "vols")
	t.Cleanup(func() { zfstest.DestroyAll(t, parent) })
	prog, started, gate := gatedZFS(t, "destroy", "program")
	b, err := zfs.NewBackend(ctx, zfs.NewCommandDriver(zfs.WithZFSCommand(prog)), parent, root)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, v := range []string{"doomed", "other"} {
		if _, err := b.CreateVolume(ctx, v); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Snapshot(ctx, v, "s"); err != nil {
			t.Fatal(err)
		}
	}
	// A fork of other: other's snapshots have a dependent, doomed's not.
	if _, err := b.CloneVolume(ctx, "fork", "other", "s"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"f1", "f2"} {
		if _, err := b.Snapshot(ctx, "fork", s); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	release := sync1(func() { os.Remove(gate) })
	defer release()

	destroyed := make(chan error, 1)
	go func() { destroyed <- b.DestroyVolume(ctx, "doomed") }()
	waitStarted(t, started, destroyed)
	late := make(chan error, 1)
	go func() { _, err := b.Snapshot(ctx, "doomed", "late"); late <- err }()

	others := make(chan error, 1)
	go func() {
		others <- func() error {
			if _, err := b.Snapshot(ctx, "other", "s2"); err != nil {
				return err
			}
			if err := b.Rollback(ctx, "fork", "f1"); err != nil { // not the newest: a clone and a swap
				return err
			}
			if _, err := b.Volumes(ctx); err != nil {
				return err
			}
			_, err := b.Snapshots(ctx, "other")
			return err
		}()
	}()
	select {
	case err := <-others:
		if err != nil {
			t.Fatalf("another volume's operations during a DestroyVolume: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("another volume's operations waited for a DestroyVolume held in zfs destroy (2 minutes)")
	}
	release()
	if err := <-destroyed; err != nil {
		t.Fatalf("DestroyVolume: %v", err)
	}
	if err := <-late; !errors.Is(err, zfs.ErrNotFound) {
		t.Errorf("Snapshot of the volume being destroyed: %v, want ErrNotFound", err)
	}
	check := func(b *zfs.Backend, when string) {
		t.Helper()
		vols, err := b.Volumes(ctx)
		if err != nil || len(vols) != 2 || vols[0].Name != "fork" || vols[1].Name != "other" {
			t.Fatalf("Volumes %s = %v, %v; want fork and other", when, vols, err)
		}
		snaps, err := b.Snapshots(ctx, "other")
		if err != nil || len(snaps) != 2 {
			t.Fatalf("other's snapshots %s = %v, %v; want s and s2", when, snaps, err)
		}
	}
	check(b, "after DestroyVolume")
	if ok, err := zfs.NewCommandDriver().Exists(ctx, b.VolumeDataset("doomed")); err != nil || ok {
		t.Errorf("doomed's container after DestroyVolume: exists %v, %v", ok, err)
	}
	b.Close()
	b2, err := zfs.NewBackend(ctx, zfs.NewCommandDriver(), parent, root)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	check(b2, "after reopening")
}

// sync1 returns f wrapped to run at most once.
func sync1(f func()) func() {
	done := false
	return func() {
		if !done {
			done = true
			f()
		}
	}
}

// gatedZFS returns a zfs command that runs the real zfs, except that a
// `zfs <cmd>` for one of cmds made while the file gate exists creates the
// file started and waits for gate to be removed first.
func gatedZFS(t *testing.T, cmds ...string) (prog, started, gate string) {
	t.Helper()
	prog, dir := wrapZFS(t, func(dir string) string {
		return fmt.Sprintf(`case " %[3]s " in *" $1 "*)
	if [ -e %[1]q ]; then
		: > %[2]q
		while [ -e %[1]q ]; do sleep 0.02; done
	fi
esac`, filepath.Join(dir, "gate"), filepath.Join(dir, "started"), strings.Join(cmds, " "))
	})
	return prog, filepath.Join(dir, "started"), filepath.Join(dir, "gate")
}

// waitStarted waits until the gated command has started, failing if
// done (the operation that should run it) reports first.
func waitStarted(t *testing.T, started string, done <-chan error) {
	t.Helper()
	for {
		if _, err := os.Stat(started); err == nil {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("the operation returned %v before running the gated zfs command", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestCommandDestroyTreeWithoutPrograms runs the command driver's
// channel-program destroy on a zfs without channel programs (zfs-fuse):
// it answers ErrUnsupported, destroys nothing, and does not try `zfs
// program` again; DestroyVolume then destroys dataset by dataset (the
// backend suite covers that path).
func TestCommandDestroyTreeWithoutPrograms(t *testing.T) {
	if _, err := os.Stat("/dev/zfs"); err == nil {
		t.Skip("kernel OpenZFS has channel programs: TestDestroyTree covers them")
	}
	pool := zfstest.NewPool(t, 256<<20)
	ctx := t.Context()
	prog, dir := wrapZFS(t, func(dir string) string {
		return fmt.Sprintf(`[ "$1" = program ] && echo program >> %q`, filepath.Join(dir, "programs"))
	})
	log := filepath.Join(dir, "programs")
	d := zfs.NewCommandDriver(zfs.WithZFSCommand(prog))
	root := pool + "/t"
	t.Cleanup(func() { zfstest.DestroyAll(t, root) })
	if err := d.Create(ctx, root+"/g1", zfs.CreateOptions{Parents: true, Props: map[string]string{"mountpoint": filepath.Join(dir, "g1")}}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := zfs.DestroyTree(ctx, d, root, zfs.PropDestroying, "1"); !errors.Is(err, zfs.ErrUnsupported) {
			t.Fatalf("destroyTree on a zfs without channel programs (call %d): %v, want ErrUnsupported", i+1, err)
		}
	}
	if ok, err := d.Exists(ctx, root+"/g1"); err != nil || !ok {
		t.Errorf("after the refused destroyTree: %s exists %v, %v", root+"/g1", ok, err)
	}
	if b, _ := os.ReadFile(log); string(b) != "program\n" {
		t.Errorf("zfs program ran %q; want once", b)
	}
}
