package embedded

import (
	"container/list"
	"context"
	"crypto/sha256"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnbox/turnbox/environment"
)

// Default bounds of a host's tool call cache (Config.ToolCallCacheEntries
// and Config.ToolCallCacheBytes).
const (
	DefaultToolCallCacheEntries = 4096
	DefaultToolCallCacheBytes   = 64 << 20
)

// callKey identifies a tool call: the model's tool call id within one
// incarnation of a session. The creation time tells apart a session created
// under the id of one destroyed earlier, so it never sees the old one's
// results.
type callKey struct {
	session string
	created int64 // the session's CreatedAt, in Unix nanoseconds
	id      string
}

// toolCall is one tool call in the cache: in flight until done is closed,
// then, if it finished, holding its response.
type toolCall struct {
	key      callKey
	fp       [32]byte
	done     chan struct{}
	finished bool // set with done closed, under toolCalls.mu; only for cached calls
	resp     *environment.ToolResponse
	err      error
	size     int64
	elem     *list.Element
}

// toolCalls makes tool calls idempotent by (session, ToolCallID): a bounded
// LRU of finished calls plus the calls in flight, which duplicates wait
// for. It holds at most maxEntries finished calls and maxBytes of their
// content; calls in flight are never evicted.
//
// Only calls whose tool finished are kept, whatever they report (a
// non-zero exit, a timeout, a tool error). A call that failed (busy, not
// active, invalid) or did not finish (its caller canceled it or its
// deadline passed, the host shut down, the session was destroyed or its
// sandbox died) leaves the cache when it ends, so the next call with its id
// runs the tool again. A duplicate that arrives while its call runs waits
// for it and gets its response if it finishes; if it does not, the
// duplicate runs the call itself.
type toolCalls struct {
	maxEntries int
	maxBytes   int64
	dedups     prometheus.Counter

	mu    sync.Mutex
	bytes int64
	lru   *list.List // of *toolCall, most recently used first
	calls map[callKey]*toolCall
}

// newToolCalls returns a cache with the given bounds (defaults for values
// <= 0) whose dedup counter is registered on reg (if not nil).
func newToolCalls(maxEntries int, maxBytes int64, reg *prometheus.Registry) *toolCalls {
	if maxEntries <= 0 {
		maxEntries = DefaultToolCallCacheEntries
	}
	if maxBytes <= 0 {
		maxBytes = DefaultToolCallCacheBytes
	}
	c := &toolCalls{maxEntries: maxEntries, maxBytes: maxBytes, lru: list.New(), calls: map[callKey]*toolCall{}}
	c.dedups = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "turnbox_tool_call_dedup_total",
		Help: "Tool calls answered from the idempotency cache (a retry or a duplicate of a tool call id).",
	})
	if reg != nil {
		reg.MustRegister(c.dedups)
	}
	return c
}

// execute runs req on s through the cache (directly when it has no tool
// call id). A response whose caller's ctx ended while it ran is an error:
// it may have raced the cancellation and is neither trusted nor cached.
func (c *toolCalls) execute(ctx context.Context, s *session, req environment.ToolRequest, onProgress func(environment.ToolProgress)) (*environment.ToolResponse, error) {
	if req.ToolCallID == "" {
		return s.execute(ctx, req, onProgress)
	}
	if err := environment.ValidateToolCallID(req.ToolCallID); err != nil {
		return nil, err
	}
	key := callKey{session: s.id, created: s.rec.CreatedAt.UnixNano(), id: req.ToolCallID}
	return c.do(ctx, key, fingerprint(req), func() (*environment.ToolResponse, error) {
		resp, err := s.execute(ctx, req, onProgress)
		if err == nil && ctx.Err() != nil {
			return nil, fmt.Errorf("embedded: tool call canceled: %w", context.Cause(ctx))
		}
		return resp, err
	})
}

