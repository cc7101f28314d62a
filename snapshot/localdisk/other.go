//go:build !linux

package localdisk

import (
	"fmt"

	"github.com/turnbox/turnbox/snapshot"
)

// New reports snapshot.ErrUnsupported: localdisk needs Linux (renameat2,
// FICLONE, copy_file_range).
func New(root string, opts ...Option) (*Backend, error) {
	return nil, fmt.Errorf("localdisk: %w: needs Linux", snapshot.ErrUnsupported)
}
