//go:build linux && cgo

package btrfstest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cbtrfs "github.com/containerd/btrfs/v2"
	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/snapshot"
)

// The benchmark bodies below time one operation per iteration and do any
// per-iteration preparation with the timer stopped. The Bench* bodies take
// any snapshot.Backend; the BenchRaw* ones are the floor they are compared
// with: the bare btrfs ioctls with no bookkeeping, on the same filesystem
// in the same run (these machines are noisy: compare ratios, not numbers
// across runs). Each body removes what it made, untimed, before returning.

// MakeTree fills dir with files regular files of fileSize bytes each (100
// per subdirectory, pseudo-random content from seed, so it does not
// compress or deduplicate) and syncs the filesystem.
func MakeTree(dir string, files, fileSize int, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	buf := make([]byte, fileSize)
	for i := range files {
		sub := filepath.Join(dir, fmt.Sprintf("d%04d", i/100))
		if i%100 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return err
			}
		}
		for j := 0; j < len(buf); j += 8 {
			v := rng.Uint64()
			for k := 0; k < 8 && j+k < len(buf); k++ {
				buf[j+k] = byte(v >> (8 * k))
			}
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%06d", i)), buf, 0o644); err != nil {
			return err
		}
	}
	return SyncFS(dir)
}

// SyncFS commits the filesystem holding path (syncfs(2)).
func SyncFS(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

// Settle commits the filesystem holding path and waits until btrfs has
// cleaned every deleted subvolume, so that one benchmark's background work
// does not land in the next one's timing. (`btrfs subvolume sync` would
// do, but polls once a second and the cleaner only runs after a commit.)
func Settle(tb testing.TB, path string) {
	tb.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if err := SyncFS(path); err != nil {
			tb.Fatal(err)
		}
		out, err := exec.Command("btrfs", "subvolume", "list", "-d", path).CombinedOutput()
		if err != nil {
			tb.Fatalf("btrfs subvolume list -d: %v: %s", err, out)
		}
		if len(strings.TrimSpace(string(out))) == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("deleted subvolumes not cleaned after 2 minutes:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dirty writes one 4 KiB file into dir, the change an agent turn makes
// before the snapshot that ends it.
func dirty(b *testing.B, dir string, i int) {
	b.Helper()
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("turn-%d", i)), make([]byte, 4096), 0o644); err != nil {
		b.Fatal(err)
	}
}

// BenchSnapshot times be.Snapshot of volume; before each iteration one
// small file is written into the volume (untimed). The snapshots are
// destroyed afterwards.
func BenchSnapshot(b *testing.B, be snapshot.Backend, volume string) {
	ctx := context.Background()
	v, err := be.Volume(ctx, volume)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dirty(b, v.Path, i)
		b.StartTimer()
		if _, err := be.Snapshot(ctx, volume, fmt.Sprintf("bench-%d", i)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		if err := be.DestroySnapshot(ctx, volume, fmt.Sprintf("bench-%d", i)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchRollback times be.Rollback of volume, alternately to snapshots a
// and b (so every iteration changes the content).
func BenchRollback(b *testing.B, be snapshot.Backend, volume, snapA, snapB string) {
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		target := snapA
		if i%2 == 1 {
			target = snapB
		}
		if err := be.Rollback(ctx, volume, target); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchClone times be.CloneVolume of (volume, snap) into new volumes,
// destroyed afterwards.
func BenchClone(b *testing.B, be snapshot.Backend, volume, snap string) {
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := be.CloneVolume(ctx, fmt.Sprintf("bench-clone-%d", i), volume, snap); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		if err := be.DestroyVolume(ctx, fmt.Sprintf("bench-clone-%d", i)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchRawSnapshot times the bare ioctl: containerd/btrfs SubvolSnapshot
// of the subvolume src into dstDir (read-only or writable). With dirtySrc,
// one small file is written into src before each iteration (untimed), as
// BenchSnapshot does. The snapshots are deleted afterwards.
func BenchRawSnapshot(b *testing.B, src, dstDir string, readonly, dirtySrc bool) {
	if err := os.MkdirAll(dstDir, 0o755); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if dirtySrc {
			b.StopTimer()
			dirty(b, src, i)
			b.StartTimer()
		}
		if err := cbtrfs.SubvolSnapshot(filepath.Join(dstDir, fmt.Sprintf("raw-%d", i)), src, readonly); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		deleteSubvol(b, filepath.Join(dstDir, fmt.Sprintf("raw-%d", i)))
	}
}

// BenchRawRollback times the bare rollback: a writable SubvolSnapshot of
// snapA or snapB (alternately) next to workspace, then one
// renameat2(RENAME_EXCHANGE) onto workspace. Deleting the old tree is
// left out of the timing (the backend's Rollback includes it).
// workspace must be a subvolume.
func BenchRawRollback(b *testing.B, workspace, snapA, snapB string) {
	tmp := workspace + ".raw-tmp"
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		src := snapA
		if i%2 == 1 {
			src = snapB
		}
		if err := cbtrfs.SubvolSnapshot(tmp, src, false); err != nil {
			b.Fatal(err)
		}
		if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, workspace, unix.RENAME_EXCHANGE); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		deleteSubvol(b, tmp)
		b.StartTimer()
	}
}

// BenchFullCopy times `cp -a --reflink=never src dst`, a full copy of
// the tree (no fsync: the copy is not durable when timed, which favours
// it). Each copy is removed and the filesystem synced, untimed.
func BenchFullCopy(b *testing.B, src, dstDir string) {
	if err := os.MkdirAll(dstDir, 0o755); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dst := filepath.Join(dstDir, fmt.Sprintf("copy-%d", i))
		if out, err := exec.Command("cp", "-a", "--reflink=never", src, dst).CombinedOutput(); err != nil {
			b.Fatalf("cp: %v: %s", err, out)
		}
		b.StopTimer()
		if err := os.RemoveAll(dst); err != nil {
			b.Fatal(err)
		}
		if err := SyncFS(dstDir); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// deleteSubvol deletes a subvolume with `btrfs subvolume delete`
// (untimed cleanup: containerd's SubvolDelete would walk the whole tree).
func deleteSubvol(tb testing.TB, p string) {
	tb.Helper()
	if out, err := exec.Command("btrfs", "subvolume", "delete", p).CombinedOutput(); err != nil {
		if _, serr := os.Lstat(p); serr != nil && os.IsNotExist(serr) {
			return
		}
		tb.Fatalf("btrfs subvolume delete %s: %v: %s", p, err, out)
	}
}
