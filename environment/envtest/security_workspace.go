package envtest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/internal/hoststate"
)

// A sandbox sees the directory that holds its workspace (runtimes bind it
// so that a rollback shows without a restart). These cases are what a
// hostile command does with that directory: swap the workspace for
// something that leads to the host, and see whether the host follows.

// swapVariants are shell fragments that put something in place of the
// workspace after it was renamed away ($P is the directory holding it,
// $H a host directory the test owns).
var swapVariants = []struct{ name, plant string }{
	{"symlink to /", `ln -s / "$P/workspace"`},
	{"symlink to a host dir", `ln -s "$H" "$P/workspace"`},
	{"relative symlink out", `ln -s ../../../../../../.. "$P/workspace"`},
	{"fifo", `mkfifo "$P/workspace"`},
	{"device node", `mknod "$P/workspace" c 1 3`},
	{"another directory", `mkdir "$P/workspace" && echo planted > "$P/workspace/keep.txt"`},
	{"nothing", `true`},
}

// hostBait makes a host directory holding a secret file, and returns it
// with a function that fails the test if anything in it changed or
// appeared, or if any thread of this process left its namespaces or root.
func hostBait(t *testing.T) (dir string, check func(what string)) {
	t.Helper()
	dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A runtime may have a thread of this process in a sandbox's
	// namespaces for a moment while another test starts one (libcontainer
	// does, on a thread that then exits): only a state that lasts 10 s is
	// a failure, here and in check.
	host, err := hoststate.Capture(filepath.Join(dir, "secret"))
	for deadline := time.Now().Add(10 * time.Second); err != nil && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		host, err = hoststate.Capture(filepath.Join(dir, "secret"))
	}
	if err != nil {
		t.Fatal(err)
	}
	return dir, func(what string) {
		t.Helper()
		err := host.Check()
		for deadline := time.Now().Add(10 * time.Second); err != nil && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
			err = host.Check()
		}
		if err != nil {
			t.Errorf("%s: this process's namespaces or root changed: %v", what, err)
		}
		ents, _ := os.ReadDir(dir)
		if len(ents) != 1 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Errorf("%s: the host directory behind the attack now holds %v", what, names)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "secret")); err != nil || string(b) != "host secret" {
			t.Errorf("%s: the host's secret changed: %q, %v", what, b, err)
		}
	}
}

// needIsolation skips where commands run on the host (none isolates
// nothing, so a command there can touch the host anyway) or the test
// cannot look at the host's filesystem.
func (s *suite) needIsolation(t *testing.T, env environment.Environment) {
	t.Helper()
	if env.Capabilities().Isolation == environment.IsolationNone {
		t.Skip("the none runtime isolates nothing: a command can write the host directly")
	}
	if !s.cfg.hostLocal {
		t.Skip("needs to see the host filesystem")
	}
}

// noHostReach runs every file tool against paths that lead to the bait if
// the host followed a swapped workspace, and fails if any did.
func (s *suite) noHostReach(t *testing.T, env environment.Environment, bait string) {
	t.Helper()
	rel := strings.TrimPrefix(bait, "/")
	for _, p := range []string{rel + "/secret", "secret"} {
		resp, err := s.exec(t, env, environment.ReadFileParams{Path: p})
		if err == nil && strings.Contains(resp.Content, "host secret") {
			t.Errorf("read_file %s returned the host's secret", p)
		}
	}
	for _, p := range []string{rel + "/planted", "planted"} {
		_, _ = s.exec(t, env, environment.WriteFileParams{Path: p, Content: "escaped"})
		_, _ = s.exec(t, env, environment.EditFileParams{Path: p, OldString: "host", NewString: "x"})
	}
	_, _ = s.exec(t, env, environment.EditFileParams{Path: rel + "/secret", OldString: "host", NewString: "x"})
	for _, p := range []environment.ToolParams{
		environment.ListFilesParams{Pattern: "**", Path: "."},
		environment.GrepParams{Pattern: "host secret", Path: "."},
	} {
		resp, err := s.exec(t, env, p)
		// Only the host's bait directory holds a file called secret.
		if err == nil && (strings.Contains(resp.Content, "host secret") || strings.Contains(resp.Content, "secret\n")) {
			t.Errorf("%s saw the host: %q", p.ToolName(), clip(resp.Content))
		}
	}
}

