package gvisor_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/containertest"
	"github.com/turnbox/turnbox/internal/hoststate"
)

// TestHostNamespacesUntouched starts gVisor sandboxes, runs commands in
// them, pauses, resumes and stops them, and after every step checks that
// every thread of this process is still in its original namespaces with
// the host's root and mount table (runsc runs as separate processes, so
// nothing of this one should ever move). After the stops nothing is left:
// no runsc process of the runtime's root, no cgroups, bundles, runsc state
// or mounts.
func TestHostNamespacesUntouched(t *testing.T) {
	e := newEnv(t)
	check := hoststate.Baseline(t)
	var sbs []container.Sandbox
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("hostns-%d", i)
		sbs = append(sbs, e.start(t, e.spec(id)))
		check("starting " + id)
	}
	for _, sb := range sbs {
		if st, out, errs := containertest.Sh(t, sb, "echo x > /workspace/f-$$ && cat /proc/self/mountinfo >/dev/null"); st.Code != 0 {
			t.Fatalf("exec: %+v %q %q", st, out, errs)
		}
	}
	check("exec")
	for _, sb := range sbs {
		if err := sb.Pause(ctxT(t)); err != nil {
			t.Fatalf("Pause: %v", err)
		}
	}
	check("pause")
	for _, sb := range sbs {
		if err := sb.Resume(ctxT(t)); err != nil {
			t.Fatalf("Resume: %v", err)
		}
		if st, _, errs := containertest.Sh(t, sb, "true"); st.Code != 0 {
			t.Fatalf("exec after Resume: %+v %q", st, errs)
		}
	}
	check("resume and exec")
	// The leftover checks below see what a running sandbox has.
	root := e.rt.Root()
	parent := filepath.Base(e.rt.CgroupParent())
	ps, _ := hoststate.ProcessesMentioning(root)
	cgs, _ := hoststate.CgroupsNamed(parent)
	ms, _ := hoststate.MountsUnder([]string{root})
	t.Logf("while running: %d runsc processes, cgroups %q, mounts %q", len(ps), cgs, ms)
	if len(ps) == 0 || len(cgs) == 0 {
		t.Fatalf("no runsc process or cgroup found while running: %q %q", ps, cgs)
	}
	for _, sb := range sbs {
		if err := sb.Stop(ctxT(t)); err != nil {
			t.Fatalf("Stop: %v", err)
		}
	}
	check("stop")

	for _, d := range []string{"bundles", "state"} {
		ents, _ := os.ReadDir(filepath.Join(root, d))
		for _, en := range ents {
			t.Errorf("%s/%s left behind", d, en.Name())
		}
	}
	if ms, err := hoststate.MountsUnder([]string{root, filepath.Dir(e.workspace)}); err != nil || len(ms) > 0 {
		t.Errorf("mounts left on the host: %q (%v)", ms, err)
	}
	if cgs, err := hoststate.CgroupsNamed(parent); err != nil || len(cgs) > 0 {
		t.Errorf("cgroups left: %q (%v)", cgs, err)
	}
	if ps, err := hoststate.ProcessesMentioning(root); err != nil || len(ps) > 0 {
		t.Errorf("runsc processes left: %q (%v)", ps, err)
	}
	if ps, err := hoststate.Children(); err != nil || len(ps) > 0 {
		t.Errorf("child processes left: %q (%v)", ps, err)
	}
}
