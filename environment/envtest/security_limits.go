package envtest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/environment"
)

// limitedSession makes a session with limits l, skipping the test where
// the implementation reports that it enforces none (IsolationNone) or
// when need says the host cannot apply them.
func (s *suite) limitedSession(t *testing.T, l environment.Limits, need func(environment.Capabilities) bool) (environment.Environment, string) {
	t.Helper()
	caps := s.newEnv(t).Capabilities()
	if !need(caps) {
		t.Skipf("the host cannot apply these limits (capabilities %+v)", caps)
	}
	return s.session(t, func(c *environment.SessionConfig) { c.Limits = l })
}

// testMemoryHog: a command that allocates past the session's memory limit
// is killed and reported (OOMKilled, IsError, a notice); the session and
// its next command live on.
func (s *suite) testMemoryHog(t *testing.T) {
	const limit = 64 << 20
	env, _ := s.limitedSession(t, environment.Limits{MemoryBytes: limit}, func(c environment.Capabilities) bool {
		return c.LimitsEnforced && (c.Limits.MemoryBytes == 0 || c.Limits.MemoryBytes >= limit)
	})
	// dd's buffer is one block: reading /dev/zero into it makes 256 MiB
	// resident, four times the limit.
	resp := s.call(t, env, environment.BashParams{Command: "dd if=/dev/zero of=/dev/null bs=256M count=4 && echo survived"})
	if !resp.OOMKilled || !resp.IsError {
		t.Errorf("memory hog: OOMKilled %v, IsError %v, exit %d, content %q; want killed for memory", resp.OOMKilled, resp.IsError, resp.ExitCode, clip(resp.Content))
	}
	if strings.Contains(resp.Content, "survived") || !strings.Contains(resp.Content, "out of memory") {
		t.Errorf("memory hog content %q: want no 'survived' and an out-of-memory notice", clip(resp.Content))
	}
	if st := env.State(); st != environment.StateActive {
		t.Fatalf("State after the memory hog = %q, want active", st)
	}
	if got := s.sh(t, env, "echo alive"); strings.TrimSpace(got) != "alive" {
		t.Errorf("next command after the memory hog printed %q, want alive", got)
	}
	// A command within the limit is not reported.
	if resp := s.ok(t, env, environment.BashParams{Command: "dd if=/dev/zero of=/dev/null bs=8M count=4 2>/dev/null; echo small"}); resp.OOMKilled {
		t.Errorf("a command within the limit was reported OOMKilled: %q", clip(resp.Content))
	}
}

// testLimitsRefused: limits that are negative or above the host's are
// refused before a session exists.
func (s *suite) testLimitsRefused(t *testing.T) {
	caps := s.newEnv(t).Capabilities()
	bad := []environment.Limits{{MemoryBytes: -1}, {CPUs: -0.5}, {Pids: -1}, {DiskBytes: -1}}
	if m := caps.Limits.MemoryBytes; m > 0 {
		bad = append(bad, environment.Limits{MemoryBytes: m + 1})
	}
	for _, l := range bad {
		env := s.newEnv(t)
		ctx, cancel := s.ctx(t)
		err := env.Create(ctx, s.sessionConfig(func(c *environment.SessionConfig) { c.Limits = l }))
		cancel()
		if err == nil {
			s.destroyAtEnd(t, env)
			t.Errorf("Create with limits %+v succeeded, want ErrInvalidArgument", l)
			continue
		}
		wantErr(t, "Create with bad limits", err, environment.ErrInvalidArgument)
	}
}

// testDiskFillBeside: a session that fills its disk limit (and pins what
// it wrote in snapshots) fails with a clear error, and a second session
// on the same host keeps writing and snapshotting.
func (s *suite) testDiskFillBeside(t *testing.T) {
	const limit = 48 << 20
	full, _ := s.limitedSession(t, environment.Limits{DiskBytes: limit}, func(c environment.Capabilities) bool {
		return c.Limits.DiskBytes == 0 || c.Limits.DiskBytes >= limit
	})
	other, _ := s.session(t)
	tc, ok := full.(environment.TurnCompleter)
	if !ok {
		t.Skip("the environment has no TurnComplete")
	}
	// Each turn writes 20 MiB (random: compressing filesystems do not
	// store zeros), pins it in a snapshot and deletes it: a
	// limit that counts what snapshots pin stops the session by the third
	// turn; one that does not would let it grow forever.
	var hit error
	for turn := 0; turn < 6 && hit == nil; turn++ {
		resp, err := s.exec(t, full, environment.BashParams{Command: "dd if=/dev/urandom of=fill bs=1M count=20 2>&1 && sync"})
		switch {
		case err != nil:
			hit = err
		case resp.IsError:
			hit = errors.New(resp.Content)
		}
		if hit != nil {
			break
		}
		ctx, cancel := s.ctx(t)
		_, err = tc.TurnComplete(ctx, "")
		cancel()
		if err != nil {
			hit = err
			break
		}
		s.sh(t, full, "rm -f fill")
	}
	if hit == nil {
		t.Fatalf("six turns of 20 MiB each, pinned by snapshots, stayed under a %d-byte disk limit", limit)
	}
	if !errors.Is(hit, environment.ErrLimitExceeded) && !strings.Contains(strings.ToLower(hit.Error()), "quota") {
		t.Errorf("the full session failed with %v, want ErrLimitExceeded or a quota message", hit)
	}
	t.Logf("full session stopped with: %v", clip(hit.Error()))
	// The other session is unaffected.
	s.sh(t, other, "dd if=/dev/zero of=big bs=1M count=30 2>/dev/null && sync")
	if otc, ok := other.(environment.TurnCompleter); ok {
		ctx, cancel := context.WithTimeout(t.Context(), s.cfg.timeout)
		defer cancel()
		if _, err := otc.TurnComplete(ctx, ""); err != nil {
			t.Errorf("TurnComplete of the other session: %v", err)
		}
	}
	s.write(t, other, "after.txt", "still works")
	// Deleting and rolling back make room again in the full session.
	s.sh(t, full, "rm -f fill")
}
