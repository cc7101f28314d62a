package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
	"unsafe"

	btrfsioctl "github.com/containerd/btrfs/v2"
	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/gvisor"
	"github.com/turnbox/turnbox/zfs"
)

// The raw baselines run the bare backend operation with no turnbox around
// it, on a scratch tree of the same shape as the bench workspace: the
// physical floor on that filesystem.

// btrfsIocSnapDestroy is BTRFS_IOC_SNAP_DESTROY: _IOW(0x94, 15, struct
// btrfs_ioctl_vol_args), whose size is 4096.
const btrfsIocSnapDestroy = 0x5000940f

// destroySubvolume deletes the subvolume at path with one
// BTRFS_IOC_SNAP_DESTROY on its parent directory, as the btrfs backend
// does: containerd's SubvolDelete first walks the whole tree looking for
// nested subvolumes, a cost that grows with the file count and is no part
// of the floor.
func destroySubvolume(path string) error {
	dir, name := filepath.Split(filepath.Clean(path))
	var args struct {
		fd   int64
		name [4088]byte
	}
	if name == "" || len(name) >= len(args.name) {
		return fmt.Errorf("destroy subvolume %s: bad name", path)
	}
	copy(args.name[:], name)
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), btrfsIocSnapDestroy, uintptr(unsafe.Pointer(&args))); errno != 0 {
		return &os.PathError{Op: "btrfs subvolume delete", Path: path, Err: errno}
	}
	return nil
}

// RawBtrfs measures the bare ioctls under dir (on btrfs): turn_complete (a
// read-only subvolume snapshot), rollback (a writable snapshot of an older
// snapshot, an exchange rename, one BTRFS_IOC_SNAP_DESTROY) and fork (a writable
// snapshot).
func RawBtrfs(ctx context.Context, dir string, files, size, n int) ([]Result, error) {
	root, err := os.MkdirTemp(dir, ".raw-")
	if err != nil {
		return nil, err
	}
	defer func() {
		ents, _ := os.ReadDir(root)
		for _, e := range ents {
			if destroySubvolume(filepath.Join(root, e.Name())) != nil {
				_ = btrfsioctl.SubvolDelete(filepath.Join(root, e.Name()))
			}
		}
		os.RemoveAll(root)
	}()
	ws := filepath.Join(root, "ws")
	if err := btrfsioctl.SubvolCreate(ws); err != nil {
		return nil, fmt.Errorf("raw btrfs: %w", err)
	}
	if err := Fill(ws, files, size); err != nil {
		return nil, err
	}
	var out []Result
	var snaps []string
	samples, err := timeN(n, func(i int) error {
		s := filepath.Join(root, fmt.Sprintf("s%d", i))
		snaps = append(snaps, s)
		return btrfsioctl.SubvolSnapshot(s, ws, true)
	})
	if err != nil {
		return nil, fmt.Errorf("raw btrfs snapshot: %w", err)
	}
	out = append(out, Latencies(OpTurnComplete, samples))
	samples, err = timeN(n, func(i int) error {
		tmp := filepath.Join(root, fmt.Sprintf("r%d", i))
		if err := btrfsioctl.SubvolSnapshot(tmp, snaps[i%2*(len(snaps)-1)], false); err != nil {
			return err
		}
		if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, ws, unix.RENAME_EXCHANGE); err != nil {
			return err
		}
		return destroySubvolume(tmp)
	})
	if err != nil {
		return nil, fmt.Errorf("raw btrfs rollback: %w", err)
	}
	out = append(out, Latencies(OpRollback, samples))
	samples, err = timeN(n, func(i int) error {
		return btrfsioctl.SubvolSnapshot(filepath.Join(root, fmt.Sprintf("f%d", i)), snaps[0], false)
	})
	if err != nil {
		return nil, fmt.Errorf("raw btrfs fork: %w", err)
	}
	out = append(out, Latencies(OpFork, samples))
	return out, nil
}

