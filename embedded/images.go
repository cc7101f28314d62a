package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/environment"
)

// DefaultImage is the image name sessions get on isolated runtimes when
// neither the session nor the host names one. If it is missing from
// ImagesDir, the host builds it from the machine's static busybox.
const DefaultImage = "busybox"

// ImagePath returns the root filesystem directory of image name ("" for
// the host's default image); "" on the none runtime, which uses none. name
// is a name (environment.ValidateImageName), never a path: the image is the
// directory of that name directly in Config.ImagesDir, and a symlink there
// is refused. The error wraps environment.ErrInvalidArgument.
func (h *Host) ImagePath(name string) (string, error) { return h.imagePath(name) }

func (h *Host) imagePath(name string) (string, error) { return h.deps.images.path(name) }

// images resolves image names to root filesystems in an image store.
type images struct {
	dir  string // Config.ImagesDir
	def  string // Config.DefaultImage
	none bool   // the none runtime, which uses no root filesystem
}

// path is Host.ImagePath.
func (im images) path(name string) (string, error) {
	if name == "" {
		name = im.def
	}
	if name == "" && im.none {
		return "", nil
	}
	if name == "" {
		return "", fmt.Errorf("%w: no image given and the host has no default image", environment.ErrInvalidArgument)
	}
	if err := environment.ValidateImageName(name); err != nil {
		return "", err
	}
	if im.none {
		return "", nil
	}
	if err := checkImageDir(im.dir, name); err != nil {
		if dir, ok := im.savedOuterRoot(name); ok {
			return dir, nil
		}
		return "", fmt.Errorf("%w: image %q: %v (build one with `turnbox image build busybox`)", environment.ErrInvalidArgument, name, err)
	}
	return filepath.Join(im.dir, name), nil
}

// checkImageDir checks, through descriptors, that name is a real directory
// directly in the image store: not a symlink, not through one, not a
// magic link.
func checkImageDir(store, name string) error {
	sfd, err := unix.Open(store, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening the image store %s: %w", store, err)
	}
	defer unix.Close(sfd)
	fd, err := unix.Openat2(sfd, name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return fmt.Errorf("not a directory in %s: %w", store, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("not a directory in %s", store)
	}
	return nil
}

// ensureDefaultImage builds the busybox image when it is the default and
// missing, so an isolated runtime works with zero set-up.
func ensureDefaultImage(cfg *Config) error {
	if cfg.DefaultImage == "" {
		cfg.DefaultImage = DefaultImage
	}
	if cfg.DefaultImage != DefaultImage {
		return nil
	}
	dir := filepath.Join(cfg.ImagesDir, DefaultImage)
	if fi, err := os.Lstat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("embedded: the %s image at %s is not a directory (images are real directories in %s, not symlinks)", DefaultImage, dir, cfg.ImagesDir)
		}
		if rootfs.CheckMountpoints(dir) == nil {
			return nil
		}
		// Built by an older turnbox: give it the mount points once, here,
		// rather than let a runtime create them at every start.
		cfg.Logger.Info("adding the runtimes' mount points to the default image", "dir", dir)
		if err := rootfs.AddMountpoints(dir); err != nil {
			return fmt.Errorf("embedded: the %s image at %s: %w (remove it to have it rebuilt)", DefaultImage, dir, err)
		}
		return nil
	}
	tmp := dir + ".building"
	_ = os.RemoveAll(tmp)
	if err := rootfs.BuildBusybox(tmp); err != nil {
		_ = os.RemoveAll(tmp)
		if errors.Is(err, rootfs.ErrNoBusybox) {
			return fmt.Errorf("embedded: no image %q in %s and no static busybox to build it from (apt-get install busybox-static): %w", DefaultImage, cfg.ImagesDir, err)
		}
		return fmt.Errorf("embedded: building the %s image: %w", DefaultImage, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("embedded: installing the %s image: %w", DefaultImage, err)
	}
	cfg.Logger.Info("built the default image", "image", DefaultImage, "dir", dir)
	return nil
}

// ImageInfo describes an image in the host's store: where it came from,
// its size and the configuration sessions made from it inherit.
type ImageInfo = rootfs.Meta

// PullImageOptions configures Host.PullImage.
type PullImageOptions struct {
	// Name is the image's name in the store; "" takes the reference's
	// last path element without its tag or digest.
	Name string
	// Platform chooses from a multi-platform image ("linux/arm64");
	// "" takes the host's.
	Platform string
	// Insecure allows plain http, to a registry on a loopback address
	// only.
	Insecure bool
	// Replace replaces an image of the same name; sessions made from the
	// old one keep it.
	Replace bool
	// Progress, if set, is called as layer bytes arrive (total 0: not
	// known yet). It must not block.
	Progress func(done, total int64)
}

// PruneReport says what Host.PruneImages freed.
type PruneReport struct {
	// Removed names the storage volumes destroyed.
	Removed []string
	// FreedBytes is the space they used (0 when the storage cannot tell).
	FreedBytes int64
}
