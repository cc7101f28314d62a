package gvisor_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/containertest"
	"github.com/turnbox/turnbox/container/gvisor"
)

// counterServer keeps a counter in its shell's memory and answers each
// request on /tmp/req (the name of a reply FIFO) with "<counter> <the
// content of marker in its cwd>", appending the counter to a log file
// it keeps open on fd 3. A checkpoint interrupts its blocking open of
// the FIFO (the shell's read then fails and it waits again). Nothing of the counter is read back from a file:
// an answer after a restore comes from the restored memory.
const counterServer = `mkfifo /tmp/req && cd /workspace/sub && exec 3>>log && i=0 &&
while true; do r=; read r < /tmp/req; [ -p "$r" ] || continue; i=$((i+1)); echo $i >&3; echo "$i $(cat marker)" > "$r"; done`

// askCounter sends one request to counterServer and returns its answer.
func askCounter(t *testing.T, sb container.Sandbox) string {
	t.Helper()
	st, out, errs := containertest.Sh(t, sb, `f=/tmp/r$$; mkfifo $f && echo $f > /tmp/req && cat $f; rm -f $f`)
	if st.Code != 0 {
		t.Fatalf("asking the counter in %s: %+v %q", sb.ID(), st, errs)
	}
	return strings.TrimSpace(out)
}

