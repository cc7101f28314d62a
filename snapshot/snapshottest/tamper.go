package snapshottest

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/turnbox/turnbox/snapshot"
	"github.com/turnbox/turnbox/snapshot/guard"
)

// testTamperedPath: a sandbox sees the parent of a volume's Path and may
// put anything at Path in place of the tree. Here Path becomes a symlink
// to another volume's tree: no backend operation may follow it (a
// snapshot would copy the other volume, a destroy would delete it), each
// fails with ErrTampered or leaves the other volume alone, and destroying
// the tampered volume removes only its own data. A rollback repairs it.
func testTamperedPath(t *testing.T, b snapshot.Backend) {
	victim := mustCreate(t, b, "victim")
	writeFile(t, filepath.Join(victim.Path, "secret"), "victim's")
	mustSnapshot(t, b, "victim", "v1")
	v := mustCreate(t, b, "attacker")
	writeFile(t, filepath.Join(v.Path, "mine"), "attacker's")
	mustSnapshot(t, b, "attacker", "a1")

	if err := os.Rename(v.Path, filepath.Join(filepath.Dir(v.Path), "moved")); err != nil {
		if errors.Is(err, syscall.EBUSY) {
			t.Skipf("the volume's Path is a mount point a sandbox cannot rename: %v", err)
		}
		t.Fatal(err)
	}
	if err := os.Symlink(victim.Path, v.Path); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if s, err := b.Snapshot(ctx, "attacker", "a2"); err == nil {
		t.Errorf("Snapshot through a symlink at Path succeeded (%+v); want ErrTampered", s)
		if err := b.Rollback(ctx, "attacker", "a2"); err == nil {
			if _, err := os.Lstat(filepath.Join(v.Path, "secret")); err == nil {
				t.Errorf("the attacker's snapshot holds the victim's files")
			}
		}
	} else if !errors.Is(err, snapshot.ErrTampered) {
		t.Errorf("Snapshot through a symlink at Path: %v, want ErrTampered", err)
	}
	if _, err := b.Volume(ctx, "attacker"); err != nil && !errors.Is(err, snapshot.ErrTampered) {
		t.Errorf("Volume of a tampered volume: %v, want ErrTampered or no error", err)
	}
	// A rollback repairs the volume: its own snapshot's tree is at Path
	// again, whatever was put there.
	mustRollback(t, b, "attacker", "a1")
	if fi, err := os.Lstat(v.Path); err != nil || !fi.IsDir() {
		t.Fatalf("after the repairing rollback Path is %v, %v; want a directory", fi, err)
	}
	if got := readFile(t, filepath.Join(v.Path, "mine")); got != "attacker's" {
		t.Errorf("after the repairing rollback mine = %q", got)
	}
	// Now with nothing at Path at all.
	if err := os.Rename(v.Path, filepath.Join(filepath.Dir(v.Path), "moved2")); err != nil {
		t.Fatal(err)
	}
	mustRollback(t, b, "attacker", "a1")
	if got := readFile(t, filepath.Join(v.Path, "mine")); got != "attacker's" {
		t.Errorf("after a rollback onto an empty Path mine = %q", got)
	}
	if err := b.DestroyVolume(ctx, "attacker"); err != nil {
		t.Errorf("DestroyVolume of a tampered volume: %v", err)
	}
	wantVolumes(t, b, "victim")
	if got := readFile(t, filepath.Join(victim.Path, "secret")); got != "victim's" {
		t.Errorf("victim's file = %q after the attacker's operations", got)
	}
	mustSnapshot(t, b, "victim", "v2")
	mustRollback(t, b, "victim", "v1")
	if got := readFile(t, filepath.Join(victim.Path, "secret")); got != "victim's" {
		t.Errorf("victim's file = %q after its own rollback", got)
	}
}

// testSealedVolume: while a sandbox sees a volume, its directory is sealed
// (package guard): a rename next to Path fails even for root, and the
// backend's own operations still work and leave it sealed.
func testSealedVolume(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "v")
	dir := filepath.Dir(v.Path)
	if err := guard.Seal(dir); err != nil {
		if errors.Is(err, guard.ErrNotSealable) {
			t.Skipf("the volume's directory cannot be sealed here: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { guard.Unseal(dir) })
	writeFile(t, filepath.Join(v.Path, "f"), "one")
	if err := os.Rename(v.Path, filepath.Join(dir, "moved")); err == nil {
		t.Fatalf("renaming a sealed volume's Path succeeded")
	}
	if err := os.Symlink("/", filepath.Join(dir, "planted")); err == nil {
		t.Errorf("a symlink was planted in a sealed volume's directory")
	}
	mustSnapshot(t, b, "v", "s1")
	writeFile(t, filepath.Join(v.Path, "f"), "two")
	mustRollback(t, b, "v", "s1")
	if got := readFile(t, filepath.Join(v.Path, "f")); got != "one" {
		t.Errorf("after rollback f = %q, want one", got)
	}
	if sealed, err := guard.Sealed(dir); err != nil || !sealed {
		t.Errorf("after rollback the directory is not sealed (%v)", err)
	}
	mustClone(t, b, "c", "v", "s1")
	if err := b.DestroyVolume(t.Context(), "v"); err != nil {
		t.Fatalf("DestroyVolume of a sealed volume: %v", err)
	}
	wantVolumes(t, b, "c")
}

// testSnapshotSymlinkRace: while snapshots and a rollback run, a writer
// keeps swapping a directory inside the volume for a symlink to a host
// directory. No snapshot may hold the host's file: a backend that reads
// the tree must not follow a symlink that appeared between two steps.
func testSnapshotSymlinkRace(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "v")
	// The host directory holds the same names as the volume's, so a
	// reader that lists the real directory and then opens by path through
	// the swapped-in symlink finds something to copy.
	bait := t.TempDir()
	sub := filepath.Join(v.Path, "sub")
	for i := range 50 {
		writeFile(t, filepath.Join(bait, "f"+strconv.Itoa(i)), "host secret")
		writeFile(t, filepath.Join(v.Path, "sub", "f"+strconv.Itoa(i)), "inside")
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		moved := filepath.Join(v.Path, "moved")
		for {
			select {
			case <-stop:
				return
			default:
			}
			if os.Rename(sub, moved) == nil {
				os.Symlink(bait, sub)
				os.Remove(sub)
				os.Rename(moved, sub)
			}
		}
	})
	for i := range 10 {
		name := "s" + strconv.Itoa(i)
		if _, err := b.Snapshot(t.Context(), "v", name); err != nil {
			t.Errorf("Snapshot %s during the swaps: %v", name, err)
		}
	}
	close(stop)
	wg.Wait()
	for i := range 10 {
		name := "s" + strconv.Itoa(i)
		mustRollback(t, b, "v", name)
		// A snapshot may hold the symlink itself, taken at a moment it
		// was there; it must never hold the host's file as its own.
		for _, d := range []string{"sub", "moved"} {
			if fi, err := os.Lstat(filepath.Join(v.Path, d)); err != nil || !fi.IsDir() {
				continue
			}
			for i := range 50 {
				if b, _ := os.ReadFile(filepath.Join(v.Path, d, "f"+strconv.Itoa(i))); string(b) == "host secret" {
					t.Fatalf("snapshot %s holds the host's file as %s/f%d", name, d, i)
				}
			}
		}
	}
}
