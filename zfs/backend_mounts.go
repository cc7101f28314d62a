package zfs

import "github.com/turnbox/turnbox/snapshot"

var _ snapshot.MountSwapper = (*Backend)(nil)

// SwapsMounts implements snapshot.MountSwapper: every volume is a dataset
// mounted at its Path, and a rollback to an older snapshot (clone and
// swap) or the destruction of a volume whose clones are promoted mounts
// another dataset there.
func (b *Backend) SwapsMounts() bool { return true }
