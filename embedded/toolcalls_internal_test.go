package embedded

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/turnbox/turnbox/environment"
)

func key(session, id string) callKey { return callKey{session: session, id: id} }

// TestToolCallCacheBounds: the cache evicts finished calls beyond its
// bounds, never calls in flight, and forgets errors.
func TestToolCallCacheBounds(t *testing.T) {
	ctx := context.Background()
	c := newToolCalls(3, 1<<20, nil)
	var runs atomic.Int32
	run := func() (*environment.ToolResponse, error) { runs.Add(1); return &environment.ToolResponse{}, nil }
	for i := range 10 {
		if _, err := c.do(ctx, key("s", fmt.Sprint(i)), [32]byte{}, run); err != nil {
			t.Fatal(err)
		}
	}
	if c.len() != 3 {
		t.Errorf("len = %d, want 3", c.len())
	}
	// The newest are kept: no new run.
	if _, _ = c.do(ctx, key("s", "9"), [32]byte{}, run); runs.Load() != 10 {
		t.Errorf("newest call evicted (runs %d)", runs.Load())
	}
	// The oldest is gone: it runs again.
	if _, _ = c.do(ctx, key("s", "0"), [32]byte{}, run); runs.Load() != 11 {
		t.Errorf("evicted call not run again (runs %d)", runs.Load())
	}
	// Byte bound.
	c = newToolCalls(100, 1000, nil)
	big := func() (*environment.ToolResponse, error) {
		runs.Add(1)
		return &environment.ToolResponse{Content: string(make([]byte, 400))}, nil
	}
	for i := range 5 {
		_, _ = c.do(ctx, key("s", fmt.Sprint(i)), [32]byte{}, big)
	}
	if c.bytes > 1000 || c.len() != 1 {
		t.Errorf("bytes %d, len %d", c.bytes, c.len())
	}
	// Errors are forgotten.
	_, err := c.do(ctx, key("s", "e"), [32]byte{}, func() (*environment.ToolResponse, error) { return nil, environment.ErrBusy })
	if !errors.Is(err, environment.ErrBusy) {
		t.Fatal(err)
	}
	before := runs.Load()
	if _, err := c.do(ctx, key("s", "e"), [32]byte{}, big); err != nil || runs.Load() != before+1 {
		t.Errorf("retry after an error: runs %d, want %d, err %v", runs.Load(), before+1, err)
	}
	// A reused id with other content is refused.
	if _, err := c.do(ctx, key("s", "e"), [32]byte{1}, big); !errors.Is(err, environment.ErrInvalidArgument) {
		t.Errorf("reused id with other content: %v, want ErrInvalidArgument", err)
	}
}

// TestToolCallCacheWaiters: duplicates waiting for a call get its response
// when it succeeds; when it fails, one of them runs the call anew and the
// others get that run's response. A waiter whose context ends stops
// waiting; a response over the byte bound is returned but not kept.
func TestToolCallCacheWaiters(t *testing.T) {
	c := newToolCalls(10, 1<<20, nil)
	k := key("s", "k")
	release, entered := make(chan struct{}), make(chan struct{})
	var runs atomic.Int32
	go func() {
		_, _ = c.do(context.Background(), k, [32]byte{}, func() (*environment.ToolResponse, error) {
			runs.Add(1)
			close(entered)
			<-release
			return nil, context.Canceled
		})
	}()
	<-entered
	type result struct {
		resp *environment.ToolResponse
		err  error
	}
	results := make(chan result, 3)
	for range 3 {
		go func() {
			resp, err := c.do(context.Background(), k, [32]byte{}, func() (*environment.ToolResponse, error) {
				runs.Add(1)
				return &environment.ToolResponse{Content: "whole"}, nil
			})
			results <- result{resp, err}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	for range 3 {
		if r := <-results; r.err != nil || r.resp.Content != "whole" {
			t.Errorf("waiter: %+v, %v; want the rerun's response", r.resp, r.err)
		}
	}
	if runs.Load() != 2 {
		t.Errorf("%d runs in all; want 2 (the failed call and one rerun)", runs.Load())
	}
	block, inFlight := make(chan struct{}), make(chan struct{})
	go func() {
		_, _ = c.do(context.Background(), key("s", "slow"), [32]byte{}, func() (*environment.ToolResponse, error) {
			close(inFlight)
			<-block
			return &environment.ToolResponse{}, nil
		})
	}()
	<-inFlight
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.do(ctx, key("s", "slow"), [32]byte{}, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiter past its deadline: %v", err)
	}
	close(block)

	c = newToolCalls(10, 1000, nil)
	small := func() (*environment.ToolResponse, error) {
		runs.Add(1)
		return &environment.ToolResponse{Content: "s"}, nil
	}
	if _, err := c.do(context.Background(), key("s", "small"), [32]byte{}, small); err != nil {
		t.Fatal(err)
	}
	huge, err := c.do(context.Background(), key("s", "huge"), [32]byte{}, func() (*environment.ToolResponse, error) {
		return &environment.ToolResponse{Content: string(make([]byte, 2000))}, nil
	})
	if err != nil || len(huge.Content) != 2000 {
		t.Fatalf("huge response: %d bytes, %v", len(huge.Content), err)
	}
	before := runs.Load()
	if _, _ = c.do(context.Background(), key("s", "small"), [32]byte{}, small); runs.Load() != before || c.len() != 1 {
		t.Errorf("a response over the byte bound evicted the others (runs %d, len %d)", runs.Load()-before, c.len())
	}
}
