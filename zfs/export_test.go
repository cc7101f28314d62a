package zfs

import "context"

// DestroyTree exposes the drivers' channel-program destroy to the tests.
func DestroyTree(ctx context.Context, d Driver, root, markProp, markValue string) error {
	return d.(treeDestroyer).destroyTree(ctx, root, markProp, markValue)
}
