//go:build linux && cgo

package btrfs_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	cbtrfs "github.com/containerd/btrfs/v2"

	"github.com/turnbox/turnbox/snapshot"
	"github.com/turnbox/turnbox/snapshot/btrfs"
	"github.com/turnbox/turnbox/snapshot/btrfs/btrfstest"
)

// Benchmarks. The numbers reported for this package came from
//
//	go test -c -o btrfs.test ./snapshot/btrfs
//	for i in 1 2 3 4; do ./btrfs.test -test.run '^$' -test.bench '.*/files=(1000|10000)$/(turnbox|raw)$' -test.benchtime 30x; done
//	./btrfs.test -test.run '^$' -test.bench 'Snapshot/files=(1000|100000)$/(turnbox|raw)$' -test.benchtime 30x -test.count 3
//	./btrfs.test -test.run '^$' -test.bench 'Snapshot/files=(1000|10000)$/full-copy' -test.benchtime 2x -test.count 2
//
// (separate processes interleave turnbox and raw; -count repeats one
// sub-benchmark back to back). About 40 minutes on a loaded 2-core VM,
// mostly untimed setup: building trees, deleting snapshots, waiting for
// the cleaner.
//
// Every benchmark runs on a loop-mounted btrfs image whose tree is built
// once per process (building 100,000 files takes seconds) and torn down in
// TestMain. Each size has sub-benchmarks turnbox (the Backend), raw (the
// bare ioctls) and, for snapshot, full-copy (cp -a --reflink=never).

// fixture is one mounted filesystem with a backend volume "w" holding the
// tree, snapshots "a" (the tree) and "b" (the tree plus one file).
type fixture struct {
	fs    btrfstest.FS
	be    *btrfs.Backend
	files int
}

var (
	fixturesMu sync.Mutex
	fixtures   = map[int]*fixture{}
)

// treeSizes maps a file count to the file size: ~100 MB for 10,000 files.
var treeSizes = map[int]int{1000: 10 << 10, 10000: 10 << 10, 100000: 1 << 10}

func getFixture(b *testing.B, files int) *fixture {
	b.Helper()
	btrfstest.Require(b)
	fixturesMu.Lock()
	defer fixturesMu.Unlock()
	if f := fixtures[files]; f != nil {
		return f
	}
	dir, err := os.MkdirTemp("", "btrfs-bench-")
	if err != nil {
		b.Fatal(err)
	}
	fsys, err := btrfstest.MountImage(dir, 8<<30, btrfstest.DefaultOptions)
	if err != nil {
		b.Fatal(err)
	}
	f := &fixture{fs: fsys, files: files}
	fixtures[files] = f // torn down by TestMain even if the rest fails
	f.be, err = btrfs.New(filepath.Join(fsys.Dir, "tb"))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	v, err := f.be.CreateVolume(ctx, "w")
	if err != nil {
		b.Fatal(err)
	}
	if err := btrfstest.MakeTree(filepath.Join(v.Path, "tree"), files, treeSizes[files], 1); err != nil {
		b.Fatal(err)
	}
	if _, err := f.be.Snapshot(ctx, "w", "a"); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v.Path, "b"), []byte("b"), 0o644); err != nil {
		b.Fatal(err)
	}
	if _, err := f.be.Snapshot(ctx, "w", "b"); err != nil {
		b.Fatal(err)
	}
	return f
}

func (f *fixture) workspace() string { return filepath.Join(f.be.Root(), "volumes", "w", "workspace") }
func (f *fixture) snap(name string) string {
	return filepath.Join(f.be.Root(), "snapshots", "w", name)
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, f := range fixtures {
		if f.be != nil {
			f.be.Close()
		}
		if err := f.fs.Unmount(); err != nil {
			fmt.Fprintln(os.Stderr, "btrfs bench teardown:", err)
		}
		os.RemoveAll(filepath.Dir(f.fs.Image))
	}
	os.Exit(code)
}

func BenchmarkSnapshot(b *testing.B) {
	for _, files := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("files=%d", files), func(b *testing.B) {
			f := getFixture(b, files)
			b.Run("turnbox", func(b *testing.B) {
				btrfstest.Settle(b, f.fs.Dir)
				btrfstest.BenchSnapshot(b, f.be, "w")
			})
			b.Run("raw", func(b *testing.B) {
				btrfstest.Settle(b, f.fs.Dir)
				btrfstest.BenchRawSnapshot(b, f.workspace(), filepath.Join(f.fs.Dir, "raw"), true, true)
			})
			if files == 1000 {
				// What an explicit sync after the snapshot ioctl would
				// add (the ioctl has committed already, see Snapshot).
				b.Run("turnbox+syncfs", func(b *testing.B) {
					btrfstest.Settle(b, f.fs.Dir)
					btrfstest.BenchSnapshot(b, syncAfterSnapshot{f.be, f.fs.Dir}, "w")
				})
			}
			if files <= 10000 {
				b.Run("full-copy", func(b *testing.B) {
					btrfstest.Settle(b, f.fs.Dir)
					btrfstest.BenchFullCopy(b, f.workspace(), filepath.Join(f.fs.Dir, "copies"))
				})
			}
		})
	}
}

func BenchmarkRollback(b *testing.B) {
	for _, files := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("files=%d", files), func(b *testing.B) {
			f := getFixture(b, files)
			b.Run("turnbox", func(b *testing.B) {
				btrfstest.Settle(b, f.fs.Dir)
				btrfstest.BenchRollback(b, f.be, "w", "a", "b")
			})
			b.Run("raw", func(b *testing.B) {
				ws := filepath.Join(f.fs.Dir, "rawvol", "workspace")
				if _, err := os.Stat(ws); err != nil {
					if err := os.MkdirAll(filepath.Dir(ws), 0o755); err != nil {
						b.Fatal(err)
					}
					if err := cbtrfs.SubvolSnapshot(ws, f.snap("a"), false); err != nil {
						b.Fatal(err)
					}
				}
				btrfstest.Settle(b, f.fs.Dir)
				btrfstest.BenchRawRollback(b, ws, f.snap("a"), f.snap("b"))
			})
		})
	}
}

func BenchmarkClone(b *testing.B) {
	for _, files := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("files=%d", files), func(b *testing.B) {
			f := getFixture(b, files)
			b.Run("turnbox", func(b *testing.B) {
				btrfstest.Settle(b, f.fs.Dir)
				btrfstest.BenchClone(b, f.be, "w", "a")
			})
			b.Run("raw", func(b *testing.B) {
				btrfstest.Settle(b, f.fs.Dir)
				btrfstest.BenchRawSnapshot(b, f.snap("a"), filepath.Join(f.fs.Dir, "rawclones"), false, false)
			})
		})
	}
}

// syncAfterSnapshot is a Backend whose Snapshot also syncs the filesystem.
type syncAfterSnapshot struct {
	snapshot.Backend
	dir string
}

func (s syncAfterSnapshot) Snapshot(ctx context.Context, volume, name string) (snapshot.Snapshot, error) {
	snap, err := s.Backend.Snapshot(ctx, volume, name)
	if err == nil {
		err = btrfstest.SyncFS(s.dir)
	}
	return snap, err
}
