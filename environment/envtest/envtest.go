package envtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/turnbox/turnbox/environment"
)

// Factory returns a new, unbound Environment each time it is called. All
// environments returned by one Factory share one host: a session created
// through one of them can be attached from another. The factory may use t
// for setup and t.Cleanup; it must not call t.Parallel.
type Factory func(t *testing.T) environment.Environment

// Option tunes the suite.
type Option func(*config)

type config struct {
	timeout     time.Duration
	checks      int
	steps       int
	hostLocal   bool
	sessionHook func(*environment.SessionConfig)
	skip        map[string]string // "Group/Test" -> why it cannot run here
}

func defaultConfig() config {
	return config{
		timeout:   60 * time.Second,
		checks:    12,
		steps:     25,
		hostLocal: true,
	}
}

// WithoutTests declares tests ("Group/Test", e.g. "Files/Race") that the
// implementation under test cannot run, and why: they are skipped with
// that reason in the test output, never silently.
func WithoutTests(reason string, names ...string) Option {
	return func(c *config) {
		if c.skip == nil {
			c.skip = map[string]string{}
		}
		for _, n := range names {
			c.skip[n] = reason
		}
	}
}

// WithTimeout bounds every single call the suite makes into the
// Environment (default one minute). A call that takes longer fails the test
// as a hang.
func WithTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.timeout = d
		}
	}
}

// WithPropertyChecks sets how many random operation sequences each
// property-based test runs against the implementation (default 12). Each
// sequence uses a fresh session.
func WithPropertyChecks(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.checks = n
		}
	}
}

// WithPropertySteps sets the maximum length of each random operation
// sequence (default 25).
func WithPropertySteps(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.steps = n
		}
	}
}

// WithRemoteHost says the environments run on a host whose filesystem the
// test process cannot see (a remote server on another machine). Tests that
// check, through the test's own filesystem, that the implementation did not
// touch a file outside the workspace are then reduced to the checks the
// Environment API allows.
func WithRemoteHost() Option {
	return func(c *config) { c.hostLocal = false }
}

// WithSessionConfig registers a function applied to every SessionConfig the
// suite passes to Create or Fork, after the suite has filled in its own
// fields (e.g. to set Image for an isolated runtime).
func WithSessionConfig(f func(*environment.SessionConfig)) Option {
	return func(c *config) { c.sessionHook = f }
}

// suite carries the factory and options through the tests.
type suite struct {
	factory Factory
	cfg     config
	calls   atomic.Int64
}

// test is one named test of the suite.
type test struct {
	name string
	fn   func(t *testing.T)
}

// Run runs the conformance suite against the environments factory returns.
// See the package documentation.
func Run(t *testing.T, factory Factory, opts ...Option) {
	t.Helper()
	s := &suite{factory: factory, cfg: defaultConfig()}
	for _, o := range opts {
		o(&s.cfg)
	}
	groups := []struct {
		name  string
		tests []test
	}{
		{"Lifecycle", s.lifecycleTests()},
		{"Capabilities", s.capabilityTests()},
		{"Tools", s.toolTests()},
		{"Snapshots", s.snapshotTests()},
		{"Concurrency", s.concurrencyTests()},
		{"Security", s.securityTests()},
		{"Root", s.rootTests()},
		{"Processes", s.processTests()},
		{"Files", s.fileTests()},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, tc := range g.tests {
				t.Run(tc.name, func(t *testing.T) {
					if why, ok := s.cfg.skip[g.name+"/"+tc.name]; ok {
						t.Skipf("declared by the implementation: %s", why)
					}
					t.Parallel()
					tc.fn(t)
				})
			}
		})
	}
}

// tb is what the helpers need from *testing.T and *rapid.T.
type tb interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	Context() context.Context
}

// ctx returns a context bounded by the suite's per-call timeout.
func (s *suite) ctx(t tb) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), s.cfg.timeout)
}

// newID returns a fresh, valid session id.
func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "envtest-" + hex.EncodeToString(b[:])
}

// sessionConfig returns a SessionConfig with a fresh id, modified by mods
// and then by the suite's hook.
func (s *suite) sessionConfig(mods ...func(*environment.SessionConfig)) environment.SessionConfig {
	c := environment.SessionConfig{SessionID: newID(), Labels: map[string]string{"envtest": "true"}}
	for _, m := range mods {
		m(&c)
	}
	if s.cfg.sessionHook != nil {
		s.cfg.sessionHook(&c)
	}
	return c
}

// newEnv returns a new unbound environment from the factory.
func (s *suite) newEnv(t *testing.T) environment.Environment {
	t.Helper()
	env := s.factory(t)
	if env == nil {
		t.Fatal("factory returned a nil Environment")
	}
	return env
}

