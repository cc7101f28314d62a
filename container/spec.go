package container

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// CheckIsolatedSpec checks the parts of spec that every isolated runtime
// (gvisor, runc) requires alike: RootFS and Workspace are absolute paths
// of existing directories (Workspace not /), Network is known, no limit
// is negative and every Env entry is KEY=value; NetworkNamespace comes
// with a NetNS that CheckNetNS accepts, and no other mode has a NetNS. The id's rule is the
// runtime's. The error wraps ErrInvalidSpec.
func CheckIsolatedSpec(spec Spec) error {
	for what, p := range map[string]string{"RootFS": spec.RootFS, "Workspace": spec.Workspace} {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("%w: %s %q is not an absolute path", ErrInvalidSpec, what, p)
		}
		if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
			return fmt.Errorf("%w: %s %q is not a directory", ErrInvalidSpec, what, p)
		}
	}
	if filepath.Clean(spec.Workspace) == "/" {
		return fmt.Errorf("%w: Workspace cannot be /", ErrInvalidSpec)
	}
	if err := checkRoot(spec); err != nil {
		return err
	}
	if err := checkNetwork(spec); err != nil {
		return err
	}
	if l := spec.Limits; l.CPUs < 0 || l.MemoryBytes < 0 || l.Pids < 0 {
		return fmt.Errorf("%w: negative limit", ErrInvalidSpec)
	}
	for _, e := range spec.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("%w: env entry %q is not KEY=value", ErrInvalidSpec, e)
		}
	}
	return nil
}

// checkRoot checks Spec.Root: absent (then ReadOnlyRoot is refused), or
// an absolute directory other than / whose "workspace" is Workspace.
func checkRoot(spec Spec) error {
	if spec.Root == "" {
		if spec.ReadOnlyRoot {
			return fmt.Errorf("%w: ReadOnlyRoot needs Root", ErrInvalidSpec)
		}
		return nil
	}
	root := filepath.Clean(spec.Root)
	if !filepath.IsAbs(root) || root == "/" {
		return fmt.Errorf("%w: Root %q is not an absolute path below /", ErrInvalidSpec, spec.Root)
	}
	if fi, err := os.Lstat(root); err != nil || !fi.IsDir() {
		return fmt.Errorf("%w: Root %q is not a directory", ErrInvalidSpec, spec.Root)
	}
	if filepath.Clean(spec.Workspace) != filepath.Join(root, "workspace") {
		return fmt.Errorf("%w: Workspace %q is not Root's directory workspace", ErrInvalidSpec, spec.Workspace)
	}
	return nil
}

// checkNetwork checks Spec.Network and Spec.NetNS.
func checkNetwork(spec Spec) error {
	switch spec.Network {
	case "", NetworkNone, NetworkHost:
		if spec.NetNS != "" {
			return fmt.Errorf("%w: NetNS %q needs network %q, not %q", ErrInvalidSpec, spec.NetNS, NetworkNamespace, spec.Network)
		}
		return nil
	case NetworkNamespace:
		return CheckNetNS(spec.NetNS)
	}
	return fmt.Errorf("%w: network %q", ErrInvalidSpec, spec.Network)
}

// CheckNetNS checks that p is the absolute path of a bind-mounted
// network namespace (a file on nsfs, not a symlink to one). The error
// wraps ErrInvalidSpec.
func CheckNetNS(p string) error {
	if p == "" {
		return fmt.Errorf("%w: network %q needs NetNS", ErrInvalidSpec, NetworkNamespace)
	}
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return fmt.Errorf("%w: NetNS %q is not a clean absolute path", ErrInvalidSpec, p)
	}
	if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: NetNS %q is not a namespace bind mount", ErrInvalidSpec, p)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(p, &fs); err != nil || fs.Type != unix.NSFS_MAGIC {
		return fmt.Errorf("%w: NetNS %q is not a namespace bind mount (not on nsfs)", ErrInvalidSpec, p)
	}
	if err := unix.Access(p, unix.R_OK); err != nil {
		return fmt.Errorf("%w: NetNS %q: %v", ErrInvalidSpec, p, err)
	}
	return nil
}
