package snapshottest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/snapshot"
)

// quotaLimit is the quota the Quota case sets: small enough to fill fast,
// large enough that filesystem metadata stays a small part of it.
const quotaLimit = 8 << 20

// incompressible returns n pseudo-random bytes (the same for the same n).
//
// Space-filling writes must use data no filesystem can shrink: a quota or
// a free-space count is of allocated, i.e. compressed, bytes. OpenZFS 2.3
// creates datasets with compression=on (lz4) by default, and kernel
// OpenZFS 2.3.2 in scripts/zfs-vm let 24 MiB of a periodic byte pattern
// through an 8 MiB refquota (2026-11-28) while stopping 256 KiB random
// files at exactly 8 MiB; all-zero blocks are not even allocated there,
// so a zero fill never reaches ENOSPC.
func incompressible(n int) []byte {
	buf := make([]byte, n)
	rand.NewChaCha8([32]byte{'t', 'u', 'r', 'n', 'b', 'o', 'x'}).Read(buf)
	return buf
}

// writeUntil writes files of 256 KiB of incompressible data into dir
// (synced) until total bytes are written or a write fails with EDQUOT or
// ENOSPC. It returns the bytes written and whether a quota or space error
// stopped it.
func writeUntil(t *testing.T, dir, prefix string, total int64) (int64, bool) {
	t.Helper()
	buf := incompressible(256 << 10)
	var n int64
	for i := 0; n < total; i++ {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d", prefix, i)))
		if err == nil {
			var w int
			w, err = f.Write(buf)
			n += int64(w)
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.ENOSPC) {
			return n, true
		}
		if err != nil {
			t.Fatalf("writing into the volume: %v", err)
		}
	}
	return n, false
}

// syncPath commits the filesystem holding p, so that kernel quota
// accounting (updated at commit) catches up.
func syncPath(p string) {
	if f, err := os.Open(p); err == nil {
		_ = unix.Syncfs(int(f.Fd()))
		f.Close()
	}
}

