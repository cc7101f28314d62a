package embedded

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/agent"
	"github.com/turnbox/turnbox/container/gvisor"
	"github.com/turnbox/turnbox/container/none"
	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/container/runc"
	"github.com/turnbox/turnbox/snapshot"
	"github.com/turnbox/turnbox/snapshot/btrfs"
	"github.com/turnbox/turnbox/snapshot/localdisk"
	"github.com/turnbox/turnbox/zfs"
)

// DefaultImage is the image name sessions get on isolated runtimes when
// neither the session nor the host names one. If it is missing from
// ImagesDir, the host builds it from the machine's static busybox.
const DefaultImage = "busybox"

// openStorage opens the backend cfg names.
func openStorage(ctx context.Context, cfg *Config) (snapshot.Backend, error) {
	root := cfg.StorageRoot
	switch cfg.StorageBackend {
	case StorageBackendLocalDisk:
		if root == "" {
			root = filepath.Join(cfg.StateDir, "storage")
		}
		b, err := localdisk.New(root)
		if err != nil {
			return nil, fmt.Errorf("embedded: opening localdisk storage at %s: %w", root, err)
		}
		return b, nil
	case StorageBackendBtrfs:
		if root == "" {
			root = filepath.Join(cfg.StateDir, "btrfs")
		}
		b, err := btrfs.New(root)
		if err != nil {
			return nil, fmt.Errorf("embedded: opening btrfs storage at %s (Config.StorageRoot must be a directory on a mounted btrfs filesystem): %w", root, err)
		}
		return b, nil
	case StorageBackendZFS:
		if cfg.ZFSDataset == "" {
			return nil, fmt.Errorf("embedded: the zfs backend needs Config.ZFSDataset (a parent dataset, e.g. tank/turnbox)")
		}
		if root == "" {
			root = filepath.Join(cfg.StateDir, "zfs")
		}
		d, err := zfs.OpenDriver(cfg.ZFSDriver)
		if err != nil {
			return nil, fmt.Errorf("embedded: zfs driver: %w", err)
		}
		b, err := zfs.NewBackend(ctx, d, cfg.ZFSDataset, root, zfs.WithOwnedDriver())
		if err != nil {
			return nil, fmt.Errorf("embedded: opening zfs storage on %s: %w", cfg.ZFSDataset, err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("embedded: unknown storage backend %q (localdisk, btrfs, zfs)", cfg.StorageBackend)
}

// resolveRuntime picks the runtime for ContainerRuntime "" (auto): gvisor
// when runsc and the agent are present and we are root, else none, loudly.
func resolveRuntime(cfg *Config) ContainerRuntime {
	if cfg.ContainerRuntime != "" {
		return cfg.ContainerRuntime
	}
	_, runscErr := exec.LookPath("runsc")
	_, agentErr := agent.FindBinary(cfg.AgentPath)
	if runscErr == nil && agentErr == nil && os.Geteuid() == 0 {
		return ContainerRuntimeGVisor
	}
	cfg.Logger.Warn("no isolated runtime available (needs root, runsc on PATH and the turnbox-agent binary); using runtime none, which isolates NOTHING",
		"runsc", errString(runscErr), "agent", errString(agentErr))
	return ContainerRuntimeNone
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// openRuntime makes the runtime cfg names.
func openRuntime(_ context.Context, cfg *Config) (container.Runtime, error) {
	cfg.ContainerRuntime = resolveRuntime(cfg)
	root := cfg.RuntimeRoot
	if root == "" {
		root = filepath.Join(cfg.StateDir, "runtime", string(cfg.ContainerRuntime))
	}
	var rt container.Runtime
	var err error
	switch cfg.ContainerRuntime {
	case ContainerRuntimeNone:
		// One cgroup root per host (keyed by its state directory): a host
		// reaps only its own orphans, never another host's sandboxes.
		sum := sha256.Sum256([]byte(cfg.StateDir))
		cg := filepath.Join(none.CgroupBase, hex.EncodeToString(sum[:6]))
		rt, err = none.New(none.WithLogger(cfg.Logger), none.WithCgroupRoot(cg))
	case ContainerRuntimeGVisor:
		// runsc's own pause, not a direct cgroup freeze: freezing the
		// sandbox's cgroup crashed the next command after a thaw
		// (TestCommandsAfterSnapshots), so correctness wins over the
		// faster path until that is understood.
		rt, err = gvisor.New(gvisor.WithRoot(root), gvisor.WithAgent(cfg.AgentPath), gvisor.WithCgroupFreezer(false))
	case ContainerRuntimeRunc:
		rt, err = runc.New(root, runc.WithAgent(cfg.AgentPath))
	default:
		return nil, fmt.Errorf("embedded: unknown container runtime %q (gvisor, runc, none)", cfg.ContainerRuntime)
	}
	if err != nil {
		return nil, fmt.Errorf("embedded: %s runtime: %w", cfg.ContainerRuntime, err)
	}
	if cfg.ContainerRuntime != ContainerRuntimeNone {
		if err := ensureDefaultImage(cfg); err != nil {
			return nil, err
		}
	}
	return rt, nil
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
