package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func protojsonUnmarshal(b []byte, m proto.Message) error { return protojson.Unmarshal(b, m) }

// TestErrorRoundTrip: every sentinel survives toConnectError and
// fromConnectError, alone and combined.
func TestErrorRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, s := range sentinels {
		err := fromConnectError(ctx, "X", toConnectError(fmt.Errorf("wrapped: %w", s.err)))
		if !errors.Is(err, s.err) {
			t.Errorf("%v did not survive: %v", s.err, err)
		}
		for _, o := range sentinels {
			if o.err != s.err && errors.Is(err, o.err) {
				t.Errorf("%v came back also as %v", s.err, o.err)
			}
		}
	}
	both := fmt.Errorf("%w: gone (%w)", environment.ErrNotActive, environment.ErrSessionNotFound)
	err := fromConnectError(ctx, "X", toConnectError(both))
	if !errors.Is(err, environment.ErrNotActive) || !errors.Is(err, environment.ErrSessionNotFound) || err.Error() != both.Error() {
		t.Errorf("combined: %v", err)
	}
}

// TestCallCacheBounds: the cache evicts finished calls beyond its bounds,
// never calls in flight.
func TestCallCacheBounds(t *testing.T) {
	c := newCallCache(3, 1<<20)
	var runs atomic.Int32
	run := func() (*turnboxv1.ToolResponse, error) { runs.Add(1); return &turnboxv1.ToolResponse{}, nil }
	for i := range 10 {
		if _, _, err := c.do(context.Background(), callKey{"s", fmt.Sprint(i)}, [32]byte{}, run); err != nil {
			t.Fatal(err)
		}
	}
	if c.len() != 3 {
		t.Errorf("len = %d, want 3", c.len())
	}
	// The newest are kept: no new run.
	if _, dedup, _ := c.do(context.Background(), callKey{"s", "9"}, [32]byte{}, run); !dedup || runs.Load() != 10 {
		t.Errorf("newest call evicted (dedup %v, runs %d)", dedup, runs.Load())
	}
	// Byte bound.
	c = newCallCache(100, 1000)
	big := func() (*turnboxv1.ToolResponse, error) {
		return &turnboxv1.ToolResponse{Content: make([]byte, 400)}, nil
	}
	for i := range 5 {
		_, _, _ = c.do(context.Background(), callKey{"s", fmt.Sprint(i)}, [32]byte{}, big)
	}
	if c.bytes > 1000 || c.len() != 1 {
		t.Errorf("bytes %d, len %d", c.bytes, c.len())
	}
	// Errors are forgotten.
	_, _, err := c.do(context.Background(), callKey{"s", "e"}, [32]byte{}, func() (*turnboxv1.ToolResponse, error) { return nil, environment.ErrBusy })
	if !errors.Is(err, environment.ErrBusy) {
		t.Fatal(err)
	}
	if _, dedup, err := c.do(context.Background(), callKey{"s", "e"}, [32]byte{}, big); dedup || err != nil {
		t.Errorf("retry after an error: dedup %v, err %v", dedup, err)
	}
	c.dropSession("s")
	if c.len() != 0 {
		t.Errorf("dropSession left %d", c.len())
	}
}
