//go:build linux && cgo

package btrfs_test

import (
	"context"
	"log"
	"os"
	"path/filepath"

	"github.com/turnbox/turnbox/snapshot/btrfs"
)

// A turn's life: snapshot after each turn, roll back to an earlier one,
// fork a session from a snapshot. /srv/turnbox must be on a btrfs
// filesystem mounted with -o flushoncommit.
func ExampleNew() {
	ctx := context.Background()
	be, err := btrfs.New("/srv/turnbox")
	if err != nil {
		log.Fatal(err) // wraps snapshot.ErrUnsupported off btrfs
	}
	defer be.Close()

	v, err := be.CreateVolume(ctx, "session-1")
	if err != nil {
		log.Fatal(err)
	}
	// A sandbox binds filepath.Dir(v.Path), so that a rollback, which
	// renames a new tree into place at v.Path, shows at once.
	os.WriteFile(filepath.Join(v.Path, "notes.txt"), []byte("turn 1"), 0o644)
	if _, err := be.Snapshot(ctx, "session-1", "turn-1"); err != nil {
		log.Fatal(err)
	}
	os.WriteFile(filepath.Join(v.Path, "notes.txt"), []byte("turn 2"), 0o644)
	if _, err := be.Snapshot(ctx, "session-1", "turn-2"); err != nil {
		log.Fatal(err)
	}
	// Back to turn 1; turn-2 survives, so the session can roll forward.
	if err := be.Rollback(ctx, "session-1", "turn-1"); err != nil {
		log.Fatal(err)
	}
	// Fork: a new, independent session starting from turn 2.
	if _, err := be.CloneVolume(ctx, "session-2", "session-1", "turn-2"); err != nil {
		log.Fatal(err)
	}
}
