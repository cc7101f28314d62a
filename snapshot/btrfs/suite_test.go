//go:build linux && cgo

package btrfs_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/turnbox/turnbox/snapshot"
	"github.com/turnbox/turnbox/snapshot/btrfs"
	"github.com/turnbox/turnbox/snapshot/btrfs/btrfstest"
	"github.com/turnbox/turnbox/snapshot/snapshottest"
)

// TestSuite runs the shared backend suite. The cases share one loop-mounted
// filesystem (each gets its own root directory in it); FullDisk gets a
// tiny filesystem of its own.
func TestSuite(t *testing.T) {
	mnt := btrfstest.Mount(t, 4<<30)
	var n atomic.Int64
	snapshottest.Run(t,
		func(t *testing.T) snapshot.Backend {
			return openBackend(t, filepath.Join(mnt, fmt.Sprint("case", n.Add(1))))
		},
		snapshottest.WithCopyOnWrite(),
		snapshottest.WithFullDisk(func(t *testing.T) snapshot.Backend {
			return openBackend(t, filepath.Join(btrfstest.Mount(t, btrfstest.MinSize), "tb"))
		}),
		snapshottest.WithReopen(func(t *testing.T, old snapshot.Backend) snapshot.Backend {
			root := old.(*btrfs.Backend).Root()
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
			return openBackend(t, root)
		}),
	)
}

// TestSuiteFullQgroups runs the quota cases on a filesystem where full
// qgroups were enabled before the backend came (another tool, or a
// kernel without simple quotas): the backend keeps them and limits each
// volume's live tree.
func TestSuiteFullQgroups(t *testing.T) {
	mnt := btrfstest.Mount(t, 1<<30)
	if out, err := exec.Command("btrfs", "quota", "enable", mnt).CombinedOutput(); err != nil {
		t.Fatalf("btrfs quota enable: %v: %s", err, out)
	}
	var n atomic.Int64
	snapshottest.Run(t,
		func(t *testing.T) snapshot.Backend {
			b := openBackend(t, filepath.Join(mnt, fmt.Sprint("case", n.Add(1))))
			if b.QuotaChargesPins() {
				t.Fatal("QuotaChargesPins on a filesystem with full qgroups")
			}
			return b
		},
		snapshottest.WithOnly("Quota", "TotalUsage", "SizeBytes"),
	)
}
