//go:build cgo

package btrfs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"

	cbtrfs "github.com/containerd/btrfs/v2"
	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/snapshot"
	"github.com/turnbox/turnbox/snapshot/guard"
	"github.com/turnbox/turnbox/snapshot/keylock"
)

// Kind is the name Backend.Kind returns.
const Kind = "btrfs"

// On-disk layout under root. Entries whose names start with '.' are never
// valid volume or snapshot names (snapshot.ValidateName requires a letter
// or digit first), so they can hold work in progress without colliding.
const (
	volumesDir   = "volumes"   // <root>/volumes/<volume>/workspace: the volume's subvolume
	snapshotsDir = "snapshots" // <root>/snapshots/<volume>/<name>: read-only snapshots
	workspace    = "workspace" // the subvolume inside a volume's own directory

	rollbackPrefix = ".rollback-" // <root>/volumes/<volume>/.rollback-*: rollback temp
	trashPrefix    = ".trash-"    // <root>/volumes/.trash-*: an old tree being deleted
)

// Backend is a snapshot.Backend on a directory of a mounted btrfs
// filesystem. Each volume is a subvolume, each snapshot a read-only
// snapshot of it; every operation is one or two btrfs ioctls plus renames,
// with no process started. Create one with New.
//
// Guarantees beyond the snapshot.Backend contract:
//
//   - Snapshot is durable on return without an extra sync: the kernel
//     creates a snapshot by committing a transaction (the superblock write
//     with its flush is waited for), and the commit also carries every
//     earlier change to the filesystem, including the directory holding the
//     snapshot. Its cost therefore has the device's flush latency as floor.
//   - Rollback is atomic across a crash (the old or the restored tree, never
//     a mix). It is durable at the filesystem's next commit (the next
//     Snapshot, or the commit= interval, 30 s by default), or on return
//     with WithDurableRollback.
//   - CreateVolume and CloneVolume appear whole or not at all; after a crash
//     before the next commit a newly created volume may be missing, never
//     half-made.
//   - SizeBytes comes from quota groups: a volume's is its subvolume's
//     referenced bytes (simple quotas: what it wrote that still exists),
//     a snapshot's its exclusive bytes (the blocks only it holds) under
//     full qgroups, as of the last transaction commit, and 0 under simple
//     quotas (a snapshot writes nothing; what it pins is charged to its
//     volume, see SetQuota). Without quotas on the filesystem (SetQuota
//     turns them on) both are 0.
//
// Methods are safe for concurrent use; calls naming the same volume are
// serialized by the Backend.
type Backend struct {
	root    string // absolute
	volumes string // <root>/volumes
	snaps   string // <root>/snapshots
	opts    options
	// Lock order: a volume's lock in locks before quotaMu (SetQuota
	// turns quotas on holding the volume's lock); reaper.mu is taken
	// last, and no other lock is taken while it is held.
	locks  keylock.Set
	reaper reaper
	closed atomic.Bool
	// quotas is set once quotas are known to be on (quota_linux.go),
	// simple with it if they are simple quotas; quotaMu serializes
	// turning them on.
	quotas  atomic.Bool
	simple  atomic.Bool
	quotaMu sync.Mutex
	kicks   atomic.Int64 // kickCleaner calls not yet served
}

var _ snapshot.Backend = (*Backend)(nil)

// Option configures New.
type Option func(*options)

type options struct {
	durableRollback      bool
	allowNoFlushOnCommit bool
}

// WithoutFlushOnCommit lets New accept a filesystem mounted without the
// flushoncommit option. Snapshot is then consistent only for files that
// no one is writing during the call: btrfs flushes a volume's dirty data
// before it snapshots it, but a write landing between that flush and the
// transaction commit can leave the file's new size in the snapshot without
// its data, which reads as zeros at the file's end (seen here in about 1
// of 20 snapshots of a file appended to in a loop). Use it only when the
// caller quiesces writers before every Snapshot (the embedded host freezes
// the sandbox).
func WithoutFlushOnCommit() Option {
	return func(o *options) { o.allowNoFlushOnCommit = true }
}

