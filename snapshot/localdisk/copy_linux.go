//go:build linux

package localdisk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

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
	root  bool   // euid 0: preserve owners
	dev   uint64 // the source tree's device: mount points inside are not crossed
	links map[[2]uint64]string
	// usage is the disk usage of the source entries copied (like du:
	// allocated blocks, hard-linked inodes once).
	usage int64
	// toSync lists the files and directories written, fsynced together
	// once the copy is complete (see syncAll).
	toSync []string
}

// copyTree copies the directory tree src to dst, which must not exist:
// contents (reflinked when the filesystem can), modes, owners (when run
// as root), modification times, symlinks, hard links, empty directories
// and special files (devices only with the privilege to make them). Files
// that vanish while the copy runs are left out. Every file and directory
// is fsynced unless WithoutSync. It returns the disk usage of what it
// copied, measured on the source (the size of a full copy).
func (b *Backend) copyTree(ctx context.Context, src, dst string) (int64, error) {
	c := &copier{ctx: ctx, b: b, root: os.Geteuid() == 0, links: map[[2]uint64]string{}}
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return 0, &os.PathError{Op: "lstat", Path: src, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return 0, fmt.Errorf("copy %s: not a directory", src)
	}
	c.dev = st.Dev
	if err := c.dir(src, dst, &st); err != nil {
		return 0, err
	}
	return c.usage, c.syncAll()
}

// syncAll fsyncs every file and directory the copy wrote. Deferring the
// fsyncs to the end, rather than one after each file, lets the journal
// commit all the new inodes at once (ext4, xfs): the first fsync pays for
// the commit and the others find their inode already on disk. A few run
// in parallel so the device queue stays busy.
func (c *copier) syncAll() error {
	if c.b.opts.noSync || len(c.toSync) == 0 {
		return nil
	}
	const workers = 4
	next := make(chan string)
	errs := make(chan error, workers)
	var needSyncfs atomic.Bool
	for range workers {
		go func() {
			var first error
			for p := range next {
				if first != nil {
					continue
				}
				if err := fsyncPath(p); errors.Is(err, unix.EACCES) {
					needSyncfs.Store(true) // unreadable to us: sync the filesystem instead
				} else if err != nil {
					first = err
				}
			}
			errs <- first
		}()
	}
	// Files and deeper directories were appended first; the tree's root
	// directory is last.
	for _, p := range c.toSync {
		next <- p
	}
	close(next)
	var err error
	for range workers {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	if err == nil && needSyncfs.Load() {
		root := c.toSync[len(c.toSync)-1]
		fd, oerr := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if oerr != nil {
			return &os.PathError{Op: "open", Path: root, Err: oerr}
		}
		defer unix.Close(fd)
		if serr := unix.Syncfs(fd); serr != nil {
			return &os.PathError{Op: "syncfs", Path: root, Err: serr}
		}
	}
	return err
}

func fsyncPath(p string) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: p, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return &os.PathError{Op: "fsync", Path: p, Err: err}
	}
	return nil
}

func (c *copier) dir(src, dst string, st *unix.Stat_t) error {
	if st.Dev != c.dev {
		// A filesystem mounted inside the volume (by a sandbox, say) is not
		// part of it, as with btrfs and zfs snapshots: keep the mount point
		// as an empty directory.
		if err := os.Mkdir(dst, 0o700); err != nil {
			return err
		}
		return c.finish(src, dst, st, true)
	}
	sfd, err := unix.Open(src, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			return errVanished
		}
		return &os.PathError{Op: "open", Path: src, Err: err}
	}
	sf := os.NewFile(uintptr(sfd), src)
	defer sf.Close() // children are named through it (see at)
	names, err := sf.Readdirnames(-1)
	if errors.Is(err, unix.ENOENT) {
		return errVanished // deleted while being read
	}
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
		s, d := at(sfd, name), filepath.Join(dst, name)
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
	return c.finish(src, dst, st, true)
}

// finish sets owner, extended attributes (from src), mode and times on
// dst from st, and queues dst for fsync if sync.
func (c *copier) finish(src, dst string, st *unix.Stat_t, sync bool) error {
	c.usage += st.Blocks * 512
	typ := st.Mode & unix.S_IFMT
	if c.root {
		if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
			return &os.PathError{Op: "lchown", Path: dst, Err: err}
		}
	}
	if err := c.xattrs(src, dst); err != nil {
		return err
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
	if sync && !c.b.opts.noSync {
		c.toSync = append(c.toSync, dst)
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
		err = c.special(src, dst, st)
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
	return c.finish(src, dst, st, false)
}

func (c *copier) special(src, dst string, st *unix.Stat_t) error {
	if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil {
		if errors.Is(err, unix.EPERM) {
			c.b.specialSkipped.Add(1) // best effort: no privilege for devices
			return errVanished
		}
		return &os.PathError{Op: "mknod", Path: dst, Err: err}
	}
	return c.finish(src, dst, st, false)
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
	if err := df.Close(); err != nil {
		return err
	}
	// Times are taken from the fstat, after the data was copied from the
	// same open file.
	return c.finish(src, dst, &st, true)
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

// xattrs copies src's extended attributes to dst, best effort: attributes
// the filesystem or our privileges do not allow (e.g. security.* without
// CAP_SYS_ADMIN) are counted in Stats.XattrsSkipped and left out.
func (c *copier) xattrs(src, dst string) error {
	size, err := unix.Llistxattr(src, nil)
	if err != nil || size == 0 {
		return nil // none, or no xattr support: nothing to copy
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(src, buf)
	if err != nil {
		return nil
	}
	var val []byte
	for _, name := range strings.Split(string(buf[:size]), "\x00") {
		if name == "" {
			continue
		}
		n, err := unix.Lgetxattr(src, name, nil)
		if err != nil {
			continue // removed meanwhile
		}
		if cap(val) < n {
			val = make([]byte, n)
		}
		n, err = unix.Lgetxattr(src, name, val[:n])
		if err != nil {
			continue
		}
		if err := unix.Lsetxattr(dst, name, val[:n], 0); err != nil {
			if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
				return &os.PathError{Op: "setxattr " + name, Path: dst, Err: err}
			}
			c.b.xattrsSkipped.Add(1)
		}
	}
	return nil
}
