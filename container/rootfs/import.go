package rootfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"
)

// refNameAnnotation names an image in an OCI layout's index
// (`skopeo copy docker://debian:12 oci:dir:12` sets it to "12").
const refNameAnnotation = "org.opencontainers.image.ref.name"

// ImportOptions configures Import.
type ImportOptions struct {
	// Platform chooses the image of a multi-platform source, as
	// "os/arch[/variant]" (e.g. "linux/arm64/v8"). Empty means the host's
	// platform, "linux/" + GOARCH, when the source holds several images;
	// a source with a single image is taken whatever its platform (see
	// ImportResult.Platform). When set, the chosen image must match it.
	Platform string
	// Ref chooses among several images by name: in an OCI layout, the
	// org.opencontainers.image.ref.name annotation (the tag skopeo
	// writes, e.g. "12"); in a `docker save` tarball, the repository tag
	// (e.g. "debian:12"). Empty accepts any.
	Ref string
	// Progress, if not nil, is called as the layers are read, with the
	// bytes read so far from the source's layer blobs (compressed, as
	// stored) and the total to read. It is called from one goroutine at a
	// time, often; a last call reports done == total.
	Progress func(done, total int64)
}

// ImportResult describes an imported image.
type ImportResult struct {
	// Platform is the imported image's platform ("linux/amd64"), from
	// its configuration; empty if the image does not say.
	Platform string
	// Layers is the number of layers flattened.
	Layers int
	// Files, Dirs, Symlinks and Hardlinks count what was written.
	Files, Dirs, Symlinks, Hardlinks int
	// SkippedDevices counts character and block device nodes, which are
	// not created: a sandbox gets its own /dev.
	SkippedDevices int
	// SkippedHardlinks counts hard links whose target was not in the
	// flattened image (deleted by an upper layer); they are not created.
	SkippedHardlinks int
	// Bytes is the size of the layer blobs read (compressed, as stored).
	Bytes int64
	// HasShell reports whether /bin/sh resolves, inside the image, to an
	// executable file. The bash tool needs it.
	HasShell bool
	// Digest is the image manifest's digest ("sha256:...").
	Digest string
	// Config is the image's runtime configuration (env, working
	// directory, user, command).
	Config ImageConfig
}

// ErrImageExists reports that Import's destination already exists.
var ErrImageExists = errors.New("rootfs: image already exists")

// Import makes dst, a new directory usable as a sandbox's root filesystem,
// from the container image at src: an OCI image layout directory (with
// oci-layout and index.json, as `skopeo copy ... oci:DIR` writes) or a
// `docker save` tarball. No registry is contacted. An image index with
// several images is resolved with opts.Platform and opts.Ref.
//
// The layers are flattened with whiteouts applied (mutate.Extract) and
// written to a temporary directory beside dst, renamed into place at the
// end; dst must not exist (ErrImageExists) and is never partially
// written. Nothing is written outside it: every entry is resolved from
// the new root with openat2(RESOLVE_IN_ROOT), so a symlink in the image
// is followed as the sandbox would follow it, inside the image. Entries
// with an absolute name or one that climbs out with "..", and hard links
// whose target is absolute or climbs out, fail the import. Symbolic links
// are kept whatever they point to (they are interpreted inside the
// sandbox), except that mutate.Extract silently drops relative links
// whose target climbs above the image root. Modes are kept, ownership too
// when running as root; device nodes are skipped and counted; fifos are
// made. An entry whose parent is a symlink to a directory missing from
// the image fails the import.
func Import(ctx context.Context, src, dst string, opts ImportOptions) (*ImportResult, error) {
	if _, err := os.Lstat(dst); err == nil {
		return nil, fmt.Errorf("%w: %s", ErrImageExists, dst)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("rootfs: import: %w", err)
	}
	var want *v1.Platform
	if opts.Platform != "" {
		p, err := v1.ParsePlatform(opts.Platform)
		if err != nil || p.OS == "" || p.Architecture == "" {
			return nil, fmt.Errorf("rootfs: import: platform %q: want os/arch[/variant], e.g. linux/amd64", opts.Platform)
		}
		want = p
	}
	ctr := &counter{}
	img, err := openSource(src, opts.Ref, want, ctr)
	if err != nil {
		return nil, err
	}
	return writeImage(ctx, img, dst, want, ctr, opts.Progress)
}

