package embedded

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/runtimes"
	"github.com/turnbox/turnbox/snapshot"
	"github.com/turnbox/turnbox/snapshot/backends"
)

// openStorage opens the backend cfg names (package backends), by default
// under StateDir.
func openStorage(ctx context.Context, cfg *Config) (snapshot.Backend, error) {
	root := cfg.StorageRoot
	if root == "" {
		sub := map[StorageBackend]string{StorageBackendLocalDisk: "storage", StorageBackendBtrfs: "btrfs", StorageBackendZFS: "zfs"}[cfg.StorageBackend]
		root = filepath.Join(cfg.StateDir, sub)
	}
	b, err := backends.Open(ctx, string(cfg.StorageBackend), backends.Options{Root: root, ZFSDataset: cfg.ZFSDataset, ZFSDriver: cfg.ZFSDriver})
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	return b, nil
}

// openRuntime makes the runtime cfg names (package runtimes; for "",
// the one runtimes.Detect picks, loudly when it isolates nothing) and
// makes sure an isolated one has its default image.
func openRuntime(cfg *Config) (container.Runtime, error) {
	if cfg.ContainerRuntime == "" {
		name, why := runtimes.Detect(cfg.AgentPath)
		if name == runtimes.None {
			cfg.Logger.Warn("no isolated runtime available (needs root, runsc on PATH and the turnbox-agent binary); using runtime none, which isolates NOTHING", "err", why)
		}
		cfg.ContainerRuntime = ContainerRuntime(name)
	}
	root := cfg.RuntimeRoot
	if root == "" {
		root = filepath.Join(cfg.StateDir, "runtime", string(cfg.ContainerRuntime))
	}
	// One none cgroup per host, keyed by its state directory.
	rt, err := runtimes.Open(string(cfg.ContainerRuntime), runtimes.Options{Root: root, AgentPath: cfg.AgentPath, Instance: cfg.StateDir, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	if cfg.ContainerRuntime != ContainerRuntimeNone {
		if err := ensureDefaultImage(cfg); err != nil {
			return nil, err
		}
	}
	return rt, nil
}
