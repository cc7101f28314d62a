package zfs

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

var loadProps = []string{"type", "origin", "mountpoint", "mounted", "defer_destroy", "creation", PropVolume, PropSnapshot, PropCreated, PropDestroying, PropRootAttr, PropQuota}

// load rebuilds the cache from ZFS and returns the container datasets of
// volumes whose destruction was interrupted, and the listing it read
// (loadProps of everything under the parent, for repairMounts).
func (b *Backend) load(ctx context.Context) (destroying map[string]string, all []Dataset, err error) {
	all, err = b.d.Get(ctx, []string{b.parent}, loadProps, -1)
	if err != nil {
		return nil, nil, fmt.Errorf("zfs: listing %s: %w", b.parent, err)
	}
	l := &listing{
		parent: b.parent, vols: map[string]*vol{}, byComp: map[string]*vol{}, gens: map[string]*gen{},
		destroying: map[string]string{}, doomed: map[string]bool{}, quotas: map[string]int64{}, spares: map[string]bool{},
	}
	for _, d := range all {
		l.add(d)
	}
	for _, v := range l.vols {
		sort.Slice(v.gens, func(i, j int) bool { return v.gens[i].n < v.gens[j].n })
		v.nextGen = v.gens[len(v.gens)-1].n + 1
		v.quota = l.quotas[v.comp]
	}
	b.install(l)
	return l.destroying, all, nil
}

// listing is the cache load builds from one listing of the parent, in
// the listing's order (a dataset before its children and snapshots).
type listing struct {
	parent     string
	vols       map[string]*vol   // by volume name
	byComp     map[string]*vol   // by container component
	gens       map[string]*gen   // by dataset name
	destroying map[string]string // volume name -> container being destroyed
	doomed     map[string]bool   // containers marked PropDestroying
	quotas     map[string]int64  // container component -> PropQuota
	spares     map[string]bool   // "_s" containers with no filesystem in them
}

// add takes one dataset of the listing into the cache; datasets the
// backend did not make are ignored.
func (l *listing) add(d Dataset) {
	rel, ok := strings.CutPrefix(d.Name, l.parent+"/")
	if !ok {
		return
	}
	fsRel, short, isSnap := strings.Cut(rel, "@")
	parts := strings.Split(fsRel, "/")
	switch {
	case !isSnap && len(parts) == 1:
		l.addContainer(parts[0], d)
	case !isSnap && len(parts) == 2:
		l.addGen(parts[0], parts[1], d)
	case isSnap && len(parts) == 2:
		l.addSnap(short, d)
	}
}

func (l *listing) addContainer(comp string, d Dataset) {
	if d.Props[PropDestroying] != "" {
		l.doomed[comp] = true
	}
	if q, err := strconv.ParseInt(d.Props[PropQuota], 10, 64); err == nil && q > 0 {
		l.quotas[comp] = q
	}
	if strings.HasPrefix(comp, sparePrefix) && !l.doomed[comp] {
		l.spares[comp] = true
	}
}

// addGen takes generation dataset d, container/short.
func (l *listing) addGen(comp, short string, d Dataset) {
	delete(l.spares, comp)
	n, err := strconv.Atoi(strings.TrimPrefix(short, genPrefix))
	name := d.Props[PropVolume]
	if err != nil || !strings.HasPrefix(short, genPrefix) || name == "" ||
		(volComponent(name) != comp && !strings.HasPrefix(comp, sparePrefix)) {
		return // not ours
	}
	if v := l.vols[name]; v != nil && v.comp != comp {
		return // a second container claiming the name: not ours
	}
	if l.doomed[comp] {
		l.destroying[name] = l.parent + "/" + comp
		return
	}
	v := l.byComp[comp]
	if v == nil {
		v = &vol{name: name, comp: comp}
		l.byComp[comp] = v
		l.vols[name] = v
	}
	g := &gen{n: n, ds: d.Name, origin: d.Props["origin"]}
	v.gens = append(v.gens, g)
	l.gens[d.Name] = g
}

// addSnap takes snapshot d (short: the part after '@') of a generation.
func (l *listing) addSnap(short string, d Dataset) {
	g := l.gens[strings.TrimSuffix(d.Name, "@"+short)]
	if g == nil {
		return
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

// install replaces the cache with l's volumes and spares. It keeps the
// lock objects of volumes that survive, so a concurrent waiter on an old
// *vol still serializes with new callers; a waiter on a volume that is
// gone gets ErrNotFound.
func (b *Backend) install(l *listing) {
	b.mu.Lock()
	defer b.mu.Unlock()
	vols := l.vols
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
	for c := range l.spares {
		b.spares = append(b.spares, c)
	}
	sort.Strings(b.spares)
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
