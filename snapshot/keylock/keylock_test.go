package keylock

import (
	"sync"
	"testing"
	"time"
)

// size returns how many keys the set holds entries for.
func (s *Set) size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// within fails t unless f returns within d.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatal(what)
	}
}

func TestSameKeyExcludes(t *testing.T) {
	var s Set
	unlock := s.Lock("a")
	got := make(chan struct{})
	go func() {
		defer s.Lock("a")()
		close(got)
	}()
	select {
	case <-got:
		t.Fatal("a second Lock of a held key returned")
	case <-time.After(50 * time.Millisecond):
	}
	unlock()
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("Lock did not return after the key was unlocked")
	}
}

func TestOtherKeysDoNotWait(t *testing.T) {
	var s Set
	defer s.Lock("a", "b")()
	within(t, 5*time.Second, "Lock of another key waited for a held one", func() { s.Lock("c")() })
}

func TestDuplicateKeysLockOnce(t *testing.T) {
	var s Set
	within(t, 5*time.Second, "Lock deadlocked on a key named twice", func() { s.Lock("a", "a", "b", "a")() })
	if n := s.size(); n != 0 {
		t.Fatalf("%d entries left after unlock, want 0", n)
	}
}

// TestOppositeOrders locks the same pair of keys, named in both orders,
// from many goroutines: without sorting they deadlock. It also counts
// holders per key to check mutual exclusion under contention.
func TestOppositeOrders(t *testing.T) {
	var s Set
	var mu sync.Mutex
	holders := map[string]int{}
	enter := func(keys ...string) {
		mu.Lock()
		defer mu.Unlock()
		for _, k := range keys {
			if holders[k]++; holders[k] > 1 {
				t.Errorf("key %q held twice", k)
			}
		}
	}
	leave := func(keys ...string) {
		mu.Lock()
		defer mu.Unlock()
		for _, k := range keys {
			holders[k]--
		}
	}
	var wg sync.WaitGroup
	for i := range 8 {
		keys := []string{"x", "y"}
		if i%2 == 1 {
			keys = []string{"y", "x"}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 500 {
				unlock := s.Lock(keys...)
				enter(keys...)
				leave(keys...)
				unlock()
			}
		}()
	}
	within(t, 30*time.Second, "deadlock: goroutines locking the same keys in opposite orders did not finish", wg.Wait)
	if n := s.size(); n != 0 {
		t.Fatalf("%d entries left after every unlock, want 0", n)
	}
}

func TestEntriesDroppedWhileOthersWait(t *testing.T) {
	var s Set
	unlock := s.Lock("a")
	waiting := make(chan func())
	go func() { waiting <- s.Lock("a") }()
	time.Sleep(20 * time.Millisecond)
	unlock()
	second := <-waiting
	if n := s.size(); n != 1 {
		t.Fatalf("%d entries while a key is held, want 1", n)
	}
	second()
	if n := s.size(); n != 0 {
		t.Fatalf("%d entries after the last unlock, want 0", n)
	}
}
