package zfstest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/turnbox/turnbox/snapshot"
)

// Benchmark bodies, reusable by the bench command: each measures one
// backend operation per iteration and has a Raw twin that runs the bare
// zfs command doing the same ZFS work, so ratios come from one run.
// volume must exist in be; dataset is a filesystem for the raw twins,
// mounted at dir.

func zfsCmd(b *testing.B, args ...string) {
	b.Helper()
	if out, err := exec.Command("zfs", args...).CombinedOutput(); err != nil {
		b.Fatalf("zfs %v: %v: %s", args, err, out)
	}
}

func touch(b *testing.B, dir string, i int) {
	b.Helper()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte(fmt.Sprint(i)), 0o644); err != nil {
		b.Fatal(err)
	}
}

// BenchSnapshot measures Backend.Snapshot.
func BenchSnapshot(b *testing.B, be snapshot.Backend, volume string) {
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		if _, err := be.Snapshot(ctx, volume, fmt.Sprintf("bs%d", i)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchRawSnapshot measures `zfs snapshot`.
func BenchRawSnapshot(b *testing.B, dataset string) {
	for i := 0; i < b.N; i++ {
		zfsCmd(b, "snapshot", fmt.Sprintf("%s@rs%d", dataset, i))
	}
}

// BenchRollbackNewest measures Backend.Rollback to the newest snapshot
// (in place), after a small write each time (untimed).
func BenchRollbackNewest(b *testing.B, be snapshot.Backend, volume string) {
	ctx := context.Background()
	v, err := be.Volume(ctx, volume)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := be.Snapshot(ctx, volume, "newest"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		touch(b, v.Path, i)
		b.StartTimer()
		if err := be.Rollback(ctx, volume, "newest"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchRawRollbackNewest measures `zfs rollback` to the newest snapshot.
func BenchRawRollbackNewest(b *testing.B, dataset, dir string) {
	zfsCmd(b, "snapshot", dataset+"@newest")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		touch(b, dir, i)
		b.StartTimer()
		zfsCmd(b, "rollback", dataset+"@newest")
	}
}

// BenchRollbackOlder measures Backend.Rollback to an older snapshot
// (clone-and-swap), alternating between two old snapshots so every
// iteration is a swap; newer snapshots survive.
func BenchRollbackOlder(b *testing.B, be snapshot.Backend, volume string) {
	ctx := context.Background()
	v, err := be.Volume(ctx, volume)
	if err != nil {
		b.Fatal(err)
	}
	for i, s := range []string{"old1", "old2", "newer"} {
		touch(b, v.Path, i)
		if _, err := be.Snapshot(ctx, volume, s); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := be.Rollback(ctx, volume, []string{"old1", "old2"}[i%2]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchRawRollbackOlder measures `zfs rollback -r` to an older snapshot,
// which destroys the newer one (re-created, untimed, each iteration).
func BenchRawRollbackOlder(b *testing.B, dataset, dir string) {
	zfsCmd(b, "snapshot", dataset+"@old")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		touch(b, dir, i)
		zfsCmd(b, "snapshot", fmt.Sprintf("%s@newer%d", dataset, i))
		b.StartTimer()
		zfsCmd(b, "rollback", "-r", dataset+"@old")
	}
}

// BenchClone measures Backend.CloneVolume (a fork).
func BenchClone(b *testing.B, be snapshot.Backend, volume string) {
	ctx := context.Background()
	if _, err := be.Snapshot(ctx, volume, "forkpoint"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := be.CloneVolume(ctx, fmt.Sprintf("%s-fork%d", volume, i), volume, "forkpoint"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchRawClone measures `zfs clone -o mountpoint=...` into parent.
func BenchRawClone(b *testing.B, dataset, parent, mountRoot string) {
	zfsCmd(b, "snapshot", dataset+"@forkpoint")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		zfsCmd(b, "clone", "-o", fmt.Sprintf("mountpoint=%s/c%d", mountRoot, i), dataset+"@forkpoint", fmt.Sprintf("%s/c%d", parent, i))
	}
}