// writeImage flattens img into dst as Import describes: into a temporary
// directory beside dst, renamed into place at the end. The image's
// configuration must satisfy want when both are set. Layer
// reads are counted by ctr and reported to progress. Reading a layer
// verifies it against its digest (go-containerregistry does, for
// registries and layouts alike), so a tampered blob fails here and
// leaves nothing.
func writeImage(ctx context.Context, img v1.Image, dst string, want *v1.Platform, ctr *counter, progress func(done, total int64)) (*ImportResult, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("rootfs: import: reading the image configuration: %w", err)
	}
	res := &ImportResult{Platform: configPlatform(cf).String(), Config: imageConfig(cf)}
	if want != nil && res.Platform != "" && !configPlatform(cf).Satisfies(*want) {
		return nil, fmt.Errorf("rootfs: the image is for %s, not %s", res.Platform, want.String())
	}
	if d, err := img.Digest(); err == nil {
		res.Digest = d.String()
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("rootfs: import: reading the image's layers: %w", err)
	}
	res.Layers = len(layers)

	parent := filepath.Dir(dst)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("rootfs: import: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dst)+".import-")
	if err != nil {
		return nil, fmt.Errorf("rootfs: import: %w", err)
	}
	done := false
	defer func() {
		if !done {
			_ = os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("rootfs: import: %w", err)
	}

	// Reading manifests and configurations was not progress.
	ctr.start(progress)
	defer ctr.stop()
	rc := mutate.Extract(img)
	defer rc.Close()
	if err := extractTar(ctx, rc, tmp, res); err != nil {
		return nil, err
	}
	ctr.finish()
	res.Bytes = ctr.done.Load()
	res.HasShell = hasShell(tmp)
	if err := makeMountpoints(tmp); err != nil {
		return nil, err
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("%w: %s", ErrImageExists, dst)
		}
		return nil, fmt.Errorf("rootfs: import: renaming into place: %w", err)
	}
	done = true
	return res, nil
}

// imageConfig is the part of cf a session inherits.
func imageConfig(cf *v1.ConfigFile) ImageConfig {
	c := cf.Config
	return ImageConfig{Env: c.Env, WorkingDir: c.WorkingDir, User: c.User, Entrypoint: c.Entrypoint, Cmd: c.Cmd}
}

// configPlatform is the platform an image's configuration declares.
func configPlatform(cf *v1.ConfigFile) v1.Platform {
	if p := cf.Platform(); p != nil {
		return *p
	}
	return v1.Platform{}
}

// openSource opens src as an OCI layout directory or a docker tarball and
// returns the chosen image, whose layer reads are counted by ctr.
func openSource(src, ref string, want *v1.Platform, ctr *counter) (v1.Image, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("rootfs: import: %w", err)
	}
	if fi.IsDir() {
		for _, f := range []string{"oci-layout", "index.json"} {
			if _, err := os.Stat(filepath.Join(src, f)); err != nil {
				return nil, fmt.Errorf("rootfs: import: %s is not an OCI image layout (no %s); make one with `skopeo copy docker://IMAGE oci:DIR` or pass a `docker save` tarball", src, f)
			}
		}
		return openLayout(src, ref, want, ctr)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("rootfs: import: %s is neither a directory nor a file", src)
	}
	return openTarball(src, fi.Size(), ref, ctr)
}

// openTarball opens a `docker save` tarball. Reads of the file are counted
// (tar seeks over other entries are not), against its size as the total.
func openTarball(src string, size int64, ref string, ctr *counter) (v1.Image, error) {
	var tag *name.Tag
	if ref != "" {
		t, err := name.NewTag(ref)
		if err != nil {
			return nil, fmt.Errorf("rootfs: import: tag %q: %w", ref, err)
		}
		tag = &t
	}
	ctr.total.Store(size)
	img, err := tarball.Image(func() (io.ReadCloser, error) {
		f, err := os.Open(src)
		if err != nil {
			return nil, err
		}
		return &countingFile{f: f, ctr: ctr}, nil
	}, tag)
	if err != nil {
		hint := ""
		if strings.Contains(err.Error(), "manifest.json") {
			hint = " (not a `docker save` tarball; for an oci-archive, untar it and import the directory)"
		}
		if strings.Contains(err.Error(), "single image") {
			hint = " (the tarball holds several images: choose one with a tag, e.g. --ref debian:12)"
		}
		return nil, fmt.Errorf("rootfs: import: reading %s: %w%s", src, err, hint)
	}
	return img, nil
}

// candidate is an image found in an OCI layout's index.
type candidate struct {
	img      v1.Image
	platform v1.Platform
	ref      string
}

// openLayout picks one image from an OCI layout: by ref, then, when
// several remain, by platform.
func openLayout(src, ref string, want *v1.Platform, ctr *counter) (v1.Image, error) {
	idx, err := layout.ImageIndexFromPath(src)
	if err != nil {
		return nil, fmt.Errorf("rootfs: import: reading OCI layout %s: %w", src, err)
	}
	var cands []candidate
	if err := collect(idx, "", &cands, 0); err != nil {
		return nil, fmt.Errorf("rootfs: import: reading OCI layout %s: %w", src, err)
	}
	if ref != "" {
		var kept []candidate
		for _, c := range cands {
			if c.ref == ref {
				kept = append(kept, c)
			}
		}
		if len(kept) == 0 {
			return nil, fmt.Errorf("rootfs: import: no image named %q in %s (names: %s)", ref, src, refList(cands))
		}
		cands = kept
	}
	var chosen *candidate
	switch {
	case len(cands) == 0:
		return nil, fmt.Errorf("rootfs: import: no image in OCI layout %s", src)
	case len(cands) == 1:
		chosen = &cands[0]
	default:
		p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
		if want != nil {
			p = *want
		}
		for i := range cands {
			if cands[i].platform.OS != "" && cands[i].platform.Satisfies(p) {
				chosen = &cands[i]
				break
			}
		}
		if chosen == nil {
			return nil, fmt.Errorf("rootfs: import: %s holds %d images (platforms: %s; names: %s) and none is for %s: choose one with --platform or --ref", src, len(cands), platformList(cands), refList(cands), p.String())
		}
	}
	m, err := chosen.img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("rootfs: import: reading the image manifest: %w", err)
	}
	var total int64
	for _, l := range m.Layers {
		total += l.Size
	}
	ctr.total.Store(total)
	return &countedImage{Image: chosen.img, ctr: ctr}, nil
}