// WithDurableRollback makes Rollback commit the filesystem transaction
// before returning, so that a rollback that returned survives a host crash.
// It costs one more transaction commit (a device flush, milliseconds) per
// rollback. Without it a rollback is still atomic across a crash, and is
// made durable by the next Snapshot.
func WithDurableRollback(on bool) Option {
	return func(o *options) { o.durableRollback = on }
}

// New opens (creating if needed) a btrfs backend rooted at root, a
// directory on a mounted btrfs filesystem. If root is not on btrfs, or the
// filesystem is mounted without flushoncommit (see WithoutFlushOnCommit),
// the error wraps snapshot.ErrUnsupported. New removes what a crash may have
// left behind: volumes being created, rollback temporaries, and the
// remains of volumes being destroyed. One Backend at a time must own a
// root.
func New(root string, opts ...Option) (*Backend, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("btrfs: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("btrfs: %w", err)
	}
	if err := checkBtrfs(abs); err != nil {
		return nil, fmt.Errorf("btrfs: %w: %w", snapshot.ErrUnsupported, err)
	}
	b := &Backend{
		root:    abs,
		volumes: filepath.Join(abs, volumesDir),
		snaps:   filepath.Join(abs, snapshotsDir),
	}
	b.reaper.cond.L = &b.reaper.mu
	for _, o := range opts {
		o(&b.opts)
	}
	if fc, err := hasFlushOnCommit(abs); err != nil {
		return nil, fmt.Errorf("btrfs: reading the mount options of %s: %w", abs, err)
	} else if !fc && !b.opts.allowNoFlushOnCommit {
		return nil, fmt.Errorf("btrfs: %w: the filesystem holding %s is mounted without flushoncommit, so a snapshot taken while a file is being written can hold zeros at the end of that file; remount it with -o remount,flushoncommit, or pass WithoutFlushOnCommit if writers are always quiesced before Snapshot", snapshot.ErrUnsupported, abs)
	}
	for _, d := range []string{b.volumes, b.snaps} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("btrfs: %w", err)
		}
	}
	if err := b.recover(); err != nil {
		return nil, fmt.Errorf("btrfs: removing leftovers of an earlier run: %w", err)
	}
	return b, nil
}

