package embedded

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/none"
	"github.com/turnbox/turnbox/snapshot"
	"github.com/turnbox/turnbox/snapshot/localdisk"
)

// openStorage opens the backend cfg names.
func openStorage(_ context.Context, cfg *Config) (snapshot.Backend, error) {
	switch cfg.StorageBackend {
	case StorageBackendLocalDisk:
		b, err := localdisk.New(filepath.Join(cfg.StateDir, "storage"))
		if err != nil {
			return nil, fmt.Errorf("embedded: opening localdisk storage: %w", err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("embedded: storage backend %q cannot be opened by name yet; pass Config.Storage", cfg.StorageBackend)
}

// openRuntime makes the runtime cfg names.
func openRuntime(_ context.Context, cfg *Config) (container.Runtime, error) {
	switch cfg.ContainerRuntime {
	case ContainerRuntimeNone:
		return none.New(none.WithLogger(cfg.Logger))
	}
	return nil, fmt.Errorf("embedded: container runtime %q cannot be made by name yet; pass Config.Runtime", cfg.ContainerRuntime)
}
