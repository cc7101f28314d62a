package snapshottest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/turnbox/turnbox/snapshot"
)

func testKind(t *testing.T, b snapshot.Backend) {
	if b.Kind() == "" {
		t.Error("Kind() is empty")
	}
}

func testCreateVolume(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "vol")
	if v.Name != "vol" {
		t.Errorf("CreateVolume: Name = %q, want %q", v.Name, "vol")
	}
	if !filepath.IsAbs(v.Path) {
		t.Errorf("CreateVolume: Path %q is not absolute", v.Path)
	}
	fi, err := os.Stat(v.Path)
	if err != nil || !fi.IsDir() {
		t.Fatalf("CreateVolume: Path %q is not a directory: %v", v.Path, err)
	}
	ents, err := os.ReadDir(v.Path)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("new volume is not empty: %d entries", len(ents))
	}
	wantOnlyChild(t, v)
	got := mustVolume(t, b, "vol")
	if got.Name != v.Name || got.Path != v.Path {
		t.Errorf("Volume = %+v, want name and path of %+v", got, v)
	}
	wantVolumes(t, b, "vol")
	wantSnapshots(t, b, "vol")
	writeFile(t, filepath.Join(v.Path, "x"), "writable")

	w := mustCreate(t, b, "other")
	if filepath.Dir(w.Path) == filepath.Dir(v.Path) {
		t.Errorf("volumes %q and %q share the parent directory %s", v.Name, w.Name, filepath.Dir(v.Path))
	}
	for _, pair := range [][2]string{{v.Path, w.Path}, {w.Path, v.Path}} {
		if strings.HasPrefix(pair[0], filepath.Dir(pair[1])+string(filepath.Separator)) {
			t.Errorf("volume path %s lies inside the directory %s of another volume", pair[0], filepath.Dir(pair[1]))
		}
	}
}

func testVolumesSorted(t *testing.T, b snapshot.Backend) {
	for _, n := range []string{"c", "a", "b2", "B", "b10"} {
		mustCreate(t, b, n)
	}
	wantVolumes(t, b, "B", "a", "b10", "b2", "c")
}

func testVolumeExists(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "v")
	writeFile(t, filepath.Join(v.Path, "keep"), "keep me")
	_, err := b.CreateVolume(t.Context(), "v")
	wantErr(t, err, snapshot.ErrExists, "CreateVolume of an existing volume")
	if got := readFile(t, filepath.Join(v.Path, "keep")); got != "keep me" {
		t.Errorf("existing volume's content changed to %q", got)
	}
	wantVolumes(t, b, "v")
}

func testNotFound(t *testing.T, b snapshot.Backend) {
	ctx := t.Context()
	check := func(err error, what string) {
		t.Helper()
		wantErr(t, err, snapshot.ErrNotFound, what)
	}
	_, err := b.Volume(ctx, "nope")
	check(err, "Volume of a missing volume")
	check(b.DestroyVolume(ctx, "nope"), "DestroyVolume of a missing volume")
	_, err = b.Snapshot(ctx, "nope", "s")
	check(err, "Snapshot of a missing volume")
	_, err = b.Snapshots(ctx, "nope")
	check(err, "Snapshots of a missing volume")
	check(b.Rollback(ctx, "nope", "s"), "Rollback of a missing volume")
	check(b.DestroySnapshot(ctx, "nope", "s"), "DestroySnapshot of a missing volume")
	_, err = b.CloneVolume(ctx, "new", "nope", "s")
	check(err, "CloneVolume from a missing volume")
	wantVolumes(t, b)

	mustCreate(t, b, "v")
	check(b.Rollback(ctx, "v", "nope"), "Rollback to a missing snapshot")
	check(b.DestroySnapshot(ctx, "v", "nope"), "DestroySnapshot of a missing snapshot")
	_, err = b.CloneVolume(ctx, "new", "v", "nope")
	check(err, "CloneVolume from a missing snapshot")
	wantVolumes(t, b, "v")
	wantSnapshots(t, b, "v")
}

// BadNames are names every backend must reject with ErrInvalidName.
var BadNames = []string{
	"", ".", "..", "../x", "x/..", "a/b", "/", "/abs", "has space", " lead",
	"trail ", "tab\t", "new\nline", "nul\x00", "-dash", ".hidden", "_under",
	"ümlaut", "semi;colon", "star*", "back\\slash",
	strings.Repeat("a", snapshot.MaxNameLength+1),
}

