// Package backends opens a storage backend (snapshot.Backend) by name:
// localdisk, btrfs or zfs. It is the one place that knows every backend,
// so that hosts, the CLI and tests choose one from configuration without
// importing each.
package backends

import (
	"context"
	"fmt"

	"github.com/turnbox/turnbox/snapshot"
	"github.com/turnbox/turnbox/snapshot/btrfs"
	"github.com/turnbox/turnbox/snapshot/localdisk"
	"github.com/turnbox/turnbox/zfs"
)

// Backend names.
const (
	// LocalDisk keeps volumes as directories and snapshots as copies
	// (reflinked where the filesystem can). Works anywhere.
	LocalDisk = "localdisk"
	// Btrfs keeps volumes as btrfs subvolumes.
	Btrfs = "btrfs"
	// ZFS keeps volumes as ZFS datasets.
	ZFS = "zfs"
)

// Options configure the backend Open makes.
type Options struct {
	// Root is where the backend keeps its data: localdisk's directory;
	// for btrfs a directory on a mounted btrfs filesystem; for zfs the
	// mount root of the datasets. Required.
	Root string
	// ZFSDataset is the parent dataset of the zfs backend (e.g.
	// tank/turnbox); required for zfs.
	ZFSDataset string
	// ZFSDriver names the zfs backend's driver (zfs.OpenDriver).
	ZFSDriver string
}

// Open opens the backend called name. The caller closes it. Errors name
// the backend and what it needs.
func Open(ctx context.Context, name string, o Options) (snapshot.Backend, error) {
	if o.Root == "" && (name == LocalDisk || name == Btrfs || name == ZFS) {
		return nil, fmt.Errorf("backends: %s: no root directory given", name)
	}
	switch name {
	case LocalDisk:
		b, err := localdisk.New(o.Root)
		if err != nil {
			return nil, fmt.Errorf("opening localdisk storage at %s: %w", o.Root, err)
		}
		return b, nil
	case Btrfs:
		b, err := btrfs.New(o.Root)
		if err != nil {
			return nil, fmt.Errorf("opening btrfs storage at %s (the root must be a directory on a mounted btrfs filesystem): %w", o.Root, err)
		}
		return b, nil
	case ZFS:
		return openZFS(ctx, o)
	}
	return nil, fmt.Errorf("unknown storage backend %q (%s, %s, %s)", name, LocalDisk, Btrfs, ZFS)
}

func openZFS(ctx context.Context, o Options) (snapshot.Backend, error) {
	if o.ZFSDataset == "" {
		return nil, fmt.Errorf("the zfs backend needs a parent dataset (e.g. tank/turnbox)")
	}
	d, err := zfs.OpenDriver(o.ZFSDriver)
	if err != nil {
		return nil, fmt.Errorf("zfs driver: %w", err)
	}
	b, err := zfs.NewBackend(ctx, d, o.ZFSDataset, o.Root, zfs.WithOwnedDriver())
	if err != nil {
		return nil, fmt.Errorf("opening zfs storage on %s: %w", o.ZFSDataset, err)
	}
	return b, nil
}
