package envtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/turnbox/turnbox/environment"
)

func (s *suite) concurrencyTests() []test {
	return []test{
		{"ParallelTools", s.testParallelTools},
		{"RaceDestroy", s.testRaceDestroy},
		{"RacePause", s.testRacePause},
	}
}

// testParallelTools: 16 concurrent calls of mixed tools all succeed with
// the right results.
func (s *suite) testParallelTools(t *testing.T) {
	env, _ := s.session(t)
	for i := range 16 {
		s.write(t, env, fmt.Sprintf("p/edit%d.txt", i), "before")
	}
	s.write(t, env, "p/seed.txt", "seed content\n")
	ctx, cancel := s.ctx(t)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			var p environment.ToolParams
			var check func(*environment.ToolResponse) string
			switch i % 6 {
			case 0:
				p = environment.BashParams{Command: fmt.Sprintf("sleep 0.1; echo bash%d", i)}
				check = func(r *environment.ToolResponse) string { return wantEq(r.Content, fmt.Sprintf("bash%d\n", i)) }
			case 1:
				p = environment.WriteFileParams{Path: fmt.Sprintf("p/w%d.txt", i), Content: fmt.Sprint(i)}
				check = func(*environment.ToolResponse) string { return "" }
			case 2:
				p = environment.ReadFileParams{Path: "p/seed.txt"}
				check = func(r *environment.ToolResponse) string { return wantEq(r.Content, "seed content\n") }
			case 3:
				p = environment.EditFileParams{Path: fmt.Sprintf("p/edit%d.txt", i), OldString: "before", NewString: "after"}
				check = func(*environment.ToolResponse) string { return "" }
			case 4:
				p = environment.ListFilesParams{Pattern: "seed.txt", Path: "p"}
				check = func(r *environment.ToolResponse) string { return wantEq(r.Content, "p/seed.txt\n") }
			case 5:
				p = environment.GrepParams{Pattern: "seed", Path: "p/seed.txt"}
				check = func(r *environment.ToolResponse) string { return wantEq(r.Content, "p/seed.txt:1:seed content\n") }
			}
			req, err := environment.NewToolRequest(fmt.Sprintf("par-%d", i), p)
			if err != nil {
				t.Error(err)
				return
			}
			resp, err := env.ExecuteTool(ctx, req, nil)
			if err != nil {
				t.Errorf("call %d (%s): %v", i, p.ToolName(), err)
				return
			}
			if resp.IsError {
				t.Errorf("call %d (%s): IsError: %q", i, p.ToolName(), resp.Content)
				return
			}
			if resp.ToolCallID != req.ToolCallID {
				t.Errorf("call %d: ToolCallID %q, want %q (responses mixed up?)", i, resp.ToolCallID, req.ToolCallID)
			}
			if msg := check(resp); msg != "" {
				t.Errorf("call %d (%s): %s", i, p.ToolName(), msg)
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatal("concurrent calls hit the suite timeout")
	}
	for i := range 16 {
		switch i % 6 {
		case 1:
			s.wantContent(t, env, fmt.Sprintf("p/w%d.txt", i), fmt.Sprint(i))
		case 3:
			s.wantContent(t, env, fmt.Sprintf("p/edit%d.txt", i), "after")
		}
	}
}

// wantEq returns a message if got != want.
func wantEq(got, want string) string {
	if got == want {
		return ""
	}
	return fmt.Sprintf("got %q, want %q", clip(got), want)
}

// hammer runs workers that call tools on env in a loop until stop is
// closed or a call fails with ErrNotActive (when stopOnInactive). Every
// call must succeed or fail with ErrNotActive or ErrBusy.
type hammer struct {
	s        *suite
	t        *testing.T
	env      environment.Environment
	ctx      context.Context
	stop     chan struct{}
	wg       sync.WaitGroup
	ok, fail atomic.Int64
	inactive atomic.Int64
}

func (h *hammer) start(workers int, stopOnInactive bool) {
	for w := range workers {
		h.wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-h.stop:
					return
				default:
				}
				var p environment.ToolParams
				switch (w + n) % 4 {
				case 0:
					p = environment.BashParams{Command: "echo x"}
				case 1:
					p = environment.WriteFileParams{Path: fmt.Sprintf("h/%d.txt", w), Content: fmt.Sprint(n)}
				case 2:
					p = environment.ReadFileParams{Path: "h/seed.txt"}
				case 3:
					p = environment.BashParams{Command: "sleep 0.2; echo slow"}
				}
				req, _ := environment.NewToolRequest(fmt.Sprintf("h-%d-%d", w, n), p)
				resp, err := h.env.ExecuteTool(h.ctx, req, nil)
				switch {
				case errors.Is(h.ctx.Err(), context.DeadlineExceeded):
					h.t.Errorf("worker %d: call hung past the suite timeout (err %v)", w, err)
					return
				case h.ctx.Err() != nil:
					return // the test is over
				case err == nil:
					if resp == nil {
						h.t.Errorf("worker %d: nil response and nil error", w)
						return
					}
					h.ok.Add(1)
				case errors.Is(err, environment.ErrNotActive):
					h.inactive.Add(1)
					if stopOnInactive {
						return
					}
					time.Sleep(5 * time.Millisecond)
				case errors.Is(err, environment.ErrBusy):
					h.fail.Add(1)
					time.Sleep(5 * time.Millisecond)
				default:
					h.t.Errorf("worker %d: %s: %v, want success, ErrNotActive or ErrBusy", w, p.ToolName(), err)
					return
				}
			}
		})
	}
}

