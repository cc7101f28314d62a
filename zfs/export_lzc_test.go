//go:build linux && cgo && libzfs_core

package zfs

import "context"

// DestroyTree exposes the libzfs_core driver's channel-program destroy to
// the tests.
func DestroyTree(ctx context.Context, d Driver, root string, mark map[string]string) error {
	return d.(treeDestroyer).destroyTree(ctx, root, mark)
}
