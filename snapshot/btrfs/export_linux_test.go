//go:build cgo

package btrfs

// WaitBackgroundForTest waits for background deletions of old trees.
func (b *Backend) WaitBackgroundForTest() { b.reaper.wait() }
