//go:build linux

package localdisk

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/snapshot"
	"github.com/turnbox/turnbox/snapshot/guard"
)

// On-disk layout under root:
//
//	lock                                   flock(2)ed while a Backend is open
//	volumes/<volume>/                      the volume's own directory (Path's parent; sealed while a sandbox sees it, package guard)
//	volumes/<volume>/workspace/            Volume.Path
//	snapshots/<volume>/<snapshot>/tree/    the snapshot's copy of the tree
//	snapshots/<volume>/<snapshot>/meta.json
//	quotas/<volume>                        the volume's quota, if set (quota_linux.go)
//
// Anything whose name starts with tmpPrefix is work in progress (a copy
// being made, a tree being deleted) and is removed by New. Valid names
// never start with '.', so they cannot collide.
const (
	volumesDir   = "volumes"
	snapshotsDir = "snapshots"
	workspace    = "workspace"
	treeDir      = "tree"
	metaFile     = "meta.json"
	lockFile     = "lock"
	tmpPrefix    = ".tmp-"
	oldPrefix    = ".tmp-old-" // a volume tree moved aside by a non-atomic rollback
)

var _ snapshot.Backend = (*Backend)(nil)

var errClosed = errors.New("localdisk: backend is closed")

// meta is a snapshot's meta.json.
type meta struct {
	Version   int       `json:"version"`
	Seq       int64     `json:"seq"` // orders a volume's snapshots, oldest first
	CreatedAt time.Time `json:"created_at"`
	SizeBytes int64     `json:"size_bytes"`
}

// New opens (creating it if needed) a localdisk backend keeping its data
// under root. It takes an exclusive lock on root: a second backend on the
// same root, in this or another process, fails with snapshot.ErrBusy until
// the first is closed. New removes the leftovers of operations a crash
// interrupted: partial copies, half-deleted trees, and a rollback caught
// between its two renames (the volume keeps its content from before).
func New(root string, opts ...Option) (*Backend, error) {
	b := &Backend{}
	for _, o := range opts {
		o(&b.opts)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("localdisk: %w", err)
	}
	b.root = abs
	for _, d := range []string{abs, b.volumesPath(), filepath.Join(abs, snapshotsDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("localdisk: %w", mapErr(err))
		}
	}
	f, err := os.OpenFile(filepath.Join(abs, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("localdisk: %w", mapErr(err))
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("localdisk: %s is in use by another backend: %w", abs, snapshot.ErrBusy)
		}
		return nil, fmt.Errorf("localdisk: locking %s: %w", abs, err)
	}
	b.lockFile = f
	if err := b.recover(); err != nil {
		b.Close()
		return nil, fmt.Errorf("localdisk: recovering %s: %w", abs, err)
	}
	return b, nil
}

// Close releases the lock on root. Data stays on disk. Close may be called
// more than once.
func (b *Backend) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	return b.lockFile.Close() // releases the flock
}

func (b *Backend) volumesPath() string        { return filepath.Join(b.root, volumesDir) }
func (b *Backend) volumeDir(v string) string  { return filepath.Join(b.root, volumesDir, v) }
func (b *Backend) volumePath(v string) string { return filepath.Join(b.root, volumesDir, v, workspace) }
func (b *Backend) snapsDir(v string) string   { return filepath.Join(b.root, snapshotsDir, v) }
func (b *Backend) snapDir(v, s string) string { return filepath.Join(b.root, snapshotsDir, v, s) }

