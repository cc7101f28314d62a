package agent

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// WithRoot makes the agent run every command chrooted into dir, a
// directory it sees (a session's root tree in the volume bind, e.g.
// /.turnbox/vol/<tree>), with its own /proc, /dev and /sys: the agent
// bind-mounts its own there before the first command and again before
// any command once they are gone (a rollback renames a new tree into
// place at dir, which comes without them). readOnly binds the tree
// read-only onto itself and its "workspace" read-write over that.
//
// The tree is written by commands, so the agent never follows a link in
// it: each mount point is opened by one name from the tree's descriptor
// with O_NOFOLLOW and mounted onto through /proc/self/fd, and one that is
// not a directory is replaced by an empty one. The agent needs
// CAP_SYS_ADMIN for the mounts and CAP_SYS_CHROOT; commands start with
// CAP_SYS_ADMIN dropped from every capability set (see startForker).
func WithRoot(dir string, readOnly bool) Option {
	return func(s *server) { s.root = &rootTree{dir: filepath.Clean(dir), readOnly: readOnly, vol: -1} }
}

// rootTree is the commands' root (WithRoot).
type rootTree struct {
	dir      string
	readOnly bool
	mu       sync.Mutex // serializes ensure; guards vol
	// vol is a descriptor of the tree's directory (the volume bind,
	// sealed: its entries never change but by the host's exchange),
	// opened on first use so that each check walks one name, not the
	// whole path (in gVisor each component is revalidated with the host).
	vol int
}

// rootMounts are the mounts the agent makes in the tree, from its own
// mounts of the same name; proc comes last: the check in ensure takes a
// mounted proc as the sign that the tree has all of them.
// A bind keeps its source's mount flags (the runtimes mount /sys
// read-only, nosuid, nodev, noexec); sys is remounted so even where the
// source's are not copied.
var rootMounts = []struct {
	name    string
	remount uintptr // flags of a bind remount after the bind; 0: none
}{{"dev", 0}, {"sys", unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC}, {"proc", 0}}

// ensure makes sure the tree at r.dir has its mounts: a few system calls
// (open, fstatat, openat, fstat, fstatfs) when it has them.
func (r *rootTree) ensure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	fd, err := r.openTree()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if hasProc(fd) {
		return nil
	}
	return r.setup(fd)
}

// openTree opens the tree (the topmost mount on it). Called with r.mu
// held.
func (r *rootTree) openTree() (int, error) {
	if r.vol < 0 {
		fd, err := unix.Open(filepath.Dir(r.dir), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("agent: opening %s: %w", filepath.Dir(r.dir), err)
		}
		r.vol = fd
	}
	fd, err := unix.Openat(r.vol, filepath.Base(r.dir), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("agent: opening the root %s: %w", r.dir, err)
	}
	return fd, nil
}

// hasProc reports whether the tree's proc is a mounted procfs (not
// following a link).
func hasProc(treeFD int) bool {
	fd, err := openDirAt(treeFD, "proc")
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Statfs_t
	return unix.Fstatfs(fd, &st) == nil && st.Type == unix.PROC_SUPER_MAGIC
}

// setup mounts what commands need in the tree whose descriptor is fd.
func (r *rootTree) setup(fd int) error {
	for _, name := range []string{"workspace", "dev", "sys", "proc"} {
		if err := ensureDirAt(fd, name); err != nil {
			return err
		}
	}
	if r.readOnly {
		top, err := r.bindReadOnly(fd)
		if err != nil {
			return err
		}
		defer unix.Close(top)
		fd = top
	}
	for _, m := range rootMounts {
		if err := bindAt(fd, m.name, "/"+m.name, unix.MS_REC, m.remount); err != nil {
			return err
		}
	}
	return nil
}

// bindReadOnly binds the tree (fd) read-only onto itself and its
// workspace read-write over that, and returns a descriptor of the new
// read-only mount's root.
func (r *rootTree) bindReadOnly(fd int) (int, error) {
	if err := unix.Mount(fdPath(fd), fdPath(fd), "", unix.MS_BIND, ""); err != nil {
		return -1, fmt.Errorf("agent: binding the root %s: %w", r.dir, err)
	}
	top, err := r.openTree()
	if err != nil {
		return -1, err
	}
	if err := remount(top, unix.MS_RDONLY); err != nil {
		unix.Close(top)
		return -1, fmt.Errorf("agent: making the root %s read-only: %w", r.dir, err)
	}
	wfd, err := openDirAt(top, "workspace")
	if err == nil {
		// A bind copies its source's flags: read-only, remounted
		// read-write.
		err = bindAt(top, "workspace", fdPath(wfd), 0, remountRW)
		unix.Close(wfd)
	}
	if err != nil {
		unix.Close(top)
		return -1, err
	}
	return top, nil
}

