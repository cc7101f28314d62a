// Package containertest is the conformance suite of container.Runtime:
// every runtime in this module (none, gvisor, runc) runs it against
// itself, so that Exec, KillAll, Pause, Stop and the workspace behave the
// same whichever isolates the session. Capabilities a runtime lacks are
// options (WithKill, WithLimits, WithSealedVolume) or documented sentinel
// errors (Pause returning container.ErrUnsupported).
package containertest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/snapshot/guard"
)

// Option configures Run.
type Option func(*config)

type config struct {
	rootfs      func(t *testing.T) string
	kill        func(t *testing.T, sb container.Sandbox)
	limits      bool
	volumeMount string
	ownRoot     bool
	skip        map[string]string
	noProcesses string // why the process cases are skipped
}

// WithRootFS sets the root filesystem of the suite's sandboxes: rootfs
// returns a host directory holding a busybox-like image (sh, sleep,
// setsid, echo, cat, dd). The none runtime ignores it.
func WithRootFS(rootfs func(t *testing.T) string) Option {
	return func(c *config) { c.rootfs = rootfs }
}

// WithKill enables the KilledReportsDone case: kill kills the whole
// sandbox from the host, as a crash would (the none runtime's sandboxes
// cannot die on their own).
func WithKill(kill func(t *testing.T, sb container.Sandbox)) Option {
	return func(c *config) { c.kill = kill }
}

// WithLimits declares that the runtime enforces Limits.Pids and
// Limits.MemoryBytes, enabling the PidsLimit and MemoryLimit cases.
func WithLimits() Option { return func(c *config) { c.limits = true } }

// WithSealedVolume declares that the runtime seals the workspace's
// directory (container.SealVolumeDir) and mounts it at mount inside the
// sandbox, enabling the SealedVolumeDir case.
func WithSealedVolume(mount string) Option {
	return func(c *config) { c.volumeMount = mount }
}

// WithSkip skips the named cases, logging reason. A skipped case is a gap
// in the runtime's contract: say why.
func WithSkip(reason string, names ...string) Option {
	return func(c *config) {
		if c.skip == nil {
			c.skip = map[string]string{}
		}
		for _, n := range names {
			c.skip[n] = reason
		}
	}
}

type suite struct {
	cfg        config
	newRuntime func(t *testing.T) container.Runtime
}

type testCase struct {
	name string
	fn   func(s *suite, t *testing.T)
}

var cases = []testCase{
	{"ExecExitCodes", (*suite).testExecExitCodes},
	{"StreamsBeforeExit", (*suite).testStreamsBeforeExit},
	{"EnvAndDir", (*suite).testEnvAndDir},
	{"WorkspaceVisibility", (*suite).testWorkspaceVisibility},
	{"ConcurrentExecs", (*suite).testConcurrentExecs},
	{"TimeoutKillsTree", (*suite).testTimeoutKillsTree},
	{"KillAllKeepsSandbox", (*suite).testKillAll},
	{"PauseResume", (*suite).testPauseResume},
	{"StopIdempotent", (*suite).testStopIdempotent},
	{"StopPaused", (*suite).testStopPaused},
	{"KilledReportsDone", (*suite).testKilled},
	{"Idle", (*suite).testIdle},
	{"InvalidSpec", (*suite).testInvalidSpec},
	{"PidsLimit", (*suite).testPidsLimit},
	{"MemoryLimit", (*suite).testMemoryLimit},
	{"SealedVolumeDir", (*suite).testSealedVolumeDir},
}

// Run runs the suite. newRuntime returns a runtime on a fresh root (or
// skips the test where the runtime cannot run) and registers its cleanup
// with t.Cleanup; every case starts its own sandboxes on it.
func Run(t *testing.T, newRuntime func(t *testing.T) container.Runtime, opts ...Option) {
	s := &suite{newRuntime: newRuntime}
	for _, o := range opts {
		o(&s.cfg)
	}
	for _, c := range append(append(append(cases[:len(cases):len(cases)], rootCases...), processCases...), portCases...) {
		t.Run(c.name, func(t *testing.T) {
			if why, ok := s.cfg.skip[c.name]; ok {
				t.Skipf("skipped by the runtime: %s", why)
			}
			c.fn(s, t)
		})
	}
}

// box is one started sandbox and its host workspace.
type box struct {
	rt container.Runtime
	sb container.Sandbox
	ws string
}

