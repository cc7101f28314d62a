package envtest

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/environment"
)

func (s *suite) lifecycleTests() []test {
	return []test{
		{"Unbound", s.testUnbound},
		{"Create", s.testCreate},
		{"CreateGeneratedID", s.testCreateGeneratedID},
		{"CreateInvalidID", s.testCreateInvalidID},
		{"AlreadyBound", s.testAlreadyBound},
		{"DuplicateSessionID", s.testDuplicateSessionID},
		{"PauseResume", s.testPauseResume},
		{"PauseFreezes", s.testPauseFreezes},
		{"Destroy", s.testDestroy},
		{"DestroyPaused", s.testDestroyPaused},
		{"AttachErrors", s.testAttachErrors},
		{"AttachSeesFiles", s.testAttachSeesFiles},
		{"FromSnapshot", s.testFromSnapshot},
		{"DestroyDeletesSnapshots", s.testDestroyDeletesSnapshots},
	}
}

// testUnbound: every call on an unbound environment fails with ErrNotBound.
func (s *suite) testUnbound(t *testing.T) {
	env := s.newEnv(t)
	if st := env.State(); st != environment.StateUnbound {
		t.Errorf("State() = %q, want %q", st, environment.StateUnbound)
	}
	if id, ok := sessionID(env); ok && id != "" {
		t.Errorf("SessionID() = %q on an unbound environment, want empty", id)
	}
	c := env.Capabilities()
	ctx, cancel := s.ctx(t)
	defer cancel()
	_, err := env.ExecuteTool(ctx, s.request(t, environment.BashParams{Command: "true"}), nil)
	wantErr(t, "ExecuteTool", err, environment.ErrNotBound)
	// A method whose capability is false may say so instead.
	gated := func(ok bool) []error {
		if ok {
			return []error{environment.ErrNotBound}
		}
		return []error{environment.ErrNotBound, environment.ErrCapabilityNotSupported}
	}
	_, err = env.CreateSnapshot(ctx, "x")
	wantErr(t, "CreateSnapshot", err, gated(c.Snapshots)...)
	wantErr(t, "Rollback", env.Rollback(ctx, "x"), gated(c.Rollback)...)
	wantErr(t, "Pause", env.Pause(ctx), gated(c.Pause)...)
	wantErr(t, "Resume", env.Resume(ctx), gated(c.Pause)...)
	wantErr(t, "Destroy", env.Destroy(ctx), environment.ErrNotBound)
	if st := env.State(); st != environment.StateUnbound {
		t.Errorf("State() after failed calls = %q, want %q", st, environment.StateUnbound)
	}
}

// testCreate: Create binds, the session is active and runs tools.
func (s *suite) testCreate(t *testing.T) {
	env, id := s.session(t)
	if got, ok := sessionID(env); ok && got != id {
		t.Errorf("SessionID() = %q, want %q", got, id)
	}
	if out := s.sh(t, env, "echo hello"); out != "hello\n" {
		t.Errorf("bash echo hello = %q", out)
	}
	// A new workspace is empty apart from what the implementation documents;
	// at least it has none of our files.
	s.wantMissing(t, env, "envtest-never-written.txt")
}

// testCreateGeneratedID: an empty SessionID gets a fresh valid id.
func (s *suite) testCreateGeneratedID(t *testing.T) {
	env1 := s.newEnv(t)
	if _, ok := sessionID(env1); !ok {
		t.Skip("environment does not implement SessionIDer")
	}
	noID := func(c *environment.SessionConfig) { c.SessionID = "" }
	env1, _ = s.createOn(t, env1, s.sessionConfig(noID))
	env2, _ := s.createOn(t, s.newEnv(t), s.sessionConfig(noID))
	id1, _ := sessionID(env1)
	id2, _ := sessionID(env2)
	for _, id := range []string{id1, id2} {
		if err := environment.ValidateID(id); err != nil {
			t.Errorf("generated session id %q: %v", id, err)
		}
	}
	if id1 == id2 {
		t.Errorf("two sessions got the same generated id %q", id1)
	}
	// The generated id is attachable.
	env3 := s.newEnv(t)
	if err := env3.AttachSession(id1); err != nil {
		t.Errorf("AttachSession(%q) of a generated id: %v", id1, err)
	}
}

