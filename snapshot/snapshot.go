package snapshot

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/turnbox/turnbox/snapshot/guard"
)

// Backend stores workspaces as volumes and their snapshots on one storage
// system. Vocabulary:
//
//   - A volume is a writable directory tree identified by a name. Its Path
//     is where the tree lives on the host; Path is stable for the volume's
//     life (Rollback replaces the content at the same Path).
//   - A snapshot is a read-only, durable record of a volume's content at
//     one moment, identified by (volume, name). Snapshots of a volume are
//     independent of each other: destroying one never changes another.
//   - Rollback makes a volume's content equal to ANY of its snapshots.
//     Snapshots newer than the target survive, so a caller can roll
//     forward again.
//   - CloneVolume makes a new volume whose content starts as a snapshot of
//     another volume (a fork). The clone is independent: writes to either
//     volume never show in the other, and destroying the source volume
//     (with its snapshots) leaves the clone intact.
//
// All names match NamePattern. Methods are safe for concurrent use on
// different volumes; calls on one volume are serialized by the caller
// (embedded sessions do so) or by the backend.
//
// Errors wrap the sentinels of this package: ErrNotFound, ErrExists,
// ErrInvalidName, ErrNoSpace, ErrBusy.
type Backend interface {
	// Kind names the backend: "localdisk", "btrfs" or "zfs".
	Kind() string
	// CreateVolume makes a new, empty volume.
	CreateVolume(ctx context.Context, volume string) (Volume, error)
	// CloneVolume makes volume from snapshot (srcVolume, srcSnapshot).
	CloneVolume(ctx context.Context, volume, srcVolume, srcSnapshot string) (Volume, error)
	// Volume returns a volume's info.
	Volume(ctx context.Context, volume string) (Volume, error)
	// Volumes lists every volume, sorted by name.
	Volumes(ctx context.Context) ([]Volume, error)
	// DestroyVolume deletes a volume and all its snapshots.
	DestroyVolume(ctx context.Context, volume string) error
	// Snapshot records the volume's current content. The caller quiesces
	// writers first if it needs a consistent tree; the snapshot is durable
	// (survives a host crash) once Snapshot returns.
	Snapshot(ctx context.Context, volume, name string) (Snapshot, error)
	// Snapshots lists a volume's snapshots, oldest first.
	Snapshots(ctx context.Context, volume string) ([]Snapshot, error)
	// Rollback makes the volume's content equal to snapshot name. Newer
	// snapshots survive. On error the volume's content is unchanged.
	Rollback(ctx context.Context, volume, name string) error
	// DestroySnapshot deletes one snapshot.
	DestroySnapshot(ctx context.Context, volume, name string) error
	// Close releases the backend's resources. Data stays on disk.
	Close() error
}

// Replacer is implemented by backends that can give a volume the content
// of another volume's snapshot in place, the way Rollback restores one of
// its own: the volume keeps its name, Path and quota, its own snapshots
// survive, and blocks are shared copy-on-write where the backend can. A
// process that has the volume's directory open (a sandbox bind-mounting
// the parent of Path) sees the new tree at Path without a new mount. It is
// optional: a caller finds it by type assertion. Hosts use it to give a
// fork a sandbox started ahead of time on an empty volume.
type Replacer interface {
	// ReplaceVolume makes volume's content equal to snapshot
	// (srcVolume, srcSnapshot). On error the content is unchanged.
	ReplaceVolume(ctx context.Context, volume, srcVolume, srcSnapshot string) error
}

// Quotaer is implemented by backends that can bound the space a volume's
// live tree uses. It is optional: a caller finds it by type assertion.
//
// The quota counts what the volume's tree references (its files, shared
// copy-on-write blocks included), not its snapshots: a snapshot never
// makes the volume's quota smaller, and destroying one never frees quota;
// except on backends whose quota also charges what snapshots pin (see
// PinCharger).
// The quota belongs to the volume and follows it across Rollback (rolling
// back to a snapshot larger than the quota is allowed; writes then fail
// until files are deleted or another rollback makes room). CloneVolume
// does not copy it: the caller sets the clone's quota.
//
// Methods are safe for concurrent use, like Backend's.
type Quotaer interface {
	// SetQuota limits volume's tree to limitBytes (0 removes the limit;
	// a negative limit fails with ErrInvalidQuota). A limit below the current usage is accepted:
	// nothing is deleted, and growing writes fail until usage drops.
	SetQuota(ctx context.Context, volume string, limitBytes int64) error
	// Quota reports volume's limit and current usage.
	Quota(ctx context.Context, volume string) (Quota, error)
	// QuotaEnforced reports whether the filesystem itself refuses writes
	// past a limit (they fail with EDQUOT: btrfs, zfs). When false the
	// limit is only recorded, and the caller enforces it by checking
	// Quota after writes (localdisk).
	QuotaEnforced() bool
}

// PinCharger is implemented by Quotaers whose quota may also count the
// data a volume's snapshots pin (data no longer in its tree that they
// keep), which bounds a volume's whole footprint. Under such a quota a
// snapshot still never makes the quota smaller, but deleting a file that
// a snapshot holds frees nothing, destroying the snapshot frees it, and a
// rollback frees only what no snapshot holds. It is optional: a caller
// finds it by type assertion.
type PinCharger interface {
	// QuotaChargesPins reports whether the quota counts what snapshots
	// pin (it can depend on how the filesystem is set up).
	QuotaChargesPins() bool
}