// wait waits for the workers, failing the test if they hang.
func (h *hammer) wait() {
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(h.s.cfg.timeout + 10*time.Second):
		h.t.Fatal("tool calls did not return: hang")
	}
}

// testRaceDestroy: tool calls racing Destroy succeed or fail cleanly, and
// the session ends destroyed.
func (s *suite) testRaceDestroy(t *testing.T) {
	env, _ := s.session(t)
	s.write(t, env, "h/seed.txt", "seed")
	ctx, cancel := s.ctx(t)
	defer cancel()
	h := &hammer{s: s, t: t, env: env, ctx: ctx, stop: make(chan struct{})}
	h.start(4, true)
	// A long call in flight when Destroy comes must return promptly.
	longDone := make(chan time.Time, 1)
	go func() {
		req, _ := environment.NewToolRequest("long", environment.BashParams{Command: "sleep 60"})
		resp, err := env.ExecuteTool(ctx, req, nil)
		if err != nil && !errors.Is(err, environment.ErrNotActive) && !errors.Is(err, environment.ErrBusy) {
			t.Errorf("sleep 60 racing Destroy: %v", err)
		}
		if err == nil && !resp.IsError {
			t.Errorf("sleep 60 racing Destroy completed normally: %+v", resp)
		}
		longDone <- time.Now()
	}()
	time.Sleep(300 * time.Millisecond)
	destroyed := time.Now()
	if err := env.Destroy(ctx); err != nil {
		t.Errorf("Destroy while tools run: %v", err)
	}
	h.wait()
	select {
	case at := <-longDone:
		if d := at.Sub(destroyed); d > 15*time.Second {
			t.Errorf("a running sleep 60 returned %v after Destroy", d)
		}
	case <-time.After(s.cfg.timeout):
		t.Fatal("a running sleep 60 never returned after Destroy")
	}
	if st := env.State(); st != environment.StateDestroyed {
		t.Errorf("State() = %q, want %q", st, environment.StateDestroyed)
	}
	_, err := s.exec(t, env, environment.BashParams{Command: "true"})
	wantErr(t, "bash after the race", err, environment.ErrNotActive)
	t.Logf("%d calls succeeded, %d busy, %d not active", h.ok.Load(), h.fail.Load(), h.inactive.Load())
}

// testRacePause: tool calls racing Pause and Resume succeed or fail cleanly;
// the session ends active and usable.
func (s *suite) testRacePause(t *testing.T) {
	env, _ := s.session(t)
	if !env.Capabilities().Pause {
		t.Skip("Capabilities.Pause is false")
	}
	s.write(t, env, "h/seed.txt", "seed")
	ctx, cancel := s.ctx(t)
	defer cancel()
	h := &hammer{s: s, t: t, env: env, ctx: ctx, stop: make(chan struct{})}
	h.start(4, false)
	for range 3 {
		time.Sleep(150 * time.Millisecond)
		if err := env.Pause(ctx); err != nil {
			if !errors.Is(err, environment.ErrBusy) {
				t.Errorf("Pause while tools run: %v", err)
			}
			continue
		}
		if st := env.State(); st != environment.StatePaused {
			t.Errorf("State() after Pause = %q, want %q", st, environment.StatePaused)
		}
		time.Sleep(150 * time.Millisecond)
		if err := env.Resume(ctx); err != nil {
			t.Errorf("Resume while tools wait: %v", err)
			break
		}
	}
	close(h.stop)
	h.wait()
	if st := env.State(); st != environment.StateActive {
		t.Fatalf("State() = %q, want %q", st, environment.StateActive)
	}
	if out := s.sh(t, env, "cat h/seed.txt"); !strings.HasPrefix(out, "seed") {
		t.Errorf("after the race: %q", out)
	}
	t.Logf("%d calls succeeded, %d busy, %d not active", h.ok.Load(), h.fail.Load(), h.inactive.Load())
}
