package embedded

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/snapshot"
)

// Images as base volumes: a session's volume holds its whole root
// filesystem (the writable root), a clone of its image's base volume
// (copy-on-write on btrfs and zfs, a reflinked or plain copy on
// localdisk), with the workspace the directory "workspace" in it. The
// image directory in Config.ImagesDir stays the source: its base volume
// is made from it on first use, named after the image and the directory's
// identity (a re-imported image gets a new base volume; sessions cloned
// from the old one keep theirs).

const (
	// imageVolumePrefix starts the names of image base volumes. Session
	// ids and pooled volume names cannot hold a '.', so they never
	// collide; recovery never deletes these volumes.
	imageVolumePrefix = "image."
	// imageBaseSnapshot is the snapshot of an image volume that sessions
	// clone.
	imageBaseSnapshot = "base"
	// rootWorkspace is the workspace's directory in a root tree.
	rootWorkspace = "workspace"
	// defaultUserID owns /home/user in a root tree: the sandbox's default
	// non-root user.
	defaultUserID = 1000
)

// afterImageBase, set by tests only, runs between finding an image's
// base volume and cloning it (where a prune must not come between).
var afterImageBase func()

// newSessionsRootTree says whether new sessions (not forks) keep their
// whole root in their volume. Always true but in tests, which set it
// false to make sessions as older hosts did.
var newSessionsRootTree = true

// imageVolumes makes and finds images' base volumes. Safe for concurrent
// use. Lock order: admin, then Host.mu, then use, then mu.
type imageVolumes struct {
	storage snapshot.Backend
	log     *slog.Logger
	// admin serializes the changes to the image store that PruneImages
	// must not interleave with: removals and prunes (pulls install with
	// atomic renames and need not hold it).
	admin sync.Mutex
	// use is held shared from finding a base volume to cloning it (a
	// session create) and exclusively while prune destroys base volumes,
	// so that a clone never loses its source.
	use sync.RWMutex
	mu  sync.Mutex // serializes building (one per host)
}

// isImageVolume reports whether a volume name is an image's base volume.
func isImageVolume(name string) bool { return strings.HasPrefix(name, imageVolumePrefix) }

// base returns the name of the base volume of the image called name whose
// directory is dir (see images.path), making it if missing: sessions
// clone its snapshot imageBaseSnapshot. A volume a crash left without
// its snapshot is made again.
func (iv *imageVolumes) base(ctx context.Context, name, dir string) (string, error) {
	vol, err := baseVolumeName(name, dir)
	if err != nil {
		return "", err
	}
	iv.mu.Lock()
	defer iv.mu.Unlock()
	snaps, err := iv.storage.Snapshots(ctx, vol)
	switch {
	case err == nil:
		for _, sn := range snaps {
			if sn.Name == imageBaseSnapshot {
				return vol, nil
			}
		}
		iv.log.Warn("image volume without its base snapshot (a crash while it was made); making it again", "volume", vol)
		if err := iv.storage.DestroyVolume(ctx, vol); err != nil {
			return "", fmt.Errorf("embedded: image %q: removing the incomplete volume %s: %w", name, vol, err)
		}
	case !errors.Is(err, snapshot.ErrNotFound):
		return "", fmt.Errorf("embedded: image %q: %w", name, err)
	}
	if err := iv.build(ctx, vol, dir); err != nil {
		_ = iv.storage.DestroyVolume(context.WithoutCancel(ctx), vol)
		return "", fmt.Errorf("embedded: image %q: making its base volume: %w", name, storageError(err))
	}
	iv.log.Info("made the image's base volume", "image", name, "volume", vol)
	return vol, nil
}

// baseVolumeName is the name of the base volume of the image called name
// whose directory is dir: the name and the directory's identity.
func baseVolumeName(name, dir string) (string, error) {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return "", fmt.Errorf("embedded: image %q: %w", name, err)
	}
	h := fnv.New32a()
	fmt.Fprintf(h, "%d:%d:%d.%d", st.Dev, st.Ino, st.Mtim.Sec, st.Mtim.Nsec)
	return imageVolumePrefix + name + "." + strconv.FormatUint(uint64(h.Sum32()), 36), nil
}

