package envtest

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnbox/turnbox/environment"
)

func (s *suite) snapshotTests() []test {
	return []test{
		{"Model", s.testSnapshotModel},
		{"RollForward", s.testRollForward},
		{"UnknownSnapshot", s.testUnknownSnapshot},
		{"Info", s.testSnapshotInfo},
		{"ToolRequestSnapshot", s.testToolRequestSnapshot},
		{"MetadataSurvives", s.testMetadataSurvives},
		{"RollbackResetsProcesses", s.testRollbackResetsProcesses},
		{"ConcurrentSnapshots", s.testConcurrentSnapshots},
		{"TurnComplete", s.testTurnComplete},
		{"ListSnapshots", s.testListSnapshots},
		{"Fork", s.testFork},
		{"ForkErrors", s.testForkErrors},
	}
}

// testRollForward: rolling back to an older snapshot keeps the newer ones.
func (s *suite) testRollForward(t *testing.T) {
	env, _ := s.session(t)
	requireSnapshots(t, env, true)
	s.write(t, env, "f.txt", "v1")
	s1 := s.snapshot(t, env, "one")
	s.write(t, env, "f.txt", "v2")
	s.write(t, env, "new.txt", "only in v2")
	s2 := s.snapshot(t, env, "two")
	s.write(t, env, "f.txt", "v3")

	s.rollback(t, env, s1.ID)
	s.wantContent(t, env, "f.txt", "v1")
	s.wantMissing(t, env, "new.txt")
	s.wantSeen(t, env, "f.txt", "v1")
	s.wantSeen(t, env, "new.txt", "")
	s.rollback(t, env, s2.ID)
	s.wantContent(t, env, "f.txt", "v2")
	s.wantContent(t, env, "new.txt", "only in v2")
	s.wantSeen(t, env, "new.txt", "only in v2")
	s.rollback(t, env, s1.ID)
	s.wantContent(t, env, "f.txt", "v1")
	s.wantSeen(t, env, "f.txt", "v1")
	// Snapshots after a rollback continue the sequence.
	s3 := s.snapshot(t, env, "three")
	if s3.Turn <= s2.Turn {
		t.Errorf("snapshot after rollback has Turn %d, not after %d", s3.Turn, s2.Turn)
	}
	s.rollback(t, env, s2.ID)
	s.wantContent(t, env, "f.txt", "v2")
	s.rollback(t, env, s3.ID)
	s.wantContent(t, env, "f.txt", "v1")
}

// testUnknownSnapshot: rollback to a snapshot that is not this session's
// fails with ErrSnapshotNotFound and changes nothing.
func (s *suite) testUnknownSnapshot(t *testing.T) {
	env, _ := s.session(t)
	requireSnapshots(t, env, true)
	other, _ := s.session(t)
	s.write(t, other, "other.txt", "other")
	otherSnap := s.snapshot(t, other, "theirs")
	s.write(t, env, "f.txt", "current")
	mine := s.snapshot(t, env, "mine")
	ctx, cancel := s.ctx(t)
	defer cancel()
	for _, id := range []string{"no-such-snapshot", newID(), otherSnap.ID, mine.ID + "x"} {
		wantErr(t, "Rollback("+id+")", env.Rollback(ctx, id), environment.ErrSnapshotNotFound)
	}
	wantErr(t, `Rollback("")`, env.Rollback(ctx, ""), environment.ErrSnapshotNotFound, environment.ErrInvalidArgument)
	s.wantContent(t, env, "f.txt", "current")
	s.wantMissing(t, env, "other.txt")
	if st := env.State(); st != environment.StateActive {
		t.Errorf("State() = %q, want %q", st, environment.StateActive)
	}
}

// testSnapshotInfo: ids unique, turns increasing, names kept, times set.
func (s *suite) testSnapshotInfo(t *testing.T) {
	env, id := s.session(t)
	requireSnapshots(t, env, false)
	start := time.Now()
	var infos []*environment.SnapshotInfo
	for i, name := range []string{"first", "", "third turn: with spaces"} {
		s.write(t, env, "f.txt", name+strings.Repeat("x", i))
		infos = append(infos, s.snapshot(t, env, name))
	}
	end := time.Now()
	ids := map[string]bool{}
	for i, info := range infos {
		name := []string{"first", "", "third turn: with spaces"}[i]
		if info.Name != name {
			t.Errorf("snapshot %d: Name %q, want %q", i, info.Name, name)
		}
		if info.SessionID != id {
			t.Errorf("snapshot %d: SessionID %q, want %q", i, info.SessionID, id)
		}
		if ids[info.ID] {
			t.Errorf("snapshot %d: duplicate ID %q", i, info.ID)
		}
		ids[info.ID] = true
		if info.Turn < 1 {
			t.Errorf("snapshot %d: Turn %d, want >= 1", i, info.Turn)
		}
		if i > 0 && info.Turn <= infos[i-1].Turn {
			t.Errorf("snapshot %d: Turn %d not after %d", i, info.Turn, infos[i-1].Turn)
		}
		// Generous bounds: the host's clock may differ from ours.
		if info.CreatedAt.IsZero() || info.CreatedAt.Before(start.Add(-time.Hour)) || info.CreatedAt.After(end.Add(time.Hour)) {
			t.Errorf("snapshot %d: CreatedAt %v, taken between %v and %v", i, info.CreatedAt, start, end)
		}
		if info.SizeBytes < 0 {
			t.Errorf("snapshot %d: SizeBytes %d", i, info.SizeBytes)
		}
	}
}