// recover cleans up after operations a crash interrupted.
func (b *Backend) recover() error {
	vols, err := os.ReadDir(b.volumesPath())
	if err != nil {
		return err
	}
	for _, e := range vols {
		dir := filepath.Join(b.volumesPath(), e.Name())
		if strings.HasPrefix(e.Name(), ".") {
			if err := removeTree(dir); err != nil {
				return err
			}
			continue
		}
		if err := guard.Unsealed(dir, func() error { return b.recoverVolume(dir) }); err != nil {
			return err
		}
	}
	snapsRoot := filepath.Join(b.root, snapshotsDir)
	sv, err := os.ReadDir(snapsRoot)
	if err != nil {
		return err
	}
	for _, e := range sv {
		dir := filepath.Join(snapsRoot, e.Name())
		if strings.HasPrefix(e.Name(), ".") {
			if err := removeTree(dir); err != nil {
				return err
			}
			continue
		}
		if _, err := os.Lstat(b.volumeDir(e.Name())); errors.Is(err, fs.ErrNotExist) {
			// DestroyVolume removed the volume but not yet its snapshots.
			if err := removeTree(dir); err != nil {
				return err
			}
			continue
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, c := range ents {
			if strings.HasPrefix(c.Name(), ".") {
				if err := removeTree(filepath.Join(dir, c.Name())); err != nil {
					return err
				}
			}
		}
	}
	return b.recoverQuotas()
}

// recoverVolume repairs one volume's directory: a rollback caught between
// its renames, and leftovers of work in progress.
func (b *Backend) recoverVolume(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	ws := filepath.Join(dir, workspace)
	_, wsErr := os.Lstat(ws)
	for _, c := range ents {
		p := filepath.Join(dir, c.Name())
		if strings.HasPrefix(c.Name(), oldPrefix) && errors.Is(wsErr, fs.ErrNotExist) {
			// A non-atomic rollback stopped between moving the old tree
			// aside and moving the new one in: put the old one back.
			if err := os.Rename(p, ws); err != nil {
				return err
			}
			wsErr = nil
			continue
		}
		if strings.HasPrefix(c.Name(), tmpPrefix) {
			if err := removeTree(p); err != nil {
				return err
			}
		}
	}
	return b.syncDir(dir)
}

// begin checks the backend is open and the names valid, then locks the
// named volumes.
func (b *Backend) begin(ctx context.Context, lockNames []string, names ...string) (unlock func(), err error) {
	for _, n := range names {
		if err := snapshot.ValidateName(n); err != nil {
			return nil, err
		}
	}
	if b.closed.Load() {
		return nil, errClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return b.locks.Lock(lockNames...), nil
}

func (b *Backend) volumeExists(v string) (bool, error) {
	// The volume's directory appears whole (renamed into place by
	// makeVolume) and goes first on destroy (dropTree): it decides.
	if _, err := os.Lstat(b.volumeDir(v)); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	fi, err := os.Lstat(b.volumePath(v))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	if err != nil || !fi.IsDir() {
		what := "nothing"
		if err == nil {
			what = "a " + fi.Mode().Type().String()
		}
		return true, fmt.Errorf("localdisk: volume %q: %w: %s holds %s, not the directory the backend made", v, snapshot.ErrTampered, b.volumePath(v), what)
	}
	return true, nil
}

func (b *Backend) requireVolume(v string) error {
	ok, err := b.volumeExists(v)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("localdisk: volume %q: %w", v, snapshot.ErrNotFound)
	}
	return nil
}

func (b *Backend) requireSnapshot(v, s string) error {
	// A volume whose Path was tampered with keeps its snapshots intact.
	if err := b.requireVolume(v); err != nil && !errors.Is(err, snapshot.ErrTampered) {
		return err
	}
	_, err := os.Lstat(filepath.Join(b.snapDir(v, s), metaFile))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("localdisk: snapshot %q of volume %q: %w", s, v, snapshot.ErrNotFound)
	}
	return err
}

// tmpName returns a fresh name for work in progress.
func tmpName(prefix string) string { return prefix + rand.Text()[:16] }

// CreateVolume makes a new, empty volume.
func (b *Backend) CreateVolume(ctx context.Context, volume string) (snapshot.Volume, error) {
	unlock, err := b.begin(ctx, []string{volume}, volume)
	if err != nil {
		return snapshot.Volume{}, err
	}
	defer unlock()
	if err := b.makeVolume(volume, func(ws string) error { return os.Mkdir(ws, 0o755) }); err != nil {
		return snapshot.Volume{}, err
	}
	return snapshot.Volume{Name: volume, Path: b.volumePath(volume)}, nil
}

