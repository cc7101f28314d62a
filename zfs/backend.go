package zfs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/turnbox/turnbox/snapshot"
)

// User properties the backend writes. They mirror all metadata in ZFS so
// a restarted host rediscovers every volume and snapshot by listing.
const (
	// PropVolume is set on every generation dataset: the volume's name.
	PropVolume = "turnbox:volume"
	// PropSnapshot is set on every snapshot: the snapshot's name.
	PropSnapshot = "turnbox:snapshot"
	// PropCreated is set on generations and snapshots: creation time in
	// Unix nanoseconds (ZFS's own creation property has second precision).
	PropCreated = "turnbox:created"
	// PropRootAttr is set on snapshots taken on zfs-fuse: the root
	// directory's mode, uid, gid and mtime, which zfs-fuse fails to
	// refresh after an in-place rollback (see fixRootAttr).
	PropRootAttr = "turnbox:rootattr"
	// PropDestroying is set on a volume's container dataset while
	// DestroyVolume runs; a volume carrying it is finished off on open.
	PropDestroying = "turnbox:destroying"
)

// Internal short names start with '_', which volume and snapshot names
// (snapshot.ValidateName) never do.
const (
	hashedPrefix = "_h" // a name too long to use verbatim: "_h" + 32 hex digits of its SHA-256
	hiddenPrefix = "_x" // a snapshot destroyed by the user but kept for its clones
	sparePrefix  = "_s" // a spare container: "_s" + 16 hex digits (see WithSpareContainers)
	genPrefix    = "g"  // generation datasets: g1, g2, ...
	workspaceDir = "workspace"
)

// maxVerbatim is the longest volume name used verbatim as a dataset
// component; longer names are hashed so that parent/<vol>/g<n>@<snap>
// stays within ZFS's 255 bytes.
const maxVerbatim = 64

// Backend is a snapshot.Backend on ZFS. See the package documentation for
// the dataset layout and the rollback scheme.
//
// Files by job: backend.go (this type, opening, shared helpers),
// backend_volumes.go (create, clone, list), backend_spares.go (spare
// containers), backend_snapshots.go (snapshot, list, destroy snapshot),
// backend_rollback.go (rollback, generation swap), backend_destroy.go
// (DestroyVolume), backend_recover.go (loading the cache from ZFS and
// repairing what a crash left), backend_quota.go (quotas, usage).
//
// # Locking
//
// Three locks, always taken in this order and never the other way:
//
//  1. opMu, a RWMutex. Held exclusively by operations that change more
//     than one volume or the set of volumes: CreateVolume, CloneVolume,
//     and DestroyVolume when other volumes depend on the one destroyed.
//     Held shared by every other operation (lockVol).
//  2. vol.lock, one volume's operations, taken after opMu shared (lockVol).
//     A holder of opMu exclusive needs no vol.lock: it excludes them all.
//  3. mu, the cache: vols, every vol, gen and snap field, spares,
//     refilling. Held briefly, never across a ZFS call or a Wait.
//
// Two kinds of background work are counted by WaitGroups:
//
//   - reaping (and the volume's own vol.reaping): destroys of discarded
//     generations started by swap. They are added to only under vol.lock
//     (hence opMu shared), so a holder of opMu exclusive may wait for
//     reaping, and a holder of vol.lock for vol.reaping, without a new
//     one starting meanwhile.
//   - filling: the goroutine making spare containers (refill). It is added
//     to under mu and only while the backend is not closed; Close sets
//     closed under mu before it waits.
type Backend struct {
	d      Driver
	parent string
	root   string

	opMu   sync.RWMutex // lock 1: see Locking
	mu     sync.Mutex   // lock 3: see Locking
	vols   map[string]*vol
	closed atomic.Bool
	// ownDriver: Close closes d (WithOwnedDriver).
	ownDriver bool
	// reaping counts background destroys of generations (see swap);
	// cross-volume operations and Close wait for it.
	reaping sync.WaitGroup

	// Spare containers (WithSpareContainers): empty container datasets
	// made ahead, in the background, so that a new volume's first
	// generation is one ZFS transaction. spares and refilling are guarded
	// by mu; filling counts the refill goroutine.
	spareWant  int
	spares     []string // container components, ready to take
	refilling  bool
	filling    sync.WaitGroup
	spareTaken atomic.Int64
}

