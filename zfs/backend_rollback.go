package zfs

import (
	"context"
	"errors"
	"fmt"
)

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