// session creates a new session on a new environment and destroys it when
// the test ends. It returns the environment and the session id.
func (s *suite) session(t *testing.T, mods ...func(*environment.SessionConfig)) (environment.Environment, string) {
	t.Helper()
	return s.createOn(t, s.newEnv(t), s.sessionConfig(mods...))
}

// createOn binds env to a new session made from c and destroys it when the
// test ends.
func (s *suite) createOn(t tb, env environment.Environment, c environment.SessionConfig) (environment.Environment, string) {
	t.Helper()
	ctx, cancel := s.ctx(t)
	defer cancel()
	if err := env.Create(ctx, c); err != nil {
		t.Fatalf("Create(%+v): %v", c, err)
	}
	s.destroyAtEnd(t, env)
	if st := env.State(); st != environment.StateActive {
		t.Fatalf("State() after Create = %q, want %q", st, environment.StateActive)
	}
	return env, c.SessionID
}

// destroyAtEnd destroys env's session when the test ends.
func (s *suite) destroyAtEnd(t tb, env environment.Environment) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.timeout)
		defer cancel()
		if err := env.Destroy(ctx); err != nil && !errors.Is(err, environment.ErrNotActive) && !errors.Is(err, environment.ErrSessionNotFound) {
			t.Logf("cleanup: Destroy: %v", err)
		}
	})
}

// request builds a validated request with a fresh call id.
func (s *suite) request(t tb, p environment.ToolParams) environment.ToolRequest {
	t.Helper()
	req, err := environment.NewToolRequest(fmt.Sprintf("envtest-call-%d", s.calls.Add(1)), p)
	if err != nil {
		t.Fatalf("NewToolRequest(%#v): %v", p, err)
	}
	return req
}

// raw builds a request with the given tool name and literal JSON input.
func (s *suite) raw(tool, input string) environment.ToolRequest {
	return environment.ToolRequest{
		ToolCallID: fmt.Sprintf("envtest-call-%d", s.calls.Add(1)),
		ToolName:   tool,
		Input:      json.RawMessage(input),
	}
}

// do runs req, checking that it returns within the suite's timeout and that
// a response echoes the call id.
func (s *suite) do(t tb, env environment.Environment, req environment.ToolRequest, onProgress func(environment.ToolProgress)) (*environment.ToolResponse, error) {
	t.Helper()
	ctx, cancel := s.ctx(t)
	defer cancel()
	resp, err := env.ExecuteTool(ctx, req, onProgress)
	if ctx.Err() != nil && t.Context().Err() == nil {
		t.Fatalf("%s %s: did not return within %v (err %v)", req.ToolName, req.Input, s.cfg.timeout, err)
	}
	if err == nil {
		if resp == nil {
			t.Fatalf("%s %s: nil response and nil error", req.ToolName, req.Input)
		}
		if resp.ToolCallID != req.ToolCallID {
			t.Errorf("%s: response ToolCallID = %q, want %q", req.ToolName, resp.ToolCallID, req.ToolCallID)
		}
	}
	return resp, err
}

// exec runs typed parameters.
func (s *suite) exec(t tb, env environment.Environment, p environment.ToolParams) (*environment.ToolResponse, error) {
	t.Helper()
	return s.do(t, env, s.request(t, p), nil)
}

// call runs p and fails the test on a Go error.
func (s *suite) call(t tb, env environment.Environment, p environment.ToolParams) *environment.ToolResponse {
	t.Helper()
	resp, err := s.exec(t, env, p)
	if err != nil {
		t.Fatalf("%s %+v: %v", p.ToolName(), p, err)
	}
	return resp
}

// ok runs p and fails the test unless it succeeded.
func (s *suite) ok(t tb, env environment.Environment, p environment.ToolParams) *environment.ToolResponse {
	t.Helper()
	resp := s.call(t, env, p)
	if resp.IsError {
		t.Fatalf("%s %+v: IsError, exit %d, content %q", p.ToolName(), p, resp.ExitCode, clip(resp.Content))
	}
	return resp
}

// sh runs a shell command that must succeed and returns its output.
func (s *suite) sh(t tb, env environment.Environment, cmd string) string {
	t.Helper()
	return s.ok(t, env, environment.BashParams{Command: cmd}).Content
}

// write writes a file that must succeed.
func (s *suite) write(t tb, env environment.Environment, path, content string) {
	t.Helper()
	s.ok(t, env, environment.WriteFileParams{Path: path, Content: content})
}

// read reads a whole file that must exist.
func (s *suite) read(t tb, env environment.Environment, path string) string {
	t.Helper()
	resp := s.ok(t, env, environment.ReadFileParams{Path: path})
	if resp.Truncated {
		t.Fatalf("read_file %s: truncated", path)
	}
	return resp.Content
}

// wantContent fails unless path holds want.
func (s *suite) wantContent(t tb, env environment.Environment, path, want string) {
	t.Helper()
	if got := s.read(t, env, path); got != want {
		t.Fatalf("read_file %s = %q, want %q", path, clip(got), clip(want))
	}
}