// TotalUsager is implemented by backends that can report what a volume
// takes together with its snapshots: its live tree plus what its
// snapshots pin (data no longer in the tree that they keep). A disk
// limit that counts it keeps a session from growing by its quota every
// turn. It is optional: a caller finds it by type assertion.
type TotalUsager interface {
	// TotalUsage reports the bytes volume and its snapshots use together
	// (backend-defined; see each backend's documentation).
	TotalUsage(ctx context.Context, volume string) (int64, error)
}

// MountSwapper is implemented by backends whose volumes are mounts of
// their own and which, in some operations, mount a different filesystem
// at a volume's Path: a Rollback that swaps in a clone, or the destruction
// of a volume others were cloned from (their clones are promoted and
// remounted). A process with its own mount namespace made before such an
// operation (a sandbox) keeps the old mount and does not see the change;
// callers restart it around those operations. Backends that swap
// directories, not mounts, do not implement it. It is optional: a caller
// finds it by type assertion.
type MountSwapper interface {
	// SwapsMounts reports whether Rollback or DestroyVolume may mount
	// another filesystem at a volume's Path.
	SwapsMounts() bool
}

// Quota is a volume's space limit and usage.
type Quota struct {
	// LimitBytes is the limit set by SetQuota (0: none).
	LimitBytes int64
	// UsedBytes is what the volume's tree uses now, as the backend counts
	// it for the limit (btrfs: the qgroup's referenced bytes; zfs: the
	// active dataset's referenced bytes; localdisk: allocated blocks of
	// the tree, like du). Kernel accounting lags writes by up to one
	// transaction commit on btrfs and zfs.
	UsedBytes int64
}

// Exceeded reports whether usage is above a set limit.
func (q Quota) Exceeded() bool { return q.LimitBytes > 0 && q.UsedBytes > q.LimitBytes }

// Volume describes a volume.
type Volume struct {
	// Name is the volume's name.
	Name string
	// Path is the host directory holding the volume's tree. Its parent
	// directory belongs to this volume alone: Rollback may replace the tree
	// by renaming a new one into place at Path, so a sandbox binds the
	// parent directory (not Path itself) to see the change at once.
	Path string
	// SizeBytes is the space the volume uses (backend-defined; 0 if the
	// backend cannot tell cheaply).
	SizeBytes int64
}

// Snapshot describes a snapshot.
type Snapshot struct {
	// Volume is the volume the snapshot was taken of.
	Volume string
	// Name is the snapshot's name within the volume.
	Name string
	// CreatedAt is when the snapshot was taken.
	CreatedAt time.Time
	// SizeBytes is the space the snapshot uses (its unique blocks on
	// copy-on-write backends; its full size on a copying backend).
	SizeBytes int64
}

// Sentinel errors.
var (
	// ErrNotFound: no such volume or snapshot.
	ErrNotFound = errors.New("not found")
	// ErrExists: a volume or snapshot of that name exists.
	ErrExists = errors.New("already exists")
	// ErrInvalidName: the name does not match NamePattern.
	ErrInvalidName = errors.New("invalid name")
	// ErrNoSpace: the storage is full; nothing was changed.
	ErrNoSpace = errors.New("no space left")
	// ErrBusy: the object is in use (e.g. a snapshot other volumes depend
	// on, where the backend cannot detach them).
	ErrBusy = errors.New("busy")
	// ErrUnsupported: the backend does not fit this host (wrong filesystem,
	// missing kernel support). Tests skip on it only when not required.
	ErrUnsupported = errors.New("backend not supported on this host")
	// ErrInvalidQuota: a negative quota was given to Quotaer.SetQuota.
	ErrInvalidQuota = errors.New("invalid quota")
	// ErrTampered: something other than the backend changed what only the
	// backend may change, such as the entry at a volume's Path (a sandbox
	// that sees Path's parent renamed the tree away or put a symlink
	// there). The backend names no path through it; the volume needs a
	// rollback or to be destroyed.
	ErrTampered = guard.ErrTampered
)

// MaxNameLength bounds volume and snapshot names.
const MaxNameLength = 128

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]*$`)

// ValidateName checks a volume or snapshot name: 1 to MaxNameLength
// characters of [A-Za-z0-9_.:-], starting with a letter or digit (so never
// "." or ".."). The error wraps ErrInvalidName.
func ValidateName(name string) error {
	if name == "" || len(name) > MaxNameLength || !namePattern.MatchString(name) {
		return fmt.Errorf("%w: %q: want 1-%d characters of [A-Za-z0-9_.:-] starting with a letter or digit", ErrInvalidName, name, MaxNameLength)
	}
	return nil
}

// ValidateQuota checks a quota limit for Quotaer.SetQuota: 0 (none) or
// positive. The error wraps ErrInvalidQuota.
func ValidateQuota(limitBytes int64) error {
	if limitBytes < 0 {
		return fmt.Errorf("%w: %d bytes (want 0 for none, or a positive size)", ErrInvalidQuota, limitBytes)
	}
	return nil
}

// SumUsage adds a volume's tree usage (Quotaer.Quota) and the SizeBytes
// of each of its snapshots: the TotalUsage of a backend whose snapshot
// sizes stand for what each snapshot pins.
func SumUsage(ctx context.Context, b interface {
	Backend
	Quotaer
}, volume string) (int64, error) {
	q, err := b.Quota(ctx, volume)
	if err != nil {
		return 0, err
	}
	snaps, err := b.Snapshots(ctx, volume)
	if err != nil {
		return 0, err
	}
	total := q.UsedBytes
	for _, s := range snaps {
		total += s.SizeBytes
	}
	return total, nil
}
