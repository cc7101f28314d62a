package zfs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Driver performs ZFS operations. Names are full ZFS names ("pool/a/b",
// "pool/a/b@snap"); drivers validate them (ValidateName) before they reach
// ZFS. Errors wrap ErrNotFound, ErrExists, ErrInvalidName, ErrNoSpace,
// ErrBusy or ErrUnsupported where the failure is one of those.
//
// Two implementations exist: NewCommandDriver (the zfs command, the
// default, works with OpenZFS and zfs-fuse) and NewLZCDriver (libzfs_core
// through cgo, built with the libzfs_core tag, OpenZFS only).
type Driver interface {
	// Name identifies the driver: "command" or "libzfs_core".
	Name() string
	// Create makes a filesystem with the given properties (applied
	// atomically with the creation) and mounts it if its mountpoint is a
	// path. With opts.Parents, missing ancestors are created with
	// default properties (zfs create -p).
	Create(ctx context.Context, name string, opts CreateOptions) error
	// Snapshot takes snapshot snap ("fs@name") with the given user
	// properties. It is durable when Snapshot returns.
	Snapshot(ctx context.Context, snap string, props map[string]string) error
	// Clone makes filesystem name from snapshot snap and mounts it.
	// Create and Clone are all or nothing: a dataset made but impossible
	// to mount (after retrying a busy mount) is destroyed again.
	Clone(ctx context.Context, snap, name string, opts CreateOptions) error
	// Rollback discards changes made since snap, which must be the most
	// recent snapshot of its filesystem (else the error wraps
	// ErrNotNewest). Nothing is destroyed.
	Rollback(ctx context.Context, snap string) error
	// Rename renames a filesystem or a snapshot (within its filesystem).
	Rename(ctx context.Context, from, to string) error
	// Promote makes clone name independent of its origin: the origin's
	// snapshots up to and including the clone's origin move to name.
	Promote(ctx context.Context, name string) error
	// Destroy destroys a filesystem or snapshot. It never destroys
	// clones (no -R).
	Destroy(ctx context.Context, name string, opts DestroyOptions) error
	// SetProps sets properties on a dataset or snapshot. Setting
	// mountpoint remounts the filesystem (or unmounts it for "none").
	SetProps(ctx context.Context, name string, props map[string]string) error
	// Get returns the named properties of names and, down to depth levels
	// (-1: all), of their descendants including snapshots, in the order
	// zfs lists them (parents before children, a filesystem's snapshots
	// oldest first). A property that is not set is absent from the map.
	Get(ctx context.Context, names []string, props []string, depth int) ([]Dataset, error)
	// Exists reports whether a dataset or snapshot exists.
	Exists(ctx context.Context, name string) (bool, error)
	// Hold places user hold tag on snap; a held snapshot cannot be
	// destroyed. zfs-fuse cannot (ErrUnsupported).
	Hold(ctx context.Context, snap, tag string) error
	// Release removes user hold tag from snap.
	Release(ctx context.Context, snap, tag string) error
	// Holds lists the tags of the user holds on snap.
	Holds(ctx context.Context, snap string) ([]string, error)
}

// CreateOptions are options of Driver.Create and Driver.Clone.
type CreateOptions struct {
	// Props are native or user properties set atomically at creation.
	Props map[string]string
	// Parents creates missing ancestors (zfs create -p).
	Parents bool
}

// DestroyOptions are options of Driver.Destroy.
type DestroyOptions struct {
	// Recursive destroys the dataset's descendants and snapshots (-r).
	// It still fails if any of them has clones outside.
	Recursive bool
	// Defer marks a snapshot with clones or holds for destruction when
	// the last of them goes away (zfs destroy -d); snapshots only.
	Defer bool
}

// Dataset is a filesystem, volume or snapshot with some of its properties.
type Dataset struct {
	// Name is the full ZFS name.
	Name string
	// Props maps property names to their parsable (-p) values; unset
	// properties ("-") are absent.
	Props map[string]string
}

// Type returns the "type" property: "filesystem", "volume" or "snapshot".
func (d Dataset) Type() string { return d.Props["type"] }

// Int returns a numeric property, or 0 if it is absent or not a number.
func (d Dataset) Int(prop string) int64 {
	n, _ := strconv.ParseInt(d.Props[prop], 10, 64)
	return n
}

// Created returns the creation property as a time (second precision).
func (d Dataset) Created() time.Time {
	if n := d.Int("creation"); n > 0 {
		return time.Unix(n, 0)
	}
	return time.Time{}
}

// Space is a dataset's space accounting, in bytes.
type Space struct {
	// Used is all space the dataset and its descendants use.
	Used int64
	// Available is the space left for it.
	Available int64
	// Referenced is the data the dataset itself references (shared or not).
	Referenced int64
	// UsedBySnapshots is the space freed if all its snapshots were destroyed.
	UsedBySnapshots int64
	// UsedByChildren is the space its descendants use.
	UsedByChildren int64
}

// SpaceProps are the properties GetSpace reads.
var SpaceProps = []string{"used", "available", "referenced", "usedbysnapshots", "usedbychildren"}

// GetSpace returns the space accounting of one dataset or snapshot.
func GetSpace(ctx context.Context, d Driver, name string) (Space, error) {
	ds, err := d.Get(ctx, []string{name}, SpaceProps, 0)
	if err != nil {
		return Space{}, err
	}
	if len(ds) == 0 {
		return Space{}, ErrNotFound
	}
	x := ds[0]
	return Space{
		Used: x.Int("used"), Available: x.Int("available"), Referenced: x.Int("referenced"),
		UsedBySnapshots: x.Int("usedbysnapshots"), UsedByChildren: x.Int("usedbychildren"),
	}, nil
}

// Driver names, as Driver.Name returns them and OpenDriver accepts them.
const (
	// DriverCommand names the zfs command driver (NewCommandDriver).
	DriverCommand = "command"
	// DriverLZC names the libzfs_core driver (NewLZCDriver).
	DriverLZC = "libzfs_core"
)

// ErrUnknownDriver is returned by OpenDriver for a name it does not know.
var ErrUnknownDriver = errors.New("zfs: unknown driver (want " + DriverCommand + " or " + DriverLZC + ")")

// OpenDriver returns the driver called name: DriverCommand (also for "")
// or DriverLZC. The libzfs_core driver exists only in builds with the
// libzfs_core tag and runs only on kernel OpenZFS; elsewhere the error
// wraps ErrUnsupported. An unknown name wraps ErrUnknownDriver. A driver
// with a Close method (libzfs_core) should be closed when done, e.g. by
// a Backend opened WithOwnedDriver.
func OpenDriver(name string) (Driver, error) {
	switch name {
	case "", DriverCommand:
		return NewCommandDriver(), nil
	case DriverLZC:
		return NewLZCDriver()
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownDriver, name)
}
