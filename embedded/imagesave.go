package embedded

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/embedded/ledger"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/snapshot"
)

// Images saved from snapshots: a session's snapshot becomes a named image
// that new sessions start from. The image is a storage volume cloned from
// the snapshot (copy-on-write on btrfs and zfs), with its own snapshot
// imageBaseSnapshot that sessions clone, and a record (rootfs.Meta with
// Volume set) in the image store; it has no directory there. Its
// sandboxes' outer root (the agent's, never seen by commands) is the
// directory of the image the snapshot's session was made from (Meta.Parent),
// or the host's default image when that one is gone.

// SaveImageOptions configures Host.SaveImage.
type SaveImageOptions struct {
	// Snapshot is the id of the session's snapshot to save; "" takes a
	// snapshot of the session now (a turn of its own, named
	// "image <name>") and saves that.
	Snapshot string
	// Replace replaces an image of the same name that was itself saved
	// from a snapshot (sessions made from the old one keep their
	// clones). An image with a directory of its own (pulled, imported,
	// built) is never replaced: remove it first.
	Replace bool
}

// SaveImage makes a snapshot of session id the image name: new sessions
// (SessionConfig.Image) start from it with the snapshot's whole root
// filesystem, workspace included, and with the defaults the session had
// from its own image (env, working directory, user), its own env on top. The session, its
// snapshots and the image are independent afterwards: destroying the
// session keeps the image.
//
// Errors: ErrInvalidArgument (a malformed name), ErrSessionNotFound,
// ErrSnapshotNotFound (opts.Snapshot is not one of id's), ErrAlreadyExists
// (name is taken and opts.Replace does not apply), and
// ErrCapabilityNotSupported on the none runtime (no images) or for a
// session made by an older turnbox (its volume holds the workspace only).
func (h *Host) SaveImage(ctx context.Context, id, name string, opts SaveImageOptions) (ImageInfo, error) {
	if err := environment.ValidateImageName(name); err != nil {
		return ImageInfo{}, err
	}
	if h.deps.images.none {
		return ImageInfo{}, fmt.Errorf("%w: the none runtime has no images", environment.ErrCapabilityNotSupported)
	}
	s, err := h.lookup(id)
	if err != nil {
		return ImageInfo{}, err
	}
	if !s.rec.RootTree {
		return ImageInfo{}, fmt.Errorf("%w: session %s was made by an older turnbox and keeps only its workspace", environment.ErrCapabilityNotSupported, id)
	}
	if _, err := h.deps.images.checkSaveTarget(name, opts.Replace); err != nil {
		return ImageInfo{}, err // fail before taking a snapshot
	}
	snap, err := s.imageSnapshot(ctx, name, opts.Snapshot)
	if err != nil {
		return ImageInfo{}, err
	}
	// admin keeps PruneImages from taking the new volume for garbage
	// before its record names it, and other saves and removals away.
	iv := h.deps.imageVols
	iv.admin.Lock()
	defer iv.admin.Unlock()
	old, err := h.deps.images.checkSaveTarget(name, opts.Replace)
	if err != nil {
		return ImageInfo{}, err
	}
	vol := imageVolumePrefix + name + "." + volumeSuffix()
	if err := iv.cloneBase(ctx, vol, snap.Volume, snap.BackendName); err != nil {
		return ImageInfo{}, fmt.Errorf("embedded: saving %s as image %q: %w", snap.ID, name, storageError(err))
	}
	m := s.savedMeta(ctx, name, vol, snap)
	if err := rootfs.WriteMeta(h.deps.images.dir, m); err != nil {
		_ = h.deps.storage.DestroyVolume(context.WithoutCancel(ctx), vol)
		return ImageInfo{}, fmt.Errorf("embedded: recording image %q: %w", name, err)
	}
	if old.Volume != "" {
		iv.use.Lock()
		_, err := iv.destroyUnused(context.WithoutCancel(ctx), old.Volume)
		iv.use.Unlock()
		if err != nil {
			h.log.Warn("the replaced image's volume stays until an image prune", "image", name, "volume", old.Volume, "err", err)
		}
	}
	h.log.Info("image saved from a snapshot", "image", name, "snapshot", snap.ID, "volume", vol)
	return m, nil
}

// volumeSuffix makes the random part of a saved image's volume name, so
// that an image saved again under the same name gets a new volume.
func volumeSuffix() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return idEncoding.EncodeToString(b)
}

