package envtest

import (
	"testing"

	"github.com/turnbox/turnbox/environment"
)

func (s *suite) capabilityTests() []test {
	return []test{
		{"Consistent", s.testCapsConsistent},
		{"Gating", s.testCapsGating},
	}
}

// testCapsConsistent: the capability report is self-consistent.
func (s *suite) testCapsConsistent(t *testing.T) {
	env, _ := s.session(t)
	c := env.Capabilities()
	t.Logf("capabilities: %+v", c)
	switch c.Isolation {
	case environment.IsolationNone, environment.IsolationGVisor, environment.IsolationRunc:
	default:
		t.Errorf("Isolation = %q, not one of the known kinds", c.Isolation)
	}
	if c.Storage == "" {
		t.Error("Storage is empty")
	}
	if c.Isolation == environment.IsolationNone && c.LimitsEnforced {
		t.Error("LimitsEnforced is true on isolation none, which ignores limits")
	}
	if c.Isolation == environment.IsolationNone && c.WritableRoot {
		t.Error("WritableRoot is true on isolation none, whose commands run on the host")
	}
	if err := c.Limits.Validate(); err != nil {
		t.Errorf("Limits: %v", err)
	}
	if c.Rollback && !c.Snapshots {
		t.Error("Rollback is true but Snapshots is false: nothing to roll back to")
	}
	if c.Fork && !c.Snapshots {
		t.Error("Fork is true but Snapshots is false: Fork starts from a snapshot")
	}
	_, isForker := env.(environment.Forker)
	if c.Fork && !isForker {
		t.Error("Capabilities.Fork is true but the environment does not implement environment.Forker")
	}
	if c2 := env.Capabilities(); c2 != c {
		t.Errorf("Capabilities changed between calls: %+v then %+v", c, c2)
	}
}

// testCapsGating: every ability reported false fails with
// ErrCapabilityNotSupported and changes nothing.
func (s *suite) testCapsGating(t *testing.T) {
	env, _ := s.session(t)
	c := env.Capabilities()
	s.write(t, env, "f.txt", "unchanged")
	ctx, cancel := s.ctx(t)
	defer cancel()
	checked := 0
	if !c.Snapshots {
		checked++
		_, err := env.CreateSnapshot(ctx, "x")
		wantErr(t, "CreateSnapshot without Snapshots", err, environment.ErrCapabilityNotSupported)
		req := s.request(t, environment.WriteFileParams{Path: "g.txt", Content: "g"})
		req.Snapshot = true
		_, err = s.do(t, env, req, nil)
		wantErr(t, "ExecuteTool with Snapshot=true without Snapshots", err, environment.ErrCapabilityNotSupported)
	}
	if !c.Rollback {
		checked++
		wantErr(t, "Rollback without Rollback", env.Rollback(ctx, "x"), environment.ErrCapabilityNotSupported)
	}
	if !c.Pause {
		checked++
		wantErr(t, "Pause without Pause", env.Pause(ctx), environment.ErrCapabilityNotSupported)
		wantErr(t, "Resume without Pause", env.Resume(ctx), environment.ErrCapabilityNotSupported)
	}
	if f, ok := env.(environment.Forker); ok && !c.Fork {
		checked++
		forked, err := f.Fork(ctx, "x", s.sessionConfig())
		if err == nil && forked != nil {
			s.destroyAtEnd(t, forked)
		}
		wantErr(t, "Fork without Fork", err, environment.ErrCapabilityNotSupported)
	}
	if st := env.State(); st != environment.StateActive {
		t.Errorf("State() = %q after unsupported calls, want %q", st, environment.StateActive)
	}
	s.wantContent(t, env, "f.txt", "unchanged")
	if checked == 0 {
		t.Log("every gated capability is supported; nothing to check here")
	}
}
