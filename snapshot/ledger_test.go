package snapshot_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/turnbox/turnbox/snapshot"
)

func openLedger(t *testing.T, path string) *snapshot.Ledger {
	t.Helper()
	l, err := snapshot.OpenLedger(path)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLedgerSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openLedger(t, path)
	if err := l.PutSession(snapshot.SessionRecord{ID: "s1", Volume: "s1", State: "active", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := l.PutSession(snapshot.SessionRecord{ID: "s1"}); !errors.Is(err, snapshot.ErrExists) {
		t.Fatalf("duplicate PutSession: %v, want ErrExists", err)
	}
	for turn := 1; turn <= 3; turn++ {
		if err := l.AddSnapshot(snapshot.SnapshotRecord{Session: "s1", Turn: turn, Name: fmt.Sprint("n", turn), BackendName: snapshot.BackendSnapshotName(turn)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.AddSnapshot(snapshot.SnapshotRecord{Session: "s1", Turn: 2}); !errors.Is(err, snapshot.ErrExists) {
		t.Fatalf("reused turn: %v, want ErrExists", err)
	}
	if err := l.AddSnapshot(snapshot.SnapshotRecord{Session: "nope", Turn: 1}); !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("unknown session: %v, want ErrNotFound", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = openLedger(t, path)
	defer l.Close()
	snaps, err := l.Snapshots("s1")
	if err != nil || len(snaps) != 3 || snaps[0].Turn != 1 || snaps[2].ID != "s1@3" || snaps[1].Name != "n2" {
		t.Fatalf("after reopen: %+v, %v", snaps, err)
	}
	next, err := l.NextTurn("s1")
	if err != nil || next != 4 {
		t.Fatalf("NextTurn = %d, %v; want 4", next, err)
	}
	if _, err := l.Snapshot("s1@9"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("Snapshot(s1@9): %v", err)
	}
	if _, err := l.Snapshot("garbage"); !errors.Is(err, snapshot.ErrInvalidName) {
		t.Fatalf("Snapshot(garbage): %v", err)
	}
	// Deleting a snapshot never lowers the turn counter.
	if err := l.DeleteSnapshot("s1@3"); err != nil {
		t.Fatal(err)
	}
	if next, _ := l.NextTurn("s1"); next != 4 {
		t.Fatalf("NextTurn after delete = %d, want 4", next)
	}
	if err := l.DeleteSession("s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Session("s1"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("deleted session: %v", err)
	}
	if snaps, _ := l.Snapshots("s1"); len(snaps) != 0 {
		t.Fatalf("snapshots of a deleted session remain: %v", snaps)
	}
}

func TestLedgerSecondOpenFailsClearly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openLedger(t, path)
	defer l.Close()
	if _, err := snapshot.OpenLedger(path); err == nil {
		t.Fatal("second OpenLedger of a locked file succeeded")
	}
}

func TestLedgerPrunable(t *testing.T) {
	l := openLedger(t, filepath.Join(t.TempDir(), "ledger.db"))
	defer l.Close()
	if err := l.PutSession(snapshot.SessionRecord{ID: "s"}); err != nil {
		t.Fatal(err)
	}
	for turn := 1; turn <= 6; turn++ {
		name := ""
		if turn == 2 {
			name = "keep-me"
		}
		if err := l.AddSnapshot(snapshot.SnapshotRecord{Session: "s", Turn: turn, Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := l.Prunable("s", snapshot.Retention{KeepLast: 3, KeepNamed: true})
	if err != nil {
		t.Fatal(err)
	}
	var turns []int
	for _, r := range got {
		turns = append(turns, r.Turn)
	}
	if fmt.Sprint(turns) != "[1 3]" {
		t.Fatalf("prunable turns = %v, want [1 3]", turns)
	}
	if got, _ := l.Prunable("s", snapshot.Retention{}); len(got) != 0 {
		t.Fatalf("zero policy prunes %v", got)
	}
}

func TestLedgerConcurrentSessions(t *testing.T) {
	l := openLedger(t, filepath.Join(t.TempDir(), "ledger.db"))
	defer l.Close()
	const sessions, turns = 20, 10
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprint("s", i)
			if err := l.PutSession(snapshot.SessionRecord{ID: id}); err != nil {
				errs <- err
				return
			}
			for turn := 1; turn <= turns; turn++ {
				if err := l.AddSnapshot(snapshot.SnapshotRecord{Session: id, Turn: turn}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	all, err := l.Sessions()
	if err != nil || len(all) != sessions {
		t.Fatalf("Sessions: %d, %v", len(all), err)
	}
	for _, s := range all {
		if s.LastTurn != turns {
			t.Fatalf("session %s LastTurn %d, want %d", s.ID, s.LastTurn, turns)
		}
	}
}
