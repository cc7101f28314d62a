//go:build !linux || !cgo

package btrfs

import (
	"context"
	"fmt"

	"github.com/turnbox/turnbox/snapshot"
)

// Kind is the name Backend.Kind returns.
const Kind = "btrfs"

// Backend is the btrfs snapshot.Backend. Off Linux, or in a build without
// cgo, it cannot be made: New always fails.
type Backend struct{}

var _ snapshot.Backend = (*Backend)(nil)

// Option configures New.
type Option func(*options)

type options struct{}

// WithDurableRollback makes Rollback durable on return (Linux and cgo only).
func WithDurableRollback(bool) Option { return func(*options) {} }

// New fails with an error wrapping snapshot.ErrUnsupported: the backend
// needs Linux and cgo.
func New(root string, opts ...Option) (*Backend, error) {
	return nil, fmt.Errorf("btrfs: %w: btrfs needs Linux and a cgo build", snapshot.ErrUnsupported)
}

var errNoBackend = fmt.Errorf("btrfs: %w", snapshot.ErrUnsupported)

// Kind returns "btrfs".
func (*Backend) Kind() string { return Kind }

// Root returns "".
func (*Backend) Root() string { return "" }

// CreateVolume fails: unsupported.
func (*Backend) CreateVolume(context.Context, string) (snapshot.Volume, error) {
	return snapshot.Volume{}, errNoBackend
}

// CloneVolume fails: unsupported.
func (*Backend) CloneVolume(context.Context, string, string, string) (snapshot.Volume, error) {
	return snapshot.Volume{}, errNoBackend
}

// Volume fails: unsupported.
func (*Backend) Volume(context.Context, string) (snapshot.Volume, error) {
	return snapshot.Volume{}, errNoBackend
}

// Volumes fails: unsupported.
func (*Backend) Volumes(context.Context) ([]snapshot.Volume, error) { return nil, errNoBackend }

// DestroyVolume fails: unsupported.
func (*Backend) DestroyVolume(context.Context, string) error { return errNoBackend }

// Snapshot fails: unsupported.
func (*Backend) Snapshot(context.Context, string, string) (snapshot.Snapshot, error) {
	return snapshot.Snapshot{}, errNoBackend
}

// Snapshots fails: unsupported.
func (*Backend) Snapshots(context.Context, string) ([]snapshot.Snapshot, error) {
	return nil, errNoBackend
}

// Rollback fails: unsupported.
func (*Backend) Rollback(context.Context, string, string) error { return errNoBackend }

// DestroySnapshot fails: unsupported.
func (*Backend) DestroySnapshot(context.Context, string, string) error { return errNoBackend }

// Close does nothing.
func (*Backend) Close() error { return nil }