// testCreateInvalidID: malformed ids fail with ErrInvalidArgument and leave
// the environment unbound.
func (s *suite) testCreateInvalidID(t *testing.T) {
	env := s.newEnv(t)
	for _, id := range []string{"../x", "a/b", "..", ".hidden", "a b", strings.Repeat("x", environment.MaxIDLength+1)} {
		ctx, cancel := s.ctx(t)
		err := env.Create(ctx, s.sessionConfig(func(c *environment.SessionConfig) { c.SessionID = id }))
		cancel()
		if err == nil {
			s.destroyAtEnd(t, env)
			t.Fatalf("Create with SessionID %q succeeded", id)
		}
		wantErr(t, "Create(SessionID "+strconv.Quote(id)+")", err, environment.ErrInvalidArgument)
		if st := env.State(); st != environment.StateUnbound {
			t.Fatalf("State() after failed Create = %q, want %q", st, environment.StateUnbound)
		}
	}
	// Still usable.
	s.createOn(t, env, s.sessionConfig())
}

// testAlreadyBound: Create and AttachSession on a bound environment fail
// with ErrAlreadyBound and change nothing.
func (s *suite) testAlreadyBound(t *testing.T) {
	env, id := s.session(t)
	s.write(t, env, "mine.txt", "mine")
	other, otherID := s.session(t)
	_ = other
	ctx, cancel := s.ctx(t)
	defer cancel()
	err := env.Create(ctx, s.sessionConfig())
	wantErr(t, "second Create", err, environment.ErrAlreadyBound)
	if err == nil {
		// It made a session anyway; do not leak it.
		s.destroyAtEnd(t, env)
	}
	wantErr(t, "AttachSession(own id)", env.AttachSession(id), environment.ErrAlreadyBound)
	wantErr(t, "AttachSession(other id)", env.AttachSession(otherID), environment.ErrAlreadyBound)
	if st := env.State(); st != environment.StateActive {
		t.Errorf("State() = %q, want %q", st, environment.StateActive)
	}
	if got, ok := sessionID(env); ok && got != id {
		t.Errorf("SessionID() = %q, want %q (still the first session)", got, id)
	}
	s.wantContent(t, env, "mine.txt", "mine")
}

// testDuplicateSessionID: Create with an id in use fails with
// ErrAlreadyExists and changes nothing.
func (s *suite) testDuplicateSessionID(t *testing.T) {
	env1, id := s.session(t)
	s.write(t, env1, "keep.txt", "original")
	env2 := s.newEnv(t)
	ctx, cancel := s.ctx(t)
	defer cancel()
	err := env2.Create(ctx, s.sessionConfig(func(c *environment.SessionConfig) { c.SessionID = id }))
	wantErr(t, "Create with a duplicate SessionID", err, environment.ErrAlreadyExists)
	if st := env2.State(); st != environment.StateUnbound {
		t.Errorf("State() of the second environment = %q, want %q", st, environment.StateUnbound)
	}
	if st := env1.State(); st != environment.StateActive {
		t.Errorf("State() of the first environment = %q, want %q", st, environment.StateActive)
	}
	s.wantContent(t, env1, "keep.txt", "original")
	if out := s.sh(t, env1, "echo still here"); out != "still here\n" {
		t.Errorf("bash after the failed duplicate Create = %q", out)
	}
	// The second environment is not stuck.
	s.createOn(t, env2, s.sessionConfig())
}

// testPauseResume: Pause makes tool calls fail with ErrNotActive; Resume
// brings the session back with its files.
func (s *suite) testPauseResume(t *testing.T) {
	env, _ := s.session(t)
	if !env.Capabilities().Pause {
		t.Skip("Capabilities.Pause is false")
	}
	s.write(t, env, "before.txt", "before pause")
	ctx, cancel := s.ctx(t)
	defer cancel()
	if err := env.Pause(ctx); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if st := env.State(); st != environment.StatePaused {
		t.Errorf("State() after Pause = %q, want %q", st, environment.StatePaused)
	}
	for _, p := range []environment.ToolParams{
		environment.BashParams{Command: "true"},
		environment.ReadFileParams{Path: "before.txt"},
		environment.WriteFileParams{Path: "during.txt", Content: "x"},
		environment.ListFilesParams{Pattern: "**"},
	} {
		_, err := s.exec(t, env, p)
		wantErr(t, p.ToolName()+" while paused", err, environment.ErrNotActive)
	}
	if err := env.Resume(ctx); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if st := env.State(); st != environment.StateActive {
		t.Errorf("State() after Resume = %q, want %q", st, environment.StateActive)
	}
	s.wantContent(t, env, "before.txt", "before pause")
	s.wantMissing(t, env, "during.txt")
	if out := s.sh(t, env, "echo resumed"); out != "resumed\n" {
		t.Errorf("bash after Resume = %q", out)
	}
}