// start starts a sandbox (with spec tweaked by edit, if not nil) that is
// stopped at the test's end.
func (s *suite) start(t *testing.T, edit func(*container.Spec)) box {
	t.Helper()
	rt := s.newRuntime(t)
	// The volume layout of the storage backends: the workspace is a
	// directory of its own directory (which isolated runtimes seal).
	ws := filepath.Join(t.TempDir(), "vol", "ws")
	if err := os.MkdirAll(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	spec := container.Spec{ID: sandboxID(t), Workspace: ws, Env: []string{"TURNBOX_SUITE=base"}}
	if s.cfg.rootfs != nil {
		spec.RootFS = s.cfg.rootfs(t)
	}
	if edit != nil {
		edit(&spec)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sb, err := rt.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := sb.Stop(context.Background()); err != nil {
			t.Errorf("Stop at cleanup: %v", err)
		}
	})
	wantStatus(t, sb, container.StatusRunning)
	return box{rt: rt, sb: sb, ws: ws}
}

var idSeq struct {
	sync.Mutex
	n int
}

// sandboxID is a valid, unique sandbox id naming the test.
func sandboxID(t *testing.T) string {
	idSeq.Lock()
	idSeq.n++
	n := idSeq.n
	idSeq.Unlock()
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '-'
	}, t.Name())
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	return "ct" + strconv.Itoa(n) + "-" + strings.Trim(name, "-")
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Buffer is a bytes.Buffer safe for a writer and a reader at once: the
// Stdout or Stderr of an Exec that a test reads while the command runs.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Sh runs script with sh -c in the workspace of sb and returns its
// status, stdout and stderr; an Exec error fails the test.
func Sh(t testing.TB, sb container.Sandbox, script string) (container.ExitStatus, string, string) {
	t.Helper()
	var out, errb Buffer
	st, err := sb.Exec(ctxT(t), container.Process{Args: []string{"sh", "-c", script}, Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatalf("Exec %q: %v", script, err)
	}
	return st, out.String(), errb.String()
}

// MustSh is Sh for a script that must exit 0; it returns stdout.
func MustSh(t testing.TB, sb container.Sandbox, script string) string {
	t.Helper()
	st, out, errs := Sh(t, sb, script)
	if st.Code != 0 {
		t.Fatalf("%q: %+v, stdout %q, stderr %q", script, st, out, errs)
	}
	return out
}

func wantStatus(t *testing.T, sb container.Sandbox, want container.Status) {
	t.Helper()
	if r, ok := sb.(container.StatusReporter); ok {
		if got := r.Status(); got != want {
			t.Errorf("Status() = %v, want %v", got, want)
		}
	}
}

// ticker is a shell loop appending a line to the workspace file name
// every 20 ms: a process whose life the host can watch.
func ticker(name string) string {
	return "while :; do echo . >> " + name + "; sleep 0.02; done"
}

// growing reports whether the host file at p grows within 400 ms.
func growing(p string) bool {
	size := func() int64 {
		fi, err := os.Stat(p)
		if err != nil {
			return -1
		}
		return fi.Size()
	}
	before := size()
	time.Sleep(400 * time.Millisecond)
	return size() > before
}

// waitGrowing waits until the host file at p grows, failing after 20 s.
func waitGrowing(t *testing.T, p string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !growing(p) {
		if time.Now().After(deadline) {
			t.Fatalf("%s does not grow: its writer did not start", filepath.Base(p))
		}
	}
}

// waitStill waits until no process writes the host file at p any more,
// failing after 10 s: a survivor.
func waitStill(t *testing.T, p, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for growing(p) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: a process still writes %s", what, filepath.Base(p))
		}
	}
}

// swapWorkspace exchanges a new tree holding files into place at ws, as
// a storage backend's rollback does: made outside the volume's (sealed)
// directory, renamed over the workspace with RENAME_EXCHANGE.
func swapWorkspace(t *testing.T, ws string, files map[string]string) {
	t.Helper()
	sibling := filepath.Join(t.TempDir(), "restore")
	if err := os.Mkdir(sibling, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(sibling, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	err := guard.Unsealed(filepath.Dir(ws), func() error {
		return unix.Renameat2(unix.AT_FDCWD, sibling, unix.AT_FDCWD, ws, unix.RENAME_EXCHANGE)
	})
	if err != nil {
		t.Fatalf("exchanging the workspace: %v", err)
	}
}
