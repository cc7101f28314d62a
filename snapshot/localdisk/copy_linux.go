//go:build linux

package localdisk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// errVanished marks a source entry that disappeared while being copied (a
// writer deleted it): the copy leaves it out.
var errVanished = errors.New("vanished during the copy")

// copier copies one tree. Hard links are recreated among the copied
// paths; symlinks are copied, never followed.
type copier struct {
	ctx   context.Context
	b     *Backend
	root  bool // euid 0: preserve owners
	links map[[2]uint64]string
}

// copyTree copies the directory tree src to dst, which must not exist:
// contents (reflinked when the filesystem can), modes, owners (when run
// as root), modification times, symlinks, hard links, empty directories
// and special files (devices only with the privilege to make them). Files
// that vanish while the copy runs are left out. Every file and directory
// is fsynced unless WithoutSync.
func (b *Backend) copyTree(ctx context.Context, src, dst string) error {
	c := &copier{ctx: ctx, b: b, root: os.Geteuid() == 0, links: map[[2]uint64]string{}}
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: src, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("copy %s: not a directory", src)
	}
	return c.dir(src, dst, &st)
}

func (c *copier) dir(src, dst string, st *unix.Stat_t) error {
	sfd, err := unix.Open(src, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			return errVanished
		}
		return &os.PathError{Op: "open", Path: src, Err: err}
	}
	sf := os.NewFile(uintptr(sfd), src)
	names, err := sf.Readdirnames(-1)
	sf.Close()
	if err != nil {
		return err
	}
	if err := os.Mkdir(dst, 0o700); err != nil {
		return err
	}
	for _, name := range names {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		s, d := filepath.Join(src, name), filepath.Join(dst, name)
		var cst unix.Stat_t
		if err := unix.Lstat(s, &cst); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return &os.PathError{Op: "lstat", Path: s, Err: err}
		}
		if cst.Mode&unix.S_IFMT == unix.S_IFDIR {
			err = c.dir(s, d, &cst)
		} else {
			err = c.nondir(s, d, &cst)
		}
		if errors.Is(err, errVanished) {
			continue
		}
		if err != nil {
			return err
		}
	}
	return c.finish(dst, st, true)
}

// finish sets owner, mode and times on dst from st, then fsyncs it.
func (c *copier) finish(dst string, st *unix.Stat_t, sync bool) error {
	typ := st.Mode & unix.S_IFMT
	if c.root {
		if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
			return &os.PathError{Op: "lchown", Path: dst, Err: err}
		}
	}
	if typ != unix.S_IFLNK {
		// After chown, which clears the set-id bits.
		if err := unix.Fchmodat(unix.AT_FDCWD, dst, st.Mode&0o7777, 0); err != nil {
			return &os.PathError{Op: "chmod", Path: dst, Err: err}
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: dst, Err: err}
	}
	if sync && typ == unix.S_IFDIR {
		return c.b.syncDir(dst)
	}
	return nil
}

func (c *copier) nondir(src, dst string, st *unix.Stat_t) error {
	key := [2]uint64{st.Dev, st.Ino}
	if st.Nlink > 1 {
		if first, ok := c.links[key]; ok {
			if err := os.Link(first, dst); err != nil {
				return err
			}
			c.b.hardLinks.Add(1)
			return nil
		}
	}
	var err error
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		err = c.file(src, dst)
	case unix.S_IFLNK:
		err = c.symlink(src, dst, st)
	default:
		err = c.special(dst, st)
	}
	if err != nil {
		return err
	}
	if st.Nlink > 1 {
		c.links[key] = dst
	}
	return nil
}

func (c *copier) symlink(src, dst string, st *unix.Stat_t) error {
	target, err := os.Readlink(src)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) {
			return errVanished
		}
		return err
	}
	if err := os.Symlink(target, dst); err != nil {
		return err
	}
	return c.finish(dst, st, false)
}

func (c *copier) special(dst string, st *unix.Stat_t) error {
	if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil {
		if errors.Is(err, unix.EPERM) {
			c.b.specialSkipped.Add(1) // best effort: no privilege for devices
			return errVanished
		}
		return &os.PathError{Op: "mknod", Path: dst, Err: err}
	}
	return c.finish(dst, st, false)
}

func (c *copier) file(src, dst string) error {
	// O_NONBLOCK: if src was replaced by a FIFO since the lstat, do not
	// block opening it; the fstat below then rejects it.
	sfd, err := unix.Open(src, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENXIO) {
			return errVanished
		}
		return &os.PathError{Op: "open", Path: src, Err: err}
	}
	sf := os.NewFile(uintptr(sfd), src)
	defer sf.Close()
	var st unix.Stat_t
	if err := unix.Fstat(sfd, &st); err != nil {
		return &os.PathError{Op: "fstat", Path: src, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return errVanished // replaced by something else since the lstat
	}
	df, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := c.b.content(df, sf); err != nil {
		df.Close()
		return err
	}
	// Times are taken from the fstat, after the data was copied from the
	// same open file.
	if err := c.finish(dst, &st, false); err != nil {
		df.Close()
		return err
	}
	if !c.b.opts.noSync {
		if err := df.Sync(); err != nil {
			df.Close()
			return err
		}
	}
	return df.Close()
}

// content copies sf's data into the empty file df: with FICLONE when the
// filesystem supports it (tried once per backend, then remembered), else
// copy_file_range, else read and write.
func (b *Backend) content(df, sf *os.File) error {
	if !b.opts.noReflink && b.reflink.Load() != reflinkNo {
		err := unix.IoctlFileClone(int(df.Fd()), int(sf.Fd()))
		if err == nil {
			b.reflink.Store(reflinkYes)
			b.filesCloned.Add(1)
			return nil
		}
		if !noReflink(err) {
			return &os.PathError{Op: "ioctl FICLONE", Path: df.Name(), Err: err}
		}
		b.reflink.CompareAndSwap(reflinkUnknown, reflinkNo)
	}
	var n int64
	for {
		m, err := unix.CopyFileRange(int(sf.Fd()), nil, int(df.Fd()), nil, 1<<30, 0)
		if err != nil {
			if n == 0 && (errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)) {
				break // no copy_file_range here: read and write
			}
			return &os.PathError{Op: "copy_file_range", Path: df.Name(), Err: err}
		}
		if m == 0 {
			b.filesCopied.Add(1)
			b.bytesCopied.Add(n)
			return nil
		}
		n += int64(m)
	}
	m, err := io.Copy(struct{ io.Writer }{df}, struct{ io.Reader }{sf})
	if err != nil {
		return err
	}
	b.filesCopied.Add(1)
	b.bytesCopied.Add(m)
	return nil
}

// noReflink reports whether a FICLONE error means "this filesystem (or
// this pair of files) cannot reflink" rather than a real failure.
func noReflink(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EXDEV) ||
		errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) ||
		errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EBADF)
}
