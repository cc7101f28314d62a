//go:build linux && cgo

package btrfs_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/turnbox/turnbox/snapshot/btrfs"
	"github.com/turnbox/turnbox/snapshot/btrfs/btrfstest"
	"github.com/turnbox/turnbox/snapshot/snapshottest"
)

// Without quotas SizeBytes is 0 (documented); once SetQuota has turned
// quotas on, a volume's SizeBytes is its referenced bytes and a
// snapshot's its exclusive bytes.
func TestSizeBytesFromQgroups(t *testing.T) {
	b := openBackend(t, filepath.Join(btrfstest.Mount(t, 1<<30), "tb"))
	ctx := t.Context()
	v, err := b.CreateVolume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	snapshottest.FillTree(t, v.Path, 32, 64<<10, 1) // 2 MiB
	if got, _ := b.Volume(ctx, "v"); got.SizeBytes != 0 {
		t.Fatalf("SizeBytes without quotas = %d, want 0", got.SizeBytes)
	}
	if err := b.SetQuota(ctx, "v", 1<<30); err != nil {
		t.Fatal(err)
	}
	if err := btrfstest.SyncFS(v.Path); err != nil {
		t.Fatal(err)
	}
	got, err := b.Volume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if got.SizeBytes < 2<<20 || got.SizeBytes > 3<<20 {
		t.Fatalf("Volume.SizeBytes with quotas = %d, want about 2 MiB", got.SizeBytes)
	}
	if _, err := b.Snapshot(ctx, "v", "s1"); err != nil {
		t.Fatal(err)
	}
	// Replace the data: the snapshot is now the only holder of the old
	// 2 MiB, so its exclusive size grows to about that.
	if err := os.RemoveAll(filepath.Join(v.Path, "d000")); err != nil {
		t.Fatal(err)
	}
	snapshottest.FillTree(t, v.Path, 32, 64<<10, 2)
	if _, err := b.Snapshot(ctx, "v", "s2"); err != nil {
		t.Fatal(err)
	}
	snaps, err := b.Snapshots(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 2 || snaps[0].SizeBytes < 1<<20 || snaps[1].SizeBytes <= 0 {
		t.Fatalf("snapshot sizes = %+v, want s1 about 2 MiB (exclusive) and s2 > 0", snaps)
	}
	t.Logf("volume %d, s1 %d, s2 %d bytes", got.SizeBytes, snaps[0].SizeBytes, snaps[1].SizeBytes)
}

// BenchmarkQuota compares Snapshot and Rollback of a 1,000-file volume
// (10 MB) on a filesystem without quotas and on one where the volume has
// a quota (qgroup accounting on). Each sub-benchmark has its own loop
// filesystem. Run:
//
//	go test -run '^$' -bench Quota -benchtime 20x -count 2 ./snapshot/btrfs/
func BenchmarkQuota(b *testing.B) {
	for _, quota := range []bool{false, true} {
		b.Run(fmt.Sprintf("quota=%v", quota), func(b *testing.B) {
			be := openBenchBackend(b)
			ctx := context.Background()
			v, err := be.CreateVolume(ctx, "w")
			if err != nil {
				b.Fatal(err)
			}
			if quota {
				if err := be.SetQuota(ctx, "w", 1<<30); err != nil {
					b.Fatal(err)
				}
			}
			if err := btrfstest.MakeTree(filepath.Join(v.Path, "tree"), 1000, 10<<10, 1); err != nil {
				b.Fatal(err)
			}
			if _, err := be.Snapshot(ctx, "w", "a"); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(v.Path, "extra"), []byte("x"), 0o644); err != nil {
				b.Fatal(err)
			}
			if _, err := be.Snapshot(ctx, "w", "b"); err != nil {
				b.Fatal(err)
			}
			b.Run("snapshot", func(b *testing.B) { btrfstest.BenchSnapshot(b, be, "w") })
			b.Run("rollback", func(b *testing.B) { btrfstest.BenchRollback(b, be, "w", "a", "b") })
		})
	}
}

func openBenchBackend(b *testing.B) *btrfs.Backend {
	b.Helper()
	btrfstest.Require(b)
	dir := b.TempDir()
	fsys, err := btrfstest.MountImage(dir, 2<<30, btrfstest.DefaultOptions)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { fsys.Unmount() })
	be, err := btrfs.New(filepath.Join(fsys.Dir, "tb"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { be.Close() })
	return be
}