// makeVolume creates volume with fill making its workspace tree in a
// temporary directory, then renames it into place. The caller holds the
// volume's lock.
func (b *Backend) makeVolume(volume string, fill func(ws string) error) error {
	ok, err := b.volumeExists(volume)
	if ok {
		return fmt.Errorf("localdisk: volume %q: %w", volume, snapshot.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("localdisk: %w", err)
	}
	// Snapshots left by a DestroyVolume that failed half-way must not be
	// inherited by a new volume of the same name.
	if err := b.dropTree(b.snapsDir(volume), filepath.Join(b.root, snapshotsDir)); err != nil {
		return fmt.Errorf("localdisk: %w", err)
	}
	if err := b.dropQuota(volume); err != nil {
		return fmt.Errorf("localdisk: %w", err)
	}
	tmp := filepath.Join(b.volumesPath(), tmpName(tmpPrefix))
	err = func() error {
		if err := os.Mkdir(tmp, 0o755); err != nil {
			return err
		}
		if err := fill(filepath.Join(tmp, workspace)); err != nil {
			return err
		}
		if err := b.syncDir(filepath.Join(tmp, workspace)); err != nil {
			return err
		}
		if err := b.syncDir(tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, b.volumeDir(volume)); err != nil {
			return err
		}
		return b.syncDir(b.volumesPath())
	}()
	if err != nil {
		removeTree(tmp)
		return fmt.Errorf("localdisk: creating volume %q: %w", volume, mapErr(err))
	}
	return nil
}

// CloneVolume makes volume, a full copy of snapshot (srcVolume,
// srcSnapshot). The copy is made in a temporary directory and renamed into
// place, so a failure (ErrNoSpace included) leaves no volume behind.
func (b *Backend) CloneVolume(ctx context.Context, volume, srcVolume, srcSnapshot string) (snapshot.Volume, error) {
	unlock, err := b.begin(ctx, []string{volume, srcVolume}, volume, srcVolume, srcSnapshot)
	if err != nil {
		return snapshot.Volume{}, err
	}
	defer unlock()
	if err := b.requireSnapshot(srcVolume, srcSnapshot); err != nil {
		return snapshot.Volume{}, err
	}
	src := filepath.Join(b.snapDir(srcVolume, srcSnapshot), treeDir)
	err = b.makeVolume(volume, func(ws string) error {
		_, err := b.copyTree(ctx, src, ws)
		return err
	})
	if err != nil {
		return snapshot.Volume{}, err
	}
	return snapshot.Volume{Name: volume, Path: b.volumePath(volume)}, nil
}

// Volume returns a volume's info. SizeBytes is the tree's disk usage (a
// walk of the tree, like du).
func (b *Backend) Volume(ctx context.Context, volume string) (snapshot.Volume, error) {
	if err := snapshot.ValidateName(volume); err != nil {
		return snapshot.Volume{}, err
	}
	if b.closed.Load() {
		return snapshot.Volume{}, errClosed
	}
	if err := b.requireVolume(volume); err != nil {
		return snapshot.Volume{}, err
	}
	p := b.volumePath(volume)
	return snapshot.Volume{Name: volume, Path: p, SizeBytes: diskUsage(p)}, nil
}

// Volumes lists every volume, sorted by name, with SizeBytes as in Volume.
func (b *Backend) Volumes(ctx context.Context) ([]snapshot.Volume, error) {
	if b.closed.Load() {
		return nil, errClosed
	}
	ents, err := os.ReadDir(b.volumesPath())
	if err != nil {
		return nil, fmt.Errorf("localdisk: %w", err)
	}
	vols := []snapshot.Volume{}
	for _, e := range ents {
		if snapshot.ValidateName(e.Name()) != nil {
			continue // work in progress
		}
		p := b.volumePath(e.Name())
		vols = append(vols, snapshot.Volume{Name: e.Name(), Path: p, SizeBytes: diskUsage(p)})
	}
	sort.Slice(vols, func(i, j int) bool { return vols[i].Name < vols[j].Name })
	return vols, nil
}

// DestroyVolume deletes a volume and all its snapshots. The volume
// disappears atomically (a rename) before its trees are deleted.
func (b *Backend) DestroyVolume(ctx context.Context, volume string) error {
	unlock, err := b.begin(ctx, []string{volume}, volume)
	if err != nil {
		return err
	}
	defer unlock()
	// A volume whose Path a sandbox replaced (ErrTampered) is destroyed
	// like any other: the tree is removed without following anything.
	if err := b.requireVolume(volume); err != nil && !errors.Is(err, snapshot.ErrTampered) {
		return err
	}
	if err := notMounted(b.volumeDir(volume)); err != nil {
		return err
	}
	if err := guard.Unseal(b.volumeDir(volume)); err != nil {
		return fmt.Errorf("localdisk: destroying volume %q: %w", volume, err)
	}
	if err := b.dropTree(b.volumeDir(volume), b.volumesPath()); err != nil {
		return fmt.Errorf("localdisk: destroying volume %q: %w", volume, err)
	}
	if err := b.dropTree(b.snapsDir(volume), filepath.Join(b.root, snapshotsDir)); err != nil {
		return fmt.Errorf("localdisk: destroying the snapshots of volume %q: %w", volume, err)
	}
	if err := b.dropQuota(volume); err != nil {
		return fmt.Errorf("localdisk: destroying the quota of volume %q: %w", volume, err)
	}
	return nil
}

// dropTree atomically removes path from the namespace by renaming it to a
// temporary name in parent, then deletes it. A missing path is no error.
// If the deletion fails, New finishes it.
func (b *Backend) dropTree(path, parent string) error {
	tmp := filepath.Join(parent, tmpName(tmpPrefix))
	if err := os.Rename(path, tmp); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if errors.Is(err, unix.ENOSPC) {
			// No room even for a new directory entry: delete in place,
			// which frees space. Not atomic, but the full-disk case must
			// be able to make room.
			return removeTree(path)
		}
		return err
	}
	if err := b.syncDir(parent); err != nil {
		return err
	}
	removeTree(tmp)
	return nil
}