// testPauseFreezes: a paused session's processes do not run.
func (s *suite) testPauseFreezes(t *testing.T) {
	env, _ := s.session(t)
	if !env.Capabilities().Pause {
		t.Skip("Capabilities.Pause is false")
	}
	// A background counter, ticking every 50 ms.
	s.sh(t, env, `nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > tick.tmp; mv tick.tmp tick; sleep 0.05; done' >/dev/null 2>&1 &
echo $! > ticker.pid`)
	t.Cleanup(func() {
		_, _ = s.exec(t, env, environment.BashParams{Command: `kill "$(cat ticker.pid)" 2>/dev/null; true`})
	})
	counter := func() int {
		t.Helper()
		out := strings.TrimSpace(s.sh(t, env, "cat tick 2>/dev/null || echo 0"))
		n, err := strconv.Atoi(out)
		if err != nil {
			t.Fatalf("tick counter %q: %v", out, err)
		}
		return n
	}
	time.Sleep(200 * time.Millisecond)
	c0 := counter()
	time.Sleep(time.Second)
	c1 := counter()
	if c1-c0 < 8 {
		t.Skipf("a background process does not keep running between tool calls (counter %d -> %d in 1s); cannot observe the freeze", c0, c1)
	}
	ctx, cancel := s.ctx(t)
	defer cancel()
	c2 := counter()
	if err := env.Pause(ctx); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	time.Sleep(1500 * time.Millisecond)
	if err := env.Resume(ctx); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	c3 := counter()
	// Running, the counter would advance ~1.5 times the rate just measured.
	if c3-c2 > (c1-c0)/2 {
		t.Errorf("counter advanced %d -> %d while paused for 1.5s (it advances ~%d per second when running): Pause did not freeze the session's processes", c2, c3, c1-c0)
	}
	if c4 := func() int { time.Sleep(500 * time.Millisecond); return counter() }(); c4 <= c3 {
		t.Errorf("counter stuck at %d after Resume: Resume did not thaw the session", c3)
	}
}

// testDestroy: Destroy moves to destroyed, is idempotent, and later calls
// fail with ErrNotActive; the session is gone for everybody.
func (s *suite) testDestroy(t *testing.T) {
	env, id := s.session(t)
	c := env.Capabilities()
	s.write(t, env, "x.txt", "x")
	ctx, cancel := s.ctx(t)
	defer cancel()
	if err := env.Destroy(ctx); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if st := env.State(); st != environment.StateDestroyed {
		t.Errorf("State() after Destroy = %q, want %q", st, environment.StateDestroyed)
	}
	if err := env.Destroy(ctx); err != nil {
		t.Errorf("second Destroy: %v, want nil", err)
	}
	_, err := s.exec(t, env, environment.ReadFileParams{Path: "x.txt"})
	wantErr(t, "read_file after Destroy", err, environment.ErrNotActive)
	_, err = s.exec(t, env, environment.BashParams{Command: "true"})
	wantErr(t, "bash after Destroy", err, environment.ErrNotActive)
	gated := func(ok bool) []error {
		if ok {
			return []error{environment.ErrNotActive}
		}
		return []error{environment.ErrNotActive, environment.ErrCapabilityNotSupported}
	}
	_, err = env.CreateSnapshot(ctx, "late")
	wantErr(t, "CreateSnapshot after Destroy", err, gated(c.Snapshots)...)
	wantErr(t, "Rollback after Destroy", env.Rollback(ctx, "x"), gated(c.Rollback)...)
	wantErr(t, "Pause after Destroy", env.Pause(ctx), gated(c.Pause)...)
	wantErr(t, "Resume after Destroy", env.Resume(ctx), gated(c.Pause)...)
	if st := env.State(); st != environment.StateDestroyed {
		t.Errorf("State() at the end = %q, want %q", st, environment.StateDestroyed)
	}
	other := s.newEnv(t)
	wantErr(t, "AttachSession of a destroyed session", other.AttachSession(id), environment.ErrSessionNotFound)
}

// testDestroyPaused: a paused session can be destroyed.
func (s *suite) testDestroyPaused(t *testing.T) {
	env, _ := s.session(t)
	if !env.Capabilities().Pause {
		t.Skip("Capabilities.Pause is false")
	}
	ctx, cancel := s.ctx(t)
	defer cancel()
	if err := env.Pause(ctx); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if err := env.Destroy(ctx); err != nil {
		t.Fatalf("Destroy of a paused session: %v", err)
	}
	if st := env.State(); st != environment.StateDestroyed {
		t.Errorf("State() = %q, want %q", st, environment.StateDestroyed)
	}
}

