//go:build linux

package localdisk_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/internal/testenv"
	"github.com/turnbox/turnbox/snapshot"
	"github.com/turnbox/turnbox/snapshot/localdisk"
	"github.com/turnbox/turnbox/snapshot/snapshottest"
)

// open returns a backend on root, closed at the end of the test.
func open(t *testing.T, root string, opts ...localdisk.Option) *localdisk.Backend {
	t.Helper()
	b, err := localdisk.New(root, opts...)
	if err != nil {
		t.Fatalf("New(%s): %v", root, err)
	}
	t.Cleanup(func() { b.Close() })
	if os.Geteuid() != 0 {
		// Trees hold read-only directories, which t.TempDir's cleanup
		// cannot empty without root.
		t.Cleanup(func() {
			filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					os.Chmod(p, 0o700)
				}
				return nil
			})
		})
	}
	return b
}

func newBackend(t *testing.T) snapshot.Backend { return open(t, t.TempDir()) }

// reopen closes old and opens a new backend on its root.
func reopen(t *testing.T, old snapshot.Backend) snapshot.Backend {
	b := old.(*localdisk.Backend)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	return open(t, b.Root())
}

// mountTmpfs mounts a tmpfs of the given size (e.g. "4m") on a new
// directory and unmounts it at the end of the test.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	testenv.RequireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mounting a tmpfs of %s: %v", size, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

func newSmallBackend(t *testing.T) snapshot.Backend {
	return open(t, filepath.Join(mountTmpfs(t, "4m"), "root"))
}

func TestSuite(t *testing.T) {
	opts := []snapshottest.Option{snapshottest.WithReopen(reopen)}
	if os.Geteuid() == 0 || testenv.Strict() {
		opts = append(opts, snapshottest.WithFullDisk(newSmallBackend))
	} else {
		t.Log("SKIPPING the FullDisk case: mounting a small tmpfs needs root")
	}
	snapshottest.Run(t, newBackend, opts...)
}

// TestSuiteWithoutSync runs the suite with fsync disabled, the setting the
// benchmarks compare.
func TestSuiteWithoutSync(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	snapshottest.Run(t, func(t *testing.T) snapshot.Backend {
		return open(t, t.TempDir(), localdisk.WithoutSync())
	})
}

// mountXFS makes a reflink-capable XFS filesystem on a sparse file,
// loop-mounts it and unmounts it at the end of the test.
func mountXFS(t testing.TB) string {
	t.Helper()
	testenv.RequireRoot(t)
	mkfs := testenv.RequireBinary(t, "mkfs.xfs")
	testenv.RequireBinary(t, "mount")
	img := filepath.Join(t.TempDir(), "xfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 512<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v\n%s", err, out)
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		testenv.Require(t, false, fmt.Sprintf("loop-mounting an XFS image (%v: %s)", err, strings.TrimSpace(string(out))))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
		}
	})
	return dir
}

// TestReflinkXFS proves FICLONE is used where the filesystem has it: every
// regular file of a snapshot, rollback and clone on XFS (reflink=1) is
// cloned, none copied, and the trees are still exact.
func TestReflinkXFS(t *testing.T) {
	mnt := mountXFS(t)
	b := open(t, filepath.Join(mnt, "root"))
	ctx := t.Context()
	v, err := b.CreateVolume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	snapshottest.WriteTree(t, v.Path, snapshottest.StandardTree()...)
	snapshottest.FillTree(t, filepath.Join(v.Path, "fill"), 100, 64<<10, 1)
	want := snapshottest.Manifest(t, v.Path, true)
	if _, err := b.Snapshot(ctx, "v", "s"); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(v.Path, "fill")); err != nil {
		t.Fatal(err)
	}
	if err := b.Rollback(ctx, "v", "s"); err != nil {
		t.Fatal(err)
	}
	c, err := b.CloneVolume(ctx, "c", "v", "s")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{v.Path, c.Path} {
		if got := snapshottest.Manifest(t, dir, true); !equal(got, want) {
			t.Errorf("tree at %s differs after reflinked copies", dir)
		}
	}
	st := b.Stats()
	t.Logf("stats: %+v", st)
	// Regular files in the tree, hard links counted once, times three
	// copies (snapshot, rollback, clone).
	files := 0
	for _, l := range want {
		if strings.Contains(l, "\" file ") {
			files++
		}
	}
	if st.FilesCloned != int64(3*files) || st.FilesCopied != 0 {
		t.Errorf("FilesCloned=%d FilesCopied=%d, want %d cloned and none copied", st.FilesCloned, st.FilesCopied, 3*files)
	}

	// With WithoutReflink the same work copies instead.
	b2 := open(t, filepath.Join(mnt, "root2"), localdisk.WithoutReflink())
	v2, err := b2.CreateVolume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	snapshottest.FillTree(t, v2.Path, 10, 4096, 2)
	if _, err := b2.Snapshot(ctx, "v", "s"); err != nil {
		t.Fatal(err)
	}
	if st := b2.Stats(); st.FilesCloned != 0 || st.FilesCopied != 10 || st.BytesCopied != 10*4096 {
		t.Errorf("WithoutReflink: stats %+v, want 10 files and 40960 bytes copied", st)
	}
}

