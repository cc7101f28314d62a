package runc_test

import (
	"context"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
)

func TestPhases(t *testing.T) {
	rt := newRuntime(t)
	rootfs := busyboxRootfs(t)
	ws := workspace(t)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		spec := container.Spec{ID: newID(t), RootFS: rootfs, Workspace: ws}
		t0 := time.Now()
		sb, err := rt.Start(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		sb.Exec(ctx, container.Process{Args: []string{"true"}})
		t2 := time.Now()
		sb.Exec(ctx, container.Process{Args: []string{"true"}})
		t3 := time.Now()
		sb.Pause(ctx)
		t4 := time.Now()
		sb.Resume(ctx)
		t5 := time.Now()
		sb.Stop(ctx)
		t.Logf("start %v exec1 %v exec2 %v pause %v resume %v stop %v", t1.Sub(t0), t2.Sub(t1), t3.Sub(t2), t4.Sub(t3), t5.Sub(t4), time.Since(t5))
	}
}