// recover removes the temporaries listed in the Backend's layout, and the
// directories and snapshots of volumes whose workspace is gone (a crash in
// the middle of DestroyVolume).
func (b *Backend) recover() error {
	var errs []error
	vols, err := os.ReadDir(b.volumes)
	if err != nil {
		return err
	}
	for _, e := range vols {
		p := filepath.Join(b.volumes, e.Name())
		if strings.HasPrefix(e.Name(), ".") {
			errs = append(errs, removeTree(p))
			continue
		}
		if !b.volumeExists(e.Name()) { // an interrupted DestroyVolume
			errs = append(errs, removeTree(p))
			continue
		}
		inner, err := os.ReadDir(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, f := range inner {
			if strings.HasPrefix(f.Name(), rollbackPrefix) {
				errs = append(errs, removeTree(filepath.Join(p, f.Name())))
			}
		}
	}
	snaps, err := os.ReadDir(b.snaps)
	if err != nil {
		return err
	}
	for _, e := range snaps {
		if strings.HasPrefix(e.Name(), ".") || !b.volumeExists(e.Name()) {
			errs = append(errs, removeTree(filepath.Join(b.snaps, e.Name())))
		}
	}
	return errors.Join(errs...)
}

// Kind returns "btrfs".
func (b *Backend) Kind() string { return Kind }

// Root returns the absolute directory the backend keeps its data under.
func (b *Backend) Root() string { return b.root }

// Close marks the backend closed, so that later calls fail, and waits for
// background deletions of old trees to finish. Data stays on disk.
func (b *Backend) Close() error {
	b.closed.Store(true)
	b.reaper.wait()
	return nil
}

var errClosed = errors.New("btrfs: backend is closed")

// begin checks what every method checks first: the backend is open, the
// context is live, and the names are valid.
func (b *Backend) begin(ctx context.Context, names ...string) error {
	if b.closed.Load() {
		return errClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, n := range names {
		if err := snapshot.ValidateName(n); err != nil {
			return err
		}
	}
	return nil
}

func (b *Backend) volumeDir(volume string) string { return filepath.Join(b.volumes, volume) }
func (b *Backend) volumePath(volume string) string {
	return filepath.Join(b.volumes, volume, workspace)
}
func (b *Backend) snapDir(volume string) string { return filepath.Join(b.snaps, volume) }
func (b *Backend) snapPath(volume, name string) string {
	return filepath.Join(b.snaps, volume, name)
}

func (b *Backend) volumeExists(volume string) bool {
	_, err := os.Lstat(b.volumePath(volume))
	return err == nil
}

// volumeInfo describes a volume. SizeBytes is its subvolume's referenced
// bytes when quotas are on (the qgroup's count, as of the last commit),
// else 0: without qgroups btrfs cannot tell a subvolume's size short of a
// walk of the tree.
func (b *Backend) volumeInfo(volume string) snapshot.Volume {
	v := snapshot.Volume{Name: volume, Path: b.volumePath(volume)}
	if b.quotasOn() {
		if info, err := getSubvolInfo(v.Path); err == nil {
			v.SizeBytes, _ = b.sizes(info.id)
		}
	}
	return v
}

// CreateVolume makes a new, empty subvolume at <root>/volumes/<volume>/workspace.
func (b *Backend) CreateVolume(ctx context.Context, volume string) (snapshot.Volume, error) {
	if err := b.begin(ctx, volume); err != nil {
		return snapshot.Volume{}, err
	}
	defer b.locks.Lock(volume)()
	return b.makeVolume(volume, func(dst string) error {
		if err := cbtrfs.SubvolCreate(dst); err != nil {
			return fmt.Errorf("btrfs: create volume %s: %w", volume, mapErr(err))
		}
		return nil
	})
}

// CloneVolume makes volume a writable snapshot of (srcVolume, srcSnapshot).
// The clone shares blocks with the snapshot copy-on-write but is otherwise
// independent of it: either can be destroyed without touching the other.
func (b *Backend) CloneVolume(ctx context.Context, volume, srcVolume, srcSnapshot string) (snapshot.Volume, error) {
	if err := b.begin(ctx, volume, srcVolume, srcSnapshot); err != nil {
		return snapshot.Volume{}, err
	}
	defer b.locks.Lock(volume, srcVolume)()
	src := b.snapPath(srcVolume, srcSnapshot)
	if !b.volumeExists(srcVolume) {
		return snapshot.Volume{}, fmt.Errorf("btrfs: clone %s: volume %s: %w", volume, srcVolume, snapshot.ErrNotFound)
	}
	if _, err := os.Lstat(src); err != nil {
		return snapshot.Volume{}, fmt.Errorf("btrfs: clone %s: snapshot %s@%s: %w", volume, srcVolume, srcSnapshot, mapErr(err))
	}
	return b.makeVolume(volume, func(dst string) error {
		if err := cbtrfs.SubvolSnapshot(dst, src, false); err != nil {
			return fmt.Errorf("btrfs: clone %s from %s@%s: %w", volume, srcVolume, srcSnapshot, mapErr(err))
		}
		if err := b.clearInheritedLimit(dst); err != nil {
			return errors.Join(fmt.Errorf("btrfs: clone %s: clearing the quota copied from %s: %w", volume, srcVolume, mapErr(err)), deleteSubvol(dst))
		}
		return nil
	})
}

// makeVolume makes the volume's directory and has mk create the
// subvolume at Path. The volume exists once its workspace does, which the
// ioctl creates atomically, so there is no half-made state to hide: a
// directory without a workspace is ignored by Volume and Volumes and
// removed by New. The caller holds volume's lock.
func (b *Backend) makeVolume(volume string, mk func(dst string) error) (snapshot.Volume, error) {
	if b.volumeExists(volume) {
		return snapshot.Volume{}, fmt.Errorf("btrfs: volume %s: %w", volume, snapshot.ErrExists)
	}
	// The remains of a DestroyVolume that failed halfway must not show up
	// under the new volume.
	if err := b.removeRemains(volume); err != nil {
		return snapshot.Volume{}, fmt.Errorf("btrfs: volume %s: removing the remains of an earlier one: %w", volume, mapErr(err))
	}
	if err := os.Mkdir(b.volumeDir(volume), 0o755); err != nil {
		return snapshot.Volume{}, fmt.Errorf("btrfs: volume %s: %w", volume, mapErr(err))
	}
	if err := mk(b.volumePath(volume)); err != nil {
		return snapshot.Volume{}, errors.Join(err, removeTree(b.volumeDir(volume)))
	}
	return b.volumeInfo(volume), nil
}

// Volume returns a volume's info.
func (b *Backend) Volume(ctx context.Context, volume string) (snapshot.Volume, error) {
	if err := b.begin(ctx, volume); err != nil {
		return snapshot.Volume{}, err
	}
	if _, err := os.Lstat(b.volumePath(volume)); err != nil {
		return snapshot.Volume{}, fmt.Errorf("btrfs: volume %s: %w", volume, mapErr(err))
	}
	return b.volumeInfo(volume), nil
}

// Volumes lists every volume, sorted by name.
func (b *Backend) Volumes(ctx context.Context) ([]snapshot.Volume, error) {
	if err := b.begin(ctx); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(b.volumes)
	if err != nil {
		return nil, fmt.Errorf("btrfs: list volumes: %w", err)
	}
	out := []snapshot.Volume{}
	for _, e := range ents { // os.ReadDir sorts by name
		if snapshot.ValidateName(e.Name()) != nil || !b.volumeExists(e.Name()) {
			continue
		}
		out = append(out, b.volumeInfo(e.Name()))
	}
	return out, nil
}

// DestroyVolume deletes a volume's subvolume and all its snapshots. Clones
// made from its snapshots are independent subvolumes and survive.
//
// It returns once the space is free again: btrfs unlinks a subvolume at
// once but frees its blocks in the background, so DestroyVolume commits a
// transaction (which wakes the kernel's cleaner thread), waits for the
// deleted subvolumes' root items to go, and commits again to release the
// freed extents. That costs two commits plus the cleaning (which grows
// with the volume's size); if ctx ends first, DestroyVolume returns nil
// and the space comes back a little later. DestroySnapshot and Rollback do
// not wait.
//
// Everything is deleted in place, workspace first: the volume is gone (to
// Volume, Volumes, Snapshots) as soon as its subvolume is, and subvolume
// deletion, unlike a rename, works on a full filesystem (btrfs lets it use
// its global reserve). A volume directory without a workspace is the
// remains of an interrupted destroy; New and the next CreateVolume or
// CloneVolume of that name remove it.
func (b *Backend) DestroyVolume(ctx context.Context, volume string) error {
	if err := b.begin(ctx, volume); err != nil {
		return err
	}
	defer b.locks.Lock(volume)()
	if err := guard.Unseal(b.volumeDir(volume)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("btrfs: destroy volume %s: %w", volume, mapErr(err))
	}
	ws, err := b.openWorkspace(volume)
	if errors.Is(err, snapshot.ErrTampered) && b.volumeDirExists(volume) {
		// A sandbox replaced Path: remove what is there without following
		// it, and whatever else the volume's directory holds.
		return b.destroyRemains(ctx, volume, nil)
	}
	if err != nil {
		return fmt.Errorf("btrfs: destroy volume %s: %w", volume, mapErr(err))
	}
	ws.Close()
	info, err := getSubvolInfo(b.volumePath(volume)) // O_NOFOLLOW
	if err != nil {
		return fmt.Errorf("btrfs: destroy volume %s: %w", volume, mapErr(err))
	}
	group := b.groupOf(info.id)
	if err := deleteSubvol(b.volumePath(volume)); err != nil {
		return fmt.Errorf("btrfs: destroy volume %s: %w", volume, mapErr(err))
	}
	if err := b.destroyRemains(ctx, volume, []uint64{info.id}); err != nil {
		return err
	}
	b.dropGroup(group)
	return nil
}

// volumeDirExists reports whether volume's directory exists.
func (b *Backend) volumeDirExists(volume string) bool {
	_, err := os.Lstat(b.volumeDir(volume))
	return err == nil
}

// destroyRemains deletes volume's directory and snapshots once its
// workspace (subvolume ids, if known) is gone, and waits for their space.
// The caller holds volume's lock.
func (b *Backend) destroyRemains(ctx context.Context, volume string, ids []uint64) error {
	snaps, _ := os.ReadDir(b.snapDir(volume))
	for _, e := range snaps {
		if info, err := getSubvolInfo(b.snapPath(volume, e.Name())); err == nil {
			ids = append(ids, info.id)
		}
	}
	if err := b.removeRemains(volume); err != nil {
		return fmt.Errorf("btrfs: destroy volume %s: volume deleted, but not all of its snapshots: %w", volume, mapErr(err))
	}
	b.reaper.wait() // old trees of rollbacks, whose space counts too
	if err := b.waitCleaned(ctx, ids); err != nil {
		return fmt.Errorf("btrfs: destroy volume %s: deleted, but waiting for its space: %w", volume, mapErr(err))
	}
	return nil
}

// waitCleaned commits the running transaction, waits until the cleaner
// has dropped the deleted subvolumes ids, and commits again so that their
// freed extents can be allocated. It gives up silently when ctx ends.
func (b *Backend) waitCleaned(ctx context.Context, ids []uint64) error {
	if err := syncFS(b.root); err != nil {
		return err
	}
	poll := &backoff.ExponentialBackOff{InitialInterval: time.Millisecond, Multiplier: 2, MaxInterval: 50 * time.Millisecond}
	for _, id := range ids {
		_, err := backoff.Retry(ctx, func() (struct{}, error) {
			exists, err := rootItemExists(b.root, id)
			switch {
			case err != nil:
				return struct{}{}, backoff.Permanent(err)
			case exists:
				return struct{}{}, errStillThere
			}
			return struct{}{}, nil
		}, backoff.WithBackOff(poll), backoff.WithMaxElapsedTime(0))
		switch {
		case ctx.Err() != nil:
			return nil // the caller's bound: it goes on without waiting
		case err != nil:
			return err
		}
	}
	return syncFS(b.root)
}

// errStillThere is waitCleaned's retry signal: the subvolume is not
// cleaned yet.
var errStillThere = errors.New("btrfs: subvolume not cleaned yet")

// removeRemains deletes volume's directory and snapshots once its
// workspace is gone. The caller holds volume's lock.
func (b *Backend) removeRemains(volume string) error {
	return errors.Join(removeTree(b.volumeDir(volume)), removeTree(b.snapDir(volume)))
}

// Snapshot creates a read-only snapshot of the volume at
// <root>/snapshots/<volume>/<name> with one BTRFS_IOC_SNAP_CREATE_V2. The
// kernel flushes the volume's dirty data and commits a transaction before
// the ioctl returns, so the snapshot is durable on return
// (TestSnapshotDurable mounts a copy of the device image taken right
// after Snapshot, with periodic commits off, and finds it). No extra sync
// is made: it would be a second commit carrying only what other writers
// dirtied meanwhile. Measured here (BenchmarkSnapshot/files=1000,
// turnbox vs turnbox+syncfs, 30 snapshots, 2 runs, noisy shared VM):
// 4.8 and 8.1 ms without, 18.7 and 7.5 ms with.
func (b *Backend) Snapshot(ctx context.Context, volume, name string) (snapshot.Snapshot, error) {
	if err := b.begin(ctx, volume, name); err != nil {
		return snapshot.Snapshot{}, err
	}
	defer b.locks.Lock(volume)()
	ws, err := b.openWorkspace(volume)
	if err != nil {
		return snapshot.Snapshot{}, fmt.Errorf("btrfs: snapshot %s@%s: volume: %w", volume, name, mapErr(err))
	}
	defer ws.Close()
	dst := b.snapPath(volume, name)
	if _, err := os.Lstat(dst); err == nil {
		return snapshot.Snapshot{}, fmt.Errorf("btrfs: snapshot %s@%s: %w", volume, name, snapshot.ErrExists)
	}
	if err := os.Mkdir(b.snapDir(volume), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return snapshot.Snapshot{}, fmt.Errorf("btrfs: snapshot %s@%s: %w", volume, name, mapErr(err))
	}
	if err := cbtrfs.SubvolSnapshot(dst, fdPath(ws), true); err != nil {
		return snapshot.Snapshot{}, fmt.Errorf("btrfs: snapshot %s@%s: %w", volume, name, mapErr(err))
	}
	info, err := getSubvolInfo(dst)
	if err != nil {
		return snapshot.Snapshot{}, errors.Join(fmt.Errorf("btrfs: snapshot %s@%s: %w", volume, name, mapErr(err)), deleteSubvol(dst))
	}
	return snapshot.Snapshot{Volume: volume, Name: name, CreatedAt: info.created, SizeBytes: b.snapSize(info.id)}, nil
}

// Snapshots lists a volume's snapshots, oldest first (by subvolume id,
// which the kernel allocates increasing). CreatedAt is the subvolume's
// otime, kept by btrfs itself (no metadata file to keep durable); it has
// the resolution of the kernel's coarse clock (a few milliseconds).
func (b *Backend) Snapshots(ctx context.Context, volume string) ([]snapshot.Snapshot, error) {
	if err := b.begin(ctx, volume); err != nil {
		return nil, err
	}
	defer b.locks.Lock(volume)()
	if !b.volumeExists(volume) {
		return nil, fmt.Errorf("btrfs: snapshots of %s: %w", volume, snapshot.ErrNotFound)
	}
	ents, err := os.ReadDir(b.snapDir(volume))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("btrfs: snapshots of %s: %w", volume, err)
	}
	type item struct {
		s  snapshot.Snapshot
		id uint64
	}
	items := make([]item, 0, len(ents))
	for _, e := range ents {
		if snapshot.ValidateName(e.Name()) != nil {
			continue
		}
		info, err := getSubvolInfo(b.snapPath(volume, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("btrfs: snapshots of %s: %w", volume, mapErr(err))
		}
		items = append(items, item{snapshot.Snapshot{Volume: volume, Name: e.Name(), CreatedAt: info.created, SizeBytes: b.snapSize(info.id)}, info.id})
	}
	sort.Slice(items, func(i, j int) bool { return items[i].id < items[j].id })
	out := make([]snapshot.Snapshot, len(items))
	for i := range items {
		out[i] = items[i].s
	}
	return out, nil
}

// Rollback makes the volume's content equal to snapshot name: a writable
// snapshot of it is made next to the volume's Path
// (<root>/volumes/<volume>/.rollback-*), exchanged with Path in one
// renameat2(RENAME_EXCHANGE), and the old tree is moved to
// <root>/volumes/.trash-* and deleted in the background (Close and
// DestroyVolume wait for such deletions). Any snapshot
// can be the target; all snapshots survive. A sandbox that binds Path's
// parent directory sees the new tree at once; processes whose working
// directory was in the old tree keep the (deleted) old tree.
func (b *Backend) Rollback(ctx context.Context, volume, name string) error {
	return b.replace(ctx, volume, volume, name)
}

// ReplaceVolume makes volume's content a writable snapshot of (srcVolume,
// srcSnapshot), swapped in like a rollback's (see snapshot.Replacer).
func (b *Backend) ReplaceVolume(ctx context.Context, volume, srcVolume, srcSnapshot string) error {
	return b.replace(ctx, volume, srcVolume, srcSnapshot)
}

func (b *Backend) replace(ctx context.Context, volume, srcVolume, name string) error {
	if err := b.begin(ctx, volume, srcVolume, name); err != nil {
		return err
	}
	defer b.locks.Lock(volume, srcVolume)()
	path := b.volumePath(volume)
	ws, err := b.openWorkspace(volume)
	tampered := errors.Is(err, snapshot.ErrTampered) && b.volumeDirExists(volume)
	if err != nil && !tampered {
		return fmt.Errorf("btrfs: rollback %s: volume: %w", volume, mapErr(err))
	}
	if ws != nil {
		ws.Close() // the sealed directory keeps it at path (package guard)
	}
	src := b.snapPath(srcVolume, name)
	if _, err := os.Lstat(src); err != nil {
		return fmt.Errorf("btrfs: rollback %s to %s@%s: %w", volume, srcVolume, name, mapErr(err))
	}
	// The new tree is made beside the volumes' directories, where no
	// sandbox looks, and only the exchange runs with the volume's
	// directory unsealed.
	tmp, err := tempName(b.volumes, rollbackPrefix)
	if err != nil {
		return err
	}
	if err := cbtrfs.SubvolSnapshot(tmp, src, false); err != nil {
		return fmt.Errorf("btrfs: rollback %s to %s: %w", volume, name, mapErr(err))
	}
	id, err := subvolID(tmp)
	if err != nil {
		return errors.Join(fmt.Errorf("btrfs: rollback %s to %s: %w", volume, name, mapErr(err)), removeTree(tmp))
	}
	// The volume's quota moves to the new tree before it takes Path, so
	// there is no moment without it.
	// (A tampered Path has no limit to carry: the rollback repairs it,
	// and the host sets the session's quota again.)
	if err := b.carryQuota(path, tmp); err != nil && !tampered {
		return errors.Join(fmt.Errorf("btrfs: rollback %s to %s: carrying the quota over: %w", volume, name, mapErr(err)), removeTree(tmp))
	}
	exchange := func() error {
		err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, path, unix.RENAME_EXCHANGE)
		if errors.Is(err, unix.ENOENT) {
			// Nothing at path (a sandbox moved the tree away): a plain move.
			err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE)
		}
		return err
	}
	if err := guard.Unsealed(b.volumeDir(volume), exchange); err != nil {
		return errors.Join(fmt.Errorf("btrfs: rollback %s to %s: exchange: %w", volume, name, mapErr(err)), removeTree(tmp))
	}
	// tmp now holds the old tree, outside the volume's directory. Delete
	// it in the background: deleting a subvolume evicts its cached inodes,
	// which on a 10,000-file tree the sandbox has just used costs ~30 ms,
	// three times the rollback itself. The rollback has happened whatever
	// becomes of the old tree; a tree left over is removed by New.
	old := tmp
	b.reaper.later(func() {
		_ = removeTree(old)
		b.kickCleaner()
	})
	if err := guard.Same(b.volumeDir(volume), workspace, id); err != nil {
		return fmt.Errorf("btrfs: rollback %s to %s: %w", volume, name, err)
	}
	if b.opts.durableRollback {
		if err := syncFS(b.root); err != nil {
			return fmt.Errorf("btrfs: rollback %s to %s: done, but not yet durable: %w", volume, name, mapErr(err))
		}
	}
	return nil
}