// TestSuiteXFS runs the whole suite on a reflink-capable filesystem.
func TestSuiteXFS(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	mnt := mountXFS(t)
	var n int
	var mu sync.Mutex
	snapshottest.Run(t, func(t *testing.T) snapshot.Backend {
		mu.Lock()
		n++
		root := filepath.Join(mnt, fmt.Sprint(n))
		mu.Unlock()
		b := open(t, root)
		t.Cleanup(func() { os.RemoveAll(root) })
		return b
	}, snapshottest.WithReopen(reopen))
}

func TestNoReflinkOnTmpfs(t *testing.T) {
	b := open(t, filepath.Join(mountTmpfs(t, "64m"), "root"))
	v, err := b.CreateVolume(t.Context(), "v")
	if err != nil {
		t.Fatal(err)
	}
	snapshottest.FillTree(t, v.Path, 20, 1000, 1)
	if _, err := b.Snapshot(t.Context(), "v", "s"); err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.FilesCloned != 0 || st.FilesCopied != 20 || st.BytesCopied != 20000 {
		t.Errorf("stats on tmpfs: %+v, want 20 files copied", st)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRootLocked(t *testing.T) {
	root := t.TempDir()
	b := open(t, root)
	if _, err := localdisk.New(root); !errors.Is(err, snapshot.ErrBusy) {
		t.Fatalf("second New on one root: %v, want ErrBusy", err)
	}
	b.Close()
	open(t, root)
}

// TestRecoverAfterCrash plants what a crash can leave behind and checks
// New cleans it up.
func TestRecoverAfterCrash(t *testing.T) {
	root := t.TempDir()
	b := open(t, root)
	ctx := t.Context()
	v, err := b.CreateVolume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	w, err := b.CreateVolume(ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	snapshottest.WriteTree(t, v.Path, snapshottest.StandardTree()...)
	want := snapshottest.TreeHash(t, v.Path)
	if _, err := b.Snapshot(ctx, "v", "s"); err != nil {
		t.Fatal(err)
	}
	snapshottest.WriteTree(t, w.Path, snapshottest.File("w", "w", 0o644))
	wantW := snapshottest.TreeHash(t, w.Path)
	b.Close()

	mk := func(p string) {
		t.Helper()
		snapshottest.WriteTree(t, filepath.Join(root, p), snapshottest.File("junk/x", "junk", 0o444), snapshottest.Dir("junk", 0o555))
	}
	mk("volumes/.tmp-clone")                                             // an interrupted CloneVolume or CreateVolume
	mk("volumes/v/.tmp-rollback")                                        // an interrupted Rollback's copy
	mk("snapshots/v/.tmp-snap")                                          // an interrupted Snapshot
	mk("snapshots/.tmp-destroyed")                                       // an interrupted DestroyVolume
	mk("snapshots/gone/s1/tree")                                         // snapshots of a destroyed volume
	mk("volumes/w/.tmp-new-tree")                                        // a non-atomic rollback caught between
	err = os.Rename(w.Path, filepath.Join(root, "volumes/w/.tmp-old-x")) // its two renames
	if err != nil {
		t.Fatal(err)
	}

	b = open(t, root)
	for _, p := range []string{"volumes/.tmp-clone", "volumes/v/.tmp-rollback", "snapshots/v/.tmp-snap", "snapshots/.tmp-destroyed", "snapshots/gone", "volumes/w/.tmp-new-tree", "volumes/w/.tmp-old-x"} {
		if _, err := os.Lstat(filepath.Join(root, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("leftover %s still there after New (%v)", p, err)
		}
	}
	vols, err := b.Volumes(ctx)
	if err != nil || len(vols) != 2 {
		t.Fatalf("Volumes = %+v, %v; want v and w", vols, err)
	}
	if got := snapshottest.TreeHash(t, v.Path); got != want {
		t.Errorf("volume v changed by recovery")
	}
	if got := snapshottest.TreeHash(t, w.Path); got != wantW {
		t.Errorf("volume w not restored from the interrupted rollback")
	}
	ss, err := b.Snapshots(ctx, "v")
	if err != nil || len(ss) != 1 || ss[0].Name != "s" {
		t.Errorf("Snapshots(v) = %+v, %v; want [s]", ss, err)
	}
	if _, err := b.CreateVolume(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if ss, err := b.Snapshots(ctx, "gone"); err != nil || len(ss) != 0 {
		t.Errorf("a re-created volume inherited old snapshots: %+v, %v", ss, err)
	}
}

func TestCanceledContext(t *testing.T) {
	b := open(t, t.TempDir())
	v, err := b.CreateVolume(t.Context(), "v")
	if err != nil {
		t.Fatal(err)
	}
	snapshottest.FillTree(t, v.Path, 50, 100, 1)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := b.Snapshot(ctx, "v", "s"); !errors.Is(err, context.Canceled) {
		t.Errorf("Snapshot with a canceled context: %v", err)
	}
	if ss, _ := b.Snapshots(t.Context(), "v"); len(ss) != 0 {
		t.Errorf("a canceled Snapshot left %+v", ss)
	}
	ents, _ := os.ReadDir(filepath.Join(b.Root(), "snapshots", "v"))
	if len(ents) != 0 {
		t.Errorf("a canceled Snapshot left %d entries on disk", len(ents))
	}
}

func TestSizeBytes(t *testing.T) {
	b := open(t, t.TempDir())
	v, err := b.CreateVolume(t.Context(), "v")
	if err != nil {
		t.Fatal(err)
	}
	snapshottest.FillTree(t, v.Path, 16, 64<<10, 1)
	snapshottest.WriteTree(t, v.Path, snapshottest.HardLink("d000/link", "d000/f00000"))
	s, err := b.Snapshot(t.Context(), "v", "s")
	if err != nil {
		t.Fatal(err)
	}
	vol, err := b.Volume(t.Context(), "v")
	if err != nil {
		t.Fatal(err)
	}
	const data = 16 * 64 << 10
	for what, n := range map[string]int64{"snapshot": s.SizeBytes, "volume": vol.SizeBytes} {
		if n < data || n > data+64<<10 {
			t.Errorf("%s SizeBytes = %d, want about %d (hard link counted once)", what, n, data)
		}
	}
}

// TestSameVolumeSerialized hammers one volume from several goroutines: the
// backend serializes the calls, and every rollback yields an exact
// snapshot.
func TestSameVolumeSerialized(t *testing.T) {
	b := open(t, t.TempDir())
	ctx := t.Context()
	v, err := b.CreateVolume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	snapshottest.FillTree(t, v.Path, 30, 500, 1)
	if _, err := b.Snapshot(ctx, "v", "base"); err != nil {
		t.Fatal(err)
	}
	want := snapshottest.TreeHash(t, v.Path)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 5 {
				if _, err := b.Snapshot(ctx, "v", fmt.Sprintf("g%d-%d", i, j)); err != nil {
					t.Error(err)
				}
				if err := b.Rollback(ctx, "v", "base"); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if got := snapshottest.TreeHash(t, v.Path); got != want {
		t.Errorf("tree differs after concurrent rollbacks")
	}
	ss, err := b.Snapshots(ctx, "v")
	if err != nil || len(ss) != 21 {
		t.Errorf("%d snapshots (%v), want 21", len(ss), err)
	}
}

// TestMountPointNotCrossed: a filesystem mounted inside a volume is not
// copied into its snapshots (like btrfs and zfs snapshots).
func TestMountPointNotCrossed(t *testing.T) {
	testenv.RequireRoot(t)
	b := open(t, t.TempDir())
	v, err := b.CreateVolume(t.Context(), "v")
	if err != nil {
		t.Fatal(err)
	}
	snapshottest.WriteTree(t, v.Path, snapshottest.File("mnt/under-mount", "hidden", 0o644), snapshottest.File("top", "x", 0o644))
	mnt := filepath.Join(v.Path, "mnt")
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	snapshottest.WriteTree(t, mnt, snapshottest.File("on-mount", "other fs", 0o644))
	if _, err := b.Snapshot(t.Context(), "v", "s"); err != nil {
		t.Fatal(err)
	}
	c, err := b.CloneVolume(t.Context(), "c", "v", "s")
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Join(c.Path, "mnt"))
	if err != nil || len(ents) != 0 {
		t.Errorf("mount point in the copy: %v entries (%v), want an empty directory", len(ents), err)
	}
	if _, err := os.Stat(filepath.Join(c.Path, "top")); err != nil {
		t.Error(err)
	}
	// Destroying the volume must not delete the mounted filesystem's files.
	if err := b.DestroyVolume(t.Context(), "v"); !errors.Is(err, snapshot.ErrBusy) {
		t.Errorf("DestroyVolume of a volume with a mount inside: %v, want ErrBusy", err)
	}
	if err := b.Rollback(t.Context(), "v", "s"); !errors.Is(err, snapshot.ErrBusy) {
		t.Errorf("Rollback of a volume with a mount inside: %v, want ErrBusy", err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "on-mount")); err != nil {
		t.Errorf("a file on a filesystem mounted inside the volume was deleted: %v", err)
	}
}