// startStateful starts, in sb, counterServer and an HTTP server listening
// on 127.0.0.1:8080 (loopback in gVisor's netstack), and waits for both.
func startStateful(t *testing.T, sb *gvisor.Sandbox, ws string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(ws, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, "sub", "marker"), []byte("orig"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, script := range []string{counterServer, `mkdir -p /tmp/www && echo listening > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www`} {
		if _, err := sb.StartProcess(ctxT(t), container.ProcessSpec{Process: container.Process{Args: []string{"sh", "-c", script}}}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for containertest.MustSh(t, sb, "test -p /tmp/req && wget -q -O - http://127.0.0.1:8080/ || true") != "listening\n" {
		if time.Now().After(deadline) {
			t.Fatal("the servers did not come up")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// copyTree copies a host directory tree as a snapshot clone would.
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v: %s", src, dst, err, out)
	}
}

// volSpec is sandbox id's spec on the volume directory vol: a
// workspace vol/ws in the image root, or with own, its own root vol/tree.
func (e *env) volSpec(id, vol string, own bool) container.Spec {
	spec := e.spec(id)
	if own {
		spec.Root = filepath.Join(vol, "tree")
		spec.Workspace = filepath.Join(spec.Root, "workspace")
	} else {
		spec.Workspace = filepath.Join(vol, "ws")
	}
	return spec
}

// restoreOnto copies the frozen volume snap to a new volume directory and
// restores the image onto it as sandbox id.
func (e *env) restoreOnto(t *testing.T, id, snap, image string, own bool) (*gvisor.Sandbox, string) {
	t.Helper()
	vol := filepath.Join(t.TempDir(), "vol")
	copyTree(t, snap, vol)
	spec := e.volSpec(id, vol, own)
	sb, err := e.rt.RestoreSandbox(ctxT(t), spec, image)
	if err != nil {
		t.Fatalf("restore %s: %v", id, err)
	}
	t.Cleanup(func() {
		if err := sb.Stop(context.Background()); err != nil {
			t.Errorf("Stop %s: %v", id, err)
		}
	})
	return sb, spec.Workspace
}

// TestMemorySnapshotRestore: processes come back from a memory snapshot
// into new sandboxes on copies of the files taken while frozen: their
// memory (a counter), cwd, open files and a loopback listener; two
// restores of one image and the original diverge; the restored agent
// runs Exec, StartProcess and KillAll. Both layouts: commands in the
// image root with a workspace, and in the session's own root.
func TestMemorySnapshotRestore(t *testing.T) {
	t.Run("image-root", func(t *testing.T) { testMemorySnapshotRestore(t, false) })
	t.Run("own-root", func(t *testing.T) { testMemorySnapshotRestore(t, true) })
}

func testMemorySnapshotRestore(t *testing.T, own bool) {
	e := newEnv(t)
	vol := filepath.Dir(e.workspace)
	if own {
		copyTree(t, e.rootfs, filepath.Join(vol, "tree"))
	}
	spec := e.volSpec("msrc", vol, own)
	src := e.start(t, spec)
	ws := spec.Workspace
	startStateful(t, src, ws)
	for _, want := range []string{"1 orig", "2 orig"} {
		if got := askCounter(t, src); got != want {
			t.Fatalf("counter answered %q, want %q", got, want)
		}
	}
	image := filepath.Join(t.TempDir(), "img")
	snap := filepath.Join(t.TempDir(), "snap")
	var frozenLog []byte
	err := src.SnapshotMemory(ctxT(t), image, func(ctx context.Context) error {
		// Frozen: nothing may change in between these two reads.
		before, _ := os.ReadFile(filepath.Join(ws, "sub", "log"))
		copyTree(t, vol, snap)
		frozenLog, _ = os.ReadFile(filepath.Join(ws, "sub", "log"))
		if string(before) != string(frozenLog) {
			t.Errorf("log changed while frozen: %q -> %q", before, frozenLog)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(frozenLog) != "1\n2\n" {
		t.Fatalf("log at the snapshot: %q", frozenLog)
	}
	// The original goes on from its own memory.
	if got := askCounter(t, src); got != "3 orig" {
		t.Fatalf("original after the snapshot: %q, want %q", got, "3 orig")
	}
	// The restored files say "copy": answers read them through the
	// restored cwd, on the new host directory.
	rel, _ := filepath.Rel(vol, ws)
	if err := os.WriteFile(filepath.Join(snap, rel, "sub", "marker"), []byte("copy"), 0o644); err != nil {
		t.Fatal(err)
	}
	r1, ws1 := e.restoreOnto(t, "mr1", snap, image, own)
	r2, ws2 := e.restoreOnto(t, "mr2", snap, image, own)
	for _, c := range []struct {
		sb   *gvisor.Sandbox
		want string
	}{{r1, "3 copy"}, {r1, "4 copy"}, {r2, "3 copy"}, {src, "4 orig"}} {
		if got := askCounter(t, c.sb); got != c.want {
			t.Fatalf("%s: counter answered %q, want %q", c.sb.ID(), got, c.want)
		}
	}
	// fd 3 came back open on each restored volume's file.
	for ws, want := range map[string]string{ws1: "1\n2\n3\n4\n", ws2: "1\n2\n3\n", ws: "1\n2\n3\n4\n"} {
		if b, _ := os.ReadFile(filepath.Join(ws, "sub", "log")); string(b) != want {
			t.Errorf("log in %s: %q, want %q", ws, b, want)
		}
	}
	for _, sb := range []*gvisor.Sandbox{r1, r2} {
		if got := containertest.MustSh(t, sb, "wget -q -O - http://127.0.0.1:8080/"); got != "listening\n" {
			t.Errorf("%s: the listener answered %q", sb.ID(), got)
		}
		if got := containertest.MustSh(t, sb, "echo fresh; pwd"); got != "fresh\n/workspace\n" {
			t.Errorf("%s: Exec after restore: %q", sb.ID(), got)
		}
	}
	checkRestoredAgent(t, r1)
}

// checkRestoredAgent: StartProcess and KillAll work in a restored
// sandbox; KillAll also kills the processes restored from the image.
func checkRestoredAgent(t *testing.T, sb *gvisor.Sandbox) {
	t.Helper()
	rp, err := sb.StartProcess(ctxT(t), container.ProcessSpec{Process: container.Process{Args: []string{"sleep", "1000"}}})
	if err != nil || rp.PID() <= 0 {
		t.Fatalf("StartProcess after restore: %v", err)
	}
	if err := sb.KillAll(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := rp.Wait(ctxT(t)); err != nil {
		t.Fatalf("Wait after KillAll: %v", err)
	}
	if got := containertest.MustSh(t, sb, "ps -o comm | grep -c -e httpd -e sleep || true"); got != "0\n" {
		t.Fatalf("processes left after KillAll: %q", got)
	}
}

// TestRestoreBadImage: a missing or corrupt image fails with a clear
// error and leaves no runsc state, cgroup, bundle or seal behind.
func TestRestoreBadImage(t *testing.T) {
	e := newEnv(t)
	corrupt := t.TempDir()
	for name, data := range map[string]string{"turnbox-image.json": `{"lastRequestID": 3}`, "checkpoint.img": "garbage"} {
		if err := os.WriteFile(filepath.Join(corrupt, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ id, image string }{{"badmissing", filepath.Join(t.TempDir(), "none")}, {"badcorrupt", corrupt}} {
		_, err := e.rt.Restore(ctxT(t), e.spec(c.id), c.image)
		if err == nil {
			t.Fatalf("%s: restore succeeded", c.id)
		}
		t.Logf("%s: %v", c.id, err)
		if c.id == "badmissing" && !errors.Is(err, container.ErrInvalidSpec) {
			t.Errorf("missing image: %v, want ErrInvalidSpec", err)
		}
		ids, lerr := e.rt.List(ctxT(t))
		if lerr != nil || len(ids) != 0 {
			t.Errorf("%s: sandboxes left: %v %v", c.id, ids, lerr)
		}
		if d := cgroupDirs(c.id); len(d) != 0 {
			t.Errorf("%s: cgroups left: %v", c.id, d)
		}
		if p := runscProcs(e.rt.Root()); len(p) != 0 {
			t.Errorf("%s: runsc processes left: %v", c.id, p)
		}
		// The volume's directory is unsealed: a new sandbox can seal it.
		sb := e.start(t, e.spec(c.id+"-after"))
		if err := sb.Stop(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMemorySnapshotRefusesNetwork: a sandbox on a host network (or a
// namespace) refuses memory snapshots and restores, freezing nothing.
func TestMemorySnapshotRefusesNetwork(t *testing.T) {
	e := newEnv(t)
	spec := e.spec("mnethost")
	spec.Network = container.NetworkHost
	sb := e.start(t, spec)
	called := false
	err := sb.SnapshotMemory(ctxT(t), filepath.Join(t.TempDir(), "img"), func(context.Context) error { called = true; return nil })
	if !errors.Is(err, container.ErrUnsupported) || called {
		t.Fatalf("SnapshotMemory on a host network: %v (during called: %v), want ErrUnsupported", err, called)
	}
	if _, err := e.rt.Restore(ctxT(t), spec, t.TempDir()); !errors.Is(err, container.ErrUnsupported) {
		t.Fatalf("Restore on a host network: %v, want ErrUnsupported", err)
	}
	if got := containertest.MustSh(t, sb, "echo up"); got != "up\n" {
		t.Fatalf("sandbox after a refused snapshot: %q", got)
	}
}

// TestSnapshotMemoryFreezes: the sandbox stays frozen from the memory
// save through during (a writer inside makes no progress), and runs on
// afterwards; an error from during fails the call and still thaws.
func TestSnapshotMemoryFreezes(t *testing.T) {
	e := newEnv(t)
	sb := e.start(t, e.spec("mfreeze"))
	tick := filepath.Join(e.workspace, "tick")
	if _, err := sb.StartProcess(ctxT(t), container.ProcessSpec{Process: container.Process{Args: []string{"sh", "-c",
		"i=0; while true; do i=$((i+1)); echo $i > /workspace/tick.tmp; mv /workspace/tick.tmp /workspace/tick; sleep 0.01; done"}}}); err != nil {
		t.Fatal(err)
	}
	read := func() string { b, _ := os.ReadFile(tick); return string(b) }
	waitAdvance := func(from string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for read() == from {
			if time.Now().After(deadline) {
				t.Fatal("the writer does not advance")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitAdvance("")
	var frozen string
	boom := errors.New("boom")
	for _, ret := range []error{nil, boom} {
		err := sb.SnapshotMemory(ctxT(t), filepath.Join(t.TempDir(), "img"), func(context.Context) error {
			frozen = read()
			time.Sleep(300 * time.Millisecond)
			if now := read(); now != frozen {
				t.Errorf("the writer ran while frozen: %q -> %q", frozen, now)
			}
			return ret
		})
		if !errors.Is(err, ret) || (ret != nil) != (err != nil) {
			t.Fatalf("SnapshotMemory with during returning %v: %v", ret, err)
		}
		if st := sb.Status(); st != container.StatusRunning {
			t.Fatalf("status after SnapshotMemory: %v", st)
		}
		waitAdvance(frozen)
	}
	// Bad input fails at once and freezes nothing.
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "checkpoint.img"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	called := false
	during := func(context.Context) error { called = true; return nil }
	if err := sb.SnapshotMemory(ctxT(t), full, during); !errors.Is(err, container.ErrInvalidSpec) || called {
		t.Fatalf("SnapshotMemory into a non-empty directory: %v (during called: %v)", err, called)
	}
	if err := sb.Pause(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := sb.SnapshotMemory(ctxT(t), filepath.Join(t.TempDir(), "img"), during); !errors.Is(err, container.ErrPaused) || called {
		t.Fatalf("SnapshotMemory on a paused sandbox: %v (during called: %v)", err, called)
	}
	if err := sb.Resume(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	waitAdvance(read())
}

// TestHibernate: a memory snapshot, Stop, and a restore under the same
// id by another Runtime on the same root (a new host process) bring the
// processes back: Pause to disk and Resume, at the runtime level.
func TestHibernate(t *testing.T) {
	e := newEnv(t)
	src := e.start(t, e.spec("mhib"))
	startStateful(t, src, e.workspace)
	if got := askCounter(t, src); got != "1 orig" {
		t.Fatalf("counter answered %q", got)
	}
	image, snap := filepath.Join(t.TempDir(), "img"), filepath.Join(t.TempDir(), "snap")
	if err := src.SnapshotMemory(ctxT(t), image, func(context.Context) error {
		copyTree(t, filepath.Dir(e.workspace), snap)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := src.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	rt2, err := gvisor.New(gvisor.WithRunsc(e.runsc), gvisor.WithAgent(e.rt.AgentBinary()), gvisor.WithRoot(e.rt.Root()))
	if err != nil {
		t.Fatal(err)
	}
	if err := rt2.Reap(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	e.rt = rt2
	sb, _ := e.restoreOnto(t, "mhib", snap, image, false)
	if got := askCounter(t, sb); got != "2 orig" {
		t.Fatalf("counter after hibernation: %q, want %q", got, "2 orig")
	}
}
