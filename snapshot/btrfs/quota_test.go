//go:build linux && cgo

package btrfs_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/turnbox/turnbox/snapshot/btrfs"
	"github.com/turnbox/turnbox/snapshot/btrfs/btrfstest"
	"github.com/turnbox/turnbox/snapshot/snapshottest"
)

// Without quotas SizeBytes is 0 (documented); once SetQuota has turned
// quotas on, a volume's SizeBytes is its referenced bytes, and a
// snapshot's its exclusive bytes under full qgroups or 0 under simple
// quotas, which charge what it pins to the volume's quota instead.
func TestSizeBytesFromQgroups(t *testing.T) {
	for _, full := range []bool{false, true} {
		t.Run(fmt.Sprintf("full=%v", full), func(t *testing.T) { testSizeBytes(t, full) })
	}
}

func testSizeBytes(t *testing.T, full bool) {
	mnt := btrfstest.Mount(t, 1<<30)
	b := openBackend(t, filepath.Join(mnt, "tb"))
	ctx := t.Context()
	v, err := b.CreateVolume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if full {
		// Full qgroups count what was written before they were on.
		snapshottest.FillTree(t, v.Path, 32, 64<<10, 1) // 2 MiB
		if got, _ := b.Volume(ctx, "v"); got.SizeBytes != 0 {
			t.Fatalf("SizeBytes without quotas = %d, want 0", got.SizeBytes)
		}
		if out, err := exec.Command("btrfs", "quota", "enable", mnt).CombinedOutput(); err != nil {
			t.Fatalf("btrfs quota enable: %v: %s", err, out)
		}
	}
	if err := b.SetQuota(ctx, "v", 1<<30); err != nil {
		t.Fatal(err)
	}
	if !full {
		snapshottest.FillTree(t, v.Path, 32, 64<<10, 1)
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
	q, err := b.Quota(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("volume %d, s1 %d, s2 %d bytes; quota counts %d", got.SizeBytes, snaps[0].SizeBytes, snaps[1].SizeBytes, q.UsedBytes)
	switch {
	case len(snaps) != 2:
		t.Fatalf("snapshots = %+v", snaps)
	case full && (snaps[0].SizeBytes < 1<<20 || snaps[1].SizeBytes <= 0):
		t.Fatalf("snapshot sizes = %+v, want s1 about 2 MiB (exclusive) and s2 > 0", snaps)
	case full && (q.UsedBytes < 2<<20 || q.UsedBytes > 3<<20):
		t.Fatalf("full qgroups: quota counts %d, want the live tree's 2 MiB", q.UsedBytes)
	case !full && (snaps[0].SizeBytes != 0 || snaps[1].SizeBytes != 0):
		t.Fatalf("simple quotas: snapshot sizes = %+v, want 0", snaps)
	case !full && (q.UsedBytes < 4<<20 || q.UsedBytes > 5<<20):
		t.Fatalf("simple quotas: quota counts %d, want 4 MiB (the tree and what s1 pins)", q.UsedBytes)
	}
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
