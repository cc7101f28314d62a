package benchmarks

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/internal/regtest"
)

// imagePullMB is the size of BenchmarkImagePull's image:
// $TURNBOX_BENCH_IMAGE_MB, default 100, in layers of 25 MB (or one
// smaller layer).
func imagePullMB() int64 {
	if n, err := strconv.ParseInt(os.Getenv("TURNBOX_BENCH_IMAGE_MB"), 10, 64); err == nil && n > 0 {
		return n
	}
	return 100
}

// BenchmarkImagePull pulls a ~100 MB image of random (incompressible)
// layers from a registry on 127.0.0.1, into a fresh directory each
// time: "turnbox" with rootfs.Pull (what turnbox image pull and
// Host.PullImage run), "ggcr" with go-containerregistry's own
// remote.Image and mutate.Extract piped into tar -x. The target is
// turnbox within 1.5x of ggcr; the ratio is logged and reported as a
// metric of "turnbox" when both ran. Run with e.g.
//
//	go test -run '^$' -bench ImagePull -benchtime 3x ./benchmarks
func BenchmarkImagePull(b *testing.B) {
	mb := imagePullMB()
	layer, layers := int64(25<<20), mb/25
	if layers == 0 {
		layer, layers = mb<<20, 1
	}
	ref := regtest.Start(b) + "/bench/random:1"
	regtest.Push(b, ref, regtest.Random(b, layer, int(layers)))
	per := map[string]time.Duration{}
	for _, c := range []struct {
		name string
		pull func(ctx context.Context, ref, dst string) error
	}{{"ggcr", ggcrPull}, {"turnbox", turnboxPull}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(layer * layers)
			var total time.Duration
			for i := range b.N {
				b.StopTimer()
				dst := filepath.Join(b.TempDir(), "img"+strconv.Itoa(i))
				b.StartTimer()
				start := time.Now()
				if err := c.pull(b.Context(), ref, dst); err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
				b.StopTimer()
				_ = os.RemoveAll(dst)
				b.StartTimer()
			}
			per[c.name] = total / time.Duration(b.N)
			if g := per["ggcr"]; c.name == "turnbox" && g > 0 {
				ratio := float64(per["turnbox"]) / float64(g)
				b.ReportMetric(ratio, "x_ggcr")
				b.Logf("%d MB: turnbox %v, ggcr %v per pull: %.2fx (target <= 1.5x)", mb, per["turnbox"], g, ratio)
			}
		})
	}
}

// turnboxPull is turnbox's pull.
func turnboxPull(ctx context.Context, ref, dst string) error {
	_, err := rootfs.Pull(ctx, ref, dst, rootfs.PullOptions{Insecure: true})
	return err
}

// ggcrPull is go-containerregistry's pull and flatten, extracted by tar.
func ggcrPull(ctx context.Context, ref, dst string) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	img, err := remote.Image(r, remote.WithContext(ctx))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	cmd := exec.CommandContext(ctx, "tar", "-x", "-C", dst)
	cmd.Stdin = rc
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("tar -x: %w: %s", err, out)
	}
	return nil
}