// RawZFS measures the zfs backend's floor: driver d's bare calls, with no
// turnbox around them, on a scratch dataset parent/raw mounted under
// mountDir and filled with files files of size bytes (the bench
// workspace's shape). The raw figures follow the driver the backend
// uses: through the command driver each call is one `zfs` process (the
// bare zfs command), through the libzfs_core driver one library call.
// n runs each of:
//
//   - turn_complete: d.Snapshot of raw@sI, no properties: `zfs snapshot`,
//     or lzc_snapshot.
//   - fork: d.Clone of raw@s0 into a sibling dataset with its mountpoint
//     under mountDir: `zfs clone -o mountpoint=DIR` (which mounts it), or
//     lzc_clone plus the libzfs mount. The clones are destroyed untimed.
//   - rollback: a one-file write into the dataset (untimed), then
//     d.Rollback to its newest snapshot: `zfs rollback` (without -r), or
//     lzc_rollback_to. libzfs_core can roll back only to the newest
//     snapshot, and that is the one rollback neither driver has to
//     destroy or clone anything for, so both drivers time that: the
//     in-place floor. turnbox's rollback op goes to an older snapshot (on
//     zfs a clone-and-swap: unmount, clone, mount), so the ratio says
//     how much a rollback costs beyond the cheapest one ZFS has.
//
// Before 2026-11-29 the rollback row timed `zfs rollback -r` to the newest
// snapshot but one (destroying the newest); the snapshot and fork rows are
// the same commands as before.
func RawZFS(ctx context.Context, d zfs.Driver, parent, mountDir string, files, size, n int) ([]Result, error) {
	ds := parent + "/raw"
	mnt := filepath.Join(mountDir, "raw")
	if err := d.Create(ctx, ds, zfs.CreateOptions{Props: map[string]string{"mountpoint": mnt}}); err != nil {
		return nil, fmt.Errorf("raw zfs: %w", err)
	}
	var clones []string
	defer func() {
		cctx := context.WithoutCancel(ctx)
		for _, c := range clones {
			_ = d.Destroy(cctx, c, zfs.DestroyOptions{Recursive: true})
		}
		_ = d.Destroy(cctx, ds, zfs.DestroyOptions{Recursive: true})
	}()
	if err := Fill(mnt, files, size); err != nil {
		return nil, err
	}
	var out []Result
	samples, err := timeN(n, func(i int) error { return d.Snapshot(ctx, fmt.Sprintf("%s@s%d", ds, i), nil) })
	if err != nil {
		return nil, fmt.Errorf("raw zfs snapshot: %w", err)
	}
	out = append(out, Latencies(OpTurnComplete, samples))
	samples, err = measure(ctx, n, func(ctx context.Context, i int, l *lap) error {
		name := fmt.Sprintf("%s-f%d", ds, i)
		props := map[string]string{"mountpoint": filepath.Join(mountDir, fmt.Sprintf("raw-f%d", i))}
		l.Start()
		err := d.Clone(ctx, ds+"@s0", name, zfs.CreateOptions{Props: props})
		l.Stop()
		if err != nil {
			return err
		}
		clones = append(clones, name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("raw zfs clone: %w", err)
	}
	out = append(out, Latencies(OpFork, samples))
	for _, c := range clones {
		if err := d.Destroy(ctx, c, zfs.DestroyOptions{}); err != nil {
			return nil, fmt.Errorf("raw zfs: destroying clone %s: %w", c, err)
		}
	}
	clones = nil
	newest := fmt.Sprintf("%s@s%d", ds, n-1)
	scratch := filepath.Join(mnt, "turn.txt")
	samples, err = measure(ctx, n, func(ctx context.Context, i int, l *lap) error {
		if err := os.WriteFile(scratch, []byte(fmt.Sprint("turn ", i)), 0o644); err != nil {
			return err
		}
		l.Start()
		err := d.Rollback(ctx, newest)
		l.Stop()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("raw zfs rollback: %w", err)
	}
	out = append(out, Latencies(OpRollback, samples))
	return out, nil
}

// RunscBaselines measures, for a host on the gvisor runtime with a running
// session sandbox id: "runsc-exec" (a `runsc exec` process per call into
// that sandbox, execN times) and "runsc-run" (a fresh `runsc run` per
// call, as the reference design did, n times). Both are exec's baselines.
func RunscBaselines(ctx context.Context, rt *gvisor.Runtime, id, rootfs, workspace string, execN, n int) ([]Result, error) {
	samples, err := timeN(execN, func(int) error { return rt.RunscExecTrue(ctx, id, container.NetworkNone) })
	if err != nil {
		return nil, err
	}
	execRes := Latencies(OpExec, samples)
	execRes.Baseline = BaselineRunscExec
	run, cleanup, err := rt.RunscRunBaseline(container.Spec{ID: "bench-run", RootFS: rootfs, Workspace: workspace, Network: container.NetworkNone})
	if err != nil {
		return nil, err
	}
	defer cleanup()
	samples, err = timeN(n, func(i int) error { return run(ctx, i) })
	if err != nil {
		return nil, err
	}
	runRes := Latencies(OpExec, samples)
	runRes.Baseline = BaselineRunscRun
	return []Result{execRes, runRes}, nil
}

// RawBtrfsConcurrent is the raw baseline of the concurrent-sessions
// series: sessions goroutines, each with a subvolume of files 1 KiB files
// and a directory for its snapshots (as turnbox lays volumes out: a
// snapshot locks its parent directory, so one shared directory would
// serialize them), each running turns cycles of one small file write
// (untimed) and a bare read-only snapshot ioctl (timed), as the sessions
// run write_file + TurnComplete. Its Result has the snapshot latencies and
// OpsPerSec, the cycles per second of wall time.
func RawBtrfsConcurrent(ctx context.Context, dir string, sessions, turns, files int) (Result, error) {
	root, err := os.MkdirTemp(dir, ".raw-sessions-")
	if err != nil {
		return Result{}, err
	}
	var mu sync.Mutex
	var subvols []string // to delete, newest last
	added := func(p string) {
		mu.Lock()
		subvols = append(subvols, p)
		mu.Unlock()
	}
	defer func() {
		for i := len(subvols) - 1; i >= 0; i-- {
			if destroySubvolume(subvols[i]) != nil {
				_ = btrfsioctl.SubvolDelete(subvols[i])
			}
		}
		os.RemoveAll(root)
	}()
	for j := range sessions {
		ws := filepath.Join(root, fmt.Sprintf("ws%d", j))
		if err := btrfsioctl.SubvolCreate(ws); err != nil {
			return Result{}, fmt.Errorf("raw btrfs sessions: %w", err)
		}
		added(ws)
		if err := Fill(ws, files, 1<<10); err != nil {
			return Result{}, err
		}
		if err := os.Mkdir(filepath.Join(root, fmt.Sprintf("snaps%d", j)), 0o755); err != nil {
			return Result{}, err
		}
	}
	samples := make([][]time.Duration, sessions)
	errs := make([]error, sessions)
	var wg sync.WaitGroup
	t0 := time.Now()
	for j := range sessions {
		wg.Go(func() {
			ws := filepath.Join(root, fmt.Sprintf("ws%d", j))
			samples[j], errs[j] = measure(ctx, turns, func(_ context.Context, i int, l *lap) error {
				if err := os.WriteFile(filepath.Join(ws, "turn.txt"), []byte(fmt.Sprint("turn ", i)), 0o644); err != nil {
					return err
				}
				snap := filepath.Join(root, fmt.Sprintf("snaps%d", j), fmt.Sprint(i))
				l.Start()
				err := btrfsioctl.SubvolSnapshot(snap, ws, true)
				l.Stop()
				if err == nil {
					added(snap)
				}
				return err
			})
		})
	}
	wg.Wait()
	wall := time.Since(t0)
	if err := errors.Join(errs...); err != nil {
		return Result{}, fmt.Errorf("raw btrfs sessions: %w", err)
	}
	var all []time.Duration
	for _, s := range samples {
		all = append(all, s...)
	}
	r := Latencies(OpTurnComplete, all)
	r.Baseline, r.Series, r.Sessions, r.Files = BaselineRaw, SeriesSessions, sessions, files
	r.OpsPerSec = float64(len(all)) / wall.Seconds()
	return r, nil
}
