package remote

import (
	"container/list"
	"context"
	"fmt"
	"sync"

	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
)

// Default bounds of the idempotency cache.
const (
	defaultCacheEntries = 4096
	defaultCacheBytes   = 64 << 20
)

// callKey identifies a tool call: the model's tool call id within a session.
type callKey struct{ session, id string }

// toolCall is one tool call in the cache: in flight until done is closed,
// then, if it finished, holding its response. Only calls whose tool
// finished are kept: a call that failed (busy, not active, invalid) or did
// not finish (its caller canceled or its deadline passed, the server or
// host shut down, the sandbox died) leaves the cache when it ends, so the
// next call with its id runs the tool again.
type toolCall struct {
	key      callKey
	fp       [32]byte
	done     chan struct{}
	finished bool // set with done closed, under callCache.mu; only for cached calls
	resp     *turnboxv1.ToolResponse
	err      error
	size     int64
	elem     *list.Element
}

// callCache makes tool calls idempotent: a bounded LRU of finished calls by
// (session, tool call id), plus the calls in flight, which duplicates wait
// for. It holds at most maxEntries finished calls and maxBytes of their
// content; calls in flight are never evicted.
//
// A duplicate that arrives while its call runs waits for it and gets its
// response if it finishes; if it does not (its own caller went away, say),
// the duplicate runs the call itself, so it sees what a retry after the
// failed call would see. Keys hold the session id: a call in one session
// never sees another session's result.
type callCache struct {
	maxEntries int
	maxBytes   int64

	mu    sync.Mutex
	bytes int64
	lru   *list.List // of *toolCall, most recently used first
	calls map[callKey]*toolCall
}

func newCallCache(maxEntries int, maxBytes int64) *callCache {
	if maxEntries <= 0 {
		maxEntries = defaultCacheEntries
	}
	if maxBytes <= 0 {
		maxBytes = defaultCacheBytes
	}
	return &callCache{maxEntries: maxEntries, maxBytes: maxBytes, lru: list.New(), calls: map[callKey]*toolCall{}}
}

// do runs fn once per key until it succeeds: a call whose key is cached
// returns the cached response (dedup true); one whose key is in flight
// waits for that call and returns its response, or runs fn itself if that
// call failed. fn's error is never cached. A key reused with a different
// fingerprint is ErrInvalidArgument. fn must return an error, never a
// response, when the tool did not finish.
func (c *callCache) do(ctx context.Context, key callKey, fp [32]byte, fn func() (*turnboxv1.ToolResponse, error)) (*turnboxv1.ToolResponse, bool, error) {
	for {
		c.mu.Lock()
		prev := c.calls[key]
		if prev == nil {
			cl := &toolCall{key: key, fp: fp, done: make(chan struct{})}
			cl.elem = c.lru.PushFront(cl)
			c.calls[key] = cl
			c.mu.Unlock()
			resp, err := c.run(cl, fn)
			return resp, false, err
		}
		if prev.fp != fp {
			c.mu.Unlock()
			return nil, false, fmt.Errorf("%w: tool call id %q was already used for a different call in session %s", environment.ErrInvalidArgument, key.id, key.session)
		}
		c.lru.MoveToFront(prev.elem)
		c.mu.Unlock()
		select {
		case <-prev.done:
			if prev.err == nil {
				return prev.resp, true, nil
			}
			// It failed and left the cache: run the call anew (or
			// wait for whichever duplicate got there first).
		case <-ctx.Done():
			return nil, true, ctx.Err()
		}
	}
}

// run runs fn for the in-flight call cl and records its outcome: a
// response is cached (unless it alone exceeds the byte bound), an error
// (or a panic) removes cl from the cache.
func (c *callCache) run(cl *toolCall, fn func() (*turnboxv1.ToolResponse, error)) (resp *turnboxv1.ToolResponse, err error) {
	defer func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if p := recover(); p != nil {
			cl.err = fmt.Errorf("remote: tool call panicked: %v", p)
			c.remove(cl)
			close(cl.done)
			panic(p)
		}
		cl.resp, cl.err = resp, err
		switch size := responseSize(cl.key, resp); {
		case err != nil:
			c.remove(cl)
		case size > c.maxBytes:
			// Larger than the whole cache: its waiters get it, and
			// it is not kept (keeping it would evict every other
			// result first).
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
func responseSize(key callKey, resp *turnboxv1.ToolResponse) int64 {
	return int64(len(resp.GetContent())+len(resp.GetToolCallId())+len(resp.GetSnapshotId())+len(key.id)+len(key.session)) + 256
}

// remove drops cl from the cache. c.mu is held.
func (c *callCache) remove(cl *toolCall) {
	if c.calls[cl.key] != cl {
		return
	}
	delete(c.calls, cl.key)
	c.lru.Remove(cl.elem)
	c.bytes -= cl.size
}

// evict drops the least recently used finished calls until the cache is
// within its bounds. c.mu is held.
func (c *callCache) evict() {
	for e := c.lru.Back(); e != nil && (len(c.calls) > c.maxEntries || c.bytes > c.maxBytes); {
		prev := e.Prev()
		if cl := e.Value.(*toolCall); cl.finished {
			c.remove(cl)
		}
		e = prev
	}
}

// dropSession forgets a session's finished calls: when it is destroyed, and
// when a session is created or forked under its id, so that a reused
// session id never sees an earlier session's results.
func (c *callCache) dropSession(session string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, cl := range c.calls {
		if k.session == session && cl.finished {
			c.remove(cl)
		}
	}
}

// len reports the number of calls cached or in flight.
func (c *callCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls)
}
