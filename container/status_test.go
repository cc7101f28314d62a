package container

import (
	"context"
	"errors"
	"testing"
	"time"
)

func wantStatus(t *testing.T, l *Lifecycle, want Status) {
	t.Helper()
	if got := l.Status(); got != want {
		t.Fatalf("Status = %v, want %v", got, want)
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestLifecyclePause: only a running sandbox is used, Pause and Resume
// freeze once and are idempotent, and a failed freeze changes nothing.
func TestLifecyclePause(t *testing.T) {
	l := NewLifecycle("test: sandbox s")
	wantStatus(t, l, StatusStarting)
	if err := l.Require(StatusRunning); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Require(running) while starting: %v", err)
	}
	if err := l.SetPaused(true, func() error { t.Fatal("froze a starting sandbox"); return nil }); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Pause while starting: %v", err)
	}
	if err := l.Started(); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, l, StatusRunning)
	freezes := 0
	freeze := func() error { freezes++; return nil }
	boom := errors.New("boom")
	if err := l.SetPaused(true, func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("failed freeze: %v", err)
	}
	wantStatus(t, l, StatusRunning)
	for range 2 {
		if err := l.SetPaused(true, freeze); err != nil {
			t.Fatal(err)
		}
	}
	wantStatus(t, l, StatusPaused)
	if freezes != 1 {
		t.Fatalf("froze %d times for two Pauses, want 1", freezes)
	}
	if err := l.Require(StatusRunning); !errors.Is(err, ErrPaused) {
		t.Fatalf("Require(running) while paused: %v, want ErrPaused", err)
	}
	ran := false
	if err := l.While(func() error { ran = true; return nil }, StatusRunning); !errors.Is(err, ErrPaused) || ran {
		t.Fatalf("While(running) on a paused sandbox: %v, ran %v", err, ran)
	}
	for range 2 {
		if err := l.SetPaused(false, freeze); err != nil {
			t.Fatal(err)
		}
	}
	wantStatus(t, l, StatusRunning)
	if freezes != 2 {
		t.Fatalf("froze %d times, want 2 (one Pause, one Resume)", freezes)
	}
}

// TestLifecycleFailed: a sandbox that dies on its own is failed, its Err
// wraps ErrNotRunning and the cause, and Stop still runs once.
func TestLifecycleFailed(t *testing.T) {
	l := NewLifecycle("test: sandbox s")
	if err := l.Started(); err != nil {
		t.Fatal(err)
	}
	cause := errors.New("agent killed")
	if !l.Exited(cause) {
		t.Fatal("Exited of a running sandbox did not report a failure")
	}
	wantStatus(t, l, StatusFailed)
	if !closed(l.Done()) {
		t.Fatal("Done not closed")
	}
	if err := l.Err(); !errors.Is(err, ErrNotRunning) || !errors.Is(err, cause) {
		t.Fatalf("Err = %v, want ErrNotRunning and the cause", err)
	}
	if err := l.Require(StatusRunning); !errors.Is(err, cause) {
		t.Fatalf("Require on a failed sandbox: %v, want its Err", err)
	}
	if err := l.Started(); err == nil {
		t.Fatal("Started after the sandbox died: nil")
	}
	prev, first, err := l.BeginStop(context.Background())
	if !first || err != nil || prev != StatusFailed {
		t.Fatalf("BeginStop = %v %v %v", prev, first, err)
	}
	if err := l.EndStop(nil); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, l, StatusStopped)
	if !errors.Is(l.Err(), cause) {
		t.Fatalf("Err after Stop = %v, want the failure kept", l.Err())
	}
}

// TestLifecycleStop: a second Stop waits for the first and gets its
// result (or its own context's end); the exit a Stop causes is no
// failure.
func TestLifecycleStop(t *testing.T) {
	l := NewLifecycle("test: sandbox s")
	if err := l.Started(); err != nil {
		t.Fatal(err)
	}
	if _, first, err := l.BeginStop(context.Background()); !first || err != nil {
		t.Fatalf("first BeginStop: %v %v", first, err)
	}
	wantStatus(t, l, StatusStopping)
	if err := l.Require(StatusRunning); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Require while stopping: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, first, err := l.BeginStop(ctx); first || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second BeginStop before the first ended: %v %v, want the context's error", first, err)
	}
	second := make(chan error, 1)
	go func() {
		_, first, err := l.BeginStop(context.Background())
		if first {
			err = errors.New("second BeginStop was first")
		}
		second <- err
	}()
	if l.Exited(errors.New("killed by Stop")) {
		t.Fatal("the exit a Stop caused counted as a failure")
	}
	stopErr := errors.New("teardown failed")
	if err := l.EndStop(stopErr); !errors.Is(err, stopErr) {
		t.Fatalf("EndStop = %v", err)
	}
	select {
	case err := <-second:
		if !errors.Is(err, stopErr) {
			t.Fatalf("second Stop = %v, want the first's error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second Stop did not return after the first ended")
	}
	wantStatus(t, l, StatusStopped)
	if l.Err() != nil || !closed(l.Done()) {
		t.Fatalf("after Stop: Err %v, Done closed %v", l.Err(), closed(l.Done()))
	}
}

func TestStatusString(t *testing.T) {
	for s, want := range map[Status]string{StatusRunning: "running", StatusFailed: "failed", Status(42): "status(42)"} {
		if got := s.String(); got != want {
			t.Errorf("%d: %q, want %q", int(s), got, want)
		}
	}
}
