package embedded_test

import (
	"errors"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// TestWatchesBounded: a session runs at most MaxSessionWatches watches at
// once; closing one makes room again.
func TestWatchesBounded(t *testing.T) {
	h := newHost(t, embedded.Config{StateDir: t.TempDir(), ContainerRuntime: embedded.ContainerRuntimeNone, Logger: quietLogger()})
	e, err := h.CreateSession(t.Context(), environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var ws []environment.Watcher
	for range embedded.MaxSessionWatches {
		w, err := e.WatchDir(t.Context(), ".", environment.WatchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	if _, err := e.WatchDir(t.Context(), ".", environment.WatchOptions{}); !errors.Is(err, environment.ErrLimitExceeded) {
		t.Fatalf("watch %d: err = %v, want ErrLimitExceeded", embedded.MaxSessionWatches+1, err)
	}
	ws[0].Close()
	for range ws[0].Events() {
	}
	w, err := e.WatchDir(t.Context(), ".", environment.WatchOptions{})
	if err != nil {
		t.Fatalf("a watch after closing one: %v", err)
	}
	w.Close()
	if err := e.Destroy(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, w := range ws[1:] {
		for range w.Events() {
		}
		if !errors.Is(w.Err(), environment.ErrNotActive) {
			t.Errorf("a watch after Destroy ended with %v, want ErrNotActive", w.Err())
		}
	}
}

// drain reads w's events until none comes for a while.
func drain(w environment.Watcher) []environment.FileEvent {
	var out []environment.FileEvent
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				return out
			}
			out = append(out, ev)
		case <-time.After(500 * time.Millisecond):
			return out
		}
	}
}

// TestWatchQueue: a reader that falls behind loses events to a bounded
// queue and is told so by an overflow event; the writes of one large
// write are one event while the reader has not taken it.
func TestWatchQueue(t *testing.T) {
	h := newHost(t, embedded.Config{StateDir: t.TempDir(), ContainerRuntime: embedded.ContainerRuntimeNone, Logger: quietLogger()})
	e, err := h.CreateSession(t.Context(), environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Destroy(t.Context())
	w, err := e.WatchDir(t.Context(), ".", environment.WatchOptions{QueueSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	call(t, e, environment.BashParams{Command: "for i in $(seq 50); do echo x > f$i; done"})
	time.Sleep(300 * time.Millisecond) // the host reads inotify meanwhile; nobody reads Events
	seen := drain(w)
	overflow := false
	for _, ev := range seen {
		overflow = overflow || ev.Kind == environment.EventOverflow
	}
	if !overflow || len(seen) > 6 {
		t.Errorf("a full queue of 4: %d events %+v, want at most 4 and an overflow event", len(seen), seen)
	}
	w2, err := e.WatchDir(t.Context(), ".", environment.WatchOptions{QueueSize: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	call(t, e, environment.BashParams{Command: "dd if=/dev/zero of=big bs=4k count=500 2>/dev/null"})
	time.Sleep(300 * time.Millisecond)
	writes := 0
	for _, ev := range drain(w2) {
		if ev.Kind == environment.EventWrite && ev.Path == "big" {
			writes++
		}
	}
	if writes != 1 {
		t.Errorf("500 writes to one file while the reader was away: %d write events, want 1", writes)
	}
}
