//go:build cgo

package btrfs

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moby/sys/mountinfo"
)

// hasFlushOnCommit reports whether the btrfs filesystem holding path is
// mounted with flushoncommit (a filesystem-wide super option, so any
// mount of it tells).
func hasFlushOnCommit(path string) (bool, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return false, err
	}
	mounts, err := mountinfo.GetMounts(mountinfo.ParentsFilter(real))
	if err != nil {
		return false, err
	}
	// The mount holding path is the deepest one; of mounts stacked on one
	// mount point, the last listed is on top.
	var best *mountinfo.Info
	for _, m := range mounts {
		if best == nil || len(m.Mountpoint) >= len(best.Mountpoint) {
			best = m
		}
	}
	if best == nil {
		return false, fmt.Errorf("no mount holds %s", real)
	}
	if best.FSType != "btrfs" {
		return false, fmt.Errorf("%s is on %s (mounted at %s), not btrfs", real, best.FSType, best.Mountpoint)
	}
	return slices.Contains(strings.Split(best.VFSOptions, ","), "flushoncommit"), nil
}
