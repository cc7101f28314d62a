package localdisk

import (
	"os"
	"sort"
	"sync"
	"sync/atomic"
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

	locks nameLocks

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

// nameLocks is a set of mutexes by name, created on demand and dropped
// when unused.
type nameLocks struct {
	mu sync.Mutex
	m  map[string]*nameLock
}

type nameLock struct {
	mu   sync.Mutex
	refs int
}

// lock locks every name (in sorted order, so two callers never deadlock)
// and returns the function that unlocks them.
func (l *nameLocks) lock(names ...string) (unlock func()) {
	names = append([]string(nil), names...)
	sort.Strings(names)
	var held []*nameLock
	var heldNames []string
	for i, n := range names {
		if i > 0 && names[i-1] == n {
			continue
		}
		l.mu.Lock()
		if l.m == nil {
			l.m = map[string]*nameLock{}
		}
		e := l.m[n]
		if e == nil {
			e = &nameLock{}
			l.m[n] = e
		}
		e.refs++
		l.mu.Unlock()
		e.mu.Lock()
		held = append(held, e)
		heldNames = append(heldNames, n)
	}
	return func() {
		for i := len(held) - 1; i >= 0; i-- {
			held[i].mu.Unlock()
			l.mu.Lock()
			held[i].refs--
			if held[i].refs == 0 {
				delete(l.m, heldNames[i])
			}
			l.mu.Unlock()
		}
	}
}