// Snapshot copies the volume's tree into a new snapshot. The copy and its
// metadata are written under a temporary name, synced, and renamed into
// place, so the snapshot is durable when Snapshot returns and a failure
// (ErrNoSpace included) leaves nothing behind.
func (b *Backend) Snapshot(ctx context.Context, volume, name string) (snapshot.Snapshot, error) {
	unlock, err := b.begin(ctx, []string{volume}, volume, name)
	if err != nil {
		return snapshot.Snapshot{}, err
	}
	defer unlock()
	if err := b.requireVolume(volume); err != nil {
		return snapshot.Snapshot{}, err
	}
	if _, err := os.Lstat(b.snapDir(volume, name)); err == nil {
		return snapshot.Snapshot{}, fmt.Errorf("localdisk: snapshot %q of volume %q: %w", name, volume, snapshot.ErrExists)
	}
	existing, err := b.readSnapshots(volume)
	if err != nil {
		return snapshot.Snapshot{}, err
	}
	var seq int64
	for _, m := range existing {
		seq = max(seq, m.Seq)
	}
	dir := b.snapsDir(volume)
	var s snapshot.Snapshot
	tmp := filepath.Join(dir, tmpName(tmpPrefix))
	err = func() error {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := b.syncDir(filepath.Dir(dir)); err != nil {
			return err
		}
		if err := os.Mkdir(tmp, 0o700); err != nil {
			return err
		}
		created := time.Now()
		usage, err := b.copyTree(ctx, b.volumePath(volume), filepath.Join(tmp, treeDir))
		if err != nil {
			return err
		}
		m := meta{Version: 1, Seq: seq + 1, CreatedAt: created.UTC(), SizeBytes: usage}
		if err := b.writeMeta(filepath.Join(tmp, metaFile), m); err != nil {
			return err
		}
		if err := b.syncDir(tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, b.snapDir(volume, name)); err != nil {
			return err
		}
		if err := b.syncDir(dir); err != nil {
			return err
		}
		s = snapshot.Snapshot{Volume: volume, Name: name, CreatedAt: m.CreatedAt, SizeBytes: m.SizeBytes}
		return nil
	}()
	if err != nil {
		removeTree(tmp)
		return snapshot.Snapshot{}, fmt.Errorf("localdisk: snapshot %q of volume %q: %w", name, volume, mapErr(err))
	}
	return s, nil
}

