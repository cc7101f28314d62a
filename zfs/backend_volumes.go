package zfs

import (
	"context"
	"fmt"
	"sort"

	"github.com/turnbox/turnbox/snapshot"
)

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