// DestroySnapshot deletes one snapshot. Clones made from it are
// independent and survive.
func (b *Backend) DestroySnapshot(ctx context.Context, volume, name string) error {
	if err := b.begin(ctx, volume, name); err != nil {
		return err
	}
	defer b.locks.Lock(volume)()
	p := b.snapPath(volume, name)
	if _, err := os.Lstat(p); err != nil {
		return fmt.Errorf("btrfs: destroy snapshot %s@%s: %w", volume, name, mapErr(err))
	}
	if err := deleteSubvol(p); err != nil {
		return fmt.Errorf("btrfs: destroy snapshot %s@%s: %w", volume, name, mapErr(err))
	}
	b.kickCleaner()
	return nil
}

// kickCleaner has the kernel drop deleted subvolumes now (BTRFS_IOC_SYNC
// wakes its cleaner thread) rather than after the next periodic commit,
// up to 30 s away, when simple quotas are on: what a deleted snapshot
// pinned is charged to its volume until then. The kick runs in the
// background (Close and DestroyVolume wait for it); kicks that come while
// one runs make it run once more.
func (b *Backend) kickCleaner() {
	if !b.simple.Load() || b.kicks.Add(1) > 1 {
		return
	}
	b.reaper.later(func() {
		for {
			n := b.kicks.Load()
			_ = syncFS(b.root)
			if b.kicks.CompareAndSwap(n, 0) {
				return
			}
		}
	})
}