func testInvalidNames(t *testing.T, b snapshot.Backend) {
	ctx := t.Context()
	v := mustCreate(t, b, "v")
	WriteTree(t, v.Path, File("f", "content", 0o644))
	mustSnapshot(t, b, "v", "s")
	want := TreeHash(t, v.Path)
	for _, bad := range BadNames {
		if snapshot.ValidateName(bad) == nil {
			t.Fatalf("snapshot.ValidateName(%q) accepts a name the suite calls bad", bad)
		}
		check := func(err error, what string) {
			t.Helper()
			wantErr(t, err, snapshot.ErrInvalidName, fmt.Sprintf("%s with name %q", what, bad))
		}
		_, err := b.CreateVolume(ctx, bad)
		check(err, "CreateVolume")
		_, err = b.CloneVolume(ctx, bad, "v", "s")
		check(err, "CloneVolume (new volume)")
		_, err = b.CloneVolume(ctx, "ok", bad, "s")
		check(err, "CloneVolume (source volume)")
		_, err = b.CloneVolume(ctx, "ok", "v", bad)
		check(err, "CloneVolume (source snapshot)")
		_, err = b.Volume(ctx, bad)
		check(err, "Volume")
		check(b.DestroyVolume(ctx, bad), "DestroyVolume")
		_, err = b.Snapshot(ctx, "v", bad)
		check(err, "Snapshot (snapshot)")
		_, err = b.Snapshot(ctx, bad, "s2")
		check(err, "Snapshot (volume)")
		_, err = b.Snapshots(ctx, bad)
		check(err, "Snapshots")
		check(b.Rollback(ctx, "v", bad), "Rollback (snapshot)")
		check(b.Rollback(ctx, bad, "s"), "Rollback (volume)")
		check(b.DestroySnapshot(ctx, "v", bad), "DestroySnapshot (snapshot)")
		check(b.DestroySnapshot(ctx, bad, "s"), "DestroySnapshot (volume)")
	}
	wantVolumes(t, b, "v")
	wantSnapshots(t, b, "v", "s")
	wantHash(t, v.Path, want, "volume after calls with invalid names")
	wantOnlyChild(t, mustVolume(t, b, "v"))
}

func testMaxLengthNames(t *testing.T, b snapshot.Backend) {
	long := func(c string) string { return strings.Repeat(c, snapshot.MaxNameLength) }
	v := mustCreate(t, b, long("v"))
	WriteTree(t, v.Path, File("f", "long names", 0o644))
	want := TreeHash(t, v.Path)
	mustSnapshot(t, b, long("v"), long("s"))
	c := mustClone(t, b, long("c"), long("v"), long("s"))
	wantHash(t, c.Path, want, "clone with the longest names")
	writeFile(t, filepath.Join(v.Path, "f"), "changed")
	mustRollback(t, b, long("v"), long("s"))
	wantHash(t, v.Path, want, "rollback with the longest names")
	wantVolumes(t, b, long("c"), long("v"))
	wantSnapshots(t, b, long("v"), long("s"))
}

func testSnapshotExists(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "v")
	writeFile(t, filepath.Join(v.Path, "f"), "first")
	mustSnapshot(t, b, "v", "s")
	writeFile(t, filepath.Join(v.Path, "f"), "second")
	_, err := b.Snapshot(t.Context(), "v", "s")
	wantErr(t, err, snapshot.ErrExists, "Snapshot with an existing name")
	wantSnapshots(t, b, "v", "s")
	if got := readFile(t, filepath.Join(v.Path, "f")); got != "second" {
		t.Errorf("failed Snapshot changed the volume: f = %q", got)
	}
	mustRollback(t, b, "v", "s")
	if got := readFile(t, filepath.Join(v.Path, "f")); got != "first" {
		t.Errorf("after a colliding Snapshot, rollback gives f = %q, want the first snapshot's %q", got, "first")
	}
}

func testSnapshotsOldestFirst(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "v")
	names := []string{"m", "b", "z", "a", "turn-10", "turn-9"}
	var taken []snapshot.Snapshot
	for i, n := range names {
		writeFile(t, filepath.Join(v.Path, "f"), n)
		before := time.Now()
		s := mustSnapshot(t, b, "v", n)
		after := time.Now()
		if s.Volume != "v" || s.Name != n {
			t.Errorf("Snapshot returned Volume=%q Name=%q, want %q %q", s.Volume, s.Name, "v", n)
		}
		if s.CreatedAt.Before(before.Add(-time.Second)) || s.CreatedAt.After(after.Add(time.Second)) {
			t.Errorf("snapshot %q: CreatedAt %v not between %v and %v", n, s.CreatedAt, before, after)
		}
		if s.SizeBytes < 0 {
			t.Errorf("snapshot %q: SizeBytes %d < 0", n, s.SizeBytes)
		}
		taken = append(taken, s)
		if i == 2 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	ss, err := b.Snapshots(t.Context(), "v")
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != len(names) {
		t.Fatalf("Snapshots returned %d snapshots, want %d", len(ss), len(names))
	}
	for i, s := range ss {
		if s.Name != names[i] || s.Volume != "v" {
			t.Errorf("Snapshots[%d] = %q of %q, want %q of %q (oldest first, not by name)", i, s.Name, s.Volume, names[i], "v")
		}
		if !closeEnough(s.CreatedAt, taken[i].CreatedAt) {
			t.Errorf("Snapshots[%d].CreatedAt = %v, Snapshot returned %v", i, s.CreatedAt, taken[i].CreatedAt)
		}
		if i > 0 && s.CreatedAt.Before(ss[i-1].CreatedAt) {
			t.Errorf("Snapshots[%d] (%v) is older than Snapshots[%d] (%v)", i, s.CreatedAt, i-1, ss[i-1].CreatedAt)
		}
	}
}

