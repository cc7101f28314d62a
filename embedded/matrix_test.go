package embedded_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container/agent/agenttest"
	"github.com/turnbox/turnbox/container/runc"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/environment/envtest"
	"github.com/turnbox/turnbox/internal/testenv"
	"github.com/turnbox/turnbox/snapshot/btrfs/btrfstest"
	"github.com/turnbox/turnbox/zfs/zfstest"
)

func TestMain(m *testing.M) {
	runc.Init() // libcontainer re-executes this binary as each container's init
	code := m.Run()
	zfstest.Shutdown()
	os.Exit(code)
}

// openCheckedHost opens a host on cfg and closes it when the test ends,
// failing the test if Close fails or takes over a minute.
func openCheckedHost(t *testing.T, cfg embedded.Config) *embedded.Host {
	t.Helper()
	h, err := embedded.NewHost(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return h
}

// matrixConfig prepares a host config for a storage × runtime pair, or
// skips (fails in CI) when a dependency is missing.
func matrixConfig(t testing.TB, storage embedded.StorageBackend, rt embedded.ContainerRuntime) embedded.Config {
	t.Helper()
	cfg := embedded.Config{StateDir: t.TempDir(), StorageBackend: storage, ContainerRuntime: rt, Logger: quietLogger()}
	switch rt {
	case embedded.ContainerRuntimeGVisor:
		testenv.RequireRoot(t)
		testenv.RequireBinary(t, "runsc")
		cfg.AgentPath = agenttest.Build(t)
	case embedded.ContainerRuntimeRunc:
		testenv.RequireRoot(t)
		cfg.AgentPath = agenttest.Build(t)
	}
	switch storage {
	case embedded.StorageBackendBtrfs:
		cfg.StorageRoot = btrfstest.Mount(t, 1<<30)
	case embedded.StorageBackendZFS:
		cfg.ZFSDataset = zfstest.NewPool(t, 512<<20)
	}
	return cfg
}

// TestConformanceMatrix runs envtest against every storage × runtime pair
// that runs on our machines (localdisk × none runs in envtest_test.go).
func TestConformanceMatrix(t *testing.T) {
	for _, c := range []struct {
		storage embedded.StorageBackend
		runtime embedded.ContainerRuntime
	}{
		{embedded.StorageBackendLocalDisk, embedded.ContainerRuntimeGVisor},
		{embedded.StorageBackendLocalDisk, embedded.ContainerRuntimeRunc},
		{embedded.StorageBackendBtrfs, embedded.ContainerRuntimeNone},
		{embedded.StorageBackendBtrfs, embedded.ContainerRuntimeGVisor},
		{embedded.StorageBackendBtrfs, embedded.ContainerRuntimeRunc},
		{embedded.StorageBackendZFS, embedded.ContainerRuntimeNone},
		{embedded.StorageBackendZFS, embedded.ContainerRuntimeGVisor},
		{embedded.StorageBackendZFS, embedded.ContainerRuntimeRunc},
	} {
		t.Run(string(c.storage)+"-"+string(c.runtime), func(t *testing.T) {
			cfg := matrixConfig(t, c.storage, c.runtime)
			h := openCheckedHost(t, cfg)
			if got := h.Capabilities(); string(got.Isolation) != string(c.runtime) || got.Storage != string(c.storage) {
				t.Fatalf("capabilities %+v, want %s on %s", got, c.runtime, c.storage)
			}
			opts := []envtest.Option{envtest.WithPropertyChecks(4)}
			if c.storage == embedded.StorageBackendZFS && !zfstest.Kernel() {
				// Seen once in CI: zfs-fuse segfaulted (pthread_mutex_lock
				// on a freed object) while this rename storm ran beside
				// other file calls, and every later zfs test failed. The
				// VM runs the same suite on kernel OpenZFS.
				opts = append(opts, envtest.WithoutTests("zfs-fuse crashes under concurrent rename storms; kernel OpenZFS (the VM) runs it", "Files/Race"))
			}
			envtest.Run(t, func(t *testing.T) environment.Environment { return h.NewEnvironment() }, opts...)
		})
	}
}

// TestCommandsAfterSnapshots is the agent's inner loop on each isolated
// runtime: write, snapshot (freeze, snapshot, thaw), then run commands at
// once. Freezing part of a gVisor sandbox through its cgroup crashed the
// next command ("Segmentation fault", "Killed"); this catches that class.
func TestCommandsAfterSnapshots(t *testing.T) {
	for _, rt := range []embedded.ContainerRuntime{embedded.ContainerRuntimeGVisor, embedded.ContainerRuntimeRunc} {
		t.Run(string(rt), func(t *testing.T) {
			cfg := matrixConfig(t, embedded.StorageBackendLocalDisk, rt)
			h := newHost(t, cfg)
			ctx := context.Background()
			e, err := h.CreateSession(ctx, environment.SessionConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Destroy(ctx)
			for i := range 8 {
				call(t, e, environment.BashParams{Command: "mkdir -p src/a && echo x > src/a/f && echo more >> notes.txt"})
				if _, err := e.TurnComplete(ctx, ""); err != nil {
					t.Fatal(err)
				}
				resp := call(t, e, environment.BashParams{Command: "rm -rf src && ls -A | wc -l"})
				if resp.IsError || resp.ExitCode != 0 {
					t.Fatalf("turn %d: command after a snapshot failed: exit %d: %q", i, resp.ExitCode, resp.Content)
				}
			}
		})
	}
}

// A session created on one runtime is never run on another: reopening its
// state directory with a different runtime keeps the data but refuses the
// session's tool calls, so an isolated session cannot silently lose its
// isolation (and the reverse).
func TestRuntimeMismatchRefused(t *testing.T) {
	ctx := context.Background()
	cfg := matrixConfig(t, embedded.StorageBackendLocalDisk, embedded.ContainerRuntimeGVisor)
	h, err := embedded.NewHost(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	e, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "isolated"})
	if err != nil {
		t.Fatal(err)
	}
	call(t, e, environment.WriteFileParams{Path: "a.txt", Content: "kept"})
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	weak := newHost(t, embedded.Config{StateDir: cfg.StateDir, ContainerRuntime: embedded.ContainerRuntimeNone})
	e2 := weak.NewEnvironment()
	if err := e2.AttachSession("isolated"); err != nil {
		t.Fatal(err)
	}
	req, _ := environment.NewToolRequest("x", environment.BashParams{Command: "cat a.txt"})
	if _, err := e2.ExecuteTool(ctx, req, nil); !errors.Is(err, environment.ErrNotActive) {
		t.Fatalf("gvisor session ran on runtime none: err = %v", err)
	}
	if err := weak.Close(ctx); err != nil {
		t.Fatal(err)
	}
	back := newHost(t, cfg)
	e3 := back.NewEnvironment()
	if err := e3.AttachSession("isolated"); err != nil {
		t.Fatal(err)
	}
	if got := call(t, e3, environment.ReadFileParams{Path: "a.txt"}).Content; got != "kept" {
		t.Fatalf("after reopening on gvisor a.txt = %q", got)
	}
}