// build makes volume vol a copy of the image directory dir, with the
// directories a root tree needs, and snapshots it.
func (iv *imageVolumes) build(ctx context.Context, vol, dir string) error {
	v, err := iv.storage.CreateVolume(ctx, vol)
	if err != nil {
		return err
	}
	// cp keeps hard links, owners, modes, times and extended attributes
	// (file capabilities) and reflinks where the filesystem can. The
	// image directory is the host's own (built or imported by turnbox),
	// not a sandbox's.
	cmd := exec.CommandContext(ctx, "cp", "-a", "--reflink=auto", dir+"/.", v.Path+"/")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("copying %s: %w: %s", dir, err, strings.TrimSpace(string(out)))
	}
	if err := makeRootDirs(v.Path); err != nil {
		return err
	}
	_, err = iv.storage.Snapshot(ctx, vol, imageBaseSnapshot)
	return err
}

// makeRootDirs gives a root tree an empty workspace and the usual /tmp,
// /root and /home/user (owned by the default user) unless it has them.
func makeRootDirs(tree string) error {
	for _, d := range []struct {
		name     string
		mode     os.FileMode
		uid, gid int
	}{
		{rootWorkspace, 0o755, 0, 0}, {"tmp", 0o777 | os.ModeSticky, 0, 0}, {"root", 0o700, 0, 0},
		{"home", 0o755, 0, 0}, {"home/user", 0o755, defaultUserID, defaultUserID},
	} {
		p := filepath.Join(tree, d.name)
		if fi, err := os.Lstat(p); err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("the image's /%s is not a directory", d.name)
			}
			continue
		}
		if err := os.Mkdir(p, 0o700); err != nil {
			return err
		}
		if err := os.Chmod(p, d.mode); err != nil {
			return err
		}
		if err := os.Lchown(p, d.uid, d.gid); err != nil {
			return err
		}
	}
	return nil
}

// ensureDefaultImageVolume makes the default image's base volume at host
// start (isolated runtimes only), so that the first create is a clone
// like the others. Other images get theirs on first use.
func (h *Host) ensureDefaultImageVolume(ctx context.Context) error {
	dir, err := h.deps.images.path("")
	if err != nil || dir == "" {
		return nil // no default image: every create names one
	}
	_, err = h.deps.imageVols.base(ctx, h.deps.images.def, dir)
	return err
}

// newRootVolume makes volume name a new session root: a clone of the
// base volume of image (the host's default if "") or, on the none
// runtime, which has no images, an empty volume with a workspace.
func (d *sessionDeps) newRootVolume(ctx context.Context, name, image string) (snapshot.Volume, error) {
	dir, err := d.images.path(image)
	if err != nil {
		return snapshot.Volume{}, err
	}
	if dir == "" {
		v, err := d.storage.CreateVolume(ctx, name)
		if err != nil {
			return v, err
		}
		if err := os.Mkdir(filepath.Join(v.Path, rootWorkspace), 0o755); err != nil {
			_ = d.storage.DestroyVolume(context.WithoutCancel(ctx), name)
			return snapshot.Volume{}, err
		}
		return v, nil
	}
	if image == "" {
		image = d.images.def
	}
	// Hold off PruneImages from finding the base volume to cloning it.
	d.imageVols.use.RLock()
	defer d.imageVols.use.RUnlock()
	if vol, ok := d.images.savedVolume(image); ok {
		return d.storage.CloneVolume(ctx, name, vol, imageBaseSnapshot)
	}
	base, err := d.imageVols.base(ctx, image, dir)
	if err != nil {
		return snapshot.Volume{}, err
	}
	if afterImageBase != nil {
		afterImageBase()
	}
	return d.storage.CloneVolume(ctx, name, base, imageBaseSnapshot)
}

// workspacePath is the host path of the workspace of a session whose
// volume tree is at tree: its directory "workspace" when the volume
// holds the session's root, else the tree itself (older sessions).
func workspacePath(tree string, rootTree bool) string {
	if rootTree {
		return filepath.Join(tree, rootWorkspace)
	}
	return tree
}