func testRollbackContent(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "v")
	WriteTree(t, v.Path, StandardTree()...)
	want := Manifest(t, v.Path, false)
	mustSnapshot(t, b, "v", "s")
	mutate(t, v.Path)
	mustRollback(t, b, "v", "s")
	wantTree(t, v.Path, want, false, "after rollback")
	// A second rollback to the same snapshot, and the volume stays writable.
	writeFile(t, filepath.Join(v.Path, "later"), "x")
	mustRollback(t, b, "v", "s")
	wantTree(t, v.Path, want, false, "after a second rollback")
	wantOnlyChild(t, mustVolume(t, b, "v"))
}

func testRollbackModTimes(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "v")
	WriteTree(t, v.Path, StandardTree()...)
	want := Manifest(t, v.Path, true)
	mustSnapshot(t, b, "v", "s")
	mutate(t, v.Path)
	mustRollback(t, b, "v", "s")
	wantTree(t, v.Path, want, true, "modification times after rollback")
}

// generation writes a tree that differs for each gen and returns its hash.
func generation(t *testing.T, dir string, gen int) string {
	t.Helper()
	WriteTree(t, dir,
		File("gen", fmt.Sprint(gen), 0o644),
		File(fmt.Sprintf("only-in-%d", gen), "x", 0o600),
		Dir(fmt.Sprintf("dir-%d", gen), 0o755),
		Symlink("current", fmt.Sprintf("only-in-%d", gen)),
	)
	FillTree(t, filepath.Join(dir, "fill"), 10, 1000+gen, uint64(gen))
	return TreeHash(t, dir)
}

func testRollbackToOlderKeepsNewer(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "v")
	h1 := generation(t, v.Path, 1)
	mustSnapshot(t, b, "v", "s1")
	h2 := generation(t, v.Path, 2)
	mustSnapshot(t, b, "v", "s2")
	h3 := generation(t, v.Path, 3)
	mustSnapshot(t, b, "v", "s3")
	generation(t, v.Path, 4) // never snapshotted

	mustRollback(t, b, "v", "s1")
	wantHash(t, v.Path, h1, "rollback to the oldest snapshot")
	wantSnapshots(t, b, "v", "s1", "s2", "s3")
	mustRollback(t, b, "v", "s3")
	wantHash(t, v.Path, h3, "roll forward to the newest snapshot")
	mustRollback(t, b, "v", "s2")
	wantHash(t, v.Path, h2, "roll back to the middle snapshot")
	mustRollback(t, b, "v", "s1")
	h5 := generation(t, v.Path, 5)
	mustSnapshot(t, b, "v", "s4") // a new branch after rolling back
	wantSnapshots(t, b, "v", "s1", "s2", "s3", "s4")
	mustRollback(t, b, "v", "s3")
	wantHash(t, v.Path, h3, "roll forward past a new branch")
	mustRollback(t, b, "v", "s4")
	wantHash(t, v.Path, h5, "roll to the new branch")
	wantOnlyChild(t, mustVolume(t, b, "v"))
}

func testRollbackPathStable(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "v")
	writeFile(t, filepath.Join(v.Path, "f"), "snapshotted")
	mustSnapshot(t, b, "v", "s")
	writeFile(t, filepath.Join(v.Path, "f"), "changed")
	parent := filepath.Dir(v.Path)
	var before syscall.Stat_t
	if err := syscall.Stat(parent, &before); err != nil {
		t.Fatal(err)
	}
	// A sandbox binds the parent directory: hold it open as a bind mount
	// would and look through it after the rollback.
	pf, err := os.Open(parent)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	mustRollback(t, b, "v", "s")
	got := mustVolume(t, b, "v")
	if got.Path != v.Path {
		t.Errorf("Path changed across Rollback: %q -> %q", v.Path, got.Path)
	}
	var after syscall.Stat_t
	if err := syscall.Stat(parent, &after); err != nil {
		t.Fatal(err)
	}
	if before.Dev != after.Dev || before.Ino != after.Ino {
		t.Errorf("the parent directory of Path was replaced by Rollback (dev/ino %d/%d -> %d/%d); a sandbox bound to it would not see the rollback", before.Dev, before.Ino, after.Dev, after.Ino)
	}
	data, err := os.ReadFile(filepath.Join(fmt.Sprintf("/proc/self/fd/%d", pf.Fd()), filepath.Base(v.Path), "f"))
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != "snapshotted" {
		t.Errorf("through a handle on the parent directory, f = %q after rollback, want %q", data, "snapshotted")
	}
	wantOnlyChild(t, got)
}