type vol struct {
	name    string
	comp    string     // dataset component under parent
	lock    sync.Mutex // lock 2 (see Backend's Locking)
	gens    []*gen     // ascending by n; the last is active
	nextGen int
	quota   int64 // PropQuota (backend_quota.go); 0: none
	// gone: the volume was destroyed; a caller that was waiting for
	// lock gets ErrNotFound.
	gone bool
	// reaping counts this volume's share of Backend.reaping (see
	// Backend's Locking).
	reaping sync.WaitGroup
}

type gen struct {
	n      int
	ds     string
	origin string // full snapshot name or ""
	snaps  []*snap
}

type snap struct {
	short   string
	name    string // user name; "" if hidden
	created time.Time
	deferd  bool
	root    string // PropRootAttr, zfs-fuse only
}

// Option configures a Backend.
type Option func(*Backend)

// WithOwnedDriver makes the backend own its driver: Close closes the
// driver too when it has a Close method (the libzfs_core driver's libzfs
// handle).
func WithOwnedDriver() Option { return func(b *Backend) { b.ownDriver = true } }

// NewBackend opens (creating if needed) a backend on parentDataset, whose
// volumes are mounted under mountRoot as <mountRoot>/<volume>/workspace.
// parentDataset belongs to the backend: it is created with mountpoint=none
// if absent, and must have mountpoint=none if it exists. Existing volumes
// and snapshots under it are rediscovered from their user properties, and
// an interrupted rollback or volume destruction is finished.
//
// With WithOwnedDriver, a failed NewBackend closes the driver.
func NewBackend(ctx context.Context, driver Driver, parentDataset, mountRoot string, opts ...Option) (_ *Backend, err error) {
	b := &Backend{d: driver, parent: parentDataset, root: filepath.Clean(mountRoot), vols: map[string]*vol{}, spareWant: DefaultSpareContainers}
	for _, o := range opts {
		o(b)
	}
	if c, ok := driver.(interface{ Close() error }); ok && b.ownDriver {
		defer func() {
			if err != nil {
				_ = c.Close()
			}
		}()
	}
	if err := ValidateDataset(parentDataset); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(mountRoot) {
		return nil, fmt.Errorf("zfs: mount root %q is not absolute", mountRoot)
	}
	ds, err := driver.Get(ctx, []string{parentDataset}, []string{"type", "mountpoint"}, 0)
	switch {
	case isNotFound(err):
		if err := driver.Create(ctx, parentDataset, CreateOptions{Parents: true, Props: map[string]string{"mountpoint": "none"}}); err != nil {
			return nil, fmt.Errorf("zfs: creating parent dataset: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("zfs: parent dataset: %w", err)
	case ds[0].Props["mountpoint"] != "none":
		return nil, fmt.Errorf("zfs: parent dataset %s has mountpoint=%s; the backend owns it and needs mountpoint=none (zfs set mountpoint=none %s)",
			parentDataset, ds[0].Props["mountpoint"], parentDataset)
	}
	if err := os.MkdirAll(b.root, 0o755); err != nil {
		return nil, fmt.Errorf("zfs: mount root: %w", err)
	}
	destroying, all, err := b.load(ctx)
	if err != nil {
		return nil, err
	}
	if err := b.recover(ctx, destroying, all); err != nil {
		return nil, err
	}
	b.refill()
	return b, nil
}

var _ snapshot.Backend = (*Backend)(nil)

// Kind returns "zfs".
func (b *Backend) Kind() string { return "zfs" }

// WaitIdle waits until background work (destroying generations a
// rollback discarded) has finished.
func (b *Backend) WaitIdle() { b.reaping.Wait(); b.filling.Wait() }

// Driver returns the backend's driver.
func (b *Backend) Driver() Driver { return b.d }

// Parent returns the parent dataset.
func (b *Backend) Parent() string { return b.parent }

// Close marks the backend closed. Data stays on disk and mounted. With
// WithOwnedDriver it also closes the driver (once).
func (b *Backend) Close() error {
	// Under mu: refill checks closed and joins filling under mu, so no
	// refill starts after the Wait below.
	b.mu.Lock()
	first := !b.closed.Swap(true)
	b.mu.Unlock()
	b.reaping.Wait()
	b.filling.Wait()
	if c, ok := b.d.(interface{ Close() error }); ok && b.ownDriver && first {
		if err := c.Close(); err != nil {
			return fmt.Errorf("zfs: closing the %s driver: %w", b.d.Name(), err)
		}
	}
	return nil
}

// VolumeDataset returns the container dataset of a volume: for an
// existing volume the one holding it (which may be a spare container
// named "_s..."), else parent/<volume> (hashed if the name is long).
func (b *Backend) VolumeDataset(volume string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if v := b.vols[volume]; v != nil {
		return b.parent + "/" + v.comp
	}
	return b.parent + "/" + volComponent(volume)
}

// ActiveDataset returns the dataset currently mounted at a volume's Path.
func (b *Backend) ActiveDataset(volume string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v := b.vols[volume]
	if v == nil {
		return "", fmt.Errorf("zfs: volume %q: %w", volume, ErrNotFound)
	}
	return v.active().ds, nil
}

// SnapshotDataset returns the full ZFS name of a volume's snapshot.
func (b *Backend) SnapshotDataset(volume, name string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v := b.vols[volume]
	if v == nil {
		return "", fmt.Errorf("zfs: volume %q: %w", volume, ErrNotFound)
	}
	g, s := v.find(name)
	if s == nil {
		return "", fmt.Errorf("zfs: snapshot %s@%s: %w", volume, name, ErrNotFound)
	}
	return g.ds + "@" + s.short, nil
}

func volComponent(name string) string {
	if len(name) <= maxVerbatim {
		return name
	}
	return hashName(name)
}

func hashName(name string) string {
	h := sha256.Sum256([]byte(name))
	return hashedPrefix + hex.EncodeToString(h[:16])
}

var hiddenSeq atomic.Uint64

func hiddenName() string {
	return fmt.Sprintf("%s%d.%d", hiddenPrefix, time.Now().UnixNano(), hiddenSeq.Add(1))
}

func (b *Backend) path(volume string) string { return filepath.Join(b.root, volume, workspaceDir) }

func (v *vol) active() *gen { return v.gens[len(v.gens)-1] }

// find returns the generation and visible snapshot called name.
func (v *vol) find(name string) (*gen, *snap) {
	for _, g := range v.gens {
		for _, s := range g.snaps {
			if s.name == name {
				return g, s
			}
		}
	}
	return nil, nil
}

func (b *Backend) check(names ...string) error {
	if b.closed.Load() {
		return errors.New("zfs: backend is closed")
	}
	for _, n := range names {
		if err := snapshot.ValidateName(n); err != nil {
			return err
		}
	}
	return nil
}

// lockVol takes opMu shared and the volume's lock; unlock releases both.
func (b *Backend) lockVol(volume string) (*vol, func(), error) {
	b.opMu.RLock()
	b.mu.Lock()
	v := b.vols[volume]
	b.mu.Unlock()
	if v == nil {
		b.opMu.RUnlock()
		return nil, nil, fmt.Errorf("zfs: volume %q: %w", volume, ErrNotFound)
	}
	v.lock.Lock()
	b.mu.Lock()
	gone := v.gone
	b.mu.Unlock()
	if gone {
		v.lock.Unlock()
		b.opMu.RUnlock()
		return nil, nil, fmt.Errorf("zfs: volume %q: %w", volume, ErrNotFound)
	}
	return v, func() { v.lock.Unlock(); b.opMu.RUnlock() }, nil
}

func (b *Backend) genProps(volume string) map[string]string {
	return map[string]string{
		"mountpoint": b.path(volume),
		PropVolume:   volume,
		PropCreated:  strconv.FormatInt(time.Now().UnixNano(), 10),
	}
}