func (b *Backend) writeMeta(path string, m meta) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if !b.opts.noSync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

type namedMeta struct {
	name string
	meta
}

// readSnapshots returns a volume's snapshots, oldest first.
func (b *Backend) readSnapshots(volume string) ([]namedMeta, error) {
	ents, err := os.ReadDir(b.snapsDir(volume))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("localdisk: %w", err)
	}
	var out []namedMeta
	for _, e := range ents {
		if snapshot.ValidateName(e.Name()) != nil {
			continue // work in progress
		}
		data, err := os.ReadFile(filepath.Join(b.snapsDir(volume), e.Name(), metaFile))
		if errors.Is(err, fs.ErrNotExist) {
			continue // being destroyed
		}
		if err != nil {
			return nil, fmt.Errorf("localdisk: snapshot %q of volume %q: %w", e.Name(), volume, err)
		}
		var m meta
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("localdisk: snapshot %q of volume %q: bad %s: %w", e.Name(), volume, metaFile, err)
		}
		out = append(out, namedMeta{e.Name(), m})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Seq != out[j].Seq {
			return out[i].Seq < out[j].Seq
		}
		return out[i].name < out[j].name
	})
	return out, nil
}

// Snapshots lists a volume's snapshots, oldest first. SizeBytes is the
// snapshot tree's disk usage, measured when it was taken.
func (b *Backend) Snapshots(ctx context.Context, volume string) ([]snapshot.Snapshot, error) {
	if err := snapshot.ValidateName(volume); err != nil {
		return nil, err
	}
	if b.closed.Load() {
		return nil, errClosed
	}
	if err := b.requireVolume(volume); err != nil {
		return nil, err
	}
	ms, err := b.readSnapshots(volume)
	if err != nil {
		return nil, err
	}
	out := make([]snapshot.Snapshot, 0, len(ms))
	for _, m := range ms {
		out = append(out, snapshot.Snapshot{Volume: volume, Name: m.name, CreatedAt: m.CreatedAt, SizeBytes: m.SizeBytes})
	}
	return out, nil
}

// Rollback makes the volume's content equal to snapshot name: it copies
// the snapshot into a temporary directory beside the volumes' directories,
// then exchanges it with the tree at Path atomically (renameat2
// RENAME_EXCHANGE, with the volume's directory unsealed for that call
// alone) and deletes the old tree. If what is at Path afterwards is not the
// new tree (a sandbox raced the exchange), the error wraps
// snapshot.ErrTampered.
// Path and its parent directory stay the same; newer snapshots survive. On
// error the content at Path is unchanged.
func (b *Backend) Rollback(ctx context.Context, volume, name string) error {
	return b.replace(ctx, volume, volume, name)
}

// ReplaceVolume makes volume's content a copy of (srcVolume, srcSnapshot),
// swapped in like a rollback's (see snapshot.Replacer).
func (b *Backend) ReplaceVolume(ctx context.Context, volume, srcVolume, srcSnapshot string) error {
	return b.replace(ctx, volume, srcVolume, srcSnapshot)
}

