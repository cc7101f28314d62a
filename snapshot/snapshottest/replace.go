package snapshottest

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/turnbox/turnbox/snapshot"
)

// testReplaceVolume checks snapshot.Replacer, for backends that have it:
// the volume takes the other volume's snapshot in place (same Path, a
// directory opened before still shows the new tree), keeps its own
// snapshots, and is independent of the source afterwards; a missing
// snapshot or volume fails with ErrNotFound and changes nothing.
func testReplaceVolume(t *testing.T, b snapshot.Backend) {
	r, ok := b.(snapshot.Replacer)
	if !ok {
		t.Skipf("snapshottest: %s does not implement snapshot.Replacer", b.Kind())
	}
	ctx := t.Context()
	src := mustCreate(t, b, "src")
	WriteTree(t, src.Path, StandardTree()...)
	mustSnapshot(t, b, "src", "s")
	srcHash := TreeHash(t, src.Path)

	dst := mustCreate(t, b, "dst")
	writeFile(t, filepath.Join(dst.Path, "own"), "dst")
	mustSnapshot(t, b, "dst", "mine")
	ownHash := TreeHash(t, dst.Path)
	// A sandbox holds the volume's directory (Path's parent) open.
	parent, err := os.Open(filepath.Dir(dst.Path))
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()

	wantErr(t, r.ReplaceVolume(ctx, "dst", "src", "nope"), snapshot.ErrNotFound, "ReplaceVolume from a missing snapshot")
	wantErr(t, r.ReplaceVolume(ctx, "missing", "src", "s"), snapshot.ErrNotFound, "ReplaceVolume of a missing volume")
	wantHash(t, dst.Path, ownHash, "volume after failed replaces")

	if err := r.ReplaceVolume(ctx, "dst", "src", "s"); err != nil {
		t.Fatalf("ReplaceVolume: %v", err)
	}
	if got := mustVolume(t, b, "dst").Path; got != dst.Path {
		t.Fatalf("Path moved from %s to %s", dst.Path, got)
	}
	wantHash(t, dst.Path, srcHash, "volume after ReplaceVolume")
	wantHash(t, filepath.Join("/proc/self/fd", strconv.Itoa(int(parent.Fd())), filepath.Base(dst.Path)), srcHash, "volume through a directory opened before")
	wantSnapshots(t, b, "dst", "mine")

	overwriteInPlace(t, filepath.Join(dst.Path, "data/big.bin"), "DST WROTE")
	writeFile(t, filepath.Join(dst.Path, "dst-only"), "d")
	wantHash(t, src.Path, srcHash, "source after writes to the replaced volume")
	mustRollback(t, b, "src", "s")
	wantHash(t, src.Path, srcHash, "source's own snapshot after writes to the replaced volume")
	mustRollback(t, b, "dst", "mine")
	wantHash(t, dst.Path, ownHash, "volume rolled back to its own snapshot")
}
