// Package btrfstest gives tests and benchmarks a throwaway btrfs
// filesystem: a sparse image file formatted with mkfs.btrfs and mounted
// through a loop device. Mount is the one-line fixture for tests; MountImage
// and FS.Unmount are the same without a testing.TB, for fixtures shared by
// several tests or benchmarks (set up once, torn down in TestMain).
//
// It needs root, mkfs.btrfs (Debian package btrfs-progs), losetup and mount
// (util-linux) and loop devices. Mount skips the test when they are missing
// on a developer machine and fails it in CI (see internal/testenv).
//
// The package also holds the benchmark bodies of the btrfs backend (see
// bench.go), exported so that the bench command runs the same code.
package btrfstest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/internal/testenv"
)

// MinSize is the smallest image Mount accepts. Images under MixedBelow are
// formatted with mixed data and metadata block groups (mkfs.btrfs
// --mixed), which is how btrfs fits in a few megabytes.
const (
	MinSize    = 16 << 20
	MixedBelow = 256 << 20
)

// FS is a mounted loop-device btrfs filesystem.
type FS struct {
	// Dir is the mount point.
	Dir string
	// Image is the image file backing the loop device. Copying it while
	// mounted gives what a crash at that moment would leave on the device
	// (everything the filesystem has written, flushed or not).
	Image string
	// Device is the loop device, e.g. /dev/loop3.
	Device string
}

// DefaultOptions are the mount options Mount uses: flushoncommit, which
// the btrfs backend requires (see package btrfs).
const DefaultOptions = "flushoncommit"

// Mount creates a size-byte btrfs image in t.TempDir, mounts it with
// DefaultOptions and returns the mount point; t.Cleanup unmounts it and detaches the loop
// device. It skips (or, in CI, fails) the test when root or btrfs-progs is
// missing, and fails it on any other error.
func Mount(t testing.TB, size int64) string {
	t.Helper()
	return MountFS(t, size, DefaultOptions).Dir
}

// MountFS is Mount with the given mount options (comma-separated, as for
// mount -o, in place of DefaultOptions; "" for none) that returns the
// whole FS.
func MountFS(t testing.TB, size int64, options string) FS {
	t.Helper()
	Require(t)
	fs, err := MountImage(t.TempDir(), size, options)
	if err != nil {
		t.Fatalf("btrfstest: %v", err)
	}
	t.Cleanup(func() {
		if err := fs.Unmount(); err != nil {
			t.Errorf("btrfstest: %v", err)
		}
	})
	return fs
}

// Require skips (or, in CI, fails) the test unless everything MountImage
// needs is there: root, mkfs.btrfs, losetup, mount and /dev/loop-control.
func Require(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "mkfs.btrfs")
	testenv.RequireBinary(t, "losetup")
	testenv.RequireBinary(t, "mount")
	_, err := os.Stat("/dev/loop-control")
	testenv.Require(t, err == nil, "/dev/loop-control (loop device support)")
}

// MountImage creates dir/btrfs.img of size bytes (sparse), formats it,
// attaches it to a free loop device and mounts it at dir/mnt. The caller
// calls FS.Unmount when done. On error nothing stays mounted or attached.
func MountImage(dir string, size int64, options string) (FS, error) {
	if size < MinSize {
		return FS{}, fmt.Errorf("image size %d below the minimum %d", size, MinSize)
	}
	fs := FS{Image: filepath.Join(dir, "btrfs.img"), Dir: filepath.Join(dir, "mnt")}
	f, err := os.OpenFile(fs.Image, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return FS{}, err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return FS{}, err
	}
	mkfs := []string{"-q", "-f"}
	if size < MixedBelow {
		mkfs = append(mkfs, "--mixed")
	}
	if _, err := run("mkfs.btrfs", append(mkfs, fs.Image)...); err != nil {
		return FS{}, err
	}
	if err := os.Mkdir(fs.Dir, 0o755); err != nil {
		return FS{}, err
	}
	dev, err := run("losetup", "--find", "--show", fs.Image)
	if err != nil {
		return FS{}, err
	}
	fs.Device = strings.TrimSpace(dev)
	args := []string{"-t", "btrfs"}
	if options != "" {
		args = append(args, "-o", options)
	}
	if _, err := run("mount", append(args, fs.Device, fs.Dir)...); err != nil {
		_, derr := run("losetup", "-d", fs.Device)
		return FS{}, errors.Join(err, derr)
	}
	return fs, nil
}

// Unmount unmounts the filesystem and detaches its loop device, retrying
// for a few seconds while the mount is busy (a file left open). If it
// stays busy, Unmount detaches it lazily (umount -l: gone from the mount
// table now, released when the last file closes) so nothing leaks, and
// returns the error. The image file stays.
func (fs FS) Unmount() error {
	var err error
	for i := 0; i < 30; i++ {
		if _, err = run("umount", fs.Dir); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		_, lerr := run("umount", "-l", fs.Dir)
		// On a device still in use, losetup -d sets autoclear: it is
		// detached when the lazy unmount completes.
		_, derr := run("losetup", "-d", fs.Device)
		return errors.Join(fmt.Errorf("filesystem busy, detached lazily: %w", err), lerr, derr)
	}
	_, err = run("losetup", "-d", fs.Device)
	return err
}

func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
