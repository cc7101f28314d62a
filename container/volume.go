package container

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"

	"github.com/turnbox/turnbox/snapshot/guard"
)

// SealVolumeDir seals the directory holding workspace: the volume's own
// directory, which an isolated runtime binds read-write into the sandbox
// (see snapshot/guard). While it is sealed nothing in the sandbox can
// rename, replace or add an entry beside the workspace, and the storage
// backend lifts the seal only for its own exchanges. Runtimes call it
// before a sandbox starts and UnsealVolumeDir once it is gone. Storage
// that cannot be sealed fails with an error wrapping ErrUnsupported and
// guard.ErrNotSealable: a sandbox there could swap its workspace for a
// link to the host.
func SealVolumeDir(workspace string) error {
	err := guard.Seal(filepath.Dir(workspace))
	if errors.Is(err, guard.ErrNotSealable) {
		return fmt.Errorf("%w: %w (isolated sandboxes need storage on a filesystem that keeps chattr +i, such as ext4, xfs, btrfs or tmpfs, and a host process with CAP_LINUX_IMMUTABLE)", ErrUnsupported, err)
	}
	return err
}

// UnsealVolumeDir lifts SealVolumeDir once no sandbox sees workspace.
func UnsealVolumeDir(workspace string) error {
	return guard.Unseal(filepath.Dir(workspace))
}

// AgentRootArgs are the agent's flags (cmd/turnbox-agent) that give
// commands their view of the volume, which the runtime binds at
// volMount (the parent of spec.VolumeTree): with Spec.Root, commands
// run chrooted into the tree; without, /workspace is a link into it.
// Both start commands in WorkspaceDir.
func AgentRootArgs(spec Spec, volMount string) []string {
	tree := path.Join(volMount, filepath.Base(filepath.Clean(spec.VolumeTree())))
	if spec.Root == "" {
		return []string{"-link", WorkspaceDir + "=" + tree, "-dir", WorkspaceDir}
	}
	args := []string{"-root", tree, "-dir", WorkspaceDir}
	if spec.ReadOnlyRoot {
		args = append(args, "-root-readonly")
	}
	return args
}
