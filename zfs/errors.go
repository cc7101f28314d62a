package zfs

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/turnbox/turnbox/snapshot"
)

// Sentinel errors. They are the snapshot package's sentinels themselves, so
// errors.Is(err, zfs.ErrNotFound) and errors.Is(err, snapshot.ErrNotFound)
// agree for every error this package returns.
var (
	// ErrNotFound: no such pool, dataset or snapshot.
	ErrNotFound = snapshot.ErrNotFound
	// ErrExists: a dataset or snapshot of that name exists.
	ErrExists = snapshot.ErrExists
	// ErrInvalidName: a dataset, snapshot or property name is malformed.
	ErrInvalidName = snapshot.ErrInvalidName
	// ErrNoSpace: the pool or a quota is full.
	ErrNoSpace = snapshot.ErrNoSpace
	// ErrBusy: the dataset is in use (mounted and busy, has dependent
	// clones, holds, or newer snapshots in the way of a rollback).
	ErrBusy = snapshot.ErrBusy
	// ErrUnsupported: the driver or the ZFS implementation cannot do this
	// (for example user holds on zfs-fuse, or the libzfs_core driver in a
	// build without the libzfs_core tag).
	ErrUnsupported = snapshot.ErrUnsupported
)

// ErrNotNewest is returned by Driver.Rollback when the target is not the
// dataset's most recent snapshot. It wraps ErrBusy.
var ErrNotNewest = fmt.Errorf("%w: more recent snapshots exist", ErrBusy)

// CommandError is a failed zfs or zpool command. It unwraps to the sentinel
// its stderr maps to (ErrNotFound, ErrExists, ...), if any.
type CommandError struct {
	// Args is the command line, program first.
	Args []string
	// Stderr is what the command wrote to standard error, trimmed.
	Stderr string
	// ExitCode is the exit status (-1 if the command did not run).
	ExitCode int
	// Err is the sentinel the failure maps to, or the exec error.
	Err error
}

// Error formats the command, its stderr and exit status.
func (e *CommandError) Error() string {
	msg := e.Stderr
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	}
	return fmt.Sprintf("%s: %s (exit %d)", strings.Join(e.Args, " "), msg, e.ExitCode)
}

// Unwrap returns the sentinel (or exec error) behind the failure.
func (e *CommandError) Unwrap() error { return e.Err }

// classify maps ZFS error messages (OpenZFS and zfs-fuse spell them alike)
// to sentinels. Order matters: "dependent clones" must win over the
// generic "cannot destroy".
func classify(stderr string) error {
	s := strings.ToLower(stderr)
	switch {
	case strings.Contains(s, "pyzfs.py"), strings.Contains(s, "unsupported version"),
		strings.Contains(s, "operation not supported"), strings.Contains(s, "invalid option"),
		strings.Contains(s, "unrecognized command"):
		return ErrUnsupported
	case strings.Contains(s, "more recent snapshots"):
		return ErrNotNewest
	case strings.Contains(s, "does not exist"), strings.Contains(s, "no such pool"),
		strings.Contains(s, "could not find any snapshots"), strings.Contains(s, "no such file or directory"),
		strings.Contains(s, "no such dataset"):
		return ErrNotFound
	case strings.Contains(s, "already exists"):
		return ErrExists
	case strings.Contains(s, "out of space"), strings.Contains(s, "no space left"),
		strings.Contains(s, "quota exceeded"), strings.Contains(s, "not enough space"):
		return ErrNoSpace
	case strings.Contains(s, "invalid character"), strings.Contains(s, "name is too long"),
		strings.Contains(s, "invalid dataset name"), strings.Contains(s, "delimiter"),
		strings.Contains(s, "empty component"), strings.Contains(s, "invalid property"),
		strings.Contains(s, "bad property"), strings.Contains(s, "leading slash"),
		strings.Contains(s, "trailing slash"), strings.Contains(s, "multiple '@'"),
		strings.Contains(s, "nesting depth"):
		return ErrInvalidName
	case strings.Contains(s, "dependent clones"), strings.Contains(s, "busy"),
		strings.Contains(s, "has children"), strings.Contains(s, "tag already exists"),
		strings.Contains(s, "holds"), strings.Contains(s, "not a cloned filesystem"):
		return ErrBusy
	}
	return nil
}

// isNotFound reports whether err wraps ErrNotFound.
func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

func isUnsupported(err error) bool { return errors.Is(err, ErrUnsupported) }

// errnoError maps an errno from ZFS (libzfs_core, a channel program) to
// the package's sentinels.
func errnoError(op, name string, e syscall.Errno) error {
	var s error
	switch e {
	case syscall.ENOENT:
		s = ErrNotFound
	case syscall.EEXIST:
		s = ErrExists
	case syscall.ENOSPC, syscall.EDQUOT:
		s = ErrNoSpace
	case syscall.EBUSY:
		s = ErrBusy
	case syscall.ENAMETOOLONG:
		s = ErrInvalidName
	case syscall.ENOTSUP, syscall.ENOSYS:
		s = ErrUnsupported
	}
	if s == nil {
		return fmt.Errorf("zfs: %s %s: %w", op, name, e)
	}
	return fmt.Errorf("zfs: %s %s: %w (%w)", op, name, s, e)
}
