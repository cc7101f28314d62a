package envtest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container/none"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/environment/envtest"
)

// The suite checks itself: each mutant wraps a correct implementation (an
// embedded host) and breaks one behaviour; the subtest that covers the
// behaviour must then fail. Mutants run in a child process (the suite
// reports failures through *testing.T, which cannot be intercepted).

// mutant breaks one behaviour of a wrapped Environment.
type mutant struct {
	// subtest is the suite subtest that must fail.
	subtest string
	wrap    func(environment.Environment) environment.Environment
}

// broken is an Environment whose methods can be overridden one by one.
type broken struct {
	environment.Environment
	execute  func(ctx context.Context, req environment.ToolRequest, onProgress func(environment.ToolProgress)) (*environment.ToolResponse, error)
	rollback func(ctx context.Context, id string) error
	pause    func(ctx context.Context) error
	destroy  func(ctx context.Context) error
	snapshot func(ctx context.Context, name string) (*environment.SnapshotInfo, error)
}

func (b *broken) ExecuteTool(ctx context.Context, req environment.ToolRequest, onProgress func(environment.ToolProgress)) (*environment.ToolResponse, error) {
	if b.execute != nil {
		return b.execute(ctx, req, onProgress)
	}
	return b.Environment.ExecuteTool(ctx, req, onProgress)
}

func (b *broken) Rollback(ctx context.Context, id string) error {
	if b.rollback != nil {
		return b.rollback(ctx, id)
	}
	return b.Environment.Rollback(ctx, id)
}

func (b *broken) Pause(ctx context.Context) error {
	if b.pause != nil {
		return b.pause(ctx)
	}
	return b.Environment.Pause(ctx)
}

func (b *broken) Destroy(ctx context.Context) error {
	if b.destroy != nil {
		return b.destroy(ctx)
	}
	return b.Environment.Destroy(ctx)
}

func (b *broken) CreateSnapshot(ctx context.Context, name string) (*environment.SnapshotInfo, error) {
	if b.snapshot != nil {
		return b.snapshot(ctx, name)
	}
	return b.Environment.CreateSnapshot(ctx, name)
}

// Fork keeps the wrapper's Forker ability.
func (b *broken) Fork(ctx context.Context, snapshotID string, c environment.SessionConfig) (environment.Environment, error) {
	return b.Environment.(environment.Forker).Fork(ctx, snapshotID, c)
}

// SessionID keeps the wrapper's SessionIDer ability.
func (b *broken) SessionID() string { return b.Environment.(environment.SessionIDer).SessionID() }

var mutants = map[string]mutant{
	"RollbackDoesNothing": {"Snapshots/Model", func(e environment.Environment) environment.Environment {
		return &broken{Environment: e, rollback: func(ctx context.Context, id string) error {
			if strings.HasPrefix(id, "unknown-") {
				return e.Rollback(ctx, id)
			}
			return nil
		}}
	}},
	"RollbackDropsNewerSnapshots": {"Snapshots/RollForward", func(e environment.Environment) environment.Environment {
		var mu sync.Mutex
		var ids []string
		b := &broken{Environment: e}
		b.snapshot = func(ctx context.Context, name string) (*environment.SnapshotInfo, error) {
			info, err := e.CreateSnapshot(ctx, name)
			if err == nil {
				mu.Lock()
				ids = append(ids, info.ID)
				mu.Unlock()
			}
			return info, err
		}
		b.rollback = func(ctx context.Context, id string) error {
			mu.Lock()
			defer mu.Unlock()
			i := slices.Index(ids, id)
			if i >= 0 && i < len(ids)-1 {
				ids = ids[:i+1]
			} else if i < 0 {
				return fmt.Errorf("%w: %s", environment.ErrSnapshotNotFound, id)
			}
			return e.Rollback(ctx, id)
		}
		return b
	}},
	"TurnsNotIncreasing": {"Snapshots/Info", func(e environment.Environment) environment.Environment {
		return &broken{Environment: e, snapshot: func(ctx context.Context, name string) (*environment.SnapshotInfo, error) {
			info, err := e.CreateSnapshot(ctx, name)
			if err == nil {
				info.Turn = 1
			}
			return info, err
		}}
	}},
	"ListUnsorted": {"Tools/ListFiles", mapResponse(environment.ToolListFiles, func(r *environment.ToolResponse) {
		ls := strings.Split(strings.TrimSuffix(r.Content, "\n"), "\n")
		slices.Reverse(ls)
		r.Content = strings.Join(ls, "\n") + "\n"
	})},
	"TruncationSilent": {"Security/HugeOutput", mapResponse(environment.ToolBash, func(r *environment.ToolResponse) { r.Truncated = false })},
	"ReadIgnoresOffset": {"Tools/ReadOffsetLimit", func(e environment.Environment) environment.Environment {
		return &broken{Environment: e, execute: func(ctx context.Context, req environment.ToolRequest, p func(environment.ToolProgress)) (*environment.ToolResponse, error) {
			if req.ToolName == environment.ToolReadFile {
				if params, err := environment.ParseParams(req); err == nil {
					rp := params.(environment.ReadFileParams)
					rp.Offset = 0
					req, _ = environment.NewToolRequest(req.ToolCallID, rp)
				}
			}
			return e.ExecuteTool(ctx, req, p)
		}}
	}},
	"EscapeAsToolError": {"Security/SymlinkEscapes", func(e environment.Environment) environment.Environment {
		return &broken{Environment: e, execute: func(ctx context.Context, req environment.ToolRequest, p func(environment.ToolProgress)) (*environment.ToolResponse, error) {
			resp, err := e.ExecuteTool(ctx, req, p)
			if errors.Is(err, environment.ErrPathEscapes) {
				return &environment.ToolResponse{ToolCallID: req.ToolCallID, Content: err.Error(), ExitCode: 1, IsError: true}, nil
			}
			return resp, err
		}}
	}},
	"ProgressBuffered": {"Tools/Streaming", func(e environment.Environment) environment.Environment {
		return &broken{Environment: e, execute: func(ctx context.Context, req environment.ToolRequest, p func(environment.ToolProgress)) (*environment.ToolResponse, error) {
			var held []environment.ToolProgress
			resp, err := e.ExecuteTool(ctx, req, func(tp environment.ToolProgress) { held = append(held, tp) })
			if p != nil {
				for _, tp := range held {
					p(tp)
				}
			}
			return resp, err
		}}
	}},
	"TimeoutLeavesChildren": {"Tools/BashTimeoutKillsTree", func(e environment.Environment) environment.Environment {
		return &broken{Environment: e, execute: func(ctx context.Context, req environment.ToolRequest, p func(environment.ToolProgress)) (*environment.ToolResponse, error) {
			if params, err := environment.ParseParams(req); err == nil {
				if bp, ok := params.(environment.BashParams); ok && bp.TimeoutMS > 0 {
					// The background child leaves the session's cgroup
					// (root on the none runtime can), so the tree kill
					// misses it.
					bp.Command = strings.Replace(bp.Command, "sleep 100 & echo $! > bg.pid",
						"sh -c 'echo $$ > /sys/fs/cgroup/unified/cgroup.procs; exec sleep 20' & echo $! > bg.pid", 1)
					req, _ = environment.NewToolRequest(req.ToolCallID, bp)
				}
			}
			return e.ExecuteTool(ctx, req, p)
		}}
	}},
	"PauseIsNoop": {"Lifecycle/PauseResume", func(e environment.Environment) environment.Environment {
		return &broken{Environment: e, pause: func(context.Context) error { return nil }}
	}},
	"DestroyTwiceFails": {"Lifecycle/Destroy", func(e environment.Environment) environment.Environment {
		n := 0
		return &broken{Environment: e, destroy: func(ctx context.Context) error {
			n++
			if n > 1 {
				return errors.New("already destroyed")
			}
			return e.Destroy(ctx)
		}}
	}},
}