func testSnapshotIsACopy(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "v")
	WriteTree(t, v.Path, StandardTree()...)
	want := Manifest(t, v.Path, false)
	mustSnapshot(t, b, "v", "s")
	// In-place writes (no new inode) must not reach the snapshot.
	overwriteInPlace(t, filepath.Join(v.Path, "data/big.bin"), "OVERWRITTEN")
	overwriteInPlace(t, filepath.Join(v.Path, "hard/b"), "THROUGH A LINK")
	mustRollback(t, b, "v", "s")
	wantTree(t, v.Path, want, false, "after in-place writes and rollback")
	// Nor may in-place writes after a rollback.
	overwriteInPlace(t, filepath.Join(v.Path, "data/big.bin"), "AGAIN")
	overwriteInPlace(t, filepath.Join(v.Path, "hard/a"), "AGAIN")
	mustRollback(t, b, "v", "s")
	wantTree(t, v.Path, want, false, "after in-place writes following a rollback")
}

func testCloneContent(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "v")
	WriteTree(t, v.Path, StandardTree()...)
	want := Manifest(t, v.Path, true)
	mustSnapshot(t, b, "v", "old")
	mutate(t, v.Path)
	wantNewer := Manifest(t, v.Path, false)
	mustSnapshot(t, b, "v", "new")
	c := mustClone(t, b, "c", "v", "old")
	if c.Name != "c" || c.Path == "" || c.Path == v.Path {
		t.Errorf("CloneVolume returned %+v", c)
	}
	wantTree(t, c.Path, want, true, "clone of an older snapshot")
	wantOnlyChild(t, c)
	got := mustVolume(t, b, "c")
	if got.Path != c.Path {
		t.Errorf("Volume(clone).Path = %q, CloneVolume returned %q", got.Path, c.Path)
	}
	wantVolumes(t, b, "c", "v")
	wantSnapshots(t, b, "c")
	wantSnapshots(t, b, "v", "old", "new")
	wantTree(t, v.Path, wantNewer, false, "source volume after a clone")
	c2 := mustClone(t, b, "c2", "v", "new")
	wantTree(t, c2.Path, wantNewer, false, "clone of the newest snapshot")
}

func testCloneIndependent(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "v")
	WriteTree(t, v.Path, StandardTree()...)
	mustSnapshot(t, b, "v", "s")
	srcHash := TreeHash(t, v.Path)
	c := mustClone(t, b, "c", "v", "s")

	overwriteInPlace(t, filepath.Join(c.Path, "data/big.bin"), "CLONE WROTE")
	overwriteInPlace(t, filepath.Join(c.Path, "hard/a"), "CLONE WROTE")
	writeFile(t, filepath.Join(c.Path, "clone-only"), "c")
	wantHash(t, v.Path, srcHash, "source after writes to the clone")
	cloneHash := TreeHash(t, c.Path)

	overwriteInPlace(t, filepath.Join(v.Path, "README.md"), "SOURCE WROTE")
	writeFile(t, filepath.Join(v.Path, "source-only"), "v")
	wantHash(t, c.Path, cloneHash, "clone after writes to the source")

	mustSnapshot(t, b, "c", "cs")
	writeFile(t, filepath.Join(c.Path, "clone-only"), "changed")
	mustRollback(t, b, "c", "cs")
	wantHash(t, c.Path, cloneHash, "clone after its own rollback")
	wantSnapshots(t, b, "v", "s")
	wantSnapshots(t, b, "c", "cs")

	mustRollback(t, b, "v", "s")
	wantHash(t, v.Path, srcHash, "source rolled back after the clone's writes")
	wantHash(t, c.Path, cloneHash, "clone after the source's rollback")
}

func testCloneOutlivesSource(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "v")
	WriteTree(t, v.Path, StandardTree()...)
	mustSnapshot(t, b, "v", "s")
	want := Manifest(t, v.Path, false)
	c := mustClone(t, b, "c", "v", "s")

	err := b.DestroySnapshot(t.Context(), "v", "s")
	switch {
	case err == nil:
		wantSnapshots(t, b, "v")
	case errors.Is(err, snapshot.ErrBusy):
		t.Logf("DestroySnapshot of a cloned snapshot: %v (allowed)", err)
		wantSnapshots(t, b, "v", "s")
	default:
		t.Errorf("DestroySnapshot of a cloned snapshot: %v, want nil or ErrBusy", err)
	}
	if err := b.DestroyVolume(t.Context(), "v"); err != nil {
		t.Fatalf("DestroyVolume of a cloned volume: %v (the contract says the clone is independent)", err)
	}
	wantVolumes(t, b, "c")
	wantTree(t, c.Path, want, false, "clone after its source volume was destroyed")
	mustSnapshot(t, b, "c", "cs")
	writeFile(t, filepath.Join(c.Path, "x"), "x")
	mustRollback(t, b, "c", "cs")
	wantTree(t, c.Path, want, false, "clone rolled back after its source volume was destroyed")
	// The source's name is free again and starts empty.
	v2 := mustCreate(t, b, "v")
	wantSnapshots(t, b, "v")
	if ents, _ := os.ReadDir(v2.Path); len(ents) != 0 {
		t.Errorf("re-created volume is not empty")
	}
}

