package benchmarks

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/turnbox/turnbox/container/agent/agenttest"
	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/internal/regtest"
)

// pulledImageLayers and pulledLayerBytes make the pulled image of
// BenchmarkCreateFromImage about 100 MB of random files, on top of a
// busybox layer.
const pulledImageLayers, pulledLayerBytes = 4, 25 << 20

// BenchmarkCreateFromImage times creating a session (a clone of the
// image's base volume and a started gVisor sandbox; destroys are not
// timed) on btrfs from the busybox image and from a ~100 MB image pulled
// from an in-process registry on loopback with an ENV, WORKDIR and USER,
// side by side on one host, and logs (-v) the pulled/busybox ratio (target:
// at most 1.2: the image is a clone, not a copy). Each image's base
// volume is made before timing. E.g.
//
//	go test -v -run '^$' -bench CreateFromImage -benchtime 10x ./benchmarks
func BenchmarkCreateFromImage(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("gVisor and btrfs need root")
	}
	for _, bin := range []string{"runsc", "mkfs.btrfs"} {
		if _, err := exec.LookPath(bin); err != nil {
			b.Skipf("no %s on PATH", bin)
		}
	}
	ctx := context.Background()
	scratch, err := TempBtrfs(2 << 30)
	if err != nil {
		b.Fatal(err)
	}
	defer scratch.Close()
	state := b.TempDir()
	pullImage(b, filepath.Join(state, "images"), "pulled")
	h, err := embedded.NewHost(ctx, embedded.Config{
		StateDir: state, StorageBackend: embedded.StorageBackendBtrfs, StorageRoot: scratch.Dir,
		ContainerRuntime: embedded.ContainerRuntimeGVisor, AgentPath: agenttest.Build(b),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close(context.WithoutCancel(ctx))
	// The first create from each image makes its base volume; the pulled
	// image's config must apply.
	if out := createRun(b, h, "pulled", "pwd; id -u; echo $FOO"); out != "/srv/app\n1000\nimg\n" {
		b.Fatalf("a session from the pulled image: %q", out)
	}
	createRun(b, h, "", "true")
	perOp := map[string]time.Duration{}
	for _, image := range []string{"busybox", "pulled"} {
		b.Run(image, func(b *testing.B) {
			b.StopTimer()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StartTimer()
				e, err := h.CreateSession(ctx, environment.SessionConfig{Image: image})
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				if err := e.Destroy(ctx); err != nil {
					b.Fatal(err)
				}
			}
			perOp[image] = b.Elapsed() / time.Duration(b.N)
		})
	}
	if perOp["busybox"] > 0 && perOp["pulled"] > 0 {
		b.Logf("create from image: busybox %v, pulled (~%d MB) %v: ratio %.2f (target <= 1.2)",
			perOp["busybox"], pulledImageLayers*pulledLayerBytes>>20, perOp["pulled"], float64(perOp["pulled"])/float64(perOp["busybox"]))
	}
}

// createRun creates a session from image, runs command in it and
// destroys it, returning the command's output.
func createRun(b *testing.B, h *embedded.Host, image, command string) string {
	b.Helper()
	ctx := context.Background()
	e, err := h.CreateSession(ctx, environment.SessionConfig{Image: image})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Destroy(ctx)
	req, err := environment.NewToolRequest("", environment.BashParams{Command: command})
	if err != nil {
		b.Fatal(err)
	}
	resp, err := e.ExecuteTool(ctx, req, nil)
	if err != nil || resp.ExitCode != 0 {
		b.Fatalf("%q in a session from %q: %v %+v", command, image, err, resp)
	}
	return resp.Content
}

// pullImage serves a ~100 MB image (busybox plus random layers, with an
// ENV, WORKDIR and USER) from go-containerregistry's registry on
// loopback and pulls it into imagesDir as name, with its record.
func pullImage(b *testing.B, imagesDir, imageName string) {
	b.Helper()
	img, err := random.Image(pulledLayerBytes, pulledImageLayers)
	if err != nil {
		b.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, busyboxLayer(b)); err != nil {
		b.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		b.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config = v1.Config{Env: []string{"FOO=img", "PATH=/usr/bin:/bin"}, WorkingDir: "/srv/app", User: "user"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		b.Fatal(err)
	}
	ref := regtest.Start(b) + "/bench/pulled:1"
	regtest.Push(b, ref, img)
	res, err := rootfs.Pull(context.Background(), ref, filepath.Join(imagesDir, imageName), rootfs.PullOptions{Insecure: true})
	if err != nil {
		b.Fatal(err)
	}
	if err := rootfs.WriteMeta(imagesDir, rootfs.Meta{Name: imageName, Source: "pull:" + ref, Digest: res.Digest,
		Created: time.Now().UTC(), Platform: res.Platform, Config: res.Config}); err != nil {
		b.Fatal(err)
	}
}

// busyboxLayer is a layer holding a busybox root (rootfs.BuildBusybox).
func busyboxLayer(b *testing.B) v1.Layer {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "root")
	if err := rootfs.BuildBusybox(dir); err != nil {
		b.Fatal(err)
	}
	return regtest.DirLayer(b, dir)
}
