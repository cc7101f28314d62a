//go:build linux

package guard

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// immutableFlag is FS_IMMUTABLE_FL of linux/fs.h (chattr +i).
const immutableFlag = 0x10

// ErrTampered reports that an entry only the host may change is not what
// the host put there. snapshot.ErrTampered is the same error.
var ErrTampered = errors.New("volume tampered with")

// ErrNotSealable reports a directory whose filesystem cannot hold the
// immutable flag, or a process without the right to set it
// (CAP_LINUX_IMMUTABLE).
var ErrNotSealable = errors.New("guard: cannot make the directory immutable")

// Seal makes dir immutable: no entry can be added to it, removed from it
// or renamed within it, except by a process with CAP_LINUX_IMMUTABLE.
// Sealing a sealed directory is a no-op. A filesystem or process that
// cannot hold the flag gives an error wrapping ErrNotSealable.
func Seal(dir string) error { return setImmutable(dir, true) }

// Unseal lifts Seal. Unsealing a directory that is not sealed, or one
// whose filesystem cannot hold the flag at all, is a no-op.
func Unseal(dir string) error {
	err := setImmutable(dir, false)
	if errors.Is(err, ErrNotSealable) {
		return nil
	}
	return err
}

// Unsealed runs fn with dir unsealed and seals it again afterwards,
// whatever fn returns. Keep fn to the few syscalls that change dir's
// entries: while it runs, a sandbox that sees dir can change them too, so
// the caller checks the result with OpenDir and Same after Unsealed
// returns.
func Unsealed(dir string, fn func() error) error {
	sealed, err := Sealed(dir)
	if err != nil {
		return err
	}
	if sealed {
		if err := Unseal(dir); err != nil {
			return err
		}
	}
	ferr := fn()
	if sealed {
		if err := Seal(dir); err != nil {
			return errors.Join(ferr, err)
		}
	}
	return ferr
}

// Sealed reports whether dir carries the immutable flag.
func Sealed(dir string) (bool, error) {
	fd, err := openForFlags(dir)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	flags, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		if notSupported(err) {
			return false, nil
		}
		return false, &os.PathError{Op: "FS_IOC_GETFLAGS", Path: dir, Err: err}
	}
	return flags&immutableFlag != 0, nil
}

// openForFlags opens dir itself (never through a symlink) for the flag
// ioctls, which an O_PATH descriptor cannot issue.
func openForFlags(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return fd, nil
}

func setImmutable(dir string, on bool) error {
	fd, err := openForFlags(dir)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	flags, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		if notSupported(err) {
			return fmt.Errorf("%w: %s: %v", ErrNotSealable, dir, err)
		}
		return &os.PathError{Op: "FS_IOC_GETFLAGS", Path: dir, Err: err}
	}
	want := flags &^ immutableFlag
	if on {
		want = flags | immutableFlag
	}
	if want == flags {
		return nil
	}
	if err := unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, want); err != nil {
		if notSupported(err) || errors.Is(err, unix.EPERM) {
			return fmt.Errorf("%w: %s: %v", ErrNotSealable, dir, err)
		}
		return &os.PathError{Op: "FS_IOC_SETFLAGS", Path: dir, Err: err}
	}
	return nil
}

func notSupported(err error) bool {
	return errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS)
}

// SealSupported reports, with an error wrapping ErrNotSealable, whether
// directories made in parent can be sealed: it makes a scratch directory
// there, seals and unseals it, and removes it.
func SealSupported(parent string) error {
	dir, err := os.MkdirTemp(parent, ".seal-probe-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	if err := Seal(dir); err != nil {
		return err
	}
	if ok, err := Sealed(dir); err != nil || !ok {
		return errors.Join(fmt.Errorf("%w: %s: the flag did not hold", ErrNotSealable, dir), err, Unseal(dir))
	}
	return Unseal(dir)
}

// OpenDir opens name, an entry of the directory parent, as an O_PATH
// descriptor. parent is a host path no sandbox can change; name is
// resolved relative to it without following any symlink and must be a
// directory. Anything else (a symlink, a FIFO, a device node, a missing
// entry) gives an error wrapping ErrTampered, since only the host puts a
// volume's tree there. The caller closes the file.
func OpenDir(parent, name string) (*os.File, error) {
	fd, err := OpenDirFD(parent, name)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), filepath.Join(parent, name)), nil
}

// OpenDirFD is OpenDir returning the raw descriptor (close-on-exec),
// which the caller closes with unix.Close.
func OpenDirFD(parent, name string) (int, error) {
	pfd, err := unix.Open(parent, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: parent, Err: err}
	}
	defer unix.Close(pfd)
	how := &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	var fd int
	for range 16 {
		fd, err = unix.Openat2(pfd, name, how)
		if err != unix.EAGAIN && err != unix.EINTR {
			break
		}
	}
	if err != nil {
		p := filepath.Join(parent, name)
		if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EXDEV) {
			return -1, fmt.Errorf("%w: %s is not the directory the host made there (%v)", ErrTampered, p, err)
		}
		return -1, &os.PathError{Op: "openat2", Path: p, Err: err}
	}
	return fd, nil
}

// ID identifies a directory: its device and inode.
type ID struct{ Dev, Ino uint64 }

// IDOf returns f's identity.
func IDOf(f *os.File) (ID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return ID{}, &os.PathError{Op: "fstat", Path: f.Name(), Err: err}
	}
	return ID{Dev: st.Dev, Ino: st.Ino}, nil
}

// Same checks that name in parent is the directory want (from IDOf of
// what the backend made), with an error wrapping ErrTampered if
// it is anything else.
func Same(parent, name string, want ID) error {
	f, err := OpenDir(parent, name)
	if err != nil {
		return err
	}
	defer f.Close()
	got, err := IDOf(f)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%w: %s is not the tree the host put there", ErrTampered, filepath.Join(parent, name))
	}
	return nil
}