// testWorkspaceSwap: a command renames the workspace away and plants a
// symlink (to /, to a host directory, climbing out), a FIFO, a device
// node, another directory or nothing in its place. The host must never
// follow it: the file tools, a snapshot, a rollback and destroy either
// work on the session's own tree or fail with an error, the host's files
// are untouched, and another session keeps working.
func (s *suite) testWorkspaceSwap(t *testing.T) {
	bystander, _ := s.session(t)
	s.needIsolation(t, bystander)
	s.write(t, bystander, "own.txt", "bystander")
	for _, v := range swapVariants {
		t.Run(v.name, func(t *testing.T) {
			bait, check := hostBait(t)
			env, _ := s.session(t)
			s.write(t, env, "keep.txt", "mine")
			before := s.snapshot(t, env, "before")
			cmd := `P=$(dirname "$(cd /workspace && pwd -P)"); H=` + quote(bait) + `; cd / && mv "$P/workspace" "$P/orig" && ` + v.plant + `; ls -la "$P"`
			resp, err := s.exec(t, env, environment.BashParams{Command: cmd})
			if err != nil {
				t.Fatalf("attack command: %v", err)
			}
			t.Logf("attack: exit %d: %s", resp.ExitCode, clip(resp.Content))
			s.noHostReach(t, env, bait)
			check("after the file tools")
			s.turnsAfterAttack(t, env, before.ID)
			check("after snapshot and rollback")
			s.wantContent(t, bystander, "own.txt", "bystander")
		})
	}
}

// turnsAfterAttack takes a snapshot and rolls back after an attack, each
// within a bound. Either may fail (the host noticed); neither may hang,
// and if the rollback works the session has its own content again.
func (s *suite) turnsAfterAttack(t *testing.T, env environment.Environment, beforeID string) {
	t.Helper()
	bounded := func(what string, fn func(ctx context.Context) error) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		start := time.Now()
		err := fn(ctx)
		if d := time.Since(start); d > time.Minute {
			t.Errorf("%s took %v after the attack", what, d)
		}
		return err
	}
	if err := bounded("CreateSnapshot", func(ctx context.Context) error { _, err := env.CreateSnapshot(ctx, "after"); return err }); err != nil {
		t.Logf("CreateSnapshot after the attack: %v", err)
	}
	err := bounded("Rollback", func(ctx context.Context) error { return env.Rollback(ctx, beforeID) })
	if err != nil {
		t.Logf("Rollback after the attack: %v", err)
		return
	}
	resp, err := s.exec(t, env, environment.ReadFileParams{Path: "keep.txt"})
	if err != nil || resp.IsError || resp.Content != "mine" {
		t.Errorf("after a rollback that succeeded, keep.txt = %+v, %v; want mine", resp, err)
	}
}

// testWorkspaceSealed: on an isolated runtime nothing in the sandbox can
// rename, replace or add entries beside the workspace at all.
func (s *suite) testWorkspaceSealed(t *testing.T) {
	env, _ := s.session(t)
	s.needIsolation(t, env)
	if env.Capabilities().WritableRoot {
		t.Skip("the workspace's directory is the session's own root, writable by design; Root/WorkspaceLinkStaysInRoot covers the tools (the volume's directory, outside the commands' root, stays sealed: containertest OwnRootWritable)")
	}
	out := s.sh(t, env, `P=$(dirname "$(cd /workspace && pwd -P)"); cd /
for op in 'mv "$P/workspace" "$P/moved"' 'ln -s / "$P/link"' 'mkdir "$P/dir"' 'rm -rf "$P/workspace"' 'touch "$P/file"'; do
  if eval "$op" 2>/dev/null; then echo "ALLOWED: $op"; fi
done; ls -a "$P"; echo ok > /workspace/inside && cat /workspace/inside`)
	if strings.Contains(out, "ALLOWED") {
		t.Errorf("the sandbox changed the workspace's directory:\n%s", out)
	}
	if !strings.HasSuffix(strings.TrimSpace(out), "ok") {
		t.Errorf("writing inside the workspace failed:\n%s", out)
	}
}

// testWorkspaceSwapRace: a command keeps trying to swap the workspace for
// a symlink to the host while file tools, snapshots and a rollback run.
func (s *suite) testWorkspaceSwapRace(t *testing.T) {
	env, _ := s.session(t)
	s.needIsolation(t, env)
	bait, check := hostBait(t)
	s.write(t, env, "keep.txt", "mine")
	first := s.snapshot(t, env, "first")
	var wg sync.WaitGroup
	wg.Go(func() {
		req, _ := environment.NewToolRequest("swapper", environment.BashParams{
			Command: `P=$(dirname "$(cd /workspace && pwd -P)"); cd /; end=$(($(date +%s)+3)); n=0
while [ "$(date +%s)" -lt $end ]; do
  mv "$P/workspace" "$P/orig" 2>/dev/null && ln -s ` + quote(bait) + ` "$P/workspace" 2>/dev/null && n=$((n+1))
  mv "$P/orig" "$P/workspace" 2>/dev/null
done; echo "swaps: $n"`,
		})
		ctx, cancel := s.ctx(t)
		defer cancel()
		if resp, err := env.ExecuteTool(ctx, req, nil); err == nil {
			t.Logf("swapper: %s", clip(resp.Content))
		}
	})
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		s.noHostReach(t, env, bait)
	}
	wg.Wait()
	check("after racing file tools against swaps")
	ctx, cancel := s.ctx(t)
	defer cancel()
	if err := env.Rollback(ctx, first.ID); err != nil && !errors.Is(err, environment.ErrBusy) {
		t.Logf("rollback after the race: %v", err)
	}
	check("after the rollback")
}