// fingerprint identifies a tool call's content, to refuse a tool call id
// reused for a different call.
func fingerprint(r environment.ToolRequest) [32]byte {
	h := sha256.New()
	h.Write([]byte(r.ToolName))
	h.Write([]byte{0})
	if r.Snapshot {
		h.Write([]byte{1})
	} else {
		h.Write([]byte{0})
	}
	h.Write(r.Input)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// do runs fn once per key until it finishes: a call whose key is cached
// returns a copy of the cached response; one whose key is in flight waits
// for that call and returns its response, or runs fn itself if that call
// failed. fn's errors are never cached. A key reused with a different
// fingerprint is ErrInvalidArgument. fn must return an error when the tool
// did not finish.
func (c *toolCalls) do(ctx context.Context, key callKey, fp [32]byte, fn func() (*environment.ToolResponse, error)) (*environment.ToolResponse, error) {
	for {
		c.mu.Lock()
		prev := c.calls[key]
		if prev == nil {
			cl := &toolCall{key: key, fp: fp, done: make(chan struct{})}
			cl.elem = c.lru.PushFront(cl)
			c.calls[key] = cl
			c.mu.Unlock()
			return c.run(cl, fn)
		}
		if prev.fp != fp {
			c.mu.Unlock()
			return nil, fmt.Errorf("%w: tool call id %q was already used for a different call in session %s", environment.ErrInvalidArgument, key.id, key.session)
		}
		c.lru.MoveToFront(prev.elem)
		c.mu.Unlock()
		select {
		case <-prev.done:
			if prev.err == nil {
				c.dedups.Inc()
				out := *prev.resp
				return &out, nil
			}
			// It failed and left the cache: run the call anew (or
			// wait for whichever duplicate got there first).
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// run runs fn for the in-flight call cl and records its outcome: a
// response is cached (unless it alone exceeds the byte bound), an error
// (or a panic) removes cl from the cache. The caller gets fn's own
// response; waiters get copies.
func (c *toolCalls) run(cl *toolCall, fn func() (*environment.ToolResponse, error)) (resp *environment.ToolResponse, err error) {
	defer func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if p := recover(); p != nil {
			cl.err = fmt.Errorf("embedded: tool call panicked: %v", p)
			c.remove(cl)
			close(cl.done)
			panic(p)
		}
		if err == nil && resp == nil {
			err = fmt.Errorf("embedded: tool call %q returned no response", cl.key.id)
		}
		cl.err = err
		if err == nil {
			kept := *resp
			cl.resp = &kept
		}
		switch size := responseSize(cl.key, resp); {
		case err != nil, size > c.maxBytes:
			// An error is forgotten. A response larger than the
			// whole cache goes to its waiters and is not kept
			// (keeping it would evict every other result first).
			c.remove(cl)
		default:
			cl.finished, cl.size = true, size
			c.bytes += size
			c.evict()
		}
		close(cl.done)
	}()
	return fn()
}

// responseSize estimates the memory a cached response holds.
func responseSize(key callKey, resp *environment.ToolResponse) int64 {
	n := len(key.id) + len(key.session) + 256
	if resp != nil {
		n += len(resp.Content) + len(resp.ToolCallID) + len(resp.SnapshotID)
	}
	return int64(n)
}

// remove drops cl from the cache. c.mu is held.
func (c *toolCalls) remove(cl *toolCall) {
	if c.calls[cl.key] != cl {
		return
	}
	delete(c.calls, cl.key)
	c.lru.Remove(cl.elem)
	c.bytes -= cl.size
}

// evict drops the least recently used finished calls until the cache is
// within its bounds. c.mu is held.
func (c *toolCalls) evict() {
	for e := c.lru.Back(); e != nil && (len(c.calls) > c.maxEntries || c.bytes > c.maxBytes); {
		prev := e.Prev()
		if cl := e.Value.(*toolCall); cl.finished {
			c.remove(cl)
		}
		e = prev
	}
}

// len reports the number of calls cached or in flight.
func (c *toolCalls) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls)
}