func testCloneExists(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "v")
	writeFile(t, filepath.Join(v.Path, "f"), "source")
	mustSnapshot(t, b, "v", "s")
	w := mustCreate(t, b, "w")
	writeFile(t, filepath.Join(w.Path, "f"), "target")
	_, err := b.CloneVolume(t.Context(), "w", "v", "s")
	wantErr(t, err, snapshot.ErrExists, "CloneVolume onto an existing volume")
	_, err = b.CloneVolume(t.Context(), "v", "v", "s")
	wantErr(t, err, snapshot.ErrExists, "CloneVolume onto its own source")
	if got := readFile(t, filepath.Join(w.Path, "f")); got != "target" {
		t.Errorf("failed CloneVolume changed the existing volume: f = %q", got)
	}
	if got := readFile(t, filepath.Join(v.Path, "f")); got != "source" {
		t.Errorf("failed CloneVolume changed the source volume: f = %q", got)
	}
	wantVolumes(t, b, "v", "w")
}

func testDestroySnapshot(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "v")
	h1 := generation(t, v.Path, 1)
	mustSnapshot(t, b, "v", "s1")
	generation(t, v.Path, 2)
	mustSnapshot(t, b, "v", "s2")
	h3 := generation(t, v.Path, 3)
	mustSnapshot(t, b, "v", "s3")
	if err := b.DestroySnapshot(t.Context(), "v", "s2"); err != nil {
		t.Fatalf("DestroySnapshot: %v", err)
	}
	wantSnapshots(t, b, "v", "s1", "s3")
	wantHash(t, v.Path, h3, "volume after DestroySnapshot")
	wantErr(t, b.Rollback(t.Context(), "v", "s2"), snapshot.ErrNotFound, "Rollback to a destroyed snapshot")
	wantErr(t, b.DestroySnapshot(t.Context(), "v", "s2"), snapshot.ErrNotFound, "DestroySnapshot twice")
	mustRollback(t, b, "v", "s1")
	wantHash(t, v.Path, h1, "older neighbour of a destroyed snapshot")
	mustRollback(t, b, "v", "s3")
	wantHash(t, v.Path, h3, "newer neighbour of a destroyed snapshot")
	h4 := generation(t, v.Path, 4)
	mustSnapshot(t, b, "v", "s2") // the name is free again; it is now the newest
	wantSnapshots(t, b, "v", "s1", "s3", "s2")
	mustRollback(t, b, "v", "s1")
	mustRollback(t, b, "v", "s2")
	wantHash(t, v.Path, h4, "snapshot re-created under a destroyed name")
	wantOnlyChild(t, mustVolume(t, b, "v"))
}

func testDestroyVolume(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "v")
	WriteTree(t, v.Path, StandardTree()...)
	mustSnapshot(t, b, "v", "s1")
	mustSnapshot(t, b, "v", "s2")
	keep := mustCreate(t, b, "keep")
	writeFile(t, filepath.Join(keep.Path, "f"), "keep")
	if err := b.DestroyVolume(t.Context(), "v"); err != nil {
		t.Fatalf("DestroyVolume: %v", err)
	}
	_, err := b.Volume(t.Context(), "v")
	wantErr(t, err, snapshot.ErrNotFound, "Volume after DestroyVolume")
	_, err = b.Snapshots(t.Context(), "v")
	wantErr(t, err, snapshot.ErrNotFound, "Snapshots after DestroyVolume")
	wantErr(t, b.DestroyVolume(t.Context(), "v"), snapshot.ErrNotFound, "DestroyVolume twice")
	if _, err := os.Lstat(v.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Path %s of a destroyed volume: Lstat = %v, want not-exist", v.Path, err)
	}
	wantVolumes(t, b, "keep")
	if got := readFile(t, filepath.Join(keep.Path, "f")); got != "keep" {
		t.Errorf("another volume changed: f = %q", got)
	}
	// The name is reusable, and the old snapshots do not come back.
	v2 := mustCreate(t, b, "v")
	wantSnapshots(t, b, "v")
	if ents, _ := os.ReadDir(v2.Path); len(ents) != 0 {
		t.Errorf("re-created volume has %d entries, want none", len(ents))
	}
	mustSnapshot(t, b, "v", "s1")
	wantSnapshots(t, b, "v", "s1")
}

// record returns the i-th record the writer of testSnapshotWhileWriting
// appends.
func record(i int) string { return fmt.Sprintf("record %09d %s\n", i, strings.Repeat("x", 100)) }

