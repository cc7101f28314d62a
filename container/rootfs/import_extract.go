package rootfs

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// resolveInRoot resolves paths the way the sandbox will: from the image
// root, with symlinks followed but ".." and absolute targets kept inside
// it. No magic links (/proc/self/...) are followed.
const resolveInRoot = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

// extractor writes a flattened image's tar stream under a root directory
// it holds open, never outside it.
type extractor struct {
	root  int // O_PATH descriptor of the new image's root
	chown bool
	res   *ImportResult
	buf   []byte
	// dirs get their metadata at the end, when nothing more is written
	// into them (a read-only mode would not stop root, but mtimes would
	// change).
	dirs []*tar.Header
	// links are hard links whose target came later in the stream (the
	// flattened stream lists upper layers first).
	links []*tar.Header
}

// extractTar writes the tar stream r (a flattened image) under dir.
func extractTar(ctx context.Context, r io.Reader, dir string, res *ImportResult) error {
	root, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("rootfs: import: %w", err)
	}
	defer unix.Close(root)
	x := &extractor{root: root, chown: os.Geteuid() == 0, res: res, buf: make([]byte, 256<<10)}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			// mutate.Extract ends its archive before it reports an
			// error (an unsafe path, a corrupt layer): read on to the
			// end of the stream to see it.
			if _, err := io.Copy(io.Discard, r); err != nil {
				return fmt.Errorf("rootfs: import: reading layers: %w", err)
			}
			break
		}
		if err != nil {
			return fmt.Errorf("rootfs: import: reading layers: %w", err)
		}
		if err := x.entry(h, tr); err != nil {
			return fmt.Errorf("rootfs: import: entry %q: %w", h.Name, err)
		}
	}
	for _, h := range x.links {
		err := x.hardlink(h)
		if errors.Is(err, unix.ENOENT) {
			res.SkippedHardlinks++
			continue
		}
		if err != nil {
			return fmt.Errorf("rootfs: import: entry %q: %w", h.Name, err)
		}
		res.Hardlinks++
	}
	for _, h := range x.dirs {
		if err := x.dirMeta(h); err != nil {
			return fmt.Errorf("rootfs: import: entry %q: %w", h.Name, err)
		}
	}
	return nil
}

// cleanName returns the clean relative form of an archive name ("." for
// the root), refusing names that are absolute or climb out of the root.
func cleanName(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, 0) {
		return "", errors.New("empty or invalid name")
	}
	if strings.HasPrefix(name, "/") {
		return "", errors.New("absolute path in a layer")
	}
	c := path.Clean(name)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", errors.New("path climbs out of the image root")
	}
	return c, nil
}

func (x *extractor) entry(h *tar.Header, r io.Reader) error {
	rel, err := cleanName(h.Name)
	if err != nil {
		return err
	}
	if rel == "." {
		return nil // the root keeps mode 0755, owned by the importer
	}
	h.Name = rel
	switch h.Typeflag {
	case tar.TypeDir:
		return x.dir(h)
	case tar.TypeReg:
		return x.file(h, r)
	case tar.TypeSymlink:
		return x.symlink(h)
	case tar.TypeLink:
		if _, err := cleanName(h.Linkname); err != nil {
			return fmt.Errorf("hard link to %q: %w", h.Linkname, err)
		}
		err := x.hardlink(h)
		if errors.Is(err, unix.ENOENT) {
			x.links = append(x.links, h)
			return nil
		}
		if err == nil {
			x.res.Hardlinks++
		}
		return err
	case tar.TypeChar, tar.TypeBlock:
		x.res.SkippedDevices++
		return nil
	case tar.TypeFifo:
		return x.fifo(h)
	default:
		return nil // other types (GNU long-name records are handled by archive/tar)
	}
}

// parent opens the directory that will hold rel, creating missing
// directories (mode 0755), and returns it with rel's last element.
func (x *extractor) parent(rel string, create bool) (int, string, error) {
	dir, base := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	fd, err := x.openDir(dir)
	if err == nil || !create || !errors.Is(err, unix.ENOENT) {
		return fd, base, err
	}
	// Make the missing components one at a time, each resolved from the
	// root: a component that exists as a symlink is followed inside it.
	prefix := ""
	for comp := range strings.SplitSeq(dir, "/") {
		pfd, err := x.openDir(or(prefix, "."))
		if err != nil {
			return -1, "", err
		}
		err = unix.Mkdirat(pfd, comp, 0o755)
		if err == nil {
			err = unix.Fchmodat(pfd, comp, 0o755, 0)
		}
		unix.Close(pfd)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, "", err
		}
		prefix = path.Join(prefix, comp)
		fd, err := x.openDir(prefix)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				err = fmt.Errorf("%s is a symlink to a missing directory", prefix)
			}
			return -1, "", err
		}
		unix.Close(fd)
	}
	fd, err = x.openDir(dir)
	return fd, base, err
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (x *extractor) openDir(dir string) (int, error) {
	return unix.Openat2(x.root, dir, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: resolveInRoot,
	})
}

