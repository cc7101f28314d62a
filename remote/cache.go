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

// toolCall is one tool call in the cache: in flight until done is closed, then
// holding its response. Failed calls leave the cache when they finish, so a
// retry after an error (busy, not active, canceled) runs again.
type toolCall struct {
	key      callKey
	fp       [32]byte
	done     chan struct{}
	finished bool // set with done closed, under callCache.mu
	resp     *turnboxv1.ToolResponse
	err      error
	size     int64
	elem     *list.Element
}

// callCache makes tool calls idempotent: a bounded LRU of finished calls by
// (session, tool call id), plus the calls in flight, which duplicates wait
// for. It holds at most maxEntries finished calls and maxBytes of their
// content; calls in flight are never evicted.
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

// do runs fn once per key: a call whose key is cached returns the cached
// outcome (dedup true) after the first call finishes; a key reused with a
// different fingerprint is ErrInvalidArgument.
func (c *callCache) do(ctx context.Context, key callKey, fp [32]byte, fn func() (*turnboxv1.ToolResponse, error)) (resp *turnboxv1.ToolResponse, dedup bool, err error) {
	c.mu.Lock()
	if prev := c.calls[key]; prev != nil {
		if prev.fp != fp {
			c.mu.Unlock()
			return nil, false, fmt.Errorf("%w: tool call id %q was already used for a different call in session %s", environment.ErrInvalidArgument, key.id, key.session)
		}
		c.lru.MoveToFront(prev.elem)
		c.mu.Unlock()
		select {
		case <-prev.done:
			return prev.resp, true, prev.err
		case <-ctx.Done():
			return nil, true, ctx.Err()
		}
	}
	cl := &toolCall{key: key, fp: fp, done: make(chan struct{})}
	cl.elem = c.lru.PushFront(cl)
	c.calls[key] = cl
	c.mu.Unlock()

	defer func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		cl.resp, cl.err, cl.finished = resp, err, true
		if p := recover(); p != nil {
			cl.err = fmt.Errorf("remote: tool call panicked: %v", p)
			c.remove(cl)
			close(cl.done)
			panic(p)
		}
		if err != nil {
			c.remove(cl)
		} else {
			cl.size = int64(len(resp.GetContent())) + int64(len(key.id)+len(key.session)) + 128
			c.bytes += cl.size
			c.evict()
		}
		close(cl.done)
	}()
	resp, err = fn()
	return resp, false, err
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

// dropSession forgets a destroyed session's calls.
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
