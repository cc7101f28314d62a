package none_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/containertest"
	"github.com/turnbox/turnbox/container/none"
	"github.com/turnbox/turnbox/internal/testenv"
)

func start(t *testing.T, opts ...none.Option) (*none.Runtime, container.Sandbox, string) {
	t.Helper()
	rt, err := none.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	ws := filepath.Join(t.TempDir(), "workspace")
	if err := os.Mkdir(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	id := "t" + strings.ReplaceAll(strings.ToLower(t.Name()), "/", "-")
	sb, err := rt.Start(context.Background(), container.Spec{ID: id, Workspace: ws, Env: []string{"FOO=bar"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Stop(context.Background()) })
	return rt, sb, ws
}

// TestSuite runs the container conformance suite on the none runtime with
// cgroups (root) and without.
func TestSuite(t *testing.T) {
	t.Run("Cgroups", func(t *testing.T) {
		containertest.Run(t, func(t *testing.T) container.Runtime {
			testenv.RequireRoot(t)
			rt, err := none.New()
			if err != nil {
				t.Fatal(err)
			}
			testenv.Require(t, rt.CgroupsEnabled(), "a writable cgroup v2 hierarchy at "+none.DefaultCgroupRoot)
			return rt
		})
	})
	t.Run("NoCgroups", func(t *testing.T) {
		containertest.Run(t, func(t *testing.T) container.Runtime {
			rt, err := none.New(none.WithCgroupRoot(""))
			if err != nil {
				t.Fatal(err)
			}
			return rt
		}, containertest.WithSkip("without cgroups a process that left its session escapes the kill, and idleness cannot be seen (documented in package none)",
			"TimeoutKillsTree", "KillAllKeepsSandbox", "Idle"))
	})
}

func TestReapOrphans(t *testing.T) {
	testenv.RequireRoot(t)
	// A root of its own: Reap removes every sandbox in the root, and other
	// test binaries may have live sandboxes in the default one.
	root := filepath.Join(none.CgroupBase, "test-reap-"+strconv.Itoa(os.Getpid()))
	rt, sb, _ := start(t, none.WithCgroupRoot(root))
	t.Cleanup(func() { _ = rt.Close() })
	testenv.Require(t, rt.CgroupsEnabled(), "a writable cgroup v2 hierarchy")
	ctx := context.Background()
	go sb.Exec(ctx, container.Process{Args: []string{"sleep", "60"}})
	time.Sleep(100 * time.Millisecond)
	ids, err := rt.List(ctx)
	if err != nil || !contains(ids, sb.ID()) {
		t.Fatalf("List = %v, %v; want %s", ids, err, sb.ID())
	}
	if err := rt.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	ids, _ = rt.List(ctx)
	if contains(ids, sb.ID()) {
		t.Fatalf("sandbox %s still listed after Reap", sb.ID())
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// Pause racing the start of commands must neither hang the process (a
// child cloned into a frozen cgroup never execs) nor start a command in a
// frozen sandbox: each Exec either runs or fails with ErrPaused.
func TestPauseRacingExec(t *testing.T) {
	testenv.RequireRoot(t)
	rt, sb, _ := start(t)
	testenv.Require(t, rt.CgroupsEnabled(), "a writable cgroup v2 hierarchy")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		for i := 0; i < 200 && ctx.Err() == nil; i++ {
			if _, err := sb.Exec(ctx, container.Process{Args: []string{"true"}}); err != nil && !errors.Is(err, container.ErrPaused) {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := 0; i < 100; i++ {
		if err := sb.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		if err := sb.Resume(ctx); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("Exec hung while racing Pause")
	}
}

func TestNetworkNamespaceUnsupported(t *testing.T) {
	rt, err := none.New()
	if err != nil {
		t.Fatal(err)
	}
	spec := container.Spec{ID: "netns", Workspace: t.TempDir(), Network: container.NetworkNamespace, NetNS: "/run/netns/x"}
	if sb, err := rt.Start(context.Background(), spec); !errors.Is(err, container.ErrUnsupported) {
		if err == nil {
			sb.Stop(context.Background())
		}
		t.Fatalf("Start with a network namespace: %v, want ErrUnsupported", err)
	}
}
