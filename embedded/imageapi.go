package embedded

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/turnbox/turnbox/embedded/ledger"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/snapshot"
)

// The host's image API: its image store (ImageStore, shared with the
// CLI's local mode) under the host's locks, plus the storage volumes
// images take (imagevol.go).

// ImageStore returns the host's image store.
func (h *Host) ImageStore() ImageStore {
	return ImageStore{Dir: h.cfg.ImagesDir, DefaultImage: h.cfg.DefaultImage}
}

// Images lists the host's images in name order (see ImageStore.List).
func (h *Host) Images(ctx context.Context) ([]ImageInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return h.ImageStore().List()
}

// Image returns image name; environment.ErrImageNotFound when there is
// none.
func (h *Host) Image(ctx context.Context, name string) (ImageInfo, error) {
	if err := ctx.Err(); err != nil {
		return ImageInfo{}, err
	}
	return h.ImageStore().Get(name)
}

// PullImage pulls ref from its registry into the host's store (see
// ImageStore.Pull): environment.ErrAlreadyExists for a name taken unless
// opts.Replace, environment.ErrInvalidArgument for a bad reference or
// name. Sessions made from a replaced image keep their copies; the
// replaced image's storage is freed by PruneImages once none needs it.
func (h *Host) PullImage(ctx context.Context, ref string, opts PullImageOptions) (ImageInfo, error) {
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return ImageInfo{}, environment.ErrClosed
	}
	m, err := h.ImageStore().Pull(ctx, ref, opts)
	if err != nil {
		return ImageInfo{}, err
	}
	h.log.Info("pulled image", "ref", ref, "image", m.Name, "digest", m.Digest, "bytes", m.SizeBytes)
	return m, nil
}

// RemoveImage removes image name: its directory, its record and, for an
// image saved from a snapshot, its storage volume (left for PruneImages
// when sessions cloned from it still need it). It is refused with
// environment.ErrImageInUse, naming them, while sessions use the image or
// images saved from its sessions name it as their parent, and fails with
// environment.ErrImageNotFound when there is no such image. No session
// can start on the image while it is removed.
func (h *Host) RemoveImage(ctx context.Context, name string) (ImageInfo, error) {
	iv := h.deps.imageVols
	iv.admin.Lock()
	defer iv.admin.Unlock()
	m, err := h.ImageStore().Get(name)
	if err != nil {
		return ImageInfo{}, err
	}
	recs, err := h.sessionRecords()
	if err != nil {
		return ImageInfo{}, err
	}
	// Under h.mu no session can be added: a create that was not counted
	// above fails to find the image's directory.
	h.mu.Lock()
	recs = append(recs, h.liveRecords()...)
	m, purge, err := h.ImageStore().detach(m, recs)
	h.mu.Unlock()
	if err != nil {
		return ImageInfo{}, err
	}
	if err := purge(); err != nil {
		return m, err
	}
	if m.Volume != "" {
		iv.use.Lock()
		_, err := iv.destroyUnused(ctx, m.Volume)
		iv.use.Unlock()
		if err != nil {
			h.log.Warn("image removed; its volume is left for prune", "image", name, "volume", m.Volume, "err", err)
		}
	}
	h.log.Info("removed image", "image", name)
	return m, nil
}

// PruneImages frees the storage of images that were removed or replaced:
// the base volumes (image.*) that no current image maps to and no record
// names, and the directories of replaced images that no session uses. A
// volume that sessions' clones still depend on (zfs) is skipped.
func (h *Host) PruneImages(ctx context.Context) (PruneReport, error) {
	iv := h.deps.imageVols
	iv.admin.Lock()
	defer iv.admin.Unlock()
	recs, err := h.sessionRecords()
	if err != nil {
		return PruneReport{}, err
	}
	h.mu.Lock()
	recs = append(recs, h.liveRecords()...)
	h.mu.Unlock()
	var rep PruneReport
	st := h.ImageStore()
	rep.Removed, rep.FreedBytes, err = st.pruneTrash(recs)
	if err != nil {
		return rep, err
	}
	keep, err := st.volumesInUse()
	if err != nil {
		return rep, err
	}
	iv.use.Lock()
	defer iv.use.Unlock()
	vols, err := iv.storage.Volumes(ctx)
	if err != nil {
		return rep, fmt.Errorf("embedded: pruning images: %w", err)
	}
	for _, v := range vols {
		if !isImageVolume(v.Name) || keep[v.Name] {
			continue
		}
		freed, err := iv.destroyUnused(ctx, v.Name)
		if errors.Is(err, snapshot.ErrBusy) {
			h.log.Info("image volume still used by sessions' clones; kept", "volume", v.Name)
			continue
		}
		if err != nil {
			return rep, err
		}
		rep.Removed, rep.FreedBytes = append(rep.Removed, v.Name), rep.FreedBytes+freed
	}
	h.log.Info("pruned images", "removed", rep.Removed, "freed_bytes", rep.FreedBytes)
	return rep, nil
}

// volumesInUse returns the base volumes the store's images map to: the
// one of each directory (by its identity) and each record's Volume.
func (s ImageStore) volumesInUse() (map[string]bool, error) {
	all, err := s.List()
	if err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	for _, m := range all {
		if m.Volume != "" {
			keep[m.Volume] = true
			continue
		}
		vol, err := baseVolumeName(m.Name, filepath.Join(s.Dir, m.Name))
		if err != nil {
			return nil, err
		}
		keep[vol] = true
	}
	return keep, nil
}

// dependentsReporter is implemented by storage whose volumes' clones
// depend on them (zfs): destroying such a volume would move its data to
// a clone rather than free it.
type dependentsReporter interface {
	HasDependents(volume string) (bool, error)
}

// destroyUnused destroys volume vol, an image's, and returns the space
// it used (0 when the storage cannot tell). It fails with
// snapshot.ErrBusy, destroying nothing, when clones depend on it. The
// caller holds use exclusively.
func (iv *imageVolumes) destroyUnused(ctx context.Context, vol string) (int64, error) {
	if d, ok := iv.storage.(dependentsReporter); ok {
		busy, err := d.HasDependents(vol)
		if err != nil {
			return 0, fmt.Errorf("embedded: image volume %s: %w", vol, unlessGone(err))
		}
		if busy {
			return 0, fmt.Errorf("embedded: image volume %s: sessions' clones depend on it: %w", vol, snapshot.ErrBusy)
		}
	}
	var freed int64
	if u, ok := iv.storage.(snapshot.TotalUsager); ok {
		freed, _ = u.TotalUsage(ctx, vol)
	}
	if err := iv.storage.DestroyVolume(ctx, vol); err != nil {
		return 0, fmt.Errorf("embedded: destroying image volume %s: %w", vol, storageError(err))
	}
	iv.log.Info("destroyed an unused image volume", "volume", vol, "bytes", freed)
	return freed, nil
}

// sessionRecords returns the sessions in the ledger.
func (h *Host) sessionRecords() ([]ledger.SessionRecord, error) {
	recs, err := h.ledger.Sessions()
	if err != nil {
		return nil, fmt.Errorf("embedded: reading the sessions: %w", err)
	}
	return recs, nil
}

// liveRecords returns a record (id, runtime and config) of each session
// the host has, including those being created. The caller holds h.mu.
func (h *Host) liveRecords() []ledger.SessionRecord {
	out := make([]ledger.SessionRecord, 0, len(h.sessions))
	for _, s := range h.sessions {
		cfg, _ := json.Marshal(s.cfg)
		out = append(out, ledger.SessionRecord{ID: s.id, Runtime: h.runtime.Kind(), Config: cfg})
	}
	return out
}
