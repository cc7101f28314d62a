//go:build linux && cgo

package btrfs_test

import (
	"os"
	"path/filepath"
	"testing"

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