// collect appends the images of idx (recursing into nested indexes, at
// most a few deep) to out, with their platform and ref name. A
// descriptor's platform is taken from the index, or else from the image's
// configuration; nested entries inherit their parent's ref name.
func collect(idx v1.ImageIndex, ref string, out *[]candidate, depth int) error {
	if depth > 4 {
		return errors.New("image indexes nested too deep")
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range im.Manifests {
		r := ref
		if a := d.Annotations[refNameAnnotation]; a != "" {
			r = a
		}
		switch {
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return err
			}
			if err := collect(child, r, out, depth+1); err != nil {
				return err
			}
		case d.MediaType.IsImage():
			img, err := idx.Image(d.Digest)
			if err != nil {
				return err
			}
			var p v1.Platform
			if d.Platform != nil {
				p = *d.Platform
			} else if cf, err := img.ConfigFile(); err == nil {
				p = configPlatform(cf)
			}
			*out = append(*out, candidate{img: img, platform: p, ref: r})
		}
	}
	return nil
}

func platformList(cs []candidate) string {
	var s []string
	for _, c := range cs {
		p := c.platform.String()
		if p == "" {
			p = "unknown"
		}
		s = append(s, p)
	}
	return strings.Join(s, ", ")
}

func refList(cs []candidate) string {
	var s []string
	for _, c := range cs {
		if c.ref != "" {
			s = append(s, c.ref)
		}
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// counter counts bytes read from layer blobs and reports them. Reports
// are serialized and stop with stop, so that none arrives after Import
// returns (mutate.Extract reads in a goroutine of its own).
type counter struct {
	done, total atomic.Int64
	mu          sync.Mutex
	fn          func(done, total int64)
}

func (c *counter) add(n int) {
	if n <= 0 {
		return
	}
	d := c.done.Add(int64(n))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fn != nil {
		t := c.total.Load()
		c.fn(min(d, t), t)
	}
}

// start sets the report function and counts from zero.
func (c *counter) start(fn func(done, total int64)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done.Store(0)
	c.fn = fn
}

// stop ends reports.
func (c *counter) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fn = nil
}

// finish reports completion: the tarball's total is its file size, of
// which metadata and padding are not read through the counter.
func (c *counter) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fn != nil {
		t := c.total.Load()
		c.fn(t, t)
	}
}

// countingFile counts reads of a tarball; seeks (tar skipping entries)
// pass through uncounted.
type countingFile struct {
	f   *os.File
	ctr *counter
}

func (f *countingFile) Read(p []byte) (int, error) {
	n, err := f.f.Read(p)
	f.ctr.add(n)
	return n, err
}

func (f *countingFile) Seek(off int64, whence int) (int64, error) { return f.f.Seek(off, whence) }

func (f *countingFile) Close() error { return f.f.Close() }

// countedImage is an image whose layers count the reads of their
// compressed blobs.
type countedImage struct {
	v1.Image
	ctr *counter
}

// Layers wraps each layer so that reading its uncompressed contents
// reads, and counts, the compressed blob.
func (i *countedImage) Layers() ([]v1.Layer, error) {
	ls, err := i.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for n, l := range ls {
		cl, err := partial.CompressedToLayer(&countedLayer{Layer: l, ctr: i.ctr})
		if err != nil {
			return nil, err
		}
		out[n] = cl
	}
	return out, nil
}

// countedLayer is a partial.CompressedLayer over a layer whose compressed
// reads are counted.
type countedLayer struct {
	v1.Layer
	ctr *counter
}

// Compressed returns the layer's blob (verified against its digest by the
// underlying layer), counting the bytes read.
func (l *countedLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Compressed()
	if err != nil {
		return nil, err
	}
	return &countingReadCloser{ReadCloser: rc, ctr: l.ctr}, nil
}

type countingReadCloser struct {
	io.ReadCloser
	ctr *counter
}

func (r *countingReadCloser) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.ctr.add(n)
	return n, err
}

// hasShell reports whether bin/sh resolves, inside root, to an executable
// regular file.
func hasShell(root string) bool {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(rfd)
	fd, err := unix.Openat2(rfd, "bin/sh", &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Mode&0o111 != 0
}
