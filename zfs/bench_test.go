package zfs_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/turnbox/turnbox/zfs"
	"github.com/turnbox/turnbox/zfs/zfstest"
)

var benchSeq int

// benchEnv returns a backend with one volume holding a small tree, and a
// raw dataset with the same tree for the command baselines.
func benchEnv(b *testing.B) (be *zfs.Backend, volume, raw, rawDir, rawParent, root string) {
	b.Helper()
	pool := zfstest.NewPool(b, 1<<30)
	benchSeq++
	root = b.TempDir()
	be, err := zfs.NewBackend(b.Context(), zfs.NewCommandDriver(), pool+"/tb", filepath.Join(root, "vols"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { be.Close(); zfstest.DestroyAll(b, pool+"/tb"); zfstest.DestroyAll(b, pool+"/raw") })
	v, err := be.CreateVolume(b.Context(), "v")
	if err != nil {
		b.Fatal(err)
	}
	rawParent = pool + "/raw"
	raw = rawParent + "/ds"
	rawDir = filepath.Join(root, "raw")
	if out, err := exec.Command("zfs", "create", "-p", "-o", "mountpoint="+rawDir, raw).CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	for _, dir := range []string{v.Path, rawDir} {
		for i := 0; i < 100; i++ {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", i)), make([]byte, 4096), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	return be, "v", raw, rawDir, rawParent, filepath.Join(root, "rawclones")
}

func BenchmarkSnapshot(b *testing.B) {
	b.Run("backend", func(b *testing.B) {
		be, v, _, _, _, _ := benchEnv(b)
		zfstest.BenchSnapshot(b, be, v)
	})
	b.Run("raw", func(b *testing.B) {
		_, _, raw, _, _, _ := benchEnv(b)
		zfstest.BenchRawSnapshot(b, raw)
	})
}

func BenchmarkRollbackNewest(b *testing.B) {
	b.Run("backend", func(b *testing.B) {
		be, v, _, _, _, _ := benchEnv(b)
		zfstest.BenchRollbackNewest(b, be, v)
	})
	b.Run("raw", func(b *testing.B) {
		_, _, raw, dir, _, _ := benchEnv(b)
		zfstest.BenchRawRollbackNewest(b, raw, dir)
	})
}

func BenchmarkRollbackOlder(b *testing.B) {
	b.Run("backend", func(b *testing.B) {
		be, v, _, _, _, _ := benchEnv(b)
		zfstest.BenchRollbackOlder(b, be, v)
	})
	b.Run("raw", func(b *testing.B) {
		_, _, raw, dir, _, _ := benchEnv(b)
		zfstest.BenchRawRollbackOlder(b, raw, dir)
	})
}

func BenchmarkClone(b *testing.B) {
	b.Run("backend", func(b *testing.B) {
		be, v, _, _, _, _ := benchEnv(b)
		zfstest.BenchClone(b, be, v)
	})
	b.Run("raw", func(b *testing.B) {
		_, _, raw, _, parent, root := benchEnv(b)
		zfstest.BenchRawClone(b, raw, parent, root)
	})
}
