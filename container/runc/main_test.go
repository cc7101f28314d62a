package runc_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/agent/agenttest"
	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/container/runc"
	"github.com/turnbox/turnbox/internal/testenv"
)

func TestMain(m *testing.M) {
	runc.Init() // libcontainer re-executes this binary as each container's init
	code := m.Run()
	if sharedRootfs != "" {
		os.RemoveAll(filepath.Dir(sharedRootfs))
	}
	os.Exit(code)
}

var (
	rootfsOnce   sync.Once
	sharedRootfs string
	rootfsErr    error
)

// busyboxRootfs returns a busybox root filesystem shared by every test
// (sandboxes never write to it).
func busyboxRootfs(t testing.TB) string {
	t.Helper()
	rootfsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "turnbox-runc-rootfs-")
		if err != nil {
			rootfsErr = err
			return
		}
		sharedRootfs = filepath.Join(dir, "rootfs")
		rootfsErr = rootfs.BuildBusybox(sharedRootfs)
	})
	testenv.Require(t, rootfsErr == nil, "static busybox (apt busybox-static)")
	return sharedRootfs
}

// newRuntime returns a runtime under a fresh root, or skips (fails in CI)
// without root.
func newRuntime(t testing.TB, opts ...runc.Option) *runc.Runtime {
	t.Helper()
	testenv.RequireRoot(t)
	ag := agenttest.Build(t)
	rt, err := runc.New(t.TempDir(), append([]runc.Option{runc.WithAgent(ag)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := rt.Reap(context.Background()); err != nil {
			t.Errorf("Reap at cleanup: %v", err)
		}
	})
	return rt
}

// workspace makes a volume layout like the snapshot backends': a
// directory of its own holding the workspace tree.
func workspace(t testing.TB) string {
	t.Helper()
	ws := filepath.Join(t.TempDir(), "vol", "ws")
	if err := os.MkdirAll(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	return ws
}

var idSeq struct {
	sync.Mutex
	n int
}

func newID(t testing.TB) string {
	idSeq.Lock()
	defer idSeq.Unlock()
	idSeq.n++
	name := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	if len(name) > 40 {
		name = name[:40]
	}
	return name + "-" + strconv.Itoa(idSeq.n)
}

type sandboxOpt func(*container.Spec)

func withLimits(l container.Limits) sandboxOpt {
	return func(s *container.Spec) { s.Limits = l }
}

func withNetwork(n container.Network) sandboxOpt {
	return func(s *container.Spec) { s.Network = n }
}

// start starts a sandbox stopped at the test's end.
func start(t testing.TB, rt *runc.Runtime, opts ...sandboxOpt) (container.Sandbox, container.Spec) {
	t.Helper()
	spec := container.Spec{
		ID:        newID(t),
		RootFS:    busyboxRootfs(t),
		Workspace: workspace(t),
	}
	for _, o := range opts {
		o(&spec)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sb, err := rt.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := sb.Stop(context.Background()); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return sb, spec
}

// newRuntimeAt returns a second runtime on an existing root.
func newRuntimeAt(t testing.TB, root string, opts ...runc.Option) *runc.Runtime {
	t.Helper()
	rt, err := runc.New(root, append([]runc.Option{runc.WithAgent(agenttest.Build(t))}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return rt
}

// startInCgroup starts a host sleep process inside the cgroup at dir.
func startInCgroup(t testing.TB, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
		cmd.Process.Kill()
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd
}
