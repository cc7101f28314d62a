package zfs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/turnbox/turnbox/snapshot"
	"github.com/turnbox/turnbox/snapshot/guard"
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

var loadProps = []string{"type", "origin", "mountpoint", "mounted", "defer_destroy", "creation", PropVolume, PropSnapshot, PropCreated, PropDestroying, PropRootAttr, PropQuota}

// Backend is a snapshot.Backend on ZFS. See the package documentation for
// the dataset layout and the rollback scheme.
type Backend struct {
	d      Driver
	parent string
	root   string

	// opMu: exclusive for operations that span volumes (create, clone,
	// destroy volume); shared for per-volume operations, which also hold
	// the volume's lock.
	opMu sync.RWMutex
	// mu guards vols and every vol/gen/snap field (held briefly, never
	// across a ZFS call).
	mu     sync.Mutex
	vols   map[string]*vol
	closed atomic.Bool
	// ownDriver: Close closes d (WithOwnedDriver).
	ownDriver bool
	// reaping tracks background destruction of discarded generations
	// (see swap); cross-volume operations and Close wait for it.
	reaping sync.WaitGroup

	// Spare containers (WithSpareContainers): empty container datasets
	// made ahead, in the background, so that a new volume's first
	// generation is one ZFS transaction. spares and refilling are guarded
	// by mu; filling tracks the refill goroutine (Close waits for it).
	spareWant  int
	spares     []string // container components, ready to take
	refilling  bool
	filling    sync.WaitGroup
	spareTaken atomic.Int64
}

type vol struct {
	name    string
	comp    string // dataset component under parent
	lock    sync.Mutex
	gens    []*gen // ascending by n; the last is active
	nextGen int
	quota   int64 // PropQuota (backend_quota.go); 0: none
	// gone: the volume was destroyed; a caller that was waiting for
	// lock gets ErrNotFound.
	gone bool
	// reaping tracks this volume's share of Backend.reaping; it is only
	// added to under lock, so DestroyVolume can wait for it holding lock.
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

// DefaultSpareContainers is how many spare containers a backend keeps
// ready unless WithSpareContainers says otherwise.
const DefaultSpareContainers = 2

// WithSpareContainers sets how many empty container datasets the backend
// keeps ready (DefaultSpareContainers; 0 for none: every container is
// named after its volume, and spares left by an earlier configuration
// are left alone). Every ZFS change that creates a dataset is a
// transaction the caller waits for (a pool sync), and a new volume needs
// two datasets, its container and its first generation: CreateVolume and CloneVolume take a spare container when
// one is ready, so they wait for one transaction instead of two, and a
// goroutine makes a new spare afterwards. A volume in a spare container
// is named by its generations' turnbox:volume property; the container's
// own name is "_s" and 16 hex digits instead of the volume's name.
func WithSpareContainers(n int) Option { return func(b *Backend) { b.spareWant = max(n, 0) } }

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

// removeMountDirs removes a destroyed volume's mount point and its
// directory, which a sandbox runtime may have sealed (package guard).
func (b *Backend) removeMountDirs(volume string) {
	dir := filepath.Dir(b.path(volume))
	guard.Unseal(dir)
	os.Remove(b.path(volume))
	os.Remove(dir)
}

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

// CreateVolume makes an empty volume: its first generation, in a spare
// container if one is ready (see WithSpareContainers), else with its
// container (zfs create -p parent/<vol>/g1).
func (b *Backend) CreateVolume(ctx context.Context, volume string) (snapshot.Volume, error) {
	if err := b.check(volume); err != nil {
		return snapshot.Volume{}, err
	}
	b.opMu.Lock()
	defer b.opMu.Unlock()
	if b.exists(volume) {
		return snapshot.Volume{}, fmt.Errorf("zfs: volume %q: %w", volume, ErrExists)
	}
	props := b.genProps(volume)
	comp, err := b.place(ctx, volume, func(ds string, parents bool) error {
		return b.d.Create(ctx, ds, CreateOptions{Parents: parents, Props: props})
	})
	if err != nil {
		return snapshot.Volume{}, fmt.Errorf("zfs: creating volume %q: %w", volume, err)
	}
	v := &vol{name: volume, comp: comp, nextGen: 2}
	v.gens = []*gen{{n: 1, ds: b.parent + "/" + comp + "/g1"}}
	b.mu.Lock()
	b.vols[volume] = v
	b.mu.Unlock()
	return snapshot.Volume{Name: volume, Path: b.path(volume)}, nil
}

// place makes a new volume's first generation with mk, given the
// generation's dataset name and whether its container must be created
// too. It uses a spare container when one is ready (and starts making a
// new spare), else the container parent/<volComponent(volume)>. It
// returns the container's component. Callers hold opMu exclusively.
func (b *Backend) place(ctx context.Context, volume string, mk func(ds string, parents bool) error) (string, error) {
	b.mu.Lock()
	comp := ""
	if n := len(b.spares); n > 0 && b.spareWant > 0 {
		comp = b.spares[n-1]
		b.spares = b.spares[:n-1]
	}
	b.mu.Unlock()
	if comp != "" {
		err := mk(b.parent+"/"+comp+"/g1", false)
		if err == nil {
			b.spareTaken.Add(1)
			b.refill()
			return comp, nil
		}
		// The spare is still empty (a failed create or clone leaves
		// nothing) unless someone else destroyed it: keep it if it is
		// there and report the failure; else go the long way.
		if ok, xerr := b.d.Exists(context.WithoutCancel(ctx), b.parent+"/"+comp); xerr != nil || ok {
			if xerr == nil {
				b.mu.Lock()
				b.spares = append(b.spares, comp)
				b.mu.Unlock()
			}
			return "", err
		}
	}
	comp = volComponent(volume)
	if err := mk(b.parent+"/"+comp+"/g1", true); err != nil {
		return "", err
	}
	b.refill()
	return comp, nil
}

// refill starts making spare containers in the background, up to
// spareWant, unless that is already under way or the backend is closed.
// A failure (e.g. a full pool) stops it until the next volume is made.
func (b *Backend) refill() {
	b.mu.Lock()
	if b.refilling || b.closed.Load() || len(b.spares) >= b.spareWant {
		b.mu.Unlock()
		return
	}
	b.refilling = true
	b.filling.Add(1)
	b.mu.Unlock()
	go func() {
		defer b.filling.Done()
		for {
			b.mu.Lock()
			if b.closed.Load() || len(b.spares) >= b.spareWant {
				b.refilling = false
				b.mu.Unlock()
				return
			}
			b.mu.Unlock()
			comp := spareName()
			err := b.d.Create(context.Background(), b.parent+"/"+comp, CreateOptions{})
			b.mu.Lock()
			if err != nil {
				b.refilling = false
				b.mu.Unlock()
				return
			}
			// A concurrent load (after DestroyVolume) may have listed
			// it already.
			if !slices.Contains(b.spares, comp) {
				b.spares = append(b.spares, comp)
			}
			b.mu.Unlock()
		}
	}()
}

// SpareContainers returns how many spare containers are ready, and how
// many CreateVolume and CloneVolume calls took one since NewBackend.
func (b *Backend) SpareContainers() (ready int, taken int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.spares), b.spareTaken.Load()
}

