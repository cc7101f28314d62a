package zfs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
)

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