// wantSeen fails unless a command inside the sandbox sees path holding
// want (or, with want == "", sees no path at all). File tools may read the
// volume from the host; this checks what the sandbox itself sees, which a
// rollback or fork that swapped the volume under a sandbox's own mount
// namespace gets wrong.
func (s *suite) wantSeen(t tb, env environment.Environment, path, want string) {
	t.Helper()
	got := s.sh(t, env, "F="+quote(path)+`; if [ -e "$F" ]; then printf 'present:'; cat "$F"; else printf absent; fi`)
	exp := "present:" + want
	if want == "" {
		exp = "absent"
	}
	if got != exp {
		t.Fatalf("inside the sandbox %s is %q, want %q", path, clip(got), clip(exp))
	}
}

// wantMissing fails unless reading path is an IsError response.
func (s *suite) wantMissing(t tb, env environment.Environment, path string) {
	t.Helper()
	resp := s.call(t, env, environment.ReadFileParams{Path: path})
	if !resp.IsError {
		t.Fatalf("read_file %s = %q, want IsError (file should not exist)", path, clip(resp.Content))
	}
}

// lines splits output into its non-empty lines.
func lines(s string) []string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if l = strings.TrimSuffix(l, "\r"); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// listFiles runs list_files and returns its lines.
func (s *suite) listFiles(t tb, env environment.Environment, p environment.ListFilesParams) []string {
	t.Helper()
	resp := s.call(t, env, p)
	if resp.IsError {
		t.Fatalf("list_files %+v: IsError: %q", p, clip(resp.Content))
	}
	if resp.Truncated {
		t.Fatalf("list_files %+v: truncated", p)
	}
	return lines(resp.Content)
}

// wantErr fails unless err matches one of targets.
func wantErr(t tb, what string, err error, targets ...error) {
	t.Helper()
	for _, target := range targets {
		if errors.Is(err, target) {
			return
		}
	}
	t.Errorf("%s: err = %v, want one of %v", what, err, targets)
}

// clip shortens s for messages.
func clip(s string) string {
	const n = 300
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("%s...(%d bytes)", s[:n], len(s))
}

// quote quotes s for sh.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// sessionID returns the id env reports, if it implements SessionIDer.
func sessionID(env environment.Environment) (string, bool) {
	if si, ok := env.(environment.SessionIDer); ok {
		return si.SessionID(), true
	}
	return "", false
}

// requireSnapshots skips the test unless env can snapshot (and roll back
// when rollback is set).
func requireSnapshots(t *testing.T, env environment.Environment, rollback bool) {
	t.Helper()
	c := env.Capabilities()
	if !c.Snapshots {
		t.Skip("Capabilities.Snapshots is false")
	}
	if rollback && !c.Rollback {
		t.Skip("Capabilities.Rollback is false")
	}
}

// snapshot takes a snapshot that must succeed.
func (s *suite) snapshot(t tb, env environment.Environment, name string) *environment.SnapshotInfo {
	t.Helper()
	ctx, cancel := s.ctx(t)
	defer cancel()
	info, err := env.CreateSnapshot(ctx, name)
	if err != nil {
		t.Fatalf("CreateSnapshot(%q): %v", name, err)
	}
	if info == nil || info.ID == "" {
		t.Fatalf("CreateSnapshot(%q) = %+v, want a snapshot with an id", name, info)
	}
	return info
}

// rollback rolls back to id and must succeed.
func (s *suite) rollback(t tb, env environment.Environment, id string) {
	t.Helper()
	ctx, cancel := s.ctx(t)
	defer cancel()
	if err := env.Rollback(ctx, id); err != nil {
		t.Fatalf("Rollback(%q): %v", id, err)
	}
}

// processGone is a shell snippet printing "dead" or "alive" for the pid in
// the file named by $1; a zombie counts as dead.
const processGone = `pid=$(cat "$F"); if kill -0 "$pid" 2>/dev/null && ! grep -qs '^State:[[:space:]]*Z' /proc/"$pid"/status; then echo alive; else echo dead; fi`

// processState reports "alive" or "dead" for the pid stored in pidFile.
func (s *suite) processState(t tb, env environment.Environment, pidFile string) string {
	t.Helper()
	return strings.TrimSpace(s.sh(t, env, "F="+quote(pidFile)+"; "+processGone))
}

// waitDead polls until the process whose pid is in pidFile is gone, or
// fails after a few seconds.
func (s *suite) waitDead(t tb, env environment.Environment, pidFile, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := s.processState(t, env, pidFile)
		if st == "dead" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid file %s) is still running", what, pidFile)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sortedCopy returns a sorted copy of ss.
func sortedCopy(ss []string) []string {
	c := slices.Clone(ss)
	slices.Sort(c)
	return c
}