// deleteSubvol deletes the subvolume at p, with one ioctl when it holds no
// nested subvolume (the usual case) and otherwise recursively.
func deleteSubvol(p string) error {
	err := destroySubvol(p)
	if errors.Is(err, unix.ENOTEMPTY) {
		// Nested subvolumes (made inside a workspace): containerd's
		// SubvolDelete walks the tree and deletes them depth first.
		err = cbtrfs.SubvolDelete(p)
	}
	return err
}

// removeTree deletes p: subvolumes found at any depth (without descending
// into them) with deleteSubvol, everything else with os.Remove. A missing p
// is not an error.
func removeTree(p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if isSubvolRoot(fi) {
		return deleteSubvol(p)
	}
	if fi.IsDir() {
		ents, err := os.ReadDir(p)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := removeTree(filepath.Join(p, e.Name())); err != nil {
				return err
			}
		}
	}
	return os.Remove(p)
}

// tempName returns dir/<prefix><random>, a name no valid volume or
// snapshot can take.
func tempName(dir, prefix string) (string, error) {
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	return filepath.Join(dir, prefix+hex.EncodeToString(r[:])), nil
}

// mapErr wraps errno values in the snapshot package's sentinels, keeping
// the original error in the chain.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%w: %w", snapshot.ErrNoSpace, err)
	case errors.Is(err, syscall.EEXIST):
		return fmt.Errorf("%w: %w", snapshot.ErrExists, err)
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("%w: %w", snapshot.ErrNotFound, err)
	case errors.Is(err, syscall.EBUSY):
		return fmt.Errorf("%w: %w", snapshot.ErrBusy, err)
	}
	return err
}

