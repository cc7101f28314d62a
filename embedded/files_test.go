package embedded_test

import (
	"errors"
	"testing"

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