// imageSnapshot returns the snapshot to save: snapshotID of s, or a new
// one of s when it is "".
func (s *session) imageSnapshot(ctx context.Context, name, snapshotID string) (ledger.SnapshotRecord, error) {
	if snapshotID != "" {
		rec, err := s.ownSnapshot(snapshotID)
		if err == nil {
			rec.ID = snapshotID
		}
		return rec, err
	}
	info, err := s.snapshot(ctx, "image "+name)
	if err != nil {
		return ledger.SnapshotRecord{}, err
	}
	rec, err := s.ownSnapshot(info.ID)
	if err == nil {
		rec.ID = info.ID
	}
	return rec, err
}

// savedMeta is the record of image name saved into volume vol from snap
// of s: the platform of s's image and the defaults s has from it (env,
// working directory, user), s's own env on top.
func (s *session) savedMeta(ctx context.Context, name, vol string, snap ledger.SnapshotRecord) ImageInfo {
	im := s.deps.images
	parent := s.cfg.Image
	if parent == "" {
		parent = im.def
	}
	pm, err := rootfs.ReadMeta(im.dir, parent)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.deps.log.Warn("the session's image record is unreadable; the saved image gets no platform", "image", parent, "err", err)
	}
	if pm.Volume != "" && pm.Parent != "" {
		parent = pm.Parent // the outer root is always a directory image
	}
	def := s.imageDefaults()
	m := ImageInfo{
		Name: name, Source: "snapshot:" + snap.ID, Created: time.Now().UTC(), Platform: pm.Platform,
		Config: rootfs.ImageConfig{Env: mergeEnvList(def.Env, s.cfg.Env), WorkingDir: def.WorkDir, User: def.User},
		Volume: vol, Parent: parent,
	}
	if q, ok := s.deps.storage.(snapshot.Quotaer); ok {
		if u, err := q.Quota(ctx, vol); err == nil {
			m.SizeBytes = u.UsedBytes
		}
	}
	return m
}

// mergeEnvList returns base (KEY=VALUE entries) with over's keys set on
// top, in base's order and then over's keys sorted.
func mergeEnvList(base []string, over map[string]string) []string {
	if len(over) == 0 {
		return slices.Clone(base)
	}
	out := make([]string, 0, len(base)+len(over))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := over[k]; !ok {
			out = append(out, kv)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(over)) {
		out = append(out, k+"="+over[k])
	}
	return out
}

// cloneBase makes volume vol a clone of srcVolume's snapshot srcSnapshot
// with its own snapshot imageBaseSnapshot for sessions to clone. On
// failure nothing is left.
func (iv *imageVolumes) cloneBase(ctx context.Context, vol, srcVolume, srcSnapshot string) error {
	if _, err := iv.storage.CloneVolume(ctx, vol, srcVolume, srcSnapshot); err != nil {
		return err
	}
	if _, err := iv.storage.Snapshot(ctx, vol, imageBaseSnapshot); err != nil {
		_ = iv.storage.DestroyVolume(context.WithoutCancel(ctx), vol)
		return err
	}
	return nil
}

// checkSaveTarget checks that an image can be saved as name: free, or a
// saved image when replace is set (returned, to be replaced).
func (im images) checkSaveTarget(name string, replace bool) (ImageInfo, error) {
	if _, err := os.Lstat(filepath.Join(im.dir, name)); err == nil {
		return ImageInfo{}, fmt.Errorf("%w: image %q has a directory of its own (pulled, imported or built): remove it first", environment.ErrAlreadyExists, name)
	}
	m, err := rootfs.ReadMeta(im.dir, name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return ImageInfo{}, nil
	case err != nil:
		return ImageInfo{}, fmt.Errorf("embedded: image %q: %w", name, err)
	case !replace:
		return ImageInfo{}, fmt.Errorf("%w: image %q (replace it, or choose another name)", environment.ErrAlreadyExists, name)
	}
	return m, nil
}

// savedRecord returns the record of name if it is a saved image.
func (im images) savedRecord(name string) (ImageInfo, bool) {
	if im.none || environment.ValidateImageName(name) != nil {
		return ImageInfo{}, false
	}
	m, err := rootfs.ReadMeta(im.dir, name)
	if err != nil || m.Volume == "" || !isImageVolume(m.Volume) {
		return ImageInfo{}, false
	}
	return m, true
}

// savedVolume returns the volume of name if it is a saved image.
func (im images) savedVolume(name string) (string, bool) {
	m, ok := im.savedRecord(name)
	return m.Volume, ok
}

// savedOuterRoot returns the outer root directory of name if it is a
// saved image: its parent image's directory, or the default image's when
// that one is gone.
func (im images) savedOuterRoot(name string) (string, bool) {
	m, ok := im.savedRecord(name)
	if !ok {
		return "", false
	}
	for _, dir := range []string{m.Parent, im.def} {
		if dir != "" && environment.ValidateImageName(dir) == nil && checkImageDir(im.dir, dir) == nil {
			return filepath.Join(im.dir, dir), true
		}
	}
	return "", false
}
