//go:build linux

package localdisk_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/turnbox/turnbox/snapshot/localdisk"
	"github.com/turnbox/turnbox/snapshot/snapshottest"
)

// The benchmark tree: 1,000 files of 4 KiB in 10 directories (about the
// shape of a source checkout's working set).
const (
	benchFiles    = 1000
	benchFileSize = 4 << 10
)

// benchSetup is one storage configuration the benchmarks run on.
type benchSetup struct {
	name string
	dir  func(b *testing.B) string // a fresh directory on the filesystem
	opts []localdisk.Option
}

func benchSetups() []benchSetup {
	tmp := func(b *testing.B) string { return b.TempDir() }
	xfs := func(b *testing.B) string {
		if os.Geteuid() != 0 {
			b.Skip("XFS loop mount needs root")
		}
		return mountXFS(b)
	}
	return []benchSetup{
		{name: "tmpdir-durable", dir: tmp},
		{name: "tmpdir-nosync", dir: tmp, opts: []localdisk.Option{localdisk.WithoutSync()}},
		{name: "xfs-reflink-durable", dir: xfs},
		{name: "xfs-reflink-nosync", dir: xfs, opts: []localdisk.Option{localdisk.WithoutSync()}},
	}
}

// benchVolume opens a backend in dir with a volume "v" holding the
// benchmark tree.
func benchVolume(b *testing.B, dir string, opts ...localdisk.Option) (*localdisk.Backend, string) {
	b.Helper()
	be, err := localdisk.New(filepath.Join(dir, "root"), opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { be.Close() })
	v, err := be.CreateVolume(b.Context(), "v")
	if err != nil {
		b.Fatal(err)
	}
	snapshottest.FillTree(b, v.Path, benchFiles, benchFileSize, 1)
	return be, v.Path
}

// BenchmarkSnapshot measures Snapshot of the benchmark tree.
func BenchmarkSnapshot(b *testing.B) {
	for _, s := range benchSetups() {
		b.Run(s.name, func(b *testing.B) {
			be, _ := benchVolume(b, s.dir(b), s.opts...)
			ctx := b.Context()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				name := fmt.Sprintf("s%d", i)
				if _, err := be.Snapshot(ctx, "v", name); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := be.DestroySnapshot(ctx, "v", name); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkRollback measures Rollback of the benchmark tree to a
// snapshot (copy beside the volume, exchange, delete the old tree).
func BenchmarkRollback(b *testing.B) {
	for _, s := range benchSetups() {
		b.Run(s.name, func(b *testing.B) {
			be, _ := benchVolume(b, s.dir(b), s.opts...)
			ctx := b.Context()
			if _, err := be.Snapshot(ctx, "v", "s"); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := be.Rollback(ctx, "v", "s"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkClone measures CloneVolume from a snapshot of the benchmark
// tree.
func BenchmarkClone(b *testing.B) {
	for _, s := range benchSetups() {
		b.Run(s.name, func(b *testing.B) {
			be, _ := benchVolume(b, s.dir(b), s.opts...)
			ctx := b.Context()
			if _, err := be.Snapshot(ctx, "v", "s"); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				name := fmt.Sprintf("c%d", i)
				if _, err := be.CloneVolume(ctx, name, "v", "s"); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := be.DestroyVolume(ctx, name); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkFullCopy is the baseline: `cp -a` of the same tree on the same
// filesystem (no fsync; GNU cp reflinks by default where it can).
func BenchmarkFullCopy(b *testing.B) {
	for _, s := range benchSetups() {
		if len(s.opts) > 0 {
			continue // cp has no durable/nosync variants
		}
		b.Run(s.name[:len(s.name)-len("-durable")]+"-cp-a", func(b *testing.B) {
			_, src := benchVolume(b, s.dir(b), localdisk.WithoutSync())
			dstRoot := filepath.Join(filepath.Dir(src), "..", "..", "cp")
			if err := os.MkdirAll(dstRoot, 0o755); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				dst := filepath.Join(dstRoot, fmt.Sprint(i))
				if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
					b.Fatalf("cp -a: %v\n%s", err, out)
				}
				b.StopTimer()
				if err := os.RemoveAll(dst); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
