package rootfs_test

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/turnbox/turnbox/container/rootfs"
)

// testRegistry is go-containerregistry's in-process registry on
// loopback. While tamper holds a digest, that blob is served with its
// first byte flipped.
type testRegistry struct {
	host   string
	tamper atomic.Value // string
}

func startRegistry(t *testing.T) *testRegistry {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	tr := &testRegistry{}
	tr.tamper.Store("")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := tr.tamper.Load().(string)
		if d == "" || r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+d) {
			reg.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		reg.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		if len(body) > 0 {
			body[0] ^= 0xff
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	tr.host = strings.TrimPrefix(srv.URL, "http://")
	return tr
}

// push writes img to the registry as repo:tag and returns the reference.
func (tr *testRegistry) push(t *testing.T, repoTag string, img v1.Image) string {
	t.Helper()
	ref := tr.host + "/" + repoTag
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	return ref
}

// configured is a small image for this host with a file, a symlink and a
// directory, and a configuration with Env, WorkingDir, User and a command.
func configured(t *testing.T) v1.Image {
	t.Helper()
	img := image(t, "linux/"+runtime.GOARCH, layer(t,
		dir("app/", 0o750),
		file("app/main.py", "print('hi')\n", 0o644),
		symlink("app/latest", "main.py"),
	))
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Env = []string{"PATH=/usr/bin", "APP=1"}
	cf.Config.WorkingDir = "/app"
	cf.Config.User = "1000:1000"
	cf.Config.Cmd = []string{"python", "main.py"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestPull(t *testing.T) {
	tr := startRegistry(t)
	img := configured(t)
	ref := tr.push(t, "org/app:1", img)
	want, _ := img.Digest()

	images := t.TempDir()
	dst := filepath.Join(images, "app")
	var last, total int64
	res, err := rootfs.Pull(context.Background(), ref, dst, rootfs.PullOptions{Insecure: true, Progress: func(d, tot int64) { last, total = d, tot }})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "app/main.py")); err != nil || string(b) != "print('hi')\n" {
		t.Errorf("app/main.py: %q, %v", b, err)
	}
	if l, err := os.Readlink(filepath.Join(dst, "app/latest")); err != nil || l != "main.py" {
		t.Errorf("app/latest: %q, %v", l, err)
	}
	if fi, err := os.Lstat(filepath.Join(dst, "app")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o750 {
		t.Errorf("app: %v, %v", fi, err)
	}
	if res.Digest != want.String() {
		t.Errorf("digest %q, want %q", res.Digest, want)
	}
	c := res.Config
	if !slices.Equal(c.Env, []string{"PATH=/usr/bin", "APP=1"}) || c.WorkingDir != "/app" || c.User != "1000:1000" || !slices.Equal(c.Cmd, []string{"python", "main.py"}) {
		t.Errorf("config %+v", c)
	}
	if res.Platform != "linux/"+runtime.GOARCH || last != total || total <= 0 {
		t.Errorf("platform %q, progress %d/%d", res.Platform, last, total)
	}
	if _, err := rootfs.Pull(context.Background(), ref, dst, rootfs.PullOptions{Insecure: true}); !errors.Is(err, rootfs.ErrImageExists) {
		t.Errorf("second pull: %v, want ErrImageExists", err)
	}
}

// TestPullPlatform pulls from a multi-platform index: the host's image is
// taken, another is taken when asked for.
func TestPullPlatform(t *testing.T) {
	tr := startRegistry(t)
	host := "linux/" + runtime.GOARCH
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: marker(t, "linux/s390x", "s390x"), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "s390x"}}},
		mutate.IndexAddendum{Add: marker(t, host, "host"), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
	)
	r, _ := name.ParseReference(tr.host+"/multi:1", name.Insecure)
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ platform, want string }{{"", "host"}, {"linux/s390x", "s390x"}} {
		dst := filepath.Join(t.TempDir(), "m")
		if _, err := rootfs.Pull(context.Background(), r.String(), dst, rootfs.PullOptions{Insecure: true, Platform: c.platform}); err != nil {
			t.Fatalf("platform %q: %v", c.platform, err)
		}
		if b, _ := os.ReadFile(filepath.Join(dst, "which")); string(b) != c.want {
			t.Errorf("platform %q: marker %q, want %q", c.platform, b, c.want)
		}
	}
}

