package zfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/turnbox/turnbox/snapshot/guard"
)

// removeMountDirs removes a destroyed volume's mount point and its
// directory, which a sandbox runtime may have sealed (package guard).
func (b *Backend) removeMountDirs(volume string) {
	dir := filepath.Dir(b.path(volume))
	guard.Unseal(dir)
	os.Remove(b.path(volume))
	os.Remove(dir)
}

// DestroyVolume deletes a volume with all its generations and snapshots.
// Volumes cloned from it survive: each such clone is promoted (zfs
// promote), taking over the snapshots it depends on, which are first
// renamed to hidden names and, once nothing depends on them, destroyed.
//
// It has two paths, each holding one set of locks: destroyAlone (the
// common case, no dependents: opMu shared and the volume's lock) and, when
// that cannot finish, destroyWithDependents (opMu exclusive).
func (b *Backend) DestroyVolume(ctx context.Context, volume string) error {
	if err := b.check(volume); err != nil {
		return err
	}
	if done, err := b.destroyAlone(ctx, volume); done {
		return err
	}
	return b.destroyWithDependents(ctx, volume)
}

// destroyWithDependents is DestroyVolume's general path: with opMu held
// exclusively and no background destroy running, it promotes the volume's
// dependents, destroys it, and reloads the cache from ZFS (promotions
// moved snapshots between volumes) and repairs the mounts.
func (b *Backend) destroyWithDependents(ctx context.Context, volume string) error {
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
// DestroyVolume then takes destroyWithDependents, which also reloads the
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