func spareName() string {
	var r [8]byte
	_, _ = rand.Read(r[:])
	return sparePrefix + hex.EncodeToString(r[:])
}

func (b *Backend) exists(volume string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.vols[volume] != nil
}

// CloneVolume makes volume from (srcVolume, srcSnapshot): a clone of the
// snapshot as the volume's first generation, in a spare container if one
// is ready, else with its container (zfs clone -p).
func (b *Backend) CloneVolume(ctx context.Context, volume, srcVolume, srcSnapshot string) (snapshot.Volume, error) {
	if err := b.check(volume, srcVolume, srcSnapshot); err != nil {
		return snapshot.Volume{}, err
	}
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.mu.Lock()
	src, dst := b.vols[srcVolume], b.vols[volume]
	var origin string
	if src != nil {
		if g, s := src.find(srcSnapshot); s != nil {
			origin = g.ds + "@" + s.short
		}
	}
	b.mu.Unlock()
	switch {
	case src == nil:
		return snapshot.Volume{}, fmt.Errorf("zfs: volume %q: %w", srcVolume, ErrNotFound)
	case origin == "":
		return snapshot.Volume{}, fmt.Errorf("zfs: snapshot %s@%s: %w", srcVolume, srcSnapshot, ErrNotFound)
	case dst != nil:
		return snapshot.Volume{}, fmt.Errorf("zfs: volume %q: %w", volume, ErrExists)
	}
	props := b.genProps(volume)
	comp, err := b.place(ctx, volume, func(ds string, parents bool) error {
		return b.d.Clone(ctx, origin, ds, CreateOptions{Parents: parents, Props: props})
	})
	if err != nil {
		return snapshot.Volume{}, fmt.Errorf("zfs: cloning %s@%s to %q: %w", srcVolume, srcSnapshot, volume, err)
	}
	v := &vol{name: volume, comp: comp, nextGen: 2}
	v.gens = []*gen{{n: 1, ds: b.parent + "/" + comp + "/g1", origin: origin}}
	b.mu.Lock()
	b.vols[volume] = v
	b.mu.Unlock()
	return snapshot.Volume{Name: volume, Path: b.path(volume)}, nil
}

