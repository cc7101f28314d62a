package environment

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"
)

// FileSystem is implemented by environments that give direct access to a
// session's files beyond the model's tools: binary upload and download of
// any size (streamed, never held whole in memory), stat, directory
// listing, mkdir, move, remove and directory watches. Capabilities.Files
// reports it.
//
// Paths are sandbox paths: a relative path is relative to /workspace, an
// absolute path names the sandbox's filesystem as the sandbox sees it. A
// host that exposes only the workspace refuses every other absolute path
// with ErrPathEscapes. Every path is resolved beneath the sandbox's root
// by the kernel, so ".." and symlinks that lead outside fail with
// ErrPathEscapes, whenever the sandbox planted them (before or during
// the call). Paths must not contain NUL (ErrInvalidArgument).
//
// Errors wrap the environment sentinels: ErrFileNotFound (a path that
// does not exist), ErrFileExists, ErrPathEscapes, ErrLimitExceeded (the
// session's disk limit), ErrNotActive (paused, destroyed),
// ErrInvalidArgument (e.g. a directory where a file is needed). A call
// that fails changes nothing.
type FileSystem interface {
	// Stat describes path without following a final symlink (lstat):
	// a symlink is reported as TypeSymlink with its target.
	Stat(ctx context.Context, path string) (*FileInfo, error)
	// ListDir lists the directory path, in name order, without
	// following symlinks. opts.Depth bounds recursion (0 or 1: the
	// directory's own entries). Entries' Path fields are sandbox paths
	// of the same form the caller used (relative stays relative). A
	// listing of more than MaxListEntries entries fails with
	// ErrLimitExceeded.
	ListDir(ctx context.Context, path string, opts ListOptions) ([]FileInfo, error)
	// MakeDir creates the directory path (mode 0755). With parents,
	// missing parents are created and an existing directory is not an
	// error; without, the parent must exist and an existing entry is
	// ErrFileExists.
	MakeDir(ctx context.Context, path string, parents bool) error
	// Move renames src to dst (both sandbox paths, neither followed if a
	// symlink). An existing dst is ErrFileExists unless overwrite is set,
	// in which case it is replaced as rename(2) does (a directory only by
	// a directory, and only when it is empty).
	Move(ctx context.Context, src, dst string, overwrite bool) error
	// Remove deletes path (a symlink itself, never its target). A
	// non-empty directory needs recursive (else ErrInvalidArgument);
	// recursive never follows a symlink. The workspace itself cannot be
	// removed (ErrInvalidArgument).
	Remove(ctx context.Context, path string, recursive bool) error
	// Upload writes r's bytes to path, streamed: missing parents are
	// created, then a temporary file in path's directory is written and
	// renamed over path, so readers and snapshots see the old content or
	// the new, never a part. A final symlink at path is replaced, not
	// followed. The mode is opts.Mode, else an existing file's mode,
	// else 0644. A failed upload (r's error, ctx, the disk limit:
	// ErrLimitExceeded) leaves path as it was and no temporary file.
	Upload(ctx context.Context, path string, r io.Reader, opts UploadOptions) (*FileInfo, error)
	// Download opens the regular file path (symlinks beneath the root are
	// followed) for streaming and describes it. The caller must Close
	// the reader; it also fails once the session is destroyed. An
	// implementation may end the stream when ctx ends (the remote one
	// does): keep ctx alive while reading.
	Download(ctx context.Context, path string) (io.ReadCloser, *FileInfo, error)
	// WatchDir watches the directory path for changes (and, with
	// opts.Recursive, its subdirectories, up to MaxWatchDirs of them).
	// The watch ends when ctx ends, when Close is called, when the
	// session is destroyed (ErrNotActive) or rolled back, or when the
	// watched directory goes away (ErrWatchEnded); Err says which.
	WatchDir(ctx context.Context, path string, opts WatchOptions) (Watcher, error)
}

// Bounds of the file API.
const (
	// MaxListEntries bounds the entries one ListDir returns.
	MaxListEntries = 100_000
	// MaxListDepth bounds ListOptions.Depth.
	MaxListDepth = 64
	// MaxWatchDirs bounds the directories a recursive watch follows;
	// past it, an EventOverflow says directories went unwatched.
	MaxWatchDirs = 4096
	// DefaultWatchQueue is the event queue of a watch when
	// WatchOptions.QueueSize is 0.
	DefaultWatchQueue = 256
	// MaxWatchQueue bounds WatchOptions.QueueSize.
	MaxWatchQueue = 65536
)

// FileType is the type of a file system entry.
type FileType string

// File types.
const (
	// TypeFile: a regular file.
	TypeFile FileType = "file"
	// TypeDir: a directory.
	TypeDir FileType = "dir"
	// TypeSymlink: a symbolic link (never followed by Stat and ListDir).
	TypeSymlink FileType = "symlink"
	// TypeOther: a FIFO, socket or device node.
	TypeOther FileType = "other"
)

// FileInfo describes one file system entry as lstat(2) sees it.
type FileInfo struct {
	// Path is the entry's sandbox path (in the form the caller used).
	Path string `json:"path"`
	// Type is the entry's type; a symlink is never followed.
	Type FileType `json:"type"`
	// Size is the size in bytes (a symlink's: its target's length).
	Size int64 `json:"size"`
	// Mode holds the permission bits and setuid, setgid and sticky
	// (fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky), not the
	// type.
	Mode fs.FileMode `json:"mode"`
	// UID owns the entry (a number of the sandbox's view).
	UID uint32 `json:"uid"`
	// GID is the entry's group.
	GID uint32 `json:"gid"`
	// ModTime is the last modification time.
	ModTime time.Time `json:"mod_time"`
	// LinkTarget is a symlink's target, verbatim (empty for others).
	LinkTarget string `json:"link_target,omitempty"`
}

