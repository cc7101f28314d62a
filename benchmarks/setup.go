package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/turnbox/turnbox/snapshot/btrfs/btrfstest"
)

// Scratch is a temporary filesystem made for a bench run.
type Scratch struct {
	// Dir is where the backend keeps its data (btrfs) or "" (zfs).
	Dir string
	// Dataset is the pool's name (zfs) or "".
	Dataset string
	cleanup []func() error
}

// Close removes the scratch filesystem (and stops a zfs-fuse daemon it
// started).
func (s *Scratch) Close() error {
	var errs []error
	for i := len(s.cleanup) - 1; i >= 0; i-- {
		errs = append(errs, s.cleanup[i]())
	}
	return errors.Join(errs...)
}

// TempBtrfs makes a loop-mounted btrfs filesystem of size bytes in a
// temporary directory (as root; needs mkfs.btrfs and loop devices), with
// the mount options the btrfs backend needs.
func TempBtrfs(size int64) (*Scratch, error) {
	dir, err := os.MkdirTemp("", "turnbox-bench-btrfs-")
	if err != nil {
		return nil, err
	}
	fs, err := btrfstest.MountImage(dir, size, btrfstest.DefaultOptions)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("making a temporary btrfs filesystem: %w", err)
	}
	s := &Scratch{Dir: fs.Dir}
	s.cleanup = append(s.cleanup, func() error { return os.RemoveAll(dir) }, fs.Unmount)
	return s, nil
}

func zfsReachable() bool {
	return exec.Command("zpool", "list", "-H", "-o", "name").Run() == nil
}

// TempZFSPool makes a file-backed pool of size bytes (as root), starting
// zfs-fuse when neither kernel ZFS nor a daemon is reachable.
func TempZFSPool(size int64) (*Scratch, error) {
	s := &Scratch{}
	dir, err := os.MkdirTemp("", "turnbox-bench-zfs-")
	if err != nil {
		return nil, err
	}
	s.cleanup = append(s.cleanup, func() error { return os.RemoveAll(dir) })
	if !zfsReachable() {
		pidfile := filepath.Join(dir, "zfs-fuse.pid")
		if out, err := exec.Command("zfs-fuse", "--pidfile", pidfile).CombinedOutput(); err != nil {
			s.Close()
			return nil, fmt.Errorf("starting zfs-fuse (apt-get install zfs-fuse): %v: %s", err, out)
		}
		for i := 0; i < 100 && !zfsReachable(); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		s.cleanup = append(s.cleanup, func() error {
			b, err := os.ReadFile(pidfile)
			if err != nil {
				return err
			}
			return exec.Command("kill", strings.TrimSpace(string(b))).Run()
		})
	}
	img := filepath.Join(dir, "pool.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		s.Close()
		return nil, err
	}
	if err := os.Truncate(img, size); err != nil {
		s.Close()
		return nil, err
	}
	s.Dataset = fmt.Sprintf("tbbench%d", os.Getpid())
	if out, err := exec.Command("zpool", "create", "-f", "-m", "none", s.Dataset, img).CombinedOutput(); err != nil {
		s.Close()
		return nil, fmt.Errorf("zpool create: %v: %s", err, out)
	}
	name := s.Dataset
	s.cleanup = append(s.cleanup, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		for range 20 {
			var out []byte
			if out, err = exec.CommandContext(ctx, "zpool", "destroy", "-f", name).CombinedOutput(); err == nil {
				return nil
			}
			err = fmt.Errorf("zpool destroy %s: %v: %s", name, err, out)
			time.Sleep(200 * time.Millisecond)
		}
		return err
	})
	return s, nil
}
