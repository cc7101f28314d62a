package embedded_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// procEnv is a session of a host with small process bounds.
func procEnv(t *testing.T, cfg embedded.Config) *embedded.Environment {
	t.Helper()
	h := newHost(t, cfg)
	env := h.NewEnvironment()
	if err := env.Create(context.Background(), environment.SessionConfig{}); err != nil {
		t.Fatal(err)
	}
	return env
}

func startOK(t *testing.T, env *embedded.Environment, cfg environment.ProcessConfig) int {
	t.Helper()
	info, err := env.StartProcess(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.SignalProcess(context.Background(), info.PID, int(syscall.SIGKILL)) })
	return info.PID
}

// TestProcessOutputRing: the host keeps only the newest
// ProcessOutputBytes of a process's output; an attacher from an older
// offset gets a Dropped event for exactly the missing bytes.
func TestProcessOutputRing(t *testing.T) {
	const ring = 1000
	env := procEnv(t, embedded.Config{ProcessOutputBytes: ring})
	pid := startOK(t, env, environment.ProcessConfig{Command: "for i in 1 2 3 4 5; do head -c 1000 /dev/zero | tr '\\0' x; done; printf END"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := env.WaitProcess(ctx, pid); err != nil {
		t.Fatal(err)
	}
	var dropped, data int64
	var tail strings.Builder
	err := env.AttachProcess(ctx, pid, 0, func(ev environment.ProcessEvent) error {
		dropped += ev.Dropped
		data += int64(len(ev.Data))
		tail.Write(ev.Data)
		if ev.Dropped > 0 && ev.Offset != 0 {
			t.Errorf("Dropped event at offset %d, want 0", ev.Offset)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	const total = 5003
	if data != ring || dropped != total-ring || !strings.HasSuffix(tail.String(), "END") {
		t.Fatalf("held %d bytes, dropped %d (want %d and %d), tail ends %q", data, dropped, ring, total-ring, tail.String()[max(0, tail.Len()-10):])
	}
}

// TestProcessBounds: a start past MaxProcesses fails with
// ErrLimitExceeded and starts nothing; only MaxEndedProcesses ended
// processes are kept.
func TestProcessBounds(t *testing.T) {
	env := procEnv(t, embedded.Config{MaxProcesses: 2, MaxEndedProcesses: 1})
	ctx := context.Background()
	a := startOK(t, env, environment.ProcessConfig{Args: []string{"sleep", "30"}})
	startOK(t, env, environment.ProcessConfig{Args: []string{"sleep", "30"}})
	before, _ := env.ListProcesses(ctx)
	_, err := env.StartProcess(ctx, environment.ProcessConfig{Args: []string{"sleep", "30"}})
	if !errors.Is(err, environment.ErrLimitExceeded) {
		t.Fatalf("third start: %v, want ErrLimitExceeded", err)
	}
	if after, _ := env.ListProcesses(ctx); len(after) != len(before) {
		t.Fatalf("a refused start changed the table: %d then %d processes", len(before), len(after))
	}
	if err := env.SignalProcess(ctx, a, int(syscall.SIGKILL)); err != nil {
		t.Fatal(err)
	}
	if _, err := env.WaitProcess(ctx, a); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var b int
	for {
		// a's slot frees once the table has retired it.
		info, err := env.StartProcess(ctx, environment.ProcessConfig{Args: []string{"true"}})
		if err == nil {
			b = info.PID
			break
		}
		if !errors.Is(err, environment.ErrLimitExceeded) || time.Now().After(deadline) {
			t.Fatalf("start after one ended: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := env.WaitProcess(ctx, b); err != nil {
		t.Fatal(err)
	}
	for time.Now().Before(deadline) {
		if _, err := env.WaitProcess(ctx, a); errors.Is(err, environment.ErrProcessNotFound) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d is still kept after a newer process ended with MaxEndedProcesses 1", a)
}

// TestProcessPause: a paused session's processes are frozen: input is
// refused with ErrNotActive, attach waits, and after Resume all goes on.
func TestProcessPause(t *testing.T) {
	env := procEnv(t, embedded.Config{})
	if !env.Capabilities().Pause {
		t.Skip("the none runtime cannot pause here (no writable cgroup v2)")
	}
	ctx := context.Background()
	pid := startOK(t, env, environment.ProcessConfig{Args: []string{"cat"}, Stdin: true})
	if err := env.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := env.SendInput(ctx, pid, []byte("x\n")); !errors.Is(err, environment.ErrNotActive) {
		t.Fatalf("SendInput while paused: %v, want ErrNotActive", err)
	}
	actx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := env.AttachProcess(actx, pid, 0, func(environment.ProcessEvent) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("attach while paused: %v, want it to wait until ctx ends", err)
	}
	if err := env.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if err := env.SendInput(ctx, pid, []byte("after\n")); err != nil {
		t.Fatal(err)
	}
	if err := env.CloseInput(ctx, pid); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := env.AttachProcess(ctx, pid, 0, func(ev environment.ProcessEvent) error { out.Write(ev.Data); return nil }); err != nil {
		t.Fatal(err)
	}
	if out.String() != "after\n" {
		t.Fatalf("output %q", out.String())
	}
}

// TestProcessDestroyReason: Destroy ends running processes with a reason;
// a slow attacher never holds the process back.
func TestProcessDestroyReason(t *testing.T) {
	env := procEnv(t, embedded.Config{})
	ctx := context.Background()
	pid := startOK(t, env, environment.ProcessConfig{Command: "echo up; sleep 60"})
	got := make(chan *environment.ProcessExit, 1)
	go func() {
		_ = env.AttachProcess(ctx, pid, 0, func(ev environment.ProcessEvent) error {
			if ev.Exit != nil {
				got <- ev.Exit
			}
			return nil
		})
	}()
	time.Sleep(50 * time.Millisecond)
	if err := env.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case exit := <-got:
		if !exit.Killed || !strings.Contains(exit.Reason, "destroyed") {
			t.Fatalf("exit %+v, want Killed with a reason naming the destroy", exit)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the attacher saw no end after Destroy")
	}
}