// mapResponse returns a mutant that edits successful responses of one tool.
func mapResponse(tool string, f func(*environment.ToolResponse)) func(environment.Environment) environment.Environment {
	return func(e environment.Environment) environment.Environment {
		return &broken{Environment: e, execute: func(ctx context.Context, req environment.ToolRequest, p func(environment.ToolProgress)) (*environment.ToolResponse, error) {
			resp, err := e.ExecuteTool(ctx, req, p)
			if err == nil && req.ToolName == tool && resp.Content != "" {
				f(resp)
			}
			return resp, err
		}}
	}
}

// newHost opens an embedded host (localdisk, none runtime) with a cgroup
// root of its own.
func newHost(t *testing.T) *embedded.Host {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the embedded host's none runtime needs root for cgroups")
	}
	root := fmt.Sprintf("%s/envtest-self-%d", none.CgroupBase, os.Getpid())
	logger := slog.New(slog.DiscardHandler)
	rt, err := none.New(none.WithCgroupRoot(root), none.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	host, err := embedded.NewHost(t.Context(), embedded.Config{StateDir: t.TempDir(), Runtime: rt, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = host.Close(ctx)
		_ = os.Remove(root)
	})
	return host
}

// TestMutants checks that the suite catches each mutant.
func TestMutants(t *testing.T) {
	if name := os.Getenv("ENVTEST_MUTANT"); name != "" {
		m := mutants[name]
		host := newHost(t)
		envtest.Run(t, func(t *testing.T) environment.Environment { return m.wrap(host.NewEnvironment()) },
			// 15 random sequences: with 5, one CI run in many drew none
			// that catches RollbackDoesNothing.
			envtest.WithPropertyChecks(15))
		return
	}
	if testing.Short() {
		t.Skip("runs the suite once per mutant")
	}
	newHost(t) // skip early where the host cannot run
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range mutants {
			if !yield(k) {
				return
			}
		}
	}) {
		m := mutants[name]
		t.Run(name, func(t *testing.T) {
			run := "^TestMutants$/^" + strings.ReplaceAll(m.subtest, "/", "$/^") + "$"
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run="+run, "-test.count=1", "-test.v", "-rapid.nofailfile", "-rapid.shrinktime=3s")
			cmd.Env = append(os.Environ(), "ENVTEST_MUTANT="+name)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed against mutant %s; %s should have failed:\n%s", name, m.subtest, out)
			}
			if !strings.Contains(string(out), "--- FAIL: TestMutants/"+m.subtest) {
				t.Fatalf("mutant %s: %s did not fail (or did not run):\n%s", name, m.subtest, out)
			}
			for _, l := range strings.Split(string(out), "\n") {
				if strings.Contains(l, ".go:") && !strings.Contains(l, "rapid") {
					t.Logf("caught: %s", strings.TrimSpace(l))
					break
				}
			}
		})
	}
}

// TestEmbedded runs the suite against the unmodified embedded host, so the
// mutants above are known to fail for the mutation and not otherwise.
func TestEmbedded(t *testing.T) {
	if os.Getenv("ENVTEST_MUTANT") != "" {
		t.Skip("child process of TestMutants")
	}
	host := newHost(t)
	envtest.Run(t, func(t *testing.T) environment.Environment { return host.NewEnvironment() })
}
