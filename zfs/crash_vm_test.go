package zfs_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/zfs"
)

// TestCrashSnapshots checks that a snapshot is durable once Snapshot
// returns, across a hard power-off. It runs in two phases in the OpenZFS
// VM (scripts/zfs-vm/run.sh) and skips everywhere else:
//
//   - TURNBOX_ZFS_CRASH=write creates a pool on TURNBOX_ZFS_CRASH_DEV and
//     snapshots a volume in a loop, appending every acknowledged snapshot
//     to TURNBOX_ZFS_CRASH_ACKS (fsynced, on the host through 9p) until the
//     VM is powered off under it;
//   - TURNBOX_ZFS_CRASH=verify, after a new boot on the same disk, imports
//     the pool, reopens the backend and checks that every acknowledged
//     snapshot is listed and (for the newest and up to
//     TURNBOX_ZFS_CRASH_CHECKS more, default 60, spread evenly) holds
//     what was written before it, by rolling back to it.
//
// TURNBOX_ZFS_CRASH_DRIVER picks the driver: command (default) or lzc.
func TestCrashSnapshots(t *testing.T) {
	phase := os.Getenv("TURNBOX_ZFS_CRASH")
	if phase == "" {
		t.Skip("TURNBOX_ZFS_CRASH not set: the crash check runs in the OpenZFS VM job")
	}
	dev := os.Getenv("TURNBOX_ZFS_CRASH_DEV")
	acks := os.Getenv("TURNBOX_ZFS_CRASH_ACKS")
	if dev == "" || acks == "" {
		t.Fatal("TURNBOX_ZFS_CRASH_DEV and TURNBOX_ZFS_CRASH_ACKS are required")
	}
	var d zfs.Driver = zfs.NewCommandDriver()
	if os.Getenv("TURNBOX_ZFS_CRASH_DRIVER") == "lzc" {
		var err error
		if d, err = zfs.NewLZCDriver(); err != nil {
			t.Fatal(err)
		}
	}
	const pool, root = "tbcrash", "/mnt/tbcrash"
	switch phase {
	case "write":
		crashWrite(t, d, pool, root, dev, acks)
	case "verify":
		crashVerify(t, d, pool, root, dev, acks)
	default:
		t.Fatalf("TURNBOX_ZFS_CRASH=%q: want write or verify", phase)
	}
}

func crashRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

func crashContent(i int) string { return fmt.Sprintf("turn %d\n", i) }

func crashWrite(t *testing.T, d zfs.Driver, pool, root, dev, acks string) {
	crashRun(t, "zpool", "create", "-f", "-m", "none", pool, dev)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b, err := zfs.NewBackend(ctx, d, pool+"/b", root)
	if err != nil {
		t.Fatal(err)
	}
	v, err := b.CreateVolume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	ack, err := os.OpenFile(acks, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer ack.Close()
	start := time.Now()
	// Until the power goes (or ten minutes pass).
	for i := 1; ctx.Err() == nil; i++ {
		if err := os.WriteFile(filepath.Join(v.Path, "data"), []byte(crashContent(i)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(v.Path, fmt.Sprintf("f%d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Snapshot(ctx, "v", fmt.Sprintf("s%d", i)); err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Fprintf(ack, "%d\n", i); err != nil {
			t.Fatal(err)
		}
		if err := ack.Sync(); err != nil {
			t.Fatal(err)
		}
		if i%20 == 0 {
			t.Logf("%d snapshots acknowledged after %v", i, time.Since(start).Round(time.Millisecond))
		}
	}
	t.Fatal("the VM was not powered off within the write phase")
}

func crashVerify(t *testing.T, d zfs.Driver, pool, root, dev, acks string) {
	f, err := os.Open(acks)
	if err != nil {
		t.Fatal(err)
	}
	var acked []int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		if err != nil {
			// A torn last line: the power went mid-write of the ack, so
			// that snapshot was acknowledged to nobody.
			t.Logf("ignoring torn ack line %q", sc.Text())
			continue
		}
		acked = append(acked, n)
	}
	f.Close()
	if len(acked) == 0 {
		t.Fatal("no snapshot was acknowledged before the power-off: nothing to check")
	}
	t.Logf("%d snapshots acknowledged before the power-off (last s%d)", len(acked), acked[len(acked)-1])
	crashRun(t, "zpool", "import", "-f", "-d", filepath.Dir(dev), pool)
	defer exec.Command("zpool", "export", "-f", pool).Run()
	ctx := context.Background()
	b, err := zfs.NewBackend(ctx, d, pool+"/b", root)
	if err != nil {
		t.Fatalf("reopening the backend after the crash: %v", err)
	}
	defer b.Close()
	snaps, err := b.Snapshots(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, s := range snaps {
		have[s.Name] = true
	}
	t.Logf("%d snapshots listed after the crash", len(snaps))
	for _, n := range acked {
		if !have[fmt.Sprintf("s%d", n)] {
			t.Errorf("acknowledged snapshot s%d is missing after the crash", n)
		}
	}
	if t.Failed() {
		return
	}
	// Content: newest first, then an even spread.
	checks := 60
	if c := os.Getenv("TURNBOX_ZFS_CRASH_CHECKS"); c != "" {
		if checks, err = strconv.Atoi(c); err != nil || checks < 1 {
			t.Fatalf("TURNBOX_ZFS_CRASH_CHECKS=%q: want a positive number", c)
		}
	}
	check := []int{acked[len(acked)-1]}
	step := max(1, (len(acked)+checks-1)/checks)
	for i := 0; i < len(acked)-1; i += step {
		check = append(check, acked[i])
	}
	v, err := b.Volume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range check {
		if err := b.Rollback(ctx, "v", fmt.Sprintf("s%d", n)); err != nil {
			t.Fatalf("rollback to s%d: %v", n, err)
		}
		got, err := os.ReadFile(filepath.Join(v.Path, "data"))
		if err != nil || string(got) != crashContent(n) {
			t.Errorf("s%d: data = %q, %v; want %q", n, got, err, crashContent(n))
		}
		if _, err := os.Stat(filepath.Join(v.Path, fmt.Sprintf("f%d", n))); err != nil {
			t.Errorf("s%d: f%d missing: %v", n, n, err)
		}
		if _, err := os.Stat(filepath.Join(v.Path, fmt.Sprintf("f%d", n+1))); err == nil {
			t.Errorf("s%d: holds f%d, written after it", n, n+1)
		}
	}
	t.Logf("content of %d snapshots checked", len(check))
}