// remountRW asks bindAt for a remount with no flags: read-write.
const remountRW = ^uintptr(0)

// bindAt bind-mounts src (flags: 0 or MS_REC) onto the directory name in
// dirFD, then, if remountFlags is not 0, remounts the bind with them
// (remountRW: none).
func bindAt(dirFD int, name, src string, flags, remountFlags uintptr) error {
	fd, err := openDirAt(dirFD, name)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Mount(src, fdPath(fd), "", unix.MS_BIND|flags, ""); err != nil {
		return fmt.Errorf("agent: mounting %s on the root's /%s: %w", src, name, err)
	}
	if remountFlags == 0 {
		return nil
	}
	if remountFlags == remountRW {
		remountFlags = 0
	}
	top, err := openDirAt(dirFD, name)
	if err != nil {
		return err
	}
	defer unix.Close(top)
	if err := remount(top, remountFlags); err != nil {
		return fmt.Errorf("agent: remounting the root's /%s: %w", name, err)
	}
	return nil
}

// remount gives the bind mount whose root is fd the mount flags.
func remount(fd int, flags uintptr) error {
	return unix.Mount("", fdPath(fd), "", unix.MS_REMOUNT|unix.MS_BIND|flags, "")
}

// ensureDirAt makes name in dirFD a directory: a missing one is made,
// anything else but a directory (a symlink, a file) is replaced by an
// empty one.
func ensureDirAt(dirFD int, name string) error {
	fd, err := openDirAt(dirFD, name)
	if err == nil {
		unix.Close(fd)
		return nil
	}
	if !errors.Is(err, unix.ENOENT) {
		if err := unix.Unlinkat(dirFD, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("agent: replacing the root's /%s by a directory: %w", name, err)
		}
	}
	if err := unix.Mkdirat(dirFD, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("agent: making the root's /%s: %w", name, err)
	}
	return nil
}

// openDirAt opens the directory name in dirFD, never through a link: the
// entry must be a directory by lstat, and the directory opened must be
// that one (gVisor follows a trailing link despite O_NOFOLLOW when
// O_DIRECTORY is set). An entry that is not a directory fails with
// ENOTDIR.
func openDirAt(dirFD int, name string) (int, error) {
	var lst, st unix.Stat_t
	if err := unix.Fstatat(dirFD, name, &lst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return -1, fmt.Errorf("agent: the root's /%s: %w", name, err)
	}
	if lst.Mode&unix.S_IFMT != unix.S_IFDIR {
		return -1, fmt.Errorf("agent: the root's /%s: %w", name, unix.ENOTDIR)
	}
	fd, err := unix.Openat(dirFD, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("agent: opening the root's /%s: %w", name, err)
	}
	if err := unix.Fstat(fd, &st); err != nil || st.Dev != lst.Dev || st.Ino != lst.Ino {
		unix.Close(fd)
		return -1, fmt.Errorf("agent: the root's /%s changed while it was opened", name)
	}
	return fd, nil
}

func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// rootDir is the commands' root ("" without WithRoot).
func (s *server) rootDir() string {
	if s.root == nil {
		return ""
	}
	return s.root.dir
}

// statter stats files as a command chrooted into a root would see them
// (following links inside it), or in the agent's own root.
type statter struct {
	rootFD int // -1: no root
	root   string
}

// noOpenat2 is set once openat2 failed with ENOSYS (older gVisor).
var noOpenat2 atomic.Bool

// newStatter opens root ("" for none) once for a lookup's stats.
func newStatter(root string) (statter, error) {
	if root == "" {
		return statter{rootFD: -1}, nil
	}
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return statter{}, fmt.Errorf("agent: opening the root %s: %w", root, err)
	}
	return statter{rootFD: fd, root: root}, nil
}

func (st statter) close() {
	if st.rootFD >= 0 {
		unix.Close(st.rootFD)
	}
}

// stat returns the mode of the file p names. Where openat2 is missing the
// links of the tree are followed from the agent's own root instead: the
// answer only picks the program to run, which then runs in the chroot.
func (st statter) stat(p string) (uint32, error) {
	var s unix.Stat_t
	if st.rootFD < 0 || noOpenat2.Load() {
		err := unix.Stat(filepath.Join(st.root, p), &s)
		return s.Mode, err
	}
	fd, err := unix.Openat2(st.rootFD, strings.TrimLeft(p, "/"), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOSYS) {
		noOpenat2.Store(true)
		return st.stat(p)
	}
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	err = unix.Fstat(fd, &s)
	return s.Mode, err
}
