package localdisk

import (
	"os"
	"sync/atomic"

	"github.com/turnbox/turnbox/snapshot/keylock"
)

// Kind is what Backend.Kind returns.
const Kind = "localdisk"

// Option configures New.
type Option func(*options)

type options struct {
	noSync    bool
	noReflink bool
}

// WithoutSync skips every fsync: a snapshot is then not durable when
// Snapshot returns, only once the kernel writes it back. For throwaway
// data (tests, benchmarks), never for sessions that must survive a crash.
func WithoutSync() Option { return func(o *options) { o.noSync = true } }

// WithoutReflink never tries FICLONE and always copies file contents
// (copy_file_range, else read/write). For comparing the two paths;
// reflink is used by default wherever the filesystem supports it.
func WithoutReflink() Option { return func(o *options) { o.noReflink = true } }

// Stats counts the backend's copying work since New.
type Stats struct {
	// FilesCloned is the number of regular files whose content was shared
	// with FICLONE (reflink) instead of copied.
	FilesCloned int64
	// FilesCopied is the number of regular files whose content was copied
	// (copy_file_range, or read and write).
	FilesCopied int64
	// BytesCopied is the content copied for FilesCopied.
	BytesCopied int64
	// HardLinks is the number of paths recreated as hard links to a file
	// already copied in the same tree.
	HardLinks int64
	// SpecialSkipped is the number of special files (devices) that could
	// not be recreated for lack of privilege and were left out.
	SpecialSkipped int64
	// XattrsSkipped is the number of extended attributes that could not be
	// set on a copy (unsupported by the filesystem, or not permitted).
	XattrsSkipped int64
}

// Reflink states, cached once per backend.
const (
	reflinkUnknown int32 = iota
	reflinkYes
	reflinkNo
)

// Backend is the localdisk snapshot.Backend: volumes are plain
// directories and snapshots are full copies of them, made with reflinks
// where the filesystem has them. Create one with New. Its methods are safe
// for concurrent use; calls on one volume are serialized.
type Backend struct {
	root string
	opts options

	lockFile *os.File // flock held on root while open
	closed   atomic.Bool

	locks keylock.Set // per volume name

	reflink atomic.Int32

	filesCloned, filesCopied, bytesCopied, hardLinks, specialSkipped, xattrsSkipped atomic.Int64
}

// Root returns the directory the backend keeps its data under.
func (b *Backend) Root() string { return b.root }

// Kind returns "localdisk".
func (b *Backend) Kind() string { return Kind }

// Stats returns counters of the copying done since New.
func (b *Backend) Stats() Stats {
	return Stats{
		FilesCloned:    b.filesCloned.Load(),
		FilesCopied:    b.filesCopied.Load(),
		BytesCopied:    b.bytesCopied.Load(),
		HardLinks:      b.hardLinks.Load(),
		SpecialSkipped: b.specialSkipped.Load(),
		XattrsSkipped:  b.xattrsSkipped.Load(),
	}
}
