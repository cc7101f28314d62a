package zfs_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/zfs"
	"github.com/turnbox/turnbox/zfs/zfstest"
)

// refquota reads the native refquota of dataset ds.
func refquota(t *testing.T, b *zfs.Backend, ds string) int64 {
	t.Helper()
	got, err := b.Driver().Get(t.Context(), []string{ds}, []string{"refquota"}, 0)
	if err != nil || len(got) == 0 {
		t.Fatalf("zfs get refquota %s: %v", ds, err)
	}
	return got[0].Int("refquota")
}

// The quota is the native refquota of the active generation; a
// clone-and-swap rollback gives the new generation the volume's current
// quota (not the one its snapshot had), a reopened backend knows the
// quota, and a quota below the current usage pins refquota at the usage.
func TestQuotaGenerations(t *testing.T) {
	pool := zfstest.NewPool(t, 512<<20)
	b := newBackend(t, pool)
	ctx := t.Context()
	v, err := b.CreateVolume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v.Path, "a"), []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.SetQuota(ctx, "v", 64<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Snapshot(ctx, "v", "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Snapshot(ctx, "v", "s2"); err != nil {
		t.Fatal(err)
	}
	if err := b.SetQuota(ctx, "v", 32<<20); err != nil {
		t.Fatal(err)
	}
	g1, _ := b.ActiveDataset("v")
	if got := refquota(t, b.Backend, g1); got != 32<<20 {
		t.Fatalf("refquota of %s = %d, want %d", g1, got, 32<<20)
	}
	// s1 is not the newest snapshot: clone-and-swap.
	if err := b.Rollback(ctx, "v", "s1"); err != nil {
		t.Fatal(err)
	}
	g2, _ := b.ActiveDataset("v")
	if g2 == g1 {
		t.Fatalf("rollback to an older snapshot did not swap generations (%s)", g2)
	}
	if got := refquota(t, b.Backend, g2); got != 32<<20 {
		t.Fatalf("refquota of the new generation %s = %d, want %d", g2, got, 32<<20)
	}

	// Reopen: the quota is read back from the container dataset.
	b.Close()
	b2, err := zfs.NewBackend(ctx, zfs.NewCommandDriver(), b.parent, b.root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b2.Close() })
	q, err := b2.Quota(ctx, "v")
	if err != nil || q.LimitBytes != 32<<20 || !b2.QuotaEnforced() {
		t.Fatalf("Quota after reopen = %+v, %v", q, err)
	}

	// A quota below usage: refquota is pinned at the usage, Quota reports
	// the asked limit.
	if err := b2.SetQuota(ctx, "v", 1024); err != nil {
		t.Fatalf("SetQuota below usage: %v", err)
	}
	q, err = b2.Quota(ctx, "v")
	if err != nil || q.LimitBytes != 1024 {
		t.Fatalf("Quota after SetQuota(1024) = %+v, %v", q, err)
	}
	if got := refquota(t, b2, g2); got < 1024 || got > 1<<20 {
		t.Fatalf("refquota pinned at %d, want about the usage (%d)", got, q.UsedBytes)
	}
	err = os.WriteFile(filepath.Join(v.Path, "big"), make([]byte, 4<<20), 0o644)
	if err == nil || !strings.Contains(err.Error(), "quota") {
		t.Fatalf("writing 4 MiB with refquota pinned at the usage: %v, want a quota error", err)
	}
	if err := b2.SetQuota(ctx, "v", 0); err != nil {
		t.Fatal(err)
	}
	if got := refquota(t, b2, g2); got != 0 {
		t.Fatalf("refquota after SetQuota(0) = %d", got)
	}
}
