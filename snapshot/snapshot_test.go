package snapshot_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/snapshot"
	"github.com/turnbox/turnbox/snapshot/snapshottest"
)

func TestValidateName(t *testing.T) {
	good := []string{"a", "0", "turn-1", "turn_1.2:3", "A.b-c_d:e", strings.Repeat("x", snapshot.MaxNameLength)}
	for _, n := range good {
		if err := snapshot.ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", n, err)
		}
	}
	for _, n := range snapshottest.BadNames {
		err := snapshot.ValidateName(n)
		if !errors.Is(err, snapshot.ErrInvalidName) {
			t.Errorf("ValidateName(%q) = %v, want an error wrapping ErrInvalidName", n, err)
		}
	}
}