func testSnapshotWhileWriting(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "v")
	writeFile(t, filepath.Join(v.Path, "before"), "x")
	f, err := os.OpenFile(filepath.Join(v.Path, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var written atomic.Int64 // records whose write returned
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if _, err := f.WriteString(record(i)); err != nil {
				done <- err
				return
			}
			written.Add(1)
		}
	}()
	for written.Load() < 200 {
		time.Sleep(time.Millisecond)
	}
	type bounds struct{ min, max int64 }
	var taken []bounds
	for i := range 4 {
		lo := written.Load()
		if _, err := b.Snapshot(t.Context(), "v", fmt.Sprintf("s%d", i)); err != nil {
			t.Errorf("Snapshot while a file is being written: %v", err)
		}
		taken = append(taken, bounds{lo, written.Load()})
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("writer: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	total := int(written.Load())
	var full strings.Builder
	for i := range total {
		full.WriteString(record(i))
	}
	if got := readFile(t, filepath.Join(v.Path, "log")); got != full.String() {
		t.Fatalf("the live file is not what the writer wrote (%d bytes, want %d)", len(got), full.Len())
	}
	recLen := int64(len(record(0)))
	for i, bd := range taken {
		mustRollback(t, b, "v", fmt.Sprintf("s%d", i))
		got := readFile(t, filepath.Join(v.Path, "log"))
		if !strings.HasPrefix(full.String(), got) {
			t.Errorf("snapshot s%d: log (%d bytes) is not a prefix of what was written", i, len(got))
			continue
		}
		// The writer counts a record after its write returns, so one more
		// record than counted may be (partly) in.
		if n := int64(len(got)); n < bd.min*recLen || n > (bd.max+1)*recLen {
			t.Errorf("snapshot s%d: log has %d bytes, want between %d (written before Snapshot) and %d (after)", i, n, bd.min*recLen, (bd.max+1)*recLen)
		}
		if readFile(t, filepath.Join(v.Path, "before")) != "x" {
			t.Errorf("snapshot s%d lost a file written before it", i)
		}
	}
}

func testSnapshotWhileChurning(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "v")
	FillTree(t, filepath.Join(v.Path, "stable"), 50, 2000, 7)
	stable := Manifest(t, filepath.Join(v.Path, "stable"), true)
	churn := filepath.Join(v.Path, "churn")
	if err := os.Mkdir(churn, 0o755); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Files and directories appear, get renamed and vanish while a
			// snapshot walks the tree. Errors are expected here only if the
			// backend touched the live tree, which it must not.
			d := filepath.Join(churn, fmt.Sprintf("d%d", i%7))
			_ = os.MkdirAll(d, 0o755)
			p := filepath.Join(d, fmt.Sprintf("f%d", i%13))
			_ = os.WriteFile(p, []byte(strings.Repeat("z", i%5000)), 0o644)
			_ = os.Rename(p, p+".renamed")
			_ = os.Symlink("f0", filepath.Join(d, fmt.Sprintf("l%d", i)))
			if i%5 == 0 {
				_ = os.RemoveAll(filepath.Join(churn, fmt.Sprintf("d%d", (i+3)%7)))
			}
		}
	})
	for i := range 5 {
		if _, err := b.Snapshot(t.Context(), "v", fmt.Sprintf("s%d", i)); err != nil {
			t.Errorf("Snapshot while files appear and vanish: %v", err)
		}
	}
	close(stop)
	wg.Wait()
	for i := range 5 {
		name := fmt.Sprintf("s%d", i)
		if !slices.Contains(snapshotNames(t, b, "v"), name) {
			continue
		}
		mustRollback(t, b, "v", name)
		wantTree(t, filepath.Join(v.Path, "stable"), stable, true, "untouched part of a snapshot taken during churn")
		if _, err := treeHash(v.Path); err != nil {
			t.Errorf("snapshot %s taken during churn is not a readable tree: %v", name, err)
		}
	}
}

