package rootfs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/turnbox/turnbox/container/rootfs"
)

// ent is one tar entry of a test layer.
type ent struct {
	name     string
	typ      byte
	mode     int64
	body     string
	link     string
	uid, gid int
}

func dir(n string, mode int64) ent { return ent{name: n, typ: tar.TypeDir, mode: mode} }
func file(n, body string, mode int64) ent {
	return ent{name: n, typ: tar.TypeReg, mode: mode, body: body}
}
func symlink(n, target string) ent {
	return ent{name: n, typ: tar.TypeSymlink, mode: 0o777, link: target}
}
func hardlink(n, target string) ent {
	return ent{name: n, typ: tar.TypeLink, mode: 0o644, link: target}
}

var mtime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// tarBytes makes an uncompressed tar of es.
func tarBytes(t testing.TB, es ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Uid: e.uid, Gid: e.gid, ModTime: mtime, Format: tar.FormatPAX}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if e.typ == tar.TypeChar {
			h.Devmajor, h.Devminor = 1, 3
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.body != "" {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// layer makes a (gzip-compressed) layer of es.
func layer(t testing.TB, es ...ent) v1.Layer {
	t.Helper()
	b := tarBytes(t, es...)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// image stacks layers (first = lowest) on an empty image for platform p
// ("" for none).
func image(t testing.TB, p string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	if p != "" {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cf = cf.DeepCopy()
		pl, _ := v1.ParsePlatform(p)
		cf.OS, cf.Architecture, cf.Variant = pl.OS, pl.Architecture, pl.Variant
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// writeLayout writes imgs as an OCI layout in a new directory, each with
// its ref-name annotation and platform descriptor when given.
func writeLayout(t testing.TB, imgs ...layoutImage) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "oci")
	p, err := layout.Write(d, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	for _, li := range imgs {
		var opts []layout.Option
		if li.ref != "" {
			opts = append(opts, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": li.ref}))
		}
		if li.platform != "" {
			pl, _ := v1.ParsePlatform(li.platform)
			opts = append(opts, layout.WithPlatform(*pl))
		}
		if err := p.AppendImage(li.img, opts...); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

type layoutImage struct {
	img           v1.Image
	ref, platform string
}

func writeTarball(t testing.TB, img v1.Image) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "img.tar")
	tag, err := name.NewTag("example.com/test/img:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(f, tag, img); err != nil {
		t.Fatal(err)
	}
	return f
}

// testImage has a base layer with files, directories, symlinks, a hard
// link, a device node and a setuid file, and an upper layer that deletes
// a file (whiteout), replaces a directory's contents (opaque whiteout),
// changes a file and adds one.
func testImage(t testing.TB, platform string) v1.Image {
	base := layer(t,
		dir("bin/", 0o755),
		file("bin/tool", "#!/bin/tool\n", 0o4755),
		symlink("bin/sh", "/bin/tool"),
		dir("etc/", 0o755),
		file("etc/hello", "hello\n", 0o640),
		hardlink("etc/hello-link", "etc/hello"),
		file("etc/gone", "bye\n", 0o644),
		file("etc/motd", "v1\n", 0o644),
		ent{name: "etc/owned", typ: tar.TypeReg, mode: 0o600, body: "x", uid: 1000, gid: 2000},
		symlink("etc/rel", "../bin/tool"),
		dir("opt/private/", 0o700),
		file("./usr/share/doc.txt", "doc", 0o444),
		dir("var/cache/", 0o755),
		file("var/cache/old", "old", 0o644),
		ent{name: "dev/null", typ: tar.TypeChar, mode: 0o666},
		dir("tmp/", 0o1777),
	)
	upper := layer(t,
		dir("etc/", 0o755),
		file("etc/.wh.gone", "", 0o644),
		file("etc/motd", "v2\n", 0o644),
		file("etc/new", "new\n", 0o600),
		dir("var/cache/", 0o755),
		file("var/cache/.wh..wh..opq", "", 0o644),
		file("var/cache/fresh", "fresh", 0o644),
	)
	return image(t, platform, base, upper)
}

func checkTree(t *testing.T, root string, res *rootfs.ImportResult) {
	t.Helper()
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
		}
		return string(b)
	}
	perm := func(p string) os.FileMode {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			return 0
		}
		return fi.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
	}
	missing := func(p string) {
		if _, err := os.Lstat(filepath.Join(root, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s should not exist (err %v)", p, err)
		}
	}
	if got := read("etc/hello"); got != "hello\n" {
		t.Errorf("etc/hello = %q", got)
	}
	if got := read("etc/motd"); got != "v2\n" {
		t.Errorf("etc/motd = %q, want the upper layer's", got)
	}
	if got := read("etc/new"); got != "new\n" {
		t.Errorf("etc/new = %q", got)
	}
	if got := read("usr/share/doc.txt"); got != "doc" {
		t.Errorf("usr/share/doc.txt = %q", got)
	}
	if got := read("var/cache/fresh"); got != "fresh" {
		t.Errorf("var/cache/fresh = %q", got)
	}
	missing("etc/gone")      // whiteout
	missing("var/cache/old") // opaque directory
	missing("etc/.wh.gone")  // markers are not files
	missing("dev/null")      // devices skipped
	for p, want := range map[string]os.FileMode{
		"etc/hello": 0o640, "etc/new": 0o600, "usr/share/doc.txt": 0o444,
		"opt/private": 0o700, "etc": 0o755, "tmp": 0o777 | os.ModeSticky, ".": 0o755,
	} {
		if got := perm(p); got != want {
			t.Errorf("mode of %s = %v, want %v", p, got, want)
		}
	}
	if os.Geteuid() == 0 {
		if got := perm("bin/tool"); got != 0o755|os.ModeSetuid {
			t.Errorf("mode of bin/tool = %v, want setuid 0755", got)
		}
		fi, err := os.Lstat(filepath.Join(root, "etc/owned"))
		if err == nil {
			st := fi.Sys().(*syscall.Stat_t)
			if st.Uid != 1000 || st.Gid != 2000 {
				t.Errorf("etc/owned owned by %d:%d, want 1000:2000", st.Uid, st.Gid)
			}
		}
	}
	for p, want := range map[string]string{"bin/sh": "/bin/tool", "etc/rel": "../bin/tool"} {
		if got, err := os.Readlink(filepath.Join(root, p)); err != nil || got != want {
			t.Errorf("readlink %s = %q, %v; want %q", p, got, err, want)
		}
	}
	a, err1 := os.Stat(filepath.Join(root, "etc/hello"))
	b, err2 := os.Stat(filepath.Join(root, "etc/hello-link"))
	if err1 != nil || err2 != nil || !os.SameFile(a, b) {
		t.Errorf("etc/hello-link is not a hard link of etc/hello: %v %v", err1, err2)
	}
	if fi, err := os.Stat(filepath.Join(root, "etc/hello")); err == nil && !fi.ModTime().Equal(mtime) {
		t.Errorf("mtime of etc/hello = %v, want %v", fi.ModTime(), mtime)
	}
	if res.SkippedDevices != 1 || res.Hardlinks != 1 || res.Layers != 2 || !res.HasShell {
		t.Errorf("result %+v: want 1 skipped device, 1 hard link, 2 layers, a shell", res)
	}
}

func TestImport(t *testing.T) {
	img := testImage(t, "linux/"+runtime.GOARCH)
	for _, c := range []struct{ name, src string }{
		{"oci-layout", writeLayout(t, layoutImage{img: img, ref: "1"})},
		{"docker-tarball", writeTarball(t, img)},
	} {
		t.Run(c.name, func(t *testing.T) {
			images := t.TempDir()
			dst := filepath.Join(images, "test")
			var last, total int64
			calls := 0
			res, err := rootfs.Import(context.Background(), c.src, dst, rootfs.ImportOptions{Progress: func(d, tot int64) {
				if d < last {
					t.Errorf("progress went back: %d after %d", d, last)
				}
				last, total = d, tot
				calls++
			}})
			if err != nil {
				t.Fatal(err)
			}
			checkTree(t, dst, res)
			if calls < 2 || last != total || total <= 0 || res.Bytes <= 0 {
				t.Errorf("progress: %d calls, last %d/%d, bytes %d", calls, last, total, res.Bytes)
			}
			if res.Platform != "linux/"+runtime.GOARCH {
				t.Errorf("platform %q", res.Platform)
			}
			ents, _ := os.ReadDir(images)
			if len(ents) != 1 {
				t.Errorf("images dir holds %d entries, want just the image (no temporary left)", len(ents))
			}
			// A second import to the same name is refused.
			if _, err := rootfs.Import(context.Background(), c.src, dst, rootfs.ImportOptions{}); !errors.Is(err, rootfs.ErrImageExists) {
				t.Errorf("second import: %v, want ErrImageExists", err)
			}
		})
	}
}

func TestImportNoShell(t *testing.T) {
	src := writeLayout(t, layoutImage{img: image(t, "", layer(t, file("etc/x", "x", 0o644)))})
	res, err := rootfs.Import(context.Background(), src, filepath.Join(t.TempDir(), "img"), rootfs.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.HasShell {
		t.Error("HasShell without /bin/sh")
	}
}

func marker(t testing.TB, p, content string) v1.Image {
	return image(t, p, layer(t, file("which", content, 0o644)))
}

func TestImportPlatformAndRef(t *testing.T) {
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	host := "linux/" + runtime.GOARCH
	multi := writeLayout(t,
		layoutImage{img: marker(t, "linux/"+other, other), platform: "linux/" + other},
		layoutImage{img: marker(t, host, "host"), platform: host},
	)
	foreign := writeLayout(t,
		layoutImage{img: marker(t, "linux/s390x", "s390x"), platform: "linux/s390x"},
		layoutImage{img: marker(t, "linux/ppc64le", "ppc64le"), platform: "linux/ppc64le"},
	)
	named := writeLayout(t,
		layoutImage{img: marker(t, "", "a"), ref: "a"},
		layoutImage{img: marker(t, "", "b"), ref: "b"},
	)
	for _, c := range []struct {
		name, src string
		opts      rootfs.ImportOptions
		want      string // content of /which, or "error: substring"
	}{
		{"default picks the host's platform", multi, rootfs.ImportOptions{}, "host"},
		{"--platform picks another", multi, rootfs.ImportOptions{Platform: "linux/" + other}, other},
		{"none matches", foreign, rootfs.ImportOptions{}, "error: --platform"},
		{"explicit platform", foreign, rootfs.ImportOptions{Platform: "linux/s390x"}, "s390x"},
		{"bad platform", foreign, rootfs.ImportOptions{Platform: "s390x"}, "error: os/arch"},
		{"ref a", named, rootfs.ImportOptions{Ref: "a"}, "a"},
		{"ref b", named, rootfs.ImportOptions{Ref: "b"}, "b"},
		{"unknown ref", named, rootfs.ImportOptions{Ref: "c"}, "error: no image named"},
		{"single image of another platform, asked for the host's", writeLayout(t, layoutImage{img: marker(t, "linux/s390x", "x")}), rootfs.ImportOptions{Platform: host}, "error: is for linux/s390x"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "img")
			_, err := rootfs.Import(context.Background(), c.src, dst, c.opts)
			if want, ok := strings.CutPrefix(c.want, "error: "); ok {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("err = %v, want one containing %q", err, want)
				}
				if _, err := os.Lstat(dst); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("failed import left %s", dst)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(filepath.Join(dst, "which")); string(b) != c.want {
				t.Errorf("imported %q, want %q", b, c.want)
			}
		})
	}
}

func TestImportNotAnImage(t *testing.T) {
	d := t.TempDir()
	if _, err := rootfs.Import(context.Background(), d, filepath.Join(t.TempDir(), "x"), rootfs.ImportOptions{}); err == nil || !strings.Contains(err.Error(), "not an OCI image layout") {
		t.Errorf("empty dir: %v", err)
	}
	f := filepath.Join(d, "plain.tar")
	if err := os.WriteFile(f, tarBytes(t, file("a", "b", 0o644)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := rootfs.Import(context.Background(), f, filepath.Join(t.TempDir(), "x"), rootfs.ImportOptions{}); err == nil || !strings.Contains(err.Error(), "manifest.json") {
		t.Errorf("plain tar: %v", err)
	}
}

// TestImportMalicious imports layers that try to write outside the image
// and checks that nothing lands outside it: the import fails, or (for
// links mutate.Extract drops) the entry is skipped.
func TestImportMalicious(t *testing.T) {
	for _, c := range []struct {
		name    string
		entries []ent
		wantErr string // "" means the import succeeds with the entry skipped
	}{
		{"dotdot path", []ent{file("../evil", "pwned", 0o644)}, "unsafe tar path"},
		{"nested dotdot path", []ent{file("a/../../evil", "pwned", 0o644)}, "unsafe tar path"},
		{"absolute path", []ent{file("/evil", "pwned", 0o644)}, "absolute path"},
		{"hard link climbing from a subdirectory", []ent{dir("a/b/", 0o755), hardlink("a/b/evil", "../../etc/passwd")}, "climbs out"},
		{"absolute hard link", []ent{hardlink("evil", "/etc/passwd")}, "absolute path"},
		// mutate.Extract resolves link targets against the link's
		// directory and drops those that climb out.
		{"hard link climbing from the root", []ent{hardlink("evil", "../../etc/passwd")}, ""},
		// A symlink may point anywhere: it is created, never followed
		// out of the image.
		{"symlink out", []ent{symlink("evil", "../../../../etc/passwd"), file("ok", "ok", 0o644)}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The images directory sits in a sandbox directory whose
			// other entries must stay untouched.
			top := t.TempDir()
			images := filepath.Join(top, "images")
			dst := filepath.Join(images, "img")
			src := writeLayout(t, layoutImage{img: image(t, "", layer(t, c.entries...))})
			_, err := rootfs.Import(context.Background(), src, dst, rootfs.ImportOptions{})
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, c.wantErr)
				}
				if _, err := os.Lstat(dst); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("failed import left %s", dst)
				}
				ents, _ := os.ReadDir(images)
				if len(ents) != 0 {
					t.Errorf("failed import left %d entries in the images directory", len(ents))
				}
			} else if err != nil {
				t.Fatal(err)
			}
			ents, _ := os.ReadDir(top)
			if len(ents) != 1 || ents[0].Name() != "images" {
				t.Errorf("entries beside the images directory: %v", ents)
			}
			if c.wantErr == "" {
				if fi, err := os.Lstat(filepath.Join(dst, "evil")); err == nil && fi.Mode().IsRegular() {
					t.Errorf("evil hard link created")
				}
			}
		})
	}
}
