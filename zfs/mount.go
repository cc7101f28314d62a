package zfs

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// mountedAt reports whether a filesystem is mounted at path: path exists
// and lies on another device than its parent directory. It asks the
// kernel, not libzfs, whose view of the mount table is what a silent
// mount failure gets wrong.
func mountedAt(path string) bool {
	var st, pst unix.Stat_t
	if unix.Stat(path, &st) != nil || unix.Stat(filepath.Dir(path), &pst) != nil {
		return false
	}
	return st.Dev != pst.Dev
}

// mountAt sets ds's mountpoint to path and checks with the kernel that
// ds is mounted there. `zfs set mountpoint` can succeed without mounting
// (seen once on zfs-fuse, in a CI run under load: the volume was empty
// after a reopen repaired its mount), so a mount that did not happen is
// tried again, unmounting first, with a backoff of about 4 s in all.
func (b *Backend) mountAt(ctx context.Context, ds, path string) error {
	if err := b.d.SetProps(ctx, ds, map[string]string{"mountpoint": path}); err != nil {
		return err
	}
	delay := 20 * time.Millisecond
	for i := 0; !mountedAt(path); i++ {
		if i == 8 {
			return fmt.Errorf("%w: %s is not mounted at %s after setting its mountpoint %d times", ErrBusy, ds, path, i+1)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 500*time.Millisecond)
		if err := b.d.SetProps(ctx, ds, map[string]string{"mountpoint": "none"}); err != nil {
			return err
		}
		if err := b.d.SetProps(ctx, ds, map[string]string{"mountpoint": path}); err != nil {
			return err
		}
	}
	return nil
}
