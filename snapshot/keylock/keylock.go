// Package keylock provides per-key mutual exclusion: a set of mutexes
// named by string keys (volume names in the snapshot backends), made on
// first use and dropped when no caller holds or waits for them, so the set
// does not grow with every name ever locked.
package keylock

import (
	"slices"
	"sync"
)

// Set is a set of mutexes by key. The zero value is ready to use; a Set
// must not be copied after first use.
type Set struct {
	mu sync.Mutex // guards m and every entry's refs
	m  map[string]*entry
}

type entry struct {
	mu   sync.Mutex
	refs int // callers holding or waiting for mu
}

// Lock locks every distinct key, in sorted order so that two callers
// naming the same keys in any order never deadlock, and returns the
// function that unlocks them (call it once). A key named twice is locked
// once. Lock with no keys locks nothing.
func (s *Set) Lock(keys ...string) (unlock func()) {
	keys = slices.Clone(keys)
	slices.Sort(keys)
	keys = slices.Compact(keys)
	entries := make([]*entry, len(keys))
	s.mu.Lock()
	if s.m == nil {
		s.m = make(map[string]*entry)
	}
	for i, k := range keys {
		e := s.m[k]
		if e == nil {
			e = &entry{}
			s.m[k] = e
		}
		e.refs++
		entries[i] = e
	}
	s.mu.Unlock()
	for _, e := range entries {
		e.mu.Lock()
	}
	return func() {
		for i := len(entries) - 1; i >= 0; i-- {
			entries[i].mu.Unlock()
		}
		s.mu.Lock()
		for i, k := range keys {
			if entries[i].refs--; entries[i].refs == 0 {
				delete(s.m, k)
			}
		}
		s.mu.Unlock()
	}
}