// testToolRequestSnapshot: ToolRequest.Snapshot returns a usable snapshot
// taken after the call.
func (s *suite) testToolRequestSnapshot(t *testing.T) {
	env, _ := s.session(t)
	requireSnapshots(t, env, true)
	req := s.request(t, environment.WriteFileParams{Path: "f.txt", Content: "written with snapshot"})
	req.Snapshot = true
	resp, err := s.do(t, env, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.SnapshotID == "" {
		t.Fatal("ToolRequest.Snapshot = true but the response has no SnapshotID")
	}
	req = s.request(t, environment.BashParams{Command: "echo from bash > g.txt"})
	req.Snapshot = true
	resp2, err := s.do(t, env, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp2.SnapshotID == "" || resp2.SnapshotID == resp.SnapshotID {
		t.Fatalf("second snapshot id %q (first %q)", resp2.SnapshotID, resp.SnapshotID)
	}
	s.write(t, env, "f.txt", "later")
	s.rollback(t, env, resp.SnapshotID)
	s.wantContent(t, env, "f.txt", "written with snapshot")
	s.wantMissing(t, env, "g.txt")
	s.rollback(t, env, resp2.SnapshotID)
	s.wantContent(t, env, "g.txt", "from bash\n")
	// Without Snapshot, no snapshot is taken.
	if resp3 := s.ok(t, env, environment.BashParams{Command: "true"}); resp3.SnapshotID != "" {
		t.Errorf("SnapshotID %q on a request without Snapshot", resp3.SnapshotID)
	}
}

// testMetadataSurvives: modes, symlinks and empty directories come back
// with a rollback.
func (s *suite) testMetadataSurvives(t *testing.T) {
	env, _ := s.session(t)
	requireSnapshots(t, env, true)
	s.sh(t, env, `printf '#!/bin/sh\necho ran\n' > run.sh && chmod 755 run.sh && ln -s run.sh link && mkdir -p empty/inner && chmod 700 empty`)
	snap := s.snapshot(t, env, "meta")
	s.sh(t, env, "rm -rf run.sh link empty")
	s.rollback(t, env, snap.ID)
	if out := s.sh(t, env, "./run.sh; readlink link; [ -d empty/inner ] && echo dir; ls -ld empty | cut -c1-10"); out != "ran\nrun.sh\ndir\ndrwx------\n" {
		t.Errorf("after rollback: %q, want %q", out, "ran\nrun.sh\ndir\ndrwx------\n")
	}
}

// testRollbackResetsProcesses: Rollback resets the sandbox's processes.
func (s *suite) testRollbackResetsProcesses(t *testing.T) {
	env, _ := s.session(t)
	requireSnapshots(t, env, true)
	s.sh(t, env, "nohup sleep 1000 >/dev/null 2>&1 & echo $! > bg.pid")
	if s.processState(t, env, "bg.pid") != "alive" {
		t.Skip("background processes do not outlive a tool call; nothing to reset")
	}
	snap := s.snapshot(t, env, "with pid file")
	s.rollback(t, env, snap.ID)
	s.waitDead(t, env, "bg.pid", "a background process started before Rollback")
}

// testConcurrentSnapshots: concurrent CreateSnapshot calls get distinct ids
// and turns.
func (s *suite) testConcurrentSnapshots(t *testing.T) {
	env, _ := s.session(t)
	requireSnapshots(t, env, false)
	var mu sync.Mutex
	var infos []*environment.SnapshotInfo
	var wg sync.WaitGroup
	ctx, cancel := s.ctx(t)
	defer cancel()
	for g := range 4 {
		wg.Go(func() {
			for i := range 3 {
				req := s.request(t, environment.WriteFileParams{Path: "w" + string(rune('a'+g)) + ".txt", Content: strings.Repeat("x", i)})
				if _, err := env.ExecuteTool(ctx, req, nil); err != nil && !errors.Is(err, environment.ErrBusy) {
					t.Errorf("write_file during snapshots: %v", err)
				}
				info, err := env.CreateSnapshot(ctx, "c")
				if errors.Is(err, environment.ErrBusy) {
					continue
				}
				if err != nil {
					t.Errorf("concurrent CreateSnapshot: %v", err)
					return
				}
				mu.Lock()
				infos = append(infos, info)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(infos) == 0 {
		t.Fatal("no snapshot succeeded")
	}
	ids, turns := map[string]bool{}, map[int]bool{}
	for _, info := range infos {
		if ids[info.ID] || turns[info.Turn] {
			t.Errorf("duplicate snapshot id %q or turn %d among concurrent snapshots", info.ID, info.Turn)
		}
		ids[info.ID], turns[info.Turn] = true, true
	}
	if l, ok := env.(environment.SnapshotLister); ok {
		list, err := l.ListSnapshots(ctx)
		if err != nil {
			t.Fatal(err)
		}
		listed := map[string]bool{}
		for _, info := range list {
			listed[info.ID] = true
		}
		for id := range ids {
			if !listed[id] {
				t.Errorf("snapshot %s missing from ListSnapshots", id)
			}
		}
	}
}

// testTurnComplete: TurnComplete snapshots as the next turn.
func (s *suite) testTurnComplete(t *testing.T) {
	env, _ := s.session(t)
	tc, ok := env.(environment.TurnCompleter)
	if !ok {
		t.Skip("environment does not implement TurnCompleter")
	}
	requireSnapshots(t, env, false)
	ctx, cancel := s.ctx(t)
	defer cancel()
	s.write(t, env, "f.txt", "turn 1")
	t1, err := tc.TurnComplete(ctx, "first turn")
	if err != nil {
		t.Fatalf("TurnComplete: %v", err)
	}
	s.write(t, env, "f.txt", "turn 2")
	mid := s.snapshot(t, env, "manual")
	t2, err := tc.TurnComplete(ctx, "second turn")
	if err != nil {
		t.Fatalf("TurnComplete: %v", err)
	}
	if t1.ID == "" || t1.Turn < 1 || !(t1.Turn < mid.Turn && mid.Turn < t2.Turn) {
		t.Errorf("turns %d, %d, %d: want increasing from 1", t1.Turn, mid.Turn, t2.Turn)
	}
	if t1.Name != "first turn" || t2.Name != "second turn" {
		t.Errorf("labels %q, %q: want the TurnComplete labels as names", t1.Name, t2.Name)
	}
	if st := env.State(); st != environment.StateActive {
		t.Errorf("State() after TurnComplete = %q, want %q (it thaws again)", st, environment.StateActive)
	}
	if env.Capabilities().Rollback {
		s.rollback(t, env, t1.ID)
		s.wantContent(t, env, "f.txt", "turn 1")
	}
}

// testListSnapshots: ListSnapshots lists oldest first and keeps newer
// snapshots after a rollback.
func (s *suite) testListSnapshots(t *testing.T) {
	env, _ := s.session(t)
	l, ok := env.(environment.SnapshotLister)
	if !ok {
		t.Skip("environment does not implement SnapshotLister")
	}
	requireSnapshots(t, env, false)
	ctx, cancel := s.ctx(t)
	defer cancel()
	before, err := l.ListSnapshots(ctx)
	if err != nil {
		t.Fatalf("ListSnapshots: %v", err)
	}
	var made []string
	for i := range 3 {
		s.write(t, env, "f.txt", strings.Repeat("v", i+1))
		made = append(made, s.snapshot(t, env, "l"+string(rune('0'+i))).ID)
	}
	check := func(when string) {
		t.Helper()
		list, err := l.ListSnapshots(ctx)
		if err != nil {
			t.Fatalf("ListSnapshots %s: %v", when, err)
		}
		if len(list) != len(before)+3 {
			t.Fatalf("ListSnapshots %s: %d snapshots, want %d", when, len(list), len(before)+3)
		}
		for i, id := range made {
			if got := list[len(before)+i].ID; got != id {
				t.Errorf("ListSnapshots %s: entry %d is %s, want %s (oldest first)", when, len(before)+i, got, id)
			}
		}
		for i := 1; i < len(list); i++ {
			if list[i].Turn <= list[i-1].Turn || list[i].CreatedAt.Before(list[i-1].CreatedAt) {
				t.Errorf("ListSnapshots %s: not oldest first at %d: %+v then %+v", when, i, list[i-1], list[i])
			}
		}
	}
	check("after three snapshots")
	if env.Capabilities().Rollback {
		s.rollback(t, env, made[0])
		check("after rolling back to the first")
	}
}

// forker returns env as a Forker or skips.
func forker(t *testing.T, env environment.Environment) environment.Forker {
	t.Helper()
	f, ok := env.(environment.Forker)
	if !ok || !env.Capabilities().Fork {
		t.Skip("environment cannot fork")
	}
	return f
}

// fork forks env at snapshot and destroys the fork when the test ends.
func (s *suite) fork(t *testing.T, f environment.Forker, snapshotID string, mods ...func(*environment.SessionConfig)) environment.Environment {
	t.Helper()
	ctx, cancel := s.ctx(t)
	defer cancel()
	c := s.sessionConfig(mods...)
	child, err := f.Fork(ctx, snapshotID, c)
	if err != nil {
		t.Fatalf("Fork(%s): %v", snapshotID, err)
	}
	if child == nil {
		t.Fatal("Fork returned a nil Environment")
	}
	s.destroyAtEnd(t, child)
	if st := child.State(); st != environment.StateActive {
		t.Errorf("fork State() = %q, want %q", st, environment.StateActive)
	}
	if id, ok := sessionID(child); ok && c.SessionID != "" && id != c.SessionID {
		t.Errorf("fork SessionID() = %q, want %q", id, c.SessionID)
	}
	return child
}

// testFork: a fork starts as the snapshot and is independent of its parent
// both ways, even after the parent is destroyed.
func (s *suite) testFork(t *testing.T) {
	parent, _ := s.session(t)
	f := forker(t, parent)
	s.write(t, parent, "shared.txt", "at fork")
	snap := s.snapshot(t, parent, "fork point")
	s.write(t, parent, "shared.txt", "parent after fork")
	s.write(t, parent, "parent-only.txt", "p")

	child := s.fork(t, f, snap.ID)
	child2 := s.fork(t, f, snap.ID, func(c *environment.SessionConfig) { c.SessionID = "" })
	s.wantContent(t, child, "shared.txt", "at fork")
	s.wantMissing(t, child, "parent-only.txt")
	s.write(t, child, "shared.txt", "child")
	s.write(t, child, "child-only.txt", "c")
	s.wantContent(t, parent, "shared.txt", "parent after fork")
	s.wantMissing(t, parent, "child-only.txt")
	s.wantContent(t, child2, "shared.txt", "at fork")
	s.wantMissing(t, child2, "child-only.txt")
	if a, ok := sessionID(child); ok {
		if b, _ := sessionID(child2); a == b {
			t.Errorf("two forks share session id %q", a)
		}
	}
	if out := s.sh(t, child, "cat shared.txt child-only.txt"); out != "childc" {
		t.Errorf("bash in fork sees %q, want %q", out, "childc")
	}
	// The fork outlives its parent.
	ctx, cancel := s.ctx(t)
	defer cancel()
	if err := parent.Destroy(ctx); err != nil {
		t.Fatalf("Destroy parent: %v", err)
	}
	s.wantContent(t, child, "shared.txt", "child")
	s.wantContent(t, child2, "shared.txt", "at fork")
	if child.Capabilities().Snapshots {
		cs := s.snapshot(t, child, "in fork")
		s.write(t, child, "shared.txt", "later")
		if child.Capabilities().Rollback {
			s.rollback(t, child, cs.ID)
			s.wantContent(t, child, "shared.txt", "child")
		}
	}
}

// testForkErrors: unknown snapshots and taken ids.
func (s *suite) testForkErrors(t *testing.T) {
	parent, id := s.session(t)
	f := forker(t, parent)
	snap := s.snapshot(t, parent, "x")
	ctx, cancel := s.ctx(t)
	defer cancel()
	child, err := f.Fork(ctx, "no-such-snapshot", s.sessionConfig())
	if err == nil && child != nil {
		s.destroyAtEnd(t, child)
	}
	wantErr(t, "Fork of an unknown snapshot", err, environment.ErrSnapshotNotFound)
	child, err = f.Fork(ctx, snap.ID, s.sessionConfig(func(c *environment.SessionConfig) { c.SessionID = id }))
	if err == nil && child != nil {
		s.destroyAtEnd(t, child)
	}
	wantErr(t, "Fork onto the parent's own id", err, environment.ErrAlreadyExists)
	child, err = f.Fork(ctx, snap.ID, s.sessionConfig(func(c *environment.SessionConfig) { c.SessionID = "../escape" }))
	if err == nil && child != nil {
		s.destroyAtEnd(t, child)
	}
	wantErr(t, "Fork with a malformed id", err, environment.ErrInvalidArgument)
}