// clearNonDir removes a non-directory at base in pfd so that it can be
// replaced; it reports false if base is a directory, which is kept.
func clearNonDir(pfd int, base string) (bool, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false, err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return false, nil
	}
	return true, unix.Unlinkat(pfd, base, 0)
}

func (x *extractor) dir(h *tar.Header) error {
	pfd, base, err := x.parent(h.Name, true)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	err = unix.Mkdirat(pfd, base, 0o700)
	if errors.Is(err, unix.EEXIST) {
		var replaced bool
		if replaced, err = clearNonDir(pfd, base); err == nil && replaced {
			err = unix.Mkdirat(pfd, base, 0o700)
		}
	}
	if err != nil {
		return err
	}
	x.res.Dirs++
	x.dirs = append(x.dirs, h)
	return nil
}

// dirMeta sets a directory's ownership, mode and times.
func (x *extractor) dirMeta(h *tar.Header) error {
	fd, err := unix.Openat2(x.root, h.Name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: resolveInRoot,
	})
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := x.owner(fd, h); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, mode(h)); err != nil {
		return err
	}
	pfd, base, err := x.parent(h.Name, false)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	return times(pfd, base, h)
}

func (x *extractor) owner(fd int, h *tar.Header) error {
	if !x.chown {
		return nil
	}
	return unix.Fchown(fd, h.Uid, h.Gid)
}

// mode is the permission bits of h, with setuid, setgid and sticky.
func mode(h *tar.Header) uint32 { return uint32(h.Mode) & 0o7777 }

func times(pfd int, base string, h *tar.Header) error {
	mt := h.ModTime
	if mt.IsZero() {
		return nil
	}
	at := h.AccessTime
	if at.IsZero() {
		at = mt
	}
	ts := []unix.Timespec{unix.NsecToTimespec(at.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
	return unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func (x *extractor) file(h *tar.Header, r io.Reader) error {
	pfd, base, err := x.parent(h.Name, true)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	const flags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(pfd, base, flags, 0o600)
	if errors.Is(err, unix.EEXIST) {
		var replaced bool
		if replaced, err = clearNonDir(pfd, base); err != nil {
			return err
		}
		if !replaced {
			return nil // a directory of an upper layer wins
		}
		fd, err = unix.Openat(pfd, base, flags, 0o600)
	}
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), h.Name)
	defer f.Close()
	if _, err := io.CopyBuffer(struct{ io.Writer }{f}, r, x.buf); err != nil {
		return err
	}
	// Ownership first: chown clears the setuid and setgid bits.
	if err := x.owner(fd, h); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, mode(h)); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	x.res.Files++
	return times(pfd, base, h)
}

func (x *extractor) symlink(h *tar.Header) error {
	if h.Linkname == "" || strings.ContainsRune(h.Linkname, 0) {
		return errors.New("symlink with an empty or invalid target")
	}
	pfd, base, err := x.parent(h.Name, true)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	err = unix.Symlinkat(h.Linkname, pfd, base)
	if errors.Is(err, unix.EEXIST) {
		var replaced bool
		if replaced, err = clearNonDir(pfd, base); err != nil || !replaced {
			return err
		}
		err = unix.Symlinkat(h.Linkname, pfd, base)
	}
	if err != nil {
		return err
	}
	if x.chown {
		if err := unix.Fchownat(pfd, base, h.Uid, h.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	x.res.Symlinks++
	return times(pfd, base, h)
}

// hardlink links h.Name to h.Linkname, an archive name resolved from the
// root (checked by the caller); ENOENT means the target does not exist
// (yet).
func (x *extractor) hardlink(h *tar.Header) error {
	target, err := cleanName(h.Linkname)
	if err != nil || target == "." {
		return fmt.Errorf("hard link to %q: not a file inside the image", h.Linkname)
	}
	tfd, tbase, err := x.parent(target, false)
	if err != nil {
		return err
	}
	defer unix.Close(tfd)
	var st unix.Stat_t
	if err := unix.Fstatat(tfd, tbase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("hard link to directory %q", h.Linkname)
	}
	pfd, base, err := x.parent(h.Name, true)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	// Flags 0: a link to a symlink links the symlink itself.
	err = unix.Linkat(tfd, tbase, pfd, base, 0)
	if errors.Is(err, unix.EEXIST) {
		var replaced bool
		if replaced, err = clearNonDir(pfd, base); err != nil || !replaced {
			return err
		}
		err = unix.Linkat(tfd, tbase, pfd, base, 0)
	}
	return err
}

func (x *extractor) fifo(h *tar.Header) error {
	pfd, base, err := x.parent(h.Name, true)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	err = unix.Mknodat(pfd, base, unix.S_IFIFO|0o600, 0)
	if errors.Is(err, unix.EEXIST) {
		var replaced bool
		if replaced, err = clearNonDir(pfd, base); err != nil || !replaced {
			return err
		}
		err = unix.Mknodat(pfd, base, unix.S_IFIFO|0o600, 0)
	}
	if err != nil {
		return err
	}
	if x.chown {
		if err := unix.Fchownat(pfd, base, h.Uid, h.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	if err := unix.Fchmodat(pfd, base, mode(h), 0); err != nil {
		return err
	}
	x.res.Files++
	return times(pfd, base, h)
}