func testConcurrentVolumes(t *testing.T, b snapshot.Backend) {
	const workers, rounds = 4, 3
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			if err := concurrentWorker(t, b, w, rounds); err != nil {
				t.Errorf("worker %d: %v", w, err)
			}
		})
	}
	// Listing while others change things.
	wg.Go(func() {
		for range 20 {
			if _, err := b.Volumes(t.Context()); err != nil {
				t.Errorf("Volumes during concurrent use: %v", err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
	wg.Wait()
	var want []string
	for w := range workers {
		want = append(want, fmt.Sprintf("w%d", w))
	}
	wantVolumes(t, b, want...)
	for _, n := range want {
		wantSnapshots(t, b, n, "r0", "r1", "r2")
	}
}

func concurrentWorker(t *testing.T, b snapshot.Backend, w, rounds int) error {
	ctx := t.Context()
	name := fmt.Sprintf("w%d", w)
	v, err := b.CreateVolume(ctx, name)
	if err != nil {
		return err
	}
	for r := range rounds {
		if err := fillTree(filepath.Join(v.Path, fmt.Sprintf("r%d", r)), 20, 3000, uint64(w*100+r)); err != nil {
			return err
		}
		want, err := treeHash(v.Path)
		if err != nil {
			return err
		}
		snap := fmt.Sprintf("r%d", r)
		if _, err := b.Snapshot(ctx, name, snap); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(v.Path, "junk"), []byte("junk"), 0o644); err != nil {
			return err
		}
		if _, err := b.Snapshots(ctx, name); err != nil {
			return err
		}
		if err := b.Rollback(ctx, name, snap); err != nil {
			return err
		}
		if got, err := treeHash(v.Path); err != nil || got != want {
			return fmt.Errorf("round %d: rollback hash %s (err %v), want %s", r, got, err, want)
		}
		cn := fmt.Sprintf("%s-clone%d", name, r)
		c, err := b.CloneVolume(ctx, cn, name, snap)
		if err != nil {
			return err
		}
		if got, err := treeHash(c.Path); err != nil || got != want {
			return fmt.Errorf("round %d: clone hash %s (err %v), want %s", r, got, err, want)
		}
		if err := b.DestroyVolume(ctx, cn); err != nil {
			return err
		}
	}
	return nil
}

func testSizeBytes(t *testing.T, b snapshot.Backend) {
	v := mustCreate(t, b, "v")
	FillTree(t, v.Path, 16, 64<<10, 1) // 1 MiB of incompressible data
	got := mustVolume(t, b, "v")
	if got.SizeBytes < 0 || got.SizeBytes > 1<<30 {
		t.Errorf("Volume.SizeBytes = %d for 1 MiB of data", got.SizeBytes)
	}
	s := mustSnapshot(t, b, "v", "s")
	if s.SizeBytes < 0 || s.SizeBytes > 1<<30 {
		t.Errorf("Snapshot.SizeBytes = %d for 1 MiB of data", s.SizeBytes)
	}
	t.Logf("1 MiB volume: Volume.SizeBytes=%d Snapshot.SizeBytes=%d", got.SizeBytes, s.SizeBytes)
}

// fill writes incompressible data into dir until the filesystem is full
// and returns the number of bytes written (zeros would never fill a
// compressing filesystem: see incompressible).
func fill(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	for i, chunk := 0, 1<<20; chunk >= 1; chunk /= 4 {
		buf := incompressible(chunk)
		for {
			p := filepath.Join(dir, fmt.Sprintf("fill-%d", i))
			i++
			f, err := os.Create(p)
			if err != nil {
				if errors.Is(err, syscall.ENOSPC) {
					break
				}
				t.Fatalf("filling the disk: %v", err)
			}
			n, err := f.Write(buf)
			total += int64(n)
			if err == nil {
				err = f.Sync()
			}
			f.Close()
			if err != nil {
				if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
					break
				}
				t.Fatalf("filling the disk: %v", err)
			}
		}
	}
	return total
}

func testFullDisk(t *testing.T, b snapshot.Backend, copyOnWrite bool) {
	ctx := t.Context()
	v := mustCreate(t, b, "data")
	WriteTree(t, v.Path, StandardTree()...)
	FillTree(t, filepath.Join(v.Path, "fill"), 64, 8<<10, 3)
	before := Manifest(t, v.Path, false)
	mustSnapshot(t, b, "data", "before")
	if err := os.Remove(filepath.Join(v.Path, "data/big.bin")); err != nil {
		t.Fatal(err)
	}
	current := TreeHash(t, v.Path)

	filler := mustCreate(t, b, "filler")
	n := fill(t, filler.Path)
	t.Logf("filled the disk with %d bytes", n)

	_, err := b.Snapshot(ctx, "data", "after")
	switch {
	case err == nil && !copyOnWrite:
		t.Errorf("Snapshot on a full disk succeeded; a copying backend cannot have had the space (is the filesystem really full?)")
	case err == nil:
		t.Logf("Snapshot on a full disk succeeded (copy-on-write)")
		wantSnapshots(t, b, "data", "before", "after")
	default:
		wantErr(t, err, snapshot.ErrNoSpace, "Snapshot on a full disk")
		wantSnapshots(t, b, "data", "before")
	}
	_, err = b.CloneVolume(ctx, "clone", "data", "before")
	switch {
	case err == nil && !copyOnWrite:
		t.Errorf("CloneVolume on a full disk succeeded; a copying backend cannot have had the space")
	case err == nil:
		t.Logf("CloneVolume on a full disk succeeded (copy-on-write)")
		if err := b.DestroyVolume(ctx, "clone"); err != nil {
			t.Fatal(err)
		}
	default:
		wantErr(t, err, snapshot.ErrNoSpace, "CloneVolume on a full disk")
		_, err := b.Volume(ctx, "clone")
		wantErr(t, err, snapshot.ErrNotFound, "Volume of a clone that failed for lack of space")
	}
	wantVolumes(t, b, "data", "filler")

	err = b.Rollback(ctx, "data", "before")
	switch {
	case err == nil:
		wantTree(t, v.Path, before, false, "rollback on a full disk")
	default:
		wantErr(t, err, snapshot.ErrNoSpace, "Rollback on a full disk")
		wantHash(t, v.Path, current, "volume after a rollback failed for lack of space (must be unchanged)")
	}
	wantOnlyChild(t, mustVolume(t, b, "data"))

	// Free the space: everything works again and nothing half-made remains.
	if err := b.DestroyVolume(ctx, "filler"); err != nil {
		t.Fatalf("DestroyVolume on a full disk: %v", err)
	}
	if err := os.WriteFile(filepath.Join(v.Path, "marker"), []byte("after"), 0o644); err != nil {
		t.Fatal(err)
	}
	afterHash := TreeHash(t, v.Path)
	if !slices.Contains(snapshotNames(t, b, "data"), "after") {
		mustSnapshot(t, b, "data", "after") // the failed name is free
	} else {
		mustSnapshot(t, b, "data", "after2")
	}
	c := mustClone(t, b, "clone", "data", "before")
	wantTree(t, c.Path, before, false, "clone after space was freed")
	mustRollback(t, b, "data", "before")
	wantTree(t, v.Path, before, false, "rollback after space was freed")
	last := snapshotNames(t, b, "data")
	mustRollback(t, b, "data", last[len(last)-1])
	wantHash(t, v.Path, afterHash, "snapshot taken after space was freed")
	wantVolumes(t, b, "clone", "data")
}

func testReopen(t *testing.T, b snapshot.Backend, reopen func(*testing.T, snapshot.Backend) snapshot.Backend) {
	ctx := t.Context()
	v := mustCreate(t, b, "v")
	WriteTree(t, v.Path, StandardTree()...)
	mA := Manifest(t, v.Path, true)
	mustSnapshot(t, b, "v", "s1")
	mutate(t, v.Path)
	hB := TreeHash(t, v.Path)
	mustSnapshot(t, b, "v", "s2")
	writeFile(t, filepath.Join(v.Path, "unsnapshotted"), "still here after a restart")
	hC := TreeHash(t, v.Path)
	c := mustClone(t, b, "c", "v", "s1")
	writeFile(t, filepath.Join(c.Path, "clone-file"), "c")
	hD := TreeHash(t, c.Path)
	mustSnapshot(t, b, "c", "c1")
	mustCreate(t, b, "empty")
	mustSnapshot(t, b, "v", "s3")
	if err := b.DestroySnapshot(ctx, "v", "s3"); err != nil {
		t.Fatal(err)
	}

	vols, err := b.Volumes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	snaps := map[string][]snapshot.Snapshot{}
	for _, vol := range vols {
		ss, err := b.Snapshots(ctx, vol.Name)
		if err != nil {
			t.Fatal(err)
		}
		snaps[vol.Name] = ss
	}

	b2 := reopen(t, b)

	vols2, err := b2.Volumes(ctx)
	if err != nil {
		t.Fatalf("Volumes after reopening: %v", err)
	}
	if len(vols2) != len(vols) {
		t.Fatalf("after reopening, %d volumes, want %d", len(vols2), len(vols))
	}
	for i := range vols {
		if vols2[i].Name != vols[i].Name || vols2[i].Path != vols[i].Path {
			t.Errorf("after reopening, volume %d is %q at %s, want %q at %s", i, vols2[i].Name, vols2[i].Path, vols[i].Name, vols[i].Path)
		}
		ss, err := b2.Snapshots(ctx, vols[i].Name)
		if err != nil {
			t.Fatalf("Snapshots(%q) after reopening: %v", vols[i].Name, err)
		}
		want := snaps[vols[i].Name]
		if len(ss) != len(want) {
			t.Errorf("after reopening, volume %q has %d snapshots, want %d", vols[i].Name, len(ss), len(want))
			continue
		}
		for j := range ss {
			if ss[j].Name != want[j].Name || ss[j].Volume != want[j].Volume || !closeEnough(ss[j].CreatedAt, want[j].CreatedAt) {
				t.Errorf("after reopening, snapshot %d of %q is %+v, want %+v", j, vols[i].Name, ss[j], want[j])
			}
		}
	}
	wantHash(t, v.Path, hC, "volume content after reopening")
	wantHash(t, c.Path, hD, "clone content after reopening")
	mustRollback(t, b2, "v", "s1")
	wantTree(t, v.Path, mA, true, "snapshot s1 after reopening")
	mustRollback(t, b2, "v", "s2")
	wantHash(t, v.Path, hB, "snapshot s2 after reopening")
	mustRollback(t, b2, "c", "c1")
	wantHash(t, c.Path, hD, "clone's snapshot after reopening")
	wantErr(t, b2.Rollback(ctx, "v", "s3"), snapshot.ErrNotFound, "a snapshot destroyed before reopening")
	mustSnapshot(t, b2, "v", "s3")
	wantSnapshots(t, b2, "v", "s1", "s2", "s3")
	_, err = b2.CreateVolume(ctx, "v")
	wantErr(t, err, snapshot.ErrExists, "CreateVolume of a volume made before reopening")
}