// ListOptions tunes ListDir.
type ListOptions struct {
	// Depth is how many levels to list: 0 or 1 the directory's entries,
	// 2 also its subdirectories' and so on, up to MaxListDepth.
	Depth int `json:"depth,omitempty"`
}

// Validate reports a depth out of range (ErrInvalidArgument).
func (o ListOptions) Validate() error {
	if o.Depth < 0 || o.Depth > MaxListDepth {
		return fmt.Errorf("%w: list depth %d: want 0 to %d", ErrInvalidArgument, o.Depth, MaxListDepth)
	}
	return nil
}

// UploadOptions tunes Upload.
type UploadOptions struct {
	// Mode is the new file's permission bits (0: keep an existing
	// file's, else 0644). Only fs.ModePerm bits are allowed.
	Mode fs.FileMode `json:"mode,omitempty"`
	// Owner, when set, owns the new file (applied to the temporary file
	// before it is renamed into place, so the file never appears with
	// another owner). Nil: the host's default (the uid it writes as).
	Owner *FileOwner `json:"owner,omitempty"`
}

// FileOwner is a file's numeric owner and group, as the sandbox sees
// them (the numbers of the sandbox's /etc/passwd and /etc/group).
type FileOwner struct {
	// UID is the owning user.
	UID uint32 `json:"uid"`
	// GID is the owning group.
	GID uint32 `json:"gid"`
}

// OwnerChanger is implemented by file systems that can change an entry's
// owner (for clients that act as a sandbox user, such as the E2B API).
type OwnerChanger interface {
	// Chown sets path's owner and group without following a final
	// symlink (lchown semantics). path is confined like every path of
	// FileSystem (ErrPathEscapes, ErrFileNotFound, ErrInvalidArgument).
	Chown(ctx context.Context, path string, owner FileOwner) error
}

// Validate reports mode bits beyond the permissions (ErrInvalidArgument).
func (o UploadOptions) Validate() error {
	if o.Mode&^fs.ModePerm != 0 {
		return fmt.Errorf("%w: upload mode %v: only permission bits (0777) are allowed", ErrInvalidArgument, o.Mode)
	}
	return nil
}

// WatchOptions tunes WatchDir.
type WatchOptions struct {
	// Recursive watches subdirectories too, including ones created
	// during the watch (up to MaxWatchDirs directories).
	Recursive bool `json:"recursive,omitempty"`
	// QueueSize bounds the events waiting for the reader (0:
	// DefaultWatchQueue; at most MaxWatchQueue). When the queue is full,
	// events are dropped and one EventOverflow is queued behind the
	// events waiting, at once.
	QueueSize int `json:"queue_size,omitempty"`
}

// Validate reports a queue size out of range (ErrInvalidArgument).
func (o WatchOptions) Validate() error {
	if o.QueueSize < 0 || o.QueueSize > MaxWatchQueue {
		return fmt.Errorf("%w: watch queue size %d: want 0 to %d", ErrInvalidArgument, o.QueueSize, MaxWatchQueue)
	}
	return nil
}

// FileEventKind is what happened to a watched entry.
type FileEventKind string

// File event kinds.
const (
	// EventCreate: an entry was created in a watched directory.
	EventCreate FileEventKind = "create"
	// EventWrite: a file's content was written (repeated writes the
	// reader has not taken yet may be merged into one event).
	EventWrite FileEventKind = "write"
	// EventRemove: an entry was removed.
	EventRemove FileEventKind = "remove"
	// EventRename: Path is the new name, OldPath the old one; one of them
	// is empty when the entry moved in from, or out to, an unwatched
	// directory.
	EventRename FileEventKind = "rename"
	// EventOverflow: events were lost (the queue was full, the kernel's
	// queue overflowed, or a recursive watch reached MaxWatchDirs).
	EventOverflow FileEventKind = "overflow"
)

// FileEvent is one change seen by a watch.
type FileEvent struct {
	// Kind says what happened.
	Kind FileEventKind `json:"kind"`
	// Path is the entry's sandbox path (under the watched directory, in
	// the form the caller named it).
	Path string `json:"path,omitempty"`
	// OldPath is a rename's old path.
	OldPath string `json:"old_path,omitempty"`
	// IsDir says the entry is a directory.
	IsDir bool `json:"is_dir,omitempty"`
}

// Watcher is a running directory watch. Safe for concurrent use.
type Watcher interface {
	// Events delivers the watch's events, in order; it is closed when
	// the watch ends.
	Events() <-chan FileEvent
	// Err says, once Events is closed, why the watch ended: the
	// context's error, ErrWatchEnded (rolled back, the directory
	// removed, Close), ErrNotActive (the session was destroyed).
	Err() error
	// Close ends the watch and releases its resources; safe to call
	// more than once.
	Close() error
}

// File API sentinel errors (see FileSystem).
var (
	// ErrFileNotFound: no such file or directory. It also matches
	// fs.ErrNotExist.
	ErrFileNotFound = fmt.Errorf("file not found (%w)", fs.ErrNotExist)
	// ErrFileExists: the target exists. It also matches fs.ErrExist.
	ErrFileExists = fmt.Errorf("file exists (%w)", fs.ErrExist)
	// ErrWatchEnded: a watch ended for a reason other than its context
	// (Close, a rollback, the watched directory going away).
	ErrWatchEnded = errors.New("watch ended")
)
