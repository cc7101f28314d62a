package runc_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/internal/testenv"
)

// TestRuncExecBaseline runs the runc-exec baseline beside a live sandbox
// and checks that cleanup leaves nothing for Reap.
func TestRuncExecBaseline(t *testing.T) {
	runcBin := testenv.RequireBinary(t, "runc")
	rt := newRuntime(t)
	_, live := start(t, rt)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spec := container.Spec{ID: "baseline-" + newID(t), RootFS: busyboxRootfs(t), Workspace: live.Workspace}
	execTrue, cleanup, err := rt.RuncExecBaseline(ctx, runcBin, spec)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := execTrue(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := cleanup(); err != nil {
		t.Fatal(err)
	}
	ids, err := rt.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if id == spec.ID {
			t.Errorf("baseline container %s still listed after cleanup", id)
		}
	}
	ents, _ := os.ReadDir(rt.Root())
	for _, e := range ents {
		if e.Name() != "state" && e.Name() != "roots" {
			t.Errorf("cleanup left %s in the runtime root", e.Name())
		}
	}
	if _, _, err := rt.RuncExecBaseline(ctx, runcBin, container.Spec{ID: "../x", RootFS: spec.RootFS, Workspace: spec.Workspace}); err == nil {
		t.Error("invalid id accepted")
	}
}
