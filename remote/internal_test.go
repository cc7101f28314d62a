package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

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

// TestToolCallCancelCacheWaiters: duplicates waiting for a call get its
// response when it succeeds; when it fails, one of them runs the call
// anew and the others get that run's response. Nothing failed is cached.
func TestToolCallCancelCacheWaiters(t *testing.T) {
	c := newCallCache(10, 1<<20)
	key := callKey{"s", "k"}
	release := make(chan struct{})
	entered := make(chan struct{})
	var runs atomic.Int32
	go func() {
		_, _, _ = c.do(context.Background(), key, [32]byte{}, func() (*turnboxv1.ToolResponse, error) {
			runs.Add(1)
			close(entered)
			<-release
			return nil, context.Canceled
		})
	}()
	<-entered
	type result struct {
		resp  *turnboxv1.ToolResponse
		dedup bool
		err   error
	}
	results := make(chan result, 3)
	for range 3 {
		go func() {
			resp, dedup, err := c.do(context.Background(), key, [32]byte{}, func() (*turnboxv1.ToolResponse, error) {
				runs.Add(1)
				return &turnboxv1.ToolResponse{Content: []byte("whole")}, nil
			})
			results <- result{resp, dedup, err}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	ran := 0
	for range 3 {
		r := <-results
		if r.err != nil || string(r.resp.GetContent()) != "whole" {
			t.Errorf("waiter: %+v, %v; want the rerun's response", r.resp, r.err)
		}
		if !r.dedup {
			ran++
		}
	}
	if ran != 1 || runs.Load() != 2 {
		t.Errorf("%d waiters ran the call, %d runs in all; want 1 and 2", ran, runs.Load())
	}
	// A waiter whose own context ends stops waiting.
	block := make(chan struct{})
	inFlight := make(chan struct{})
	go func() {
		_, _, _ = c.do(context.Background(), callKey{"s", "slow"}, [32]byte{}, func() (*turnboxv1.ToolResponse, error) {
			close(inFlight)
			<-block
			return &turnboxv1.ToolResponse{}, nil
		})
	}()
	<-inFlight
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := c.do(ctx, callKey{"s", "slow"}, [32]byte{}, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiter past its deadline: %v", err)
	}
	close(block)
	// A response larger than the whole byte bound is returned but not
	// kept, and the results already cached stay.
	c = newCallCache(10, 1000)
	small := func() (*turnboxv1.ToolResponse, error) { return &turnboxv1.ToolResponse{Content: []byte("s")}, nil }
	if _, _, err := c.do(context.Background(), callKey{"s", "small"}, [32]byte{}, small); err != nil {
		t.Fatal(err)
	}
	huge, dedup, err := c.do(context.Background(), callKey{"s", "huge"}, [32]byte{}, func() (*turnboxv1.ToolResponse, error) {
		return &turnboxv1.ToolResponse{Content: make([]byte, 2000)}, nil
	})
	if err != nil || dedup || len(huge.GetContent()) != 2000 {
		t.Fatalf("huge response: %d bytes, dedup %v, %v", len(huge.GetContent()), dedup, err)
	}
	if _, dedup, _ := c.do(context.Background(), callKey{"s", "small"}, [32]byte{}, small); !dedup || c.len() != 1 {
		t.Errorf("a response over the byte bound evicted the others (dedup %v, len %d)", dedup, c.len())
	}
	// Another session's call with the same id and input runs on its own.
	if _, dedup, err := c.do(context.Background(), callKey{"other", "k"}, [32]byte{}, func() (*turnboxv1.ToolResponse, error) {
		return &turnboxv1.ToolResponse{Content: []byte("mine")}, nil
	}); dedup || err != nil {
		t.Errorf("same id in another session: dedup %v, err %v", dedup, err)
	}
}
