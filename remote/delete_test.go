package remote_test

import (
	"errors"
	"slices"
	"testing"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
)

// snapshotIDs lists the ids of env's snapshots.
func snapshotIDs(t *testing.T, env environment.SnapshotLister) []string {
	t.Helper()
	snaps, err := env.ListSnapshots(t.Context())
	if err != nil {
		t.Fatalf("ListSnapshots: %v", err)
	}
	ids := make([]string, 0, len(snaps))
	for _, s := range snaps {
		ids = append(ids, s.ID)
	}
	return ids
}

// TestDeleteSnapshot: DeleteSnapshot over the wire deletes exactly the
// named snapshot of the bound session, and its failures come back as the
// host's sentinels with the documented codes, changing nothing.
func TestDeleteSnapshot(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	client := remote.NewClient(srv.URL)
	env := newEnv(t, client)
	var del environment.SnapshotDeleter = env
	ctx := t.Context()

	bash(t, env, "", "echo one > f")
	first, err := env.TurnComplete(ctx, "one")
	if err != nil {
		t.Fatal(err)
	}
	bash(t, env, "", "echo two > f")
	second, err := env.TurnComplete(ctx, "two")
	if err != nil {
		t.Fatal(err)
	}
	other := newEnv(t, client)
	foreign, err := other.TurnComplete(ctx, "foreign")
	if err != nil {
		t.Fatal(err)
	}

	check := func(what string, err, want error, code connect.Code) {
		t.Helper()
		if !errors.Is(err, want) || connect.CodeOf(err) != code {
			t.Errorf("%s: err = %v (code %v), want %v with code %v", what, err, connect.CodeOf(err), want, code)
		}
	}
	check("malformed id", del.DeleteSnapshot(ctx, "../etc"), environment.ErrInvalidArgument, connect.CodeInvalidArgument)
	check("unknown id", del.DeleteSnapshot(ctx, "no-such-snap"), environment.ErrSnapshotNotFound, connect.CodeNotFound)
	check("another session's snapshot", del.DeleteSnapshot(ctx, foreign.ID), environment.ErrSnapshotNotFound, connect.CodeNotFound)
	if ids := snapshotIDs(t, other); !slices.Contains(ids, foreign.ID) {
		t.Errorf("the other session lost %s: %v", foreign.ID, ids)
	}

	if err := del.DeleteSnapshot(ctx, first.ID); err != nil {
		t.Fatalf("DeleteSnapshot(%s): %v", first.ID, err)
	}
	if ids := snapshotIDs(t, env); slices.Contains(ids, first.ID) || !slices.Contains(ids, second.ID) {
		t.Errorf("after deleting %s, snapshots = %v (want %s kept)", first.ID, ids, second.ID)
	}
	check("deleted twice", del.DeleteSnapshot(ctx, first.ID), environment.ErrSnapshotNotFound, connect.CodeNotFound)
	check("rollback to the deleted", env.Rollback(ctx, first.ID), environment.ErrSnapshotNotFound, connect.CodeNotFound)
	if err := env.Rollback(ctx, second.ID); err != nil {
		t.Fatalf("Rollback to the kept snapshot: %v", err)
	}
	if out := bash(t, env, "", "cat f").Content; out != "two\n" {
		t.Errorf("after rollback f = %q, want %q", out, "two\n")
	}

	unbound := remote.NewNativeSandboxEnvironment(client, remote.DefaultConfig(), nil)
	if err := unbound.DeleteSnapshot(ctx, second.ID); !errors.Is(err, environment.ErrNotBound) {
		t.Errorf("DeleteSnapshot unbound = %v, want ErrNotBound", err)
	}
}