func (b *Backend) replace(ctx context.Context, volume, srcVolume, name string) error {
	unlock, err := b.begin(ctx, []string{volume, srcVolume}, volume, srcVolume, name)
	if err != nil {
		return err
	}
	defer unlock()
	// A tampered Path (ErrTampered) is what a rollback repairs: the
	// exchange below puts the new tree there whatever was there.
	if err := b.requireVolume(volume); err != nil && !errors.Is(err, snapshot.ErrTampered) {
		return err
	}
	if err := b.requireSnapshot(srcVolume, name); err != nil {
		return err
	}
	dir, ws := b.volumeDir(volume), b.volumePath(volume)
	if err := notMounted(dir); err != nil {
		return err
	}
	// The new tree is made outside the volume's directory, which a sandbox
	// may see, and only the exchange itself runs with that directory
	// unsealed (see package guard).
	tmp := filepath.Join(b.volumesPath(), tmpName(tmpPrefix))
	fail := func(err error) error {
		removeTree(tmp)
		return fmt.Errorf("localdisk: rollback of volume %q to %q: %w", volume, name, mapErr(err))
	}
	src := filepath.Join(b.snapDir(srcVolume, name), treeDir)
	if _, err := b.copyTree(ctx, src, tmp); err != nil {
		return fail(err)
	}
	id, err := treeID(tmp)
	if err != nil {
		return fail(err)
	}
	if err := guard.Unsealed(dir, func() error { return b.swap(dir, tmp, ws) }); err != nil {
		return fail(err)
	}
	removeTree(tmp) // now the old tree; New removes it if this fails
	if err := guard.Same(dir, workspace, id); err != nil {
		return fmt.Errorf("localdisk: rollback of volume %q to %q: %w", volume, name, err)
	}
	// Moving the tree between directories rewrote its ".." entry, which
	// some filesystems (xfs) count as a change of the root's times.
	return copyTimes(src, dir, workspace)
}

// copyTimes gives the entry name of dir (not followed if a symlink) the
// access and modification times of src.
func copyTimes(src, dir, name string) error {
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: src, Err: err}
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(dfd)
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(dfd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: filepath.Join(dir, name), Err: err}
	}
	return nil
}

// treeID is the identity of the directory at p, a path no sandbox sees.
func treeID(p string) (guard.ID, error) {
	f, err := guard.OpenDir(filepath.Dir(p), filepath.Base(p))
	if err != nil {
		return guard.ID{}, err
	}
	defer f.Close()
	return guard.IDOf(f)
}

// swap puts the tree at tmp in place of ws (in dir) and leaves the old
// tree at tmp. tmp is on the same filesystem, in a directory no sandbox
// sees.
func (b *Backend) swap(dir, tmp, ws string) error {
	if err := b.syncDir(filepath.Dir(tmp)); err != nil {
		return err
	}
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, ws, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.ENOENT) {
		// Nothing at ws (a sandbox moved the tree away): a plain move.
		err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, ws, unix.RENAME_NOREPLACE)
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
		// No atomic exchange on this filesystem: two renames. A crash
		// between them is repaired by New (the old tree is put back).
		old := filepath.Join(dir, tmpName(oldPrefix))
		if err := os.Rename(ws, old); err != nil {
			return err
		}
		if err := os.Rename(tmp, ws); err != nil {
			if rerr := os.Rename(old, ws); rerr != nil {
				return fmt.Errorf("%w (and restoring the old tree from %s: %v)", err, old, rerr)
			}
			return err
		}
		if err := os.Rename(old, tmp); err != nil {
			return nil // the rollback happened; New removes old
		}
		err = nil
	}
	if err != nil {
		return &os.LinkError{Op: "renameat2", Old: tmp, New: ws, Err: err}
	}
	return errors.Join(b.syncDir(dir), b.syncDir(filepath.Dir(tmp)))
}

