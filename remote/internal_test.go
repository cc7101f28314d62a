package remote

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote/internal/wire"
)

// TestErrorRoundTrip: every sentinel survives wire.ToConnectError (the
// server side) and fromConnectError (the client side), alone and combined.
func TestErrorRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, s := range wire.Sentinels {
		err := fromConnectError(ctx, "X", wire.ToConnectError(fmt.Errorf("wrapped: %w", s.Err)))
		if !errors.Is(err, s.Err) {
			t.Errorf("%v did not survive: %v", s.Err, err)
		}
		for _, o := range wire.Sentinels {
			if o.Err != s.Err && errors.Is(err, o.Err) {
				t.Errorf("%v came back also as %v", s.Err, o.Err)
			}
		}
	}
	both := fmt.Errorf("%w: gone (%w)", environment.ErrNotActive, environment.ErrSessionNotFound)
	err := fromConnectError(ctx, "X", wire.ToConnectError(both))
	if !errors.Is(err, environment.ErrNotActive) || !errors.Is(err, environment.ErrSessionNotFound) || err.Error() != both.Error() {
		t.Errorf("combined: %v", err)
	}
}
