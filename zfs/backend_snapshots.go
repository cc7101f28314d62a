package zfs

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/turnbox/turnbox/snapshot"
)

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
