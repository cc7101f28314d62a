//go:build linux

package localdisk_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/turnbox/turnbox/snapshot/localdisk"
)

// A turn-by-turn workspace: snapshot after each turn, roll back to an
// older turn, roll forward again, and fork a session from a snapshot.
func Example() {
	root, err := os.MkdirTemp("", "localdisk-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)
	b, err := localdisk.New(root)
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()

	v, err := b.CreateVolume(ctx, "session-1")
	if err != nil {
		log.Fatal(err)
	}
	notes := filepath.Join(v.Path, "notes.txt")
	for turn := 1; turn <= 3; turn++ {
		os.WriteFile(notes, fmt.Appendf(nil, "written in turn %d", turn), 0o644)
		if _, err := b.Snapshot(ctx, "session-1", fmt.Sprintf("turn-%d", turn)); err != nil {
			log.Fatal(err)
		}
	}

	// Back to turn 1: turns 2 and 3 survive.
	if err := b.Rollback(ctx, "session-1", "turn-1"); err != nil {
		log.Fatal(err)
	}
	data, _ := os.ReadFile(notes) // same Path as before the rollback
	fmt.Println(string(data))
	snaps, _ := b.Snapshots(ctx, "session-1")
	fmt.Println(len(snaps), "snapshots")

	// Fork turn 3 into a new session.
	fork, err := b.CloneVolume(ctx, "session-2", "session-1", "turn-3")
	if err != nil {
		log.Fatal(err)
	}
	data, _ = os.ReadFile(filepath.Join(fork.Path, "notes.txt"))
	fmt.Println(string(data))
	// Output:
	// written in turn 1
	// 3 snapshots
	// written in turn 3
}