// TestPullTampered serves a layer blob that does not match its digest:
// the pull fails and leaves nothing in the images directory.
func TestPullTampered(t *testing.T) {
	tr := startRegistry(t)
	img := configured(t)
	ref := tr.push(t, "org/app:1", img)
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := ls[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	tr.tamper.Store(d.String())
	images := t.TempDir()
	_, err = rootfs.Pull(context.Background(), ref, filepath.Join(images, "app"), rootfs.PullOptions{Insecure: true})
	if err == nil || !strings.Contains(err.Error(), d.String()) {
		t.Fatalf("pull of a tampered layer: %v; want it to fail naming the layer's digest", err)
	}
	t.Log(err)
	if ents, _ := os.ReadDir(images); len(ents) != 0 {
		t.Errorf("images dir holds %d entries after a failed pull, want none", len(ents))
	}
	// The same pull, untampered, works: the failure was the blob's.
	tr.tamper.Store("")
	if _, err := rootfs.Pull(context.Background(), ref, filepath.Join(images, "app"), rootfs.PullOptions{Insecure: true}); err != nil {
		t.Fatal(err)
	}
}

func TestPullBadRef(t *testing.T) {
	tr := startRegistry(t)
	images := t.TempDir()
	for _, c := range []struct {
		name, ref string
		opts      rootfs.PullOptions
		want      string
	}{
		{"unknown tag", tr.host + "/nope:1", rootfs.PullOptions{Insecure: true}, "UNKNOWN"},
		{"malformed", "Bad Ref!", rootfs.PullOptions{}, "bad image reference"},
		{"http off loopback", "example.com/x:1", rootfs.PullOptions{Insecure: true}, "only to a registry on loopback"},
		{"http to .localhost", "registry.localhost:5000/x:1", rootfs.PullOptions{}, "only to a registry on loopback"},
		{"http to a private address", "10.1.2.3:5000/x:1", rootfs.PullOptions{}, "only to a registry on loopback"},
		{"bad platform", tr.host + "/nope:1", rootfs.PullOptions{Insecure: true, Platform: "linux"}, "want os/arch"},
	} {
		_, err := rootfs.Pull(context.Background(), c.ref, filepath.Join(images, "x"), c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
	}
	if ents, _ := os.ReadDir(images); len(ents) != 0 {
		t.Errorf("images dir holds %d entries after failed pulls", len(ents))
	}
}

func TestRepositoryBase(t *testing.T) {
	for ref, want := range map[string]string{
		"debian:12":               "debian",
		"ghcr.io/org/python:3.12": "python",
		"localhost:5000/a/b/c@sha256:" + strings.Repeat("0", 64): "c",
		"Bad Ref!": "",
	} {
		if got := rootfs.RepositoryBase(ref); got != want {
			t.Errorf("RepositoryBase(%q) = %q, want %q", ref, got, want)
		}
	}
}

// TestImportConfig: Import returns the image's config and digest too.
func TestImportConfig(t *testing.T) {
	img := configured(t)
	want, _ := img.Digest()
	res, err := rootfs.Import(context.Background(), writeLayout(t, layoutImage{img: img}), filepath.Join(t.TempDir(), "app"), rootfs.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest != want.String() || res.Config.WorkingDir != "/app" || res.Config.User != "1000:1000" || len(res.Config.Env) != 2 {
		t.Errorf("digest %q (want %q), config %+v", res.Digest, want, res.Config)
	}
}
