package embedded

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/runtimes"
	"github.com/turnbox/turnbox/embedded/ledger"
	"github.com/turnbox/turnbox/snapshot"
	"github.com/turnbox/turnbox/snapshot/backends"
)

// openStorage opens the backend cfg names (package backends), by default
// under StateDir. With no backend named it takes the one lg's sessions
// were created on (so a btrfs state directory reopens on btrfs), else
// localdisk.
func openStorage(ctx context.Context, cfg *Config, lg *ledger.Ledger) (snapshot.Backend, error) {
	if cfg.StorageBackend == "" {
		recorded, err := recordedBackend(lg)
		if err != nil {
			return nil, fmt.Errorf("embedded: reading ledger: %w", err)
		}
		cfg.StorageBackend = StorageBackendLocalDisk
		if recorded != "" {
			cfg.StorageBackend = recorded
			cfg.Logger.Info("storage backend not named; using the one the state directory's sessions were created on", "storage", recorded)
		}
	}
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

// recordedBackend is the storage backend every session in lg was created
// on, or "" when there are none, they disagree, or it is not one openable
// by name.
func recordedBackend(lg *ledger.Ledger) (StorageBackend, error) {
	recs, err := lg.Sessions()
	if err != nil {
		return "", err
	}
	var found string
	for _, r := range recs {
		switch {
		case r.Backend == "" || r.Backend == found:
		case r.Backend != backends.LocalDisk && r.Backend != backends.Btrfs && r.Backend != backends.ZFS:
			return "", nil // a backend given as Config.Storage: not one to open by name
		case found == "":
			found = r.Backend
		default:
			return "", nil
		}
	}
	return StorageBackend(found), nil
}

// mismatch says why a recorded session cannot run on this host (created
// on another storage backend or runtime) and what to open the host with,
// or "" when it can. Such a session's data is left alone and its calls
// are refused: never run a session created under isolation on a weaker
// runtime without the operator choosing it.
func (h *Host) mismatch(rec ledger.SessionRecord) string {
	if rec.Backend != "" && rec.Backend != h.storage.Kind() {
		return fmt.Sprintf("created on the %s storage backend but this host uses %s; open the host with storage backend %s (turnbox --storage %s) to use it (its data is intact)",
			rec.Backend, h.storage.Kind(), rec.Backend, rec.Backend)
	}
	if rec.Runtime != "" && rec.Runtime != h.runtime.Kind() {
		return fmt.Sprintf("created on the %s runtime but this host runs %s; open the host with runtime %s (turnbox --runtime %s) to use it (its data is intact)",
			rec.Runtime, h.runtime.Kind(), rec.Runtime, rec.Runtime)
	}
	return ""
}

// openRuntime makes the runtime cfg names (package runtimes; for "",
// the one runtimes.Detect picks, announced, and loudly when it isolates
// nothing) and makes sure an isolated one has its default image.
func openRuntime(cfg *Config) (container.Runtime, error) {
	if cfg.ContainerRuntime == "" {
		name, why := runtimes.Detect(cfg.AgentPath)
		if name == runtimes.None {
			cfg.Logger.Warn("no isolated runtime available (needs root, runsc on PATH and the turnbox-agent binary); using runtime none, which isolates NOTHING", "err", why)
		} else {
			cfg.Logger.Info("container runtime not named; using the one detected here", "runtime", name)
		}
		cfg.ContainerRuntime = ContainerRuntime(name)
	}
	if cfg.ContainerRuntime == ContainerRuntimeGVisor && os.Geteuid() != 0 {
		// Say so up front: runsc fails later with a raw cgroup error.
		return nil, fmt.Errorf("embedded: gvisor runtime: %w: the gvisor runtime needs root", container.ErrRuntimeMissing)
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
