package runc_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/containertest"
	"github.com/turnbox/turnbox/container/runc"
	"github.com/turnbox/turnbox/internal/hoststate"
)

// TestHostNamespacesUntouched starts sandboxes (one after another and
// several at once), runs commands in them, pauses, resumes and stops them,
// and after every step checks that every thread of this process is still
// in its original namespaces with the host's root and mount table. After
// the stops nothing of the sandboxes is left on the host: no mounts, no
// cgroups, no state or root skeleton directories, no processes.
func TestHostNamespacesUntouched(t *testing.T) {
	rt := newRuntime(t)
	check := hoststate.Baseline(t)
	var sbs []container.Sandbox
	var specs []container.Spec
	for i := 0; i < 3; i++ {
		sb, spec := start(t, rt)
		sbs, specs = append(sbs, sb), append(specs, spec)
		check("starting sandbox " + spec.ID)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		spec := container.Spec{ID: newID(t), RootFS: busyboxRootfs(t), Workspace: workspace(t)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			sb, err := rt.Start(ctx, spec)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			sbs, specs = append(sbs, sb), append(specs, spec)
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, sb := range sbs {
		t.Cleanup(func() { _ = sb.Stop(context.Background()) })
	}
	close(errs)
	for err := range errs {
		t.Fatalf("Start: %v", err)
	}
	check("starting sandboxes concurrently")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, sb := range sbs {
		containertest.MustSh(t, sb, "echo x > /workspace/f && cat /workspace/f /proc/self/mountinfo >/dev/null")
	}
	check("exec")
	for _, sb := range sbs {
		if err := sb.Pause(ctx); err != nil {
			t.Fatalf("Pause: %v", err)
		}
	}
	check("pause")
	for _, sb := range sbs {
		if err := sb.Resume(ctx); err != nil {
			t.Fatalf("Resume: %v", err)
		}
		containertest.MustSh(t, sb, "true")
	}
	check("resume and exec")
	// The leftover checks see what a running sandbox has.
	if cgs, _ := hoststate.CgroupsNamed(specs[0].ID); len(cgs) == 0 {
		t.Fatalf("no cgroup of %s found while it runs", specs[0].ID)
	}
	for _, sb := range sbs {
		if err := sb.Stop(ctx); err != nil {
			t.Fatalf("Stop: %v", err)
		}
	}
	check("stop")

	// A Start that gives up after the container ran (its context is
	// done before the agent can answer) leaves nothing either.
	failed := container.Spec{ID: newID(t), RootFS: busyboxRootfs(t), Workspace: workspace(t)}
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if sb, err := rt.Start(done, failed); err == nil {
		_ = sb.Stop(ctx)
		t.Fatal("Start with a done context succeeded")
	}
	check("a failed start")
	assertNoLeftovers(t, rt, append(specs, failed))
}

// assertNoLeftovers checks that the stopped sandboxes of specs left
// nothing on the host.
func assertNoLeftovers(t *testing.T, rt *runc.Runtime, specs []container.Spec) {
	t.Helper()
	var ids []string
	dirs := []string{rt.Root()}
	for _, s := range specs {
		ids = append(ids, s.ID)
		dirs = append(dirs, filepath.Dir(s.Workspace))
		for _, d := range []string{"state", "roots"} {
			if _, err := os.Lstat(filepath.Join(rt.Root(), d, s.ID)); err == nil {
				t.Errorf("%s/%s of %s left behind", d, s.ID, s.ID)
			}
		}
	}
	if ms, err := hoststate.MountsUnder(dirs, ids...); err != nil || len(ms) > 0 {
		t.Errorf("mounts left on the host: %q (%v)", ms, err)
	}
	parent := filepath.Base(rt.CgroupParent())
	if cgs, err := hoststate.CgroupsNamed(append(ids, parent)...); err != nil || len(cgs) > 0 {
		t.Errorf("cgroups left: %q (%v)", cgs, err)
	}
	if ps, err := hoststate.Children(); err != nil || len(ps) > 0 {
		t.Errorf("processes left: %q (%v)", ps, err)
	}
}

// TestGoroutinesStayOffMainThread checks the guard against libcontainer's
// thread handling directly: goroutines that lock their thread and exit
// locked (as libcontainer's mount helper does) never run on the main
// thread, which the Go runtime could not end.
func TestGoroutinesStayOffMainThread(t *testing.T) {
	var wg sync.WaitGroup
	onMain := make(chan int, 1000)
	for round := 0; round < 20; round++ {
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
				if unix.Gettid() == unix.Getpid() {
					onMain <- round
				}
			}()
		}
		wg.Wait()
		time.Sleep(time.Millisecond) // let the main thread go idle
	}
	if n := len(onMain); n > 0 {
		t.Fatalf("%d goroutines ran on the main thread", n)
	}
}