// DestroySnapshot deletes one snapshot. Other snapshots and clones made
// from it are unaffected (they are copies).
func (b *Backend) DestroySnapshot(ctx context.Context, volume, name string) error {
	unlock, err := b.begin(ctx, []string{volume}, volume, name)
	if err != nil {
		return err
	}
	defer unlock()
	if err := b.requireSnapshot(volume, name); err != nil {
		return err
	}
	if err := b.dropTree(b.snapDir(volume, name), b.snapsDir(volume)); err != nil {
		return fmt.Errorf("localdisk: destroying snapshot %q of volume %q: %w", name, volume, err)
	}
	return nil
}

// syncDir fsyncs a directory (unless WithoutSync).
func (b *Backend) syncDir(dir string) error {
	if b.opts.noSync {
		return nil
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return &os.PathError{Op: "fsync", Path: dir, Err: err}
	}
	return nil
}

// mapErr wraps snapshot.ErrNoSpace around out-of-space errors.
func mapErr(err error) error {
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return fmt.Errorf("%w: %w", snapshot.ErrNoSpace, err)
	}
	return err
}

// removeTree deletes a tree, making directories writable first if needed
// (a copy keeps read-only directories read-only). It refuses to delete a
// tree with a filesystem mounted inside, whose content is not ours. Both
// os.RemoveAll and the walk below go by descriptor, so a sandbox that
// still has a way into the tree cannot turn them onto the host.
func removeTree(path string) error {
	if m := mountsUnder(path); len(m) > 0 {
		return fmt.Errorf("localdisk: not removing %s: %d filesystem(s) mounted inside, e.g. %s", path, len(m), m[0])
	}
	err := os.RemoveAll(path)
	if err == nil {
		return nil
	}
	if d, oerr := openDirAt(unix.AT_FDCWD, path); oerr == nil {
		unix.Fchmod(int(d.Fd()), 0o700)
		walkAt(d, func(dirfd int, name string, st *unix.Stat_t) {
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				return
			}
			if sub, err := openDirAt(dirfd, name); err == nil {
				unix.Fchmod(int(sub.Fd()), 0o700)
				sub.Close()
			}
		})
		d.Close()
	}
	return os.RemoveAll(path)
}

// diskUsage is the space a tree uses, like du: allocated blocks, each
// inode counted once. Entries that vanish during the walk are skipped.
func diskUsage(root string) int64 {
	d, err := openDirAt(unix.AT_FDCWD, root)
	if err != nil {
		return 0
	}
	defer d.Close()
	var st unix.Stat_t
	if unix.Fstat(int(d.Fd()), &st) != nil {
		return 0
	}
	total := st.Blocks * 512
	seen := map[[2]uint64]bool{}
	walkAt(d, func(_ int, _ string, st *unix.Stat_t) {
		if st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			k := [2]uint64{st.Dev, st.Ino}
			if seen[k] {
				return
			}
			seen[k] = true
		}
		total += st.Blocks * 512
	})
	return total
}

// notMounted fails with ErrBusy if a filesystem is mounted inside dir: the
// tree cannot be replaced or deleted without touching another filesystem.
func notMounted(dir string) error {
	if m := mountsUnder(dir); len(m) > 0 {
		return fmt.Errorf("localdisk: %s has a filesystem mounted inside (%s): %w", dir, m[0], snapshot.ErrBusy)
	}
	return nil
}

// mountsUnder returns the mount points strictly inside dir, from
// /proc/self/mountinfo (none if it cannot be read).
func mountsUnder(dir string) []string {
	prefix := filepath.Clean(dir) + "/"
	mounts, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return !strings.HasPrefix(m.Mountpoint, prefix), false
	})
	if err != nil {
		return nil
	}
	out := make([]string, len(mounts))
	for i, m := range mounts {
		out[i] = m.Mountpoint
	}
	return out
}