// reaper deletes trees in the background and lets callers wait for all
// deletions in flight. Its cond.L is its mu (set by New).
type reaper struct {
	mu      sync.Mutex
	cond    sync.Cond
	pending int
}

// later runs fn in a new goroutine that wait waits for.
func (r *reaper) later(fn func()) {
	r.mu.Lock()
	r.pending++
	r.mu.Unlock()
	go func() {
		fn()
		r.mu.Lock()
		r.pending--
		if r.pending == 0 {
			r.cond.Broadcast()
		}
		r.mu.Unlock()
	}()
}

// wait returns once no deletion is in flight.
func (r *reaper) wait() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.pending > 0 {
		r.cond.Wait()
	}
}

// openWorkspace opens the subvolume at volume's Path without following
// anything (see package guard): an entry there that is not a subvolume's
// top directory gives an error wrapping snapshot.ErrTampered.
func (b *Backend) openWorkspace(volume string) (*os.File, error) {
	f, err := guard.OpenDir(b.volumeDir(volume), workspace)
	if err != nil {
		if _, derr := os.Lstat(b.volumeDir(volume)); errors.Is(derr, fs.ErrNotExist) {
			return nil, fmt.Errorf("volume %s: %w", volume, snapshot.ErrNotFound)
		}
		return nil, err
	}
	fi, err := os.Stat(fdPath(f))
	if err != nil || !isSubvolRoot(fi) {
		f.Close()
		return nil, errors.Join(fmt.Errorf("%w: %s is not a subvolume", snapshot.ErrTampered, b.volumePath(volume)), err)
	}
	return f, nil
}

// fdPath names the file f has open, for calls that take a path: opening
// it reopens that very file, whatever has been renamed since.
func fdPath(f *os.File) string { return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())) }

// subvolID is the identity (package guard) of the subvolume at p, a path
// no sandbox sees.
func subvolID(p string) (guard.ID, error) {
	f, err := guard.OpenDir(filepath.Dir(p), filepath.Base(p))
	if err != nil {
		return guard.ID{}, err
	}
	defer f.Close()
	return guard.IDOf(f)
}