// testAttachErrors: unknown ids give ErrSessionNotFound, malformed ones
// ErrInvalidArgument; the environment stays unbound and usable.
func (s *suite) testAttachErrors(t *testing.T) {
	env := s.newEnv(t)
	wantErr(t, "AttachSession(unknown)", env.AttachSession(newID()), environment.ErrSessionNotFound)
	for _, id := range []string{"../x", "a/b", "", "..", "/etc", "a\x00b", strings.Repeat("y", environment.MaxIDLength+1)} {
		wantErr(t, "AttachSession("+strconv.Quote(id)+")", env.AttachSession(id), environment.ErrInvalidArgument)
	}
	if st := env.State(); st != environment.StateUnbound {
		t.Fatalf("State() after failed attaches = %q, want %q", st, environment.StateUnbound)
	}
	s.createOn(t, env, s.sessionConfig())
}

// testAttachSeesFiles: a second environment attached to a session sees and
// shares its workspace.
func (s *suite) testAttachSeesFiles(t *testing.T) {
	env1, id := s.session(t)
	s.write(t, env1, "dir/shared.txt", "from env1")
	env2 := s.newEnv(t)
	if err := env2.AttachSession(id); err != nil {
		t.Fatalf("AttachSession(%q): %v", id, err)
	}
	if st := env2.State(); st != environment.StateActive {
		t.Errorf("State() after AttachSession = %q, want %q", st, environment.StateActive)
	}
	if got, ok := sessionID(env2); ok && got != id {
		t.Errorf("SessionID() after AttachSession = %q, want %q", got, id)
	}
	s.wantContent(t, env2, "dir/shared.txt", "from env1")
	s.write(t, env2, "from2.txt", "from env2")
	s.wantContent(t, env1, "from2.txt", "from env2")
	// Destroy through the first; the second can no longer run tools.
	ctx, cancel := s.ctx(t)
	defer cancel()
	if err := env1.Destroy(ctx); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	_, err := s.exec(t, env2, environment.ReadFileParams{Path: "from2.txt"})
	wantErr(t, "read_file through a second environment after Destroy", err, environment.ErrNotActive, environment.ErrSessionNotFound)
}

// testFromSnapshot: SessionConfig.FromSnapshot starts a session as a copy
// of a snapshot; an unknown snapshot fails with ErrSnapshotNotFound.
func (s *suite) testFromSnapshot(t *testing.T) {
	env1, _ := s.session(t)
	requireSnapshots(t, env1, false)
	s.write(t, env1, "a.txt", "in snapshot")
	snap := s.snapshot(t, env1, "base")
	s.write(t, env1, "b.txt", "after snapshot")
	env2, _ := s.session(t, func(c *environment.SessionConfig) { c.FromSnapshot = snap.ID })
	s.wantContent(t, env2, "a.txt", "in snapshot")
	s.wantMissing(t, env2, "b.txt")
	s.write(t, env2, "a.txt", "changed in env2")
	s.wantContent(t, env1, "a.txt", "in snapshot")
	s.write(t, env1, "c.txt", "new in env1")
	s.wantMissing(t, env2, "c.txt")

	env3 := s.newEnv(t)
	ctx, cancel := s.ctx(t)
	defer cancel()
	err := env3.Create(ctx, s.sessionConfig(func(c *environment.SessionConfig) { c.FromSnapshot = "no-such-snapshot-" + newID() }))
	if err == nil {
		s.destroyAtEnd(t, env3)
	}
	wantErr(t, "Create from an unknown snapshot", err, environment.ErrSnapshotNotFound)
	if err != nil && env3.State() != environment.StateUnbound {
		t.Errorf("State() after failed Create = %q, want %q", env3.State(), environment.StateUnbound)
	}
}

// testDestroyDeletesSnapshots: a destroyed session's snapshots are gone.
func (s *suite) testDestroyDeletesSnapshots(t *testing.T) {
	env1, _ := s.session(t)
	requireSnapshots(t, env1, false)
	s.write(t, env1, "a.txt", "x")
	snap := s.snapshot(t, env1, "doomed")
	ctx, cancel := s.ctx(t)
	defer cancel()
	if err := env1.Destroy(ctx); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	env2 := s.newEnv(t)
	err := env2.Create(ctx, s.sessionConfig(func(c *environment.SessionConfig) { c.FromSnapshot = snap.ID }))
	if err == nil {
		s.destroyAtEnd(t, env2)
		t.Fatalf("Create from snapshot %s of a destroyed session succeeded: Destroy must delete the session's snapshots", snap.ID)
	}
	if !errors.Is(err, environment.ErrSnapshotNotFound) {
		t.Errorf("Create from a destroyed session's snapshot: err = %v, want ErrSnapshotNotFound", err)
	}
}