// Volume returns a volume's info; SizeBytes is the container dataset's
// "used" (all generations and snapshots).
func (b *Backend) Volume(ctx context.Context, volume string) (snapshot.Volume, error) {
	if err := b.check(volume); err != nil {
		return snapshot.Volume{}, err
	}
	v, unlock, err := b.lockVol(volume)
	if err != nil {
		return snapshot.Volume{}, err
	}
	defer unlock()
	sp, err := GetSpace(ctx, b.d, b.parent+"/"+v.comp)
	if err != nil {
		return snapshot.Volume{}, fmt.Errorf("zfs: volume %q: %w", volume, err)
	}
	return snapshot.Volume{Name: volume, Path: b.path(volume), SizeBytes: sp.Used}, nil
}

// Volumes lists every volume, sorted by name.
func (b *Backend) Volumes(ctx context.Context) ([]snapshot.Volume, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	b.opMu.RLock()
	defer b.opMu.RUnlock()
	ds, err := b.d.Get(ctx, []string{b.parent}, []string{"used"}, 1)
	if err != nil {
		return nil, fmt.Errorf("zfs: listing volumes: %w", err)
	}
	used := map[string]int64{}
	for _, d := range ds {
		used[d.Name] = d.Int("used")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	res := make([]snapshot.Volume, 0, len(b.vols))
	for _, v := range b.vols {
		res = append(res, snapshot.Volume{Name: v.name, Path: b.path(v.name), SizeBytes: used[b.parent+"/"+v.comp]})
	}
	sort.Slice(res, func(i, j int) bool { return res[i].Name < res[j].Name })
	return res, nil
}

// Snapshot records the volume's content: one zfs snapshot of the active
// generation, with the name and creation time as user properties.
func (b *Backend) Snapshot(ctx context.Context, volume, name string) (snapshot.Snapshot, error) {
	if err := b.check(volume, name); err != nil {
		return snapshot.Snapshot{}, err
	}
	v, unlock, err := b.lockVol(volume)
	if err != nil {
		return snapshot.Snapshot{}, err
	}
	defer unlock()
	b.mu.Lock()
	_, dup := v.find(name)
	a := v.active()
	b.mu.Unlock()
	if dup != nil {
		return snapshot.Snapshot{}, fmt.Errorf("zfs: snapshot %s@%s: %w", volume, name, ErrExists)
	}
	short := name
	if len(a.ds)+1+len(name) > MaxNameLength {
		short = hashName(name)
	}
	now := time.Now()
	props := map[string]string{
		PropSnapshot: name,
		PropCreated:  strconv.FormatInt(now.UnixNano(), 10),
	}
	root := rootAttr(b.path(volume))
	if root != "" {
		props[PropRootAttr] = root
	}
	err = b.d.Snapshot(ctx, a.ds+"@"+short, props)
	if err != nil {
		return snapshot.Snapshot{}, fmt.Errorf("zfs: snapshot %s@%s: %w", volume, name, err)
	}
	b.mu.Lock()
	a.snaps = append(a.snaps, &snap{short: short, name: name, created: now, root: root})
	b.mu.Unlock()
	return snapshot.Snapshot{Volume: volume, Name: name, CreatedAt: now}, nil
}

// Snapshots lists a volume's snapshots, oldest first (generation order,
// then creation order within a generation).
func (b *Backend) Snapshots(ctx context.Context, volume string) ([]snapshot.Snapshot, error) {
	if err := b.check(volume); err != nil {
		return nil, err
	}
	v, unlock, err := b.lockVol(volume)
	if err != nil {
		return nil, err
	}
	defer unlock()
	ds, err := b.d.Get(ctx, []string{b.parent + "/" + v.comp}, []string{"used"}, -1)
	if err != nil {
		return nil, fmt.Errorf("zfs: snapshots of %q: %w", volume, err)
	}
	used := map[string]int64{}
	for _, d := range ds {
		used[d.Name] = d.Int("used")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	res := []snapshot.Snapshot{}
	for _, g := range v.gens {
		for _, s := range g.snaps {
			if s.name != "" {
				res = append(res, snapshot.Snapshot{Volume: volume, Name: s.name, CreatedAt: s.created, SizeBytes: used[g.ds+"@"+s.short]})
			}
		}
	}
	return res, nil
}

// Rollback makes the volume's content equal to snapshot name.
//
// If name is the newest snapshot of the active generation, it is an
// in-place `zfs rollback` (nothing is destroyed). Otherwise it is
// clone-and-swap: the active generation is unmounted (mountpoint=none), the
// target snapshot is cloned as a new generation mounted at Path, and the
// old generation stays, unmounted, with its snapshots, so rolling forward
// to any of them works the same way. If the clone fails, the old
// generation is mounted again and the content is unchanged.
func (b *Backend) Rollback(ctx context.Context, volume, name string) error {
	if err := b.check(volume, name); err != nil {
		return err
	}
	v, unlock, err := b.lockVol(volume)
	if err != nil {
		return err
	}
	defer unlock()
	b.mu.Lock()
	g, s := v.find(name)
	a := v.active()
	inPlace := g == a && s != nil && a.snaps[len(a.snaps)-1] == s
	b.mu.Unlock()
	if s == nil {
		return fmt.Errorf("zfs: snapshot %s@%s: %w", volume, name, ErrNotFound)
	}
	target := g.ds + "@" + s.short
	if inPlace {
		err := b.d.Rollback(ctx, target)
		if err == nil || !errors.Is(err, ErrNotNewest) {
			if err != nil {
				return fmt.Errorf("zfs: rollback %s to %s: %w", volume, name, err)
			}
			if s.root != "" {
				if err := fixRootAttr(b.path(volume), s.root); err != nil {
					return fmt.Errorf("zfs: rollback %s to %s: %w", volume, name, err)
				}
			}
			return nil
		}
		// A snapshot we do not know of is in the way: swap instead.
	}
	return b.swap(ctx, v, a, target)
}

// swap replaces the active generation a by a clone of target.
func (b *Backend) swap(ctx context.Context, v *vol, a *gen, target string) error {
	b.mu.Lock()
	n := v.nextGen
	v.nextGen++
	b.mu.Unlock()
	ng := &gen{n: n, ds: fmt.Sprintf("%s/%s/%s%d", b.parent, v.comp, genPrefix, n), origin: target}
	if err := b.d.SetProps(ctx, a.ds, map[string]string{"mountpoint": "none"}); err != nil {
		return fmt.Errorf("zfs: rollback %s: unmounting %s: %w", v.name, a.ds, err)
	}
	if err := b.d.Clone(ctx, target, ng.ds, CreateOptions{Props: b.genProps(v.name)}); err != nil {
		// Drivers leave nothing behind a failed clone; should one still
		// be there, a later open would take it for the newest generation.
		if ok, xerr := b.d.Exists(context.WithoutCancel(ctx), ng.ds); xerr == nil && ok {
			_ = b.d.Destroy(context.WithoutCancel(ctx), ng.ds, DestroyOptions{})
		}
		// Put the old generation back; the volume is unchanged.
		if rerr := b.mountAt(context.WithoutCancel(ctx), a.ds, b.path(v.name)); rerr != nil {
			return fmt.Errorf("zfs: rollback %s: cloning %s: %w (and remounting %s failed: %v; reopening the backend repairs it)", v.name, target, err, a.ds, rerr)
		}
		return fmt.Errorf("zfs: rollback %s: cloning %s: %w", v.name, target, err)
	}
	b.mu.Lock()
	quota := v.quota
	b.mu.Unlock()
	if quota > 0 {
		// The clone has its origin's refquota, if any, from when the
		// snapshot was taken: give it the volume's current quota. On
		// failure undo the swap; the volume is unchanged.
		if err := b.applyRefquota(ctx, ng.ds, quota); err != nil {
			uctx := context.WithoutCancel(ctx)
			derr := b.d.Destroy(uctx, ng.ds, DestroyOptions{})
			rerr := b.mountAt(uctx, a.ds, b.path(v.name))
			return fmt.Errorf("zfs: rollback %s: setting the quota on the new generation: %w (undo: destroy %v, remount %v)", v.name, err, derr, rerr)
		}
	}
	b.mu.Lock()
	v.gens = append(v.gens, ng)
	drop := len(a.snaps) == 0
	b.mu.Unlock()
	if drop {
		// The old generation has no snapshots: nothing can depend on it
		// and its content was discarded by this rollback. Destroy it in
		// the background, off the rollback's latency; it is unmounted
		// and no name refers to it any more.
		b.mu.Lock()
		for i, x := range v.gens {
			if x == a {
				v.gens = append(v.gens[:i:i], v.gens[i+1:]...)
				break
			}
		}
		b.mu.Unlock()
		b.reaping.Add(1)
		v.reaping.Add(1)
		go func() {
			defer b.reaping.Done()
			defer v.reaping.Done()
			if b.d.Destroy(context.Background(), a.ds, DestroyOptions{}) == nil {
				b.mu.Lock()
				b.forgetDeferredLocked(a.origin)
				b.mu.Unlock()
			}
		}()
	}
	return nil
}

// destroyGen destroys an inactive, snapshot-less generation, best effort
// (a failure leaves an unmounted dataset that the next open or
// DestroyVolume removes).
func (b *Backend) destroyGen(ctx context.Context, v *vol, g *gen) {
	if err := b.d.Destroy(ctx, g.ds, DestroyOptions{}); err != nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, x := range v.gens {
		if x == g {
			v.gens = append(v.gens[:i:i], v.gens[i+1:]...)
			break
		}
	}
	b.forgetDeferredLocked(g.origin)
}

// forgetDeferredLocked drops a deferred-destroy snapshot from the cache
// once its last clone is gone (ZFS has destroyed it).
func (b *Backend) forgetDeferredLocked(origin string) {
	if origin == "" || len(b.dependentsLocked(origin)) > 0 {
		return
	}
	ds, short, _ := SplitSnapshot(origin)
	for _, v := range b.vols {
		for _, g := range v.gens {
			if g.ds != ds {
				continue
			}
			for i, s := range g.snaps {
				if s.short == short && s.deferd {
					g.snaps = append(g.snaps[:i:i], g.snaps[i+1:]...)
					return
				}
			}
		}
	}
}

// dependentsLocked lists the known datasets cloned from snapshot full.
func (b *Backend) dependentsLocked(full string) []string {
	var res []string
	for _, v := range b.vols {
		for _, g := range v.gens {
			if g.origin == full {
				res = append(res, g.ds)
			}
		}
	}
	return res
}

// DestroySnapshot deletes one snapshot. A snapshot that clones depend on
// (another volume, or a generation of this volume made by a rollback to
// it) cannot be destroyed in ZFS: it is renamed to a hidden name and
// marked for deferred destruction (zfs destroy -d), so ZFS frees it when
// its last clone goes.
func (b *Backend) DestroySnapshot(ctx context.Context, volume, name string) error {
	if err := b.check(volume, name); err != nil {
		return err
	}
	v, unlock, err := b.lockVol(volume)
	if err != nil {
		return err
	}
	defer unlock()
	b.mu.Lock()
	g, s := v.find(name)
	var deps []string
	if s != nil {
		deps = b.dependentsLocked(g.ds + "@" + s.short)
	}
	b.mu.Unlock()
	if s == nil {
		return fmt.Errorf("zfs: snapshot %s@%s: %w", volume, name, ErrNotFound)
	}
	full := g.ds + "@" + s.short
	if len(deps) == 0 {
		if err := b.d.Destroy(ctx, full, DestroyOptions{}); err != nil {
			return fmt.Errorf("zfs: destroying snapshot %s@%s: %w", volume, name, err)
		}
		b.mu.Lock()
		for i, x := range g.snaps {
			if x == s {
				g.snaps = append(g.snaps[:i:i], g.snaps[i+1:]...)
				break
			}
		}
		gc := g != v.active() && len(g.snaps) == 0
		b.mu.Unlock()
		if gc {
			b.destroyGen(ctx, v, g)
		}
		return nil
	}
	hidden := g.ds + "@" + hiddenName()
	if err := b.d.Rename(ctx, full, hidden); err != nil {
		return fmt.Errorf("zfs: destroying snapshot %s@%s (hiding it from its clones): %w", volume, name, err)
	}
	b.mu.Lock()
	s.name, s.short = "", hidden[strings.IndexByte(hidden, '@')+1:]
	for _, w := range b.vols {
		for _, x := range w.gens {
			if x.origin == full {
				x.origin = hidden
			}
		}
	}
	b.mu.Unlock()
	if err := b.d.Destroy(ctx, hidden, DestroyOptions{Defer: true}); err != nil {
		// Hidden but not marked: it is invisible either way; the next
		// DestroyVolume or open sweeps it.
		return nil
	}
	b.mu.Lock()
	s.deferd = true
	b.mu.Unlock()
	return nil
}

// DestroyVolume deletes a volume with all its generations and snapshots.
// Volumes cloned from it survive: each such clone is promoted (zfs
// promote), taking over the snapshots it depends on, which are first
// renamed to hidden names and, once nothing depends on them, destroyed.
func (b *Backend) DestroyVolume(ctx context.Context, volume string) error {
	if err := b.check(volume); err != nil {
		return err
	}
	if done, err := b.destroyAlone(ctx, volume); done {
		return err
	}
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.reaping.Wait()
	b.mu.Lock()
	v := b.vols[volume]
	b.mu.Unlock()
	if v == nil {
		return fmt.Errorf("zfs: volume %q: %w", volume, ErrNotFound)
	}
	err := b.destroyVolume(ctx, v.name, b.parent+"/"+v.comp)
	_, all, lerr := b.load(context.WithoutCancel(ctx))
	if lerr != nil && err == nil {
		err = lerr
	}
	if lerr != nil {
		return err
	}
	if rerr := b.repairMounts(context.WithoutCancel(ctx), all); rerr != nil && err == nil {
		err = fmt.Errorf("zfs: after destroying volume %q: %w", volume, rerr)
	}
	return err
}

// destroyAlone is DestroyVolume's common case: no other volume was cloned
// from this one, so nothing is promoted and no other volume changes. It
// holds only the volume's lock (and opMu shared, which keeps forks of the
// volume out), so snapshots, rollbacks and reads of other volumes go on
// meanwhile. It reports done=false, having changed nothing the exclusive
// path cannot finish, when the volume has dependents or a step failed:
// DestroyVolume then takes the exclusive path, which also reloads the
// cache from ZFS.
func (b *Backend) destroyAlone(ctx context.Context, volume string) (done bool, err error) {
	v, unlock, err := b.lockVol(volume)
	if err != nil {
		return true, err
	}
	defer unlock()
	container := b.parent + "/" + v.comp
	b.mu.Lock()
	dependents := b.dependsOnLocked(container)
	b.mu.Unlock()
	if dependents {
		return false, nil
	}
	// A background destroy of one of its old generations would race
	// with the destruction of the container.
	v.reaping.Wait()
	if td, ok := b.d.(treeDestroyer); !ok || td.destroyTree(ctx, container, PropDestroying, "1") != nil {
		if err := b.d.SetProps(ctx, container, map[string]string{PropDestroying: "1"}); err != nil && !errors.Is(err, ErrNoSpace) {
			return false, nil
		}
		if err := b.destroyGens(ctx, v.name, container); err != nil {
			return false, nil
		}
	}
	b.removeMountDirs(v.name)
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.vols, v.name)
	v.gone = true
	// A generation cloned from another volume's snapshot that was
	// destroyed while this clone needed it (deferred) took that snapshot
	// with it.
	for _, g := range v.gens {
		b.forgetDeferredLocked(g.origin)
	}
	return true, nil
}

// dependsOnLocked reports whether a known generation outside container
// was cloned from a snapshot inside it.
func (b *Backend) dependsOnLocked(container string) bool {
	prefix := container + "/"
	for _, w := range b.vols {
		if b.parent+"/"+w.comp == container {
			continue
		}
		for _, g := range w.gens {
			if strings.HasPrefix(g.origin, prefix) {
				return true
			}
		}
	}
	return false
}

func (b *Backend) destroyVolume(ctx context.Context, name, container string) error {
	// Mark the volume so an interrupted destruction is finished on open.
	// On a full pool even a property cannot be set; go on unmarked.
	if err := b.d.SetProps(ctx, container, map[string]string{PropDestroying: "1"}); err != nil && !errors.Is(err, ErrNoSpace) {
		return fmt.Errorf("zfs: destroying volume %q: %w", name, err)
	}
	prefix := container + "/"
	// 1. Promote clones outside the volume until none depends on it.
	for i := 0; ; i++ {
		all, err := b.d.Get(ctx, []string{b.parent}, []string{"type", "origin"}, -1)
		if err != nil {
			return fmt.Errorf("zfs: destroying volume %q: %w", name, err)
		}
		var ext, origin string
		for _, d := range all {
			if o := d.Props["origin"]; o != "" && strings.HasPrefix(o, prefix) && !strings.HasPrefix(d.Name, prefix) {
				ext, origin = d.Name, o
				break
			}
		}
		if ext == "" {
			break
		}
		if i > 1000 {
			return fmt.Errorf("zfs: destroying volume %q: clone %s still depends on it: %w", name, ext, ErrBusy)
		}
		// The origin's filesystem's snapshots up to the origin move to
		// ext: hide the visible ones so they neither collide with ext's
		// nor show up as ext's.
		ods, _, _ := SplitSnapshot(origin)
		for _, d := range all {
			fs, short, ok := SplitSnapshot(d.Name)
			if !ok || fs != ods {
				continue
			}
			if !strings.HasPrefix(short, hiddenPrefix) {
				if err := b.d.Rename(ctx, d.Name, fs+"@"+hiddenName()); err != nil {
					return fmt.Errorf("zfs: destroying volume %q: %w", name, err)
				}
			}
			if d.Name == origin {
				break
			}
		}
		if err := b.d.Promote(ctx, ext); err != nil {
			return fmt.Errorf("zfs: destroying volume %q: promoting its clone %s: %w", name, ext, err)
		}
	}
	// 2. Destroy the generations, clones before their origins.
	if err := b.destroyGens(ctx, name, container); err != nil {
		return err
	}
	b.removeMountDirs(name)
	// 3. Sweep hidden snapshots nothing depends on any more.
	return b.sweep(ctx)
}

// destroyGens destroys a volume's generations, clones before their
// origins, and then its container: in one transaction if the driver is a
// treeDestroyer, else (or if that fails, having perhaps done part of the
// job) one dataset at a time.
func (b *Backend) destroyGens(ctx context.Context, name, container string) error {
	if td, ok := b.d.(treeDestroyer); ok && td.destroyTree(ctx, container, "", "") == nil {
		return nil
	}
	for {
		all, err := b.d.Get(ctx, []string{container}, []string{"type", "origin"}, -1)
		if isNotFound(err) {
			break
		}
		if err != nil {
			return fmt.Errorf("zfs: destroying volume %q: %w", name, err)
		}
		needed := map[string]bool{}
		var gens []string
		for _, d := range all {
			if o := d.Props["origin"]; o != "" {
				fs, _, _ := SplitSnapshot(o)
				needed[fs] = true
			}
			if d.Type() == "filesystem" && d.Name != container {
				gens = append(gens, d.Name)
			}
		}
		if len(gens) == 0 {
			if err := b.d.Destroy(ctx, container, DestroyOptions{}); err != nil && !isNotFound(err) {
				return fmt.Errorf("zfs: destroying volume %q: %w", name, err)
			}
			break
		}
		progress := false
		for _, g := range gens {
			if needed[g] {
				continue
			}
			if err := b.d.Destroy(ctx, g, DestroyOptions{Recursive: true}); err != nil {
				return fmt.Errorf("zfs: destroying volume %q: %w", name, err)
			}
			progress = true
		}
		if !progress {
			return fmt.Errorf("zfs: destroying volume %q: its generations depend on each other in a cycle: %w", name, ErrBusy)
		}
	}
	return nil
}

// sweep destroys (or marks for deferred destruction) every hidden
// snapshot under the parent not yet marked.
func (b *Backend) sweep(ctx context.Context) error {
	all, err := b.d.Get(ctx, []string{b.parent}, []string{"defer_destroy"}, -1)
	if err != nil {
		return err
	}
	for _, d := range all {
		_, short, ok := SplitSnapshot(d.Name)
		if ok && strings.HasPrefix(short, hiddenPrefix) && d.Props["defer_destroy"] != "on" {
			if err := b.d.Destroy(ctx, d.Name, DestroyOptions{Defer: true}); err != nil && !isNotFound(err) {
				return err
			}
		}
	}
	return nil
}

// load rebuilds the cache from ZFS and returns the container datasets of
// volumes whose destruction was interrupted, and the listing it read
// (loadProps of everything under the parent, for repairMounts).
func (b *Backend) load(ctx context.Context) (destroying map[string]string, all []Dataset, err error) {
	all, err = b.d.Get(ctx, []string{b.parent}, loadProps, -1)
	if err != nil {
		return nil, nil, fmt.Errorf("zfs: listing %s: %w", b.parent, err)
	}
	vols := map[string]*vol{}
	byComp := map[string]*vol{}
	gens := map[string]*gen{}
	destroying = map[string]string{}
	doomed := map[string]bool{}
	quotas := map[string]int64{}
	spares := map[string]bool{} // "_s" containers with no filesystem in them
	for _, d := range all {
		rel, ok := strings.CutPrefix(d.Name, b.parent+"/")
		if !ok {
			continue
		}
		fsRel, short, isSnap := strings.Cut(rel, "@")
		parts := strings.Split(fsRel, "/")
		switch {
		case !isSnap && len(parts) == 1:
			if d.Props[PropDestroying] != "" {
				doomed[parts[0]] = true
			}
			if q, err := strconv.ParseInt(d.Props[PropQuota], 10, 64); err == nil && q > 0 {
				quotas[parts[0]] = q
			}
			if strings.HasPrefix(parts[0], sparePrefix) && !doomed[parts[0]] {
				spares[parts[0]] = true
			}
		case !isSnap && len(parts) == 2:
			delete(spares, parts[0])
			n, err := strconv.Atoi(strings.TrimPrefix(parts[1], genPrefix))
			name := d.Props[PropVolume]
			if err != nil || !strings.HasPrefix(parts[1], genPrefix) || name == "" ||
				(volComponent(name) != parts[0] && !strings.HasPrefix(parts[0], sparePrefix)) {
				continue // not ours
			}
			if v := vols[name]; v != nil && v.comp != parts[0] {
				continue // a second container claiming the name: not ours
			}
			if doomed[parts[0]] {
				destroying[name] = b.parent + "/" + parts[0]
				continue
			}
			v := byComp[parts[0]]
			if v == nil {
				v = &vol{name: name, comp: parts[0]}
				byComp[parts[0]] = v
				vols[name] = v
			}
			g := &gen{n: n, ds: d.Name, origin: d.Props["origin"]}
			v.gens = append(v.gens, g)
			gens[d.Name] = g
		case isSnap && len(parts) == 2:
			g := gens[strings.TrimSuffix(d.Name, "@"+short)]
			if g == nil {
				continue
			}
			s := &snap{short: short, deferd: d.Props["defer_destroy"] == "on"}
			if !strings.HasPrefix(short, hiddenPrefix) {
				s.name = d.Props[PropSnapshot]
				if s.name == "" {
					s.name = short
				}
			}
			s.root = d.Props[PropRootAttr]
			if ns, err := strconv.ParseInt(d.Props[PropCreated], 10, 64); err == nil {
				s.created = time.Unix(0, ns)
			} else {
				s.created = d.Created()
			}
			g.snaps = append(g.snaps, s)
		}
	}
	for _, v := range vols {
		sort.Slice(v.gens, func(i, j int) bool { return v.gens[i].n < v.gens[j].n })
		v.nextGen = v.gens[len(v.gens)-1].n + 1
		v.quota = quotas[v.comp]
	}
	b.mu.Lock()
	// Keep the lock objects of volumes that survive, so a concurrent
	// waiter on an old *vol still serializes with new callers; a waiter
	// on a volume that is gone gets ErrNotFound.
	for name, old := range b.vols {
		if nv := vols[name]; nv != nil {
			old.gens, old.nextGen, old.comp, old.quota = nv.gens, nv.nextGen, nv.comp, nv.quota
			vols[name] = old
		} else {
			old.gone = true
		}
	}
	b.vols = vols
	b.spares = b.spares[:0]
	for c := range spares {
		b.spares = append(b.spares, c)
	}
	sort.Strings(b.spares)
	b.mu.Unlock()
	return destroying, all, nil
}

// recover repairs what a crash can leave: an interrupted DestroyVolume, an
// interrupted swap (the newest generation must be the one mounted at
// Path, every other one unmounted).
//
// all is load's listing; it is read again if a destruction was finished.
func (b *Backend) recover(ctx context.Context, destroying map[string]string, all []Dataset) error {
	for name, container := range destroying {
		if err := b.destroyVolume(ctx, name, container); err != nil {
			return fmt.Errorf("zfs: finishing the destruction of volume %q: %w", name, err)
		}
	}
	if len(destroying) > 0 {
		var err error
		if _, all, err = b.load(ctx); err != nil {
			return err
		}
	}
	return b.repairMounts(ctx, all)
}

// repairMounts makes every volume's newest generation the one mounted at
// its Path and every other generation unmounted. Besides recovery it runs
// after a DestroyVolume, whose promotions remount the clones forked from
// the destroyed volume: zfs-fuse has left such a clone unmounted. all is
// a listing of the parent with the mountpoint and mounted properties,
// taken after the last change (load's); a newest generation that the
// listing calls mounted is also checked with the kernel, and mounts are
// verified as they are made (mountAt).
func (b *Backend) repairMounts(ctx context.Context, all []Dataset) error {
	props := map[string]map[string]string{}
	for _, d := range all {
		props[d.Name] = d.Props
	}
	b.mu.Lock()
	type fix struct{ ds, mp string }
	var fixes []fix
	for _, v := range b.vols {
		for i, g := range v.gens {
			want := "none"
			if i == len(v.gens)-1 {
				want = b.path(v.name)
			}
			p := props[g.ds]
			if p["mountpoint"] != want {
				fixes = append(fixes, fix{g.ds, want})
			} else if want != "none" && (p["mounted"] == "no" || !mountedAt(want)) {
				fixes = append(fixes, fix{g.ds, "none"}, fix{g.ds, want})
			}
		}
	}
	b.mu.Unlock()
	// Unmount first, then mount, so two generations never fight for Path.
	sort.SliceStable(fixes, func(i, j int) bool { return fixes[i].mp == "none" && fixes[j].mp != "none" })
	for _, f := range fixes {
		var err error
		if f.mp == "none" {
			err = b.d.SetProps(ctx, f.ds, map[string]string{"mountpoint": "none"})
		} else {
			err = b.mountAt(ctx, f.ds, f.mp)
		}
		if err != nil {
			return fmt.Errorf("zfs: repairing the mount of %s: %w", f.ds, err)
		}
	}
	return nil
}
