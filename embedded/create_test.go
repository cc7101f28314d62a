package embedded_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// A create that fails partway undoes what it did, and only that: the id
// and the ledger record are released (the same id can be created later),
// and a volume it did not make is left alone.
func TestFailedCreateUndoesItsSteps(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, embedded.Config{})
	vol, err := h.Storage().CreateVolume(ctx, "taken")
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(vol.Path, "not-yours")
	if err := os.WriteFile(marker, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = h.CreateSession(ctx, environment.SessionConfig{SessionID: "taken"})
	if !errors.Is(err, environment.ErrAlreadyExists) {
		t.Fatalf("create over an existing volume: %v, want ErrAlreadyExists", err)
	}
	if ss := h.Sessions(); len(ss) != 0 {
		t.Fatalf("a failed create left sessions: %+v", ss)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("a failed create touched a volume it did not make: %v", err)
	}
	if err := h.Storage().DestroyVolume(ctx, "taken"); err != nil {
		t.Fatal(err)
	}
	e, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "taken"})
	if err != nil {
		t.Fatalf("the id of a failed create is not free again: %v", err)
	}
	if st := e.State(); st != environment.StateActive {
		t.Fatalf("state %s, want active", st)
	}
}
