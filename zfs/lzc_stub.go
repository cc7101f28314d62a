//go:build !(linux && cgo && libzfs_core)

package zfs

import "fmt"

// NewLZCDriver returns the libzfs_core driver. This build has no cgo
// binding (build with -tags libzfs_core, cgo enabled, on Linux with the
// OpenZFS development files; see scripts/fetch-libzfs-dev.sh): the error
// wraps ErrUnsupported.
func NewLZCDriver() (Driver, error) {
	return nil, fmt.Errorf("zfs: libzfs_core driver not compiled in (build with -tags libzfs_core): %w", ErrUnsupported)
}
