//go:build linux

package localdisk

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// A volume's tree is written by its sandbox while the host reads it, so
// the host never resolves a path of several components inside it: a
// directory could be swapped for a symlink between two steps. Everything
// below walks by descriptor: each directory is opened relative to the
// descriptor of its parent, without following a symlink, and an entry is
// named as at(dirfd, name), which the kernel resolves through the held
// descriptor alone.

// at names the entry name of the directory open as dirfd, for calls that
// take a path: /proc/self/fd/<dirfd> leads to that very directory,
// whatever was renamed since, and the one component after it is resolved
// there. Use it with calls that do not follow a final symlink (lstat,
// O_NOFOLLOW, llistxattr, readlink).
func at(dirfd int, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
}

// openDirAt opens the directory name of dirfd for reading, never through
// a symlink (AT_FDCWD and an absolute name open a host path the sandbox
// cannot change).
func openDirAt(dirfd int, name string) (*os.File, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

// walkAt calls fn for every entry below the directory d, parents before
// their children, without following symlinks or crossing into another
// filesystem. fn gets the entry's directory descriptor, name and lstat;
// entries that vanish meanwhile are skipped. Errors opening or reading a
// directory stop nothing: what could not be read is left out.
func walkAt(d *os.File, fn func(dirfd int, name string, st *unix.Stat_t)) {
	var root unix.Stat_t
	if unix.Fstat(int(d.Fd()), &root) != nil {
		return
	}
	walkBelow(d, root.Dev, fn)
}

func walkBelow(d *os.File, dev uint64, fn func(dirfd int, name string, st *unix.Stat_t)) {
	names, _ := d.Readdirnames(-1)
	dfd := int(d.Fd())
	for _, name := range names {
		var st unix.Stat_t
		if unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			continue
		}
		fn(dfd, name, &st)
		if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Dev != dev {
			continue
		}
		sub, err := openDirAt(dfd, name)
		if err != nil {
			continue
		}
		walkBelow(sub, dev, fn)
		sub.Close()
	}
}