// waitQuota polls Quota until ok accepts it or 30 s pass (kernel
// accounting lags writes by up to a transaction commit).
func waitQuota(t *testing.T, q snapshot.Quotaer, volume, path, what string, ok func(snapshot.Quota) bool) snapshot.Quota {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		syncPath(path)
		got, err := q.Quota(t.Context(), volume)
		if err != nil {
			t.Fatalf("Quota(%s): %v", volume, err)
		}
		if ok(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: Quota(%s) = %+v", what, volume, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testQuota checks snapshot.Quotaer on backends that implement it: the
// limit is kept, writes past it fail (enforcing backends) or show as
// exceeded (recording ones), nothing already written is lost, snapshots
// and rollback keep working, the quota follows the volume across Rollback,
// a rollback to a smaller snapshot makes room again, clones start without
// a quota, and SetQuota(0) lifts it.
func testQuota(t *testing.T, b snapshot.Backend) {
	q, ok := b.(snapshot.Quotaer)
	if !ok {
		t.Skipf("%s does not implement snapshot.Quotaer", b.Kind())
	}
	ctx := t.Context()
	v := mustCreate(t, b, "q")
	if got, err := q.Quota(ctx, "q"); err != nil || got.LimitBytes != 0 {
		t.Fatalf("Quota of a new volume = %+v, %v; want no limit", got, err)
	}
	wantErr(t, q.SetQuota(ctx, "q", -1), snapshot.ErrInvalidQuota, "SetQuota(-1)")
	wantErr(t, q.SetQuota(ctx, "missing", quotaLimit), snapshot.ErrNotFound, "SetQuota of a missing volume")
	if _, err := q.Quota(ctx, "missing"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("Quota of a missing volume: %v, want ErrNotFound", err)
	}
	if err := q.SetQuota(ctx, "q", quotaLimit); err != nil {
		t.Fatalf("SetQuota: %v", err)
	}
	got, err := q.Quota(ctx, "q")
	if err != nil || got.LimitBytes != quotaLimit {
		t.Fatalf("Quota after SetQuota = %+v, %v; want limit %d", got, err, quotaLimit)
	}
	enforced := q.QuotaEnforced()

	writeFile(t, filepath.Join(v.Path, "keep.txt"), "kept whatever happens")
	if n, hit := writeUntil(t, v.Path, "small", 2<<20); hit {
		t.Fatalf("2 MiB under an 8 MiB quota hit the limit after %d bytes", n)
	}
	mustSnapshot(t, b, "q", "small")

	n, hit := writeUntil(t, v.Path, "big", 3*quotaLimit)
	t.Logf("%s: wrote %d bytes past 2 MiB before the quota stopped it (hit=%v, enforced=%v)", b.Kind(), n, hit, enforced)
	if enforced {
		if !hit {
			t.Fatalf("wrote %d bytes under an %d-byte quota without EDQUOT", n, quotaLimit)
		}
		if n > quotaLimit {
			t.Errorf("wrote %d bytes past 2 MiB under an %d-byte quota", n, quotaLimit)
		}
	} else {
		if hit {
			t.Fatalf("a recorded-only quota stopped a write after %d bytes", n)
		}
		waitQuota(t, q, "q", v.Path, "after writing past the quota", snapshot.Quota.Exceeded)
	}
	if got := readFile(t, filepath.Join(v.Path, "keep.txt")); got != "kept whatever happens" {
		t.Fatalf("keep.txt after hitting the quota = %q", got)
	}
	full := waitQuota(t, q, "q", v.Path, "usage after filling", func(x snapshot.Quota) bool { return x.UsedBytes >= 4<<20 })
	t.Logf("%s: usage at the quota: %d of %d", b.Kind(), full.UsedBytes, full.LimitBytes)

	// Snapshots do not count against the quota and still work at it.
	mustSnapshot(t, b, "q", "full")
	// A limit below the usage is accepted, a clone of a snapshot over its
	// volume's limit starts without one, and the limit can be raised again
	// (btrfs must not charge these changes to the over-limit qgroup).
	if err := q.SetQuota(ctx, "q", 1<<20); err != nil {
		t.Fatalf("SetQuota below the usage: %v", err)
	}
	if got, err := q.Quota(ctx, "q"); err != nil || got.LimitBytes != 1<<20 {
		t.Fatalf("Quota after SetQuota below the usage = %+v, %v", got, err)
	}
	c2 := mustClone(t, b, "c2", "q", "full")
	if got, err := q.Quota(ctx, "c2"); err != nil || got.LimitBytes != 0 {
		t.Fatalf("Quota of a clone of a full snapshot = %+v, %v; want no limit", got, err)
	}
	if n, hit := writeUntil(t, c2.Path, "more", 2<<20); hit {
		t.Fatalf("a clone without a quota hit a limit after %d bytes", n)
	}
	if err := q.SetQuota(ctx, "q", quotaLimit); err != nil {
		t.Fatalf("raising the quota of a volume over it: %v", err)
	}
	// Deleting files makes room (the kernel allows it at the limit).
	if err := os.Remove(filepath.Join(v.Path, "big-0")); err != nil {
		t.Fatalf("deleting a file at the quota: %v", err)
	}

	// Rolling back to the small snapshot keeps the quota and makes room
	// (a quota that charges pins makes room once the snapshot holding the
	// big files is gone).
	mustRollback(t, b, "q", "small")
	pins := false
	if pc, ok := b.(snapshot.PinCharger); ok && pc.QuotaChargesPins() {
		pins = true
		pinned := waitQuota(t, q, "q", v.Path, "after rollback, the full snapshot still pinning its files", func(x snapshot.Quota) bool {
			return x.LimitBytes == quotaLimit && x.UsedBytes >= 4<<20
		})
		t.Logf("%s: usage after rollback with the full snapshot kept: %d", b.Kind(), pinned.UsedBytes)
		// The clone of the full snapshot shares its files: both go.
		for _, err := range []error{b.DestroyVolume(ctx, "c2"), b.DestroySnapshot(ctx, "q", "full")} {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	after := waitQuota(t, q, "q", v.Path, "after rollback to the small snapshot", func(x snapshot.Quota) bool {
		return x.LimitBytes == quotaLimit && x.UsedBytes < 4<<20
	})
	t.Logf("%s: usage after rollback: %d", b.Kind(), after.UsedBytes)
	if n, hit := writeUntil(t, v.Path, "again", 2<<20); hit {
		t.Fatalf("after rollback below the quota, a 2 MiB write hit it after %d bytes", n)
	}
	if enforced && !pins {
		// Roll forward to the full snapshot: writes fail again.
		mustRollback(t, b, "q", "full")
		if n, hit := writeUntil(t, v.Path, "over", 3*quotaLimit); !hit {
			t.Fatalf("after rolling forward to a full snapshot, wrote %d bytes without EDQUOT", n)
		}
	}
	if got := readFile(t, filepath.Join(v.Path, "keep.txt")); got != "kept whatever happens" {
		t.Fatalf("keep.txt after rollbacks = %q", got)
	}

	// A clone starts without a quota.
	mustClone(t, b, "c", "q", "small")
	if got, err := q.Quota(ctx, "c"); err != nil || got.LimitBytes != 0 {
		t.Fatalf("Quota of a clone = %+v, %v; want no limit", got, err)
	}

	// SetQuota(0) lifts the limit.
	if err := q.SetQuota(ctx, "q", 0); err != nil {
		t.Fatalf("SetQuota(0): %v", err)
	}
	if got, err := q.Quota(ctx, "q"); err != nil || got.LimitBytes != 0 {
		t.Fatalf("Quota after SetQuota(0) = %+v, %v", got, err)
	}
	if n, hit := writeUntil(t, v.Path, "free", 2*quotaLimit); hit {
		t.Fatalf("with the quota lifted, a write hit a limit after %d bytes", n)
	}

	// The quota goes with the volume: a new volume of the same name has
	// none.
	if err := q.SetQuota(ctx, "q", quotaLimit); err != nil {
		t.Fatal(err)
	}
	// (The clones go first: destroying a volume that clones depend on is
	// the DestroyVolume case's business, not this one's.)
	clones := []string{"c", "c2"}
	if pins {
		clones = clones[:1]
	}
	for _, c := range clones {
		if err := b.DestroyVolume(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.DestroyVolume(ctx, "q"); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, b, "q")
	if got, err := q.Quota(ctx, "q"); err != nil || got.LimitBytes != 0 {
		t.Fatalf("Quota of a re-created volume = %+v, %v; want no limit", got, err)
	}
}

// testTotalUsage checks snapshot.TotalUsager on backends that implement
// it: data deleted from the tree but kept by a snapshot still counts, so
// a limit on the total bounds what snapshots pin.
func testTotalUsage(t *testing.T, b snapshot.Backend) {
	tu, ok := b.(snapshot.TotalUsager)
	if !ok {
		t.Skipf("%s does not implement snapshot.TotalUsager", b.Kind())
	}
	ctx := t.Context()
	v := mustCreate(t, b, "t")
	if q, ok := b.(snapshot.Quotaer); ok {
		// Kernel accounting (btrfs qgroups) starts with the first limit.
		if err := q.SetQuota(ctx, "t", 1<<30); err != nil {
			t.Fatalf("SetQuota: %v", err)
		}
	}
	if _, err := tu.TotalUsage(ctx, "missing"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("TotalUsage of a missing volume: %v, want ErrNotFound", err)
	}
	const pinned = 4 << 20
	if n, stopped := writeUntil(t, v.Path, "pin", pinned); stopped || n < pinned {
		t.Fatalf("wrote %d of %d bytes (stopped %v)", n, pinned, stopped)
	}
	mustSnapshot(t, b, "t", "s1")
	ents, err := os.ReadDir(v.Path)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := os.Remove(filepath.Join(v.Path, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		syncPath(v.Path)
		got, err := tu.TotalUsage(ctx, "t")
		if err != nil {
			t.Fatalf("TotalUsage: %v", err)
		}
		if got >= pinned {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("TotalUsage = %d after %d bytes were pinned by a snapshot and deleted from the tree; want at least %d", got, pinned, pinned)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
