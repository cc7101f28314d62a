package envtest

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/turnbox/turnbox/environment"
)

func (s *suite) toolTests() []test {
	return []test{
		{"WriteRead", s.testWriteRead},
		{"ReadOffsetLimit", s.testReadOffsetLimit},
		{"EditFile", s.testEditFile},
		{"ListFiles", s.testListFiles},
		{"Grep", s.testGrep},
		{"MissingFiles", s.testMissingFiles},
		{"Bash", s.testBash},
		{"BashWorkdir", s.testBashWorkdir},
		{"BashEnv", s.testBashEnv},
		{"BashTimeoutKillsTree", s.testBashTimeout},
		{"SessionToolTimeout", s.testSessionToolTimeout},
		{"ContextCancel", s.testContextCancel},
		{"Streaming", s.testStreaming},
		{"StreamingSerial", s.testStreamingSerial},
		{"UnknownTool", s.testUnknownTool},
		{"BadParams", s.testBadParams},
	}
}

// testWriteRead: write_file then read_file returns the bytes written;
// parents are created; overwrites replace the whole file.
func (s *suite) testWriteRead(t *testing.T) {
	env, _ := s.session(t)
	cases := map[string]string{
		"plain.txt":            "hello\n",
		"empty.txt":            "",
		"no-newline.txt":       "no newline at end",
		"deep/er/nested/f.txt": "created parents\n",
		"unicode.txt":          "héllo wörld ✓ 日本\n",
		"crlf.txt":             "a\r\nb\r\n",
		"spaces.txt":           "  leading and trailing  \n\n\n",
		"with space/and'quote": "odd names work\n",
	}
	for p, content := range cases {
		s.write(t, env, p, content)
	}
	for p, content := range cases {
		s.wantContent(t, env, p, content)
	}
	s.write(t, env, "plain.txt", "x")
	s.wantContent(t, env, "plain.txt", "x")
	// bash sees what write_file wrote, and the other way round.
	if out := s.sh(t, env, "cat deep/er/nested/f.txt"); out != "created parents\n" {
		t.Errorf("cat of a written file = %q", out)
	}
	s.sh(t, env, "printf 'from bash\\n' > bash.txt")
	s.wantContent(t, env, "bash.txt", "from bash\n")
	// Writing over a directory fails as a tool error.
	resp := s.call(t, env, environment.WriteFileParams{Path: "deep/er", Content: "x"})
	if !resp.IsError {
		t.Errorf("write_file over a directory: IsError = false, content %q", resp.Content)
	}
	s.wantContent(t, env, "deep/er/nested/f.txt", "created parents\n")
}

// testReadOffsetLimit: offset (from 1) and limit select lines.
func (s *suite) testReadOffsetLimit(t *testing.T) {
	env, _ := s.session(t)
	s.write(t, env, "lines.txt", "l1\nl2\nl3\nl4\nl5\n")
	s.write(t, env, "open.txt", "x\ny")
	cases := []struct {
		path          string
		offset, limit int
		want          string
	}{
		{"lines.txt", 0, 0, "l1\nl2\nl3\nl4\nl5\n"},
		{"lines.txt", 1, 0, "l1\nl2\nl3\nl4\nl5\n"},
		{"lines.txt", 2, 2, "l2\nl3\n"},
		{"lines.txt", 4, 0, "l4\nl5\n"},
		{"lines.txt", 0, 1, "l1\n"},
		{"lines.txt", 5, 10, "l5\n"},
		{"lines.txt", 3, 1, "l3\n"},
		{"open.txt", 2, 0, "y"},
		{"open.txt", 1, 1, "x\n"},
	}
	for _, c := range cases {
		resp := s.ok(t, env, environment.ReadFileParams{Path: c.path, Offset: c.offset, Limit: c.limit})
		if resp.Content != c.want {
			t.Errorf("read_file %s offset %d limit %d = %q, want %q", c.path, c.offset, c.limit, resp.Content, c.want)
		}
		if resp.Truncated {
			t.Errorf("read_file %s offset %d limit %d: Truncated set", c.path, c.offset, c.limit)
		}
	}
	// Past the end: no lines (an error response is acceptable too).
	resp := s.call(t, env, environment.ReadFileParams{Path: "lines.txt", Offset: 50})
	if !resp.IsError && resp.Content != "" {
		t.Errorf("read_file offset past the end = %q, want no lines", resp.Content)
	}
}

// testEditFile: exactly-once replacement, ambiguity and absence are tool
// errors that leave the file unchanged, replace_all replaces all.
func (s *suite) testEditFile(t *testing.T) {
	env, _ := s.session(t)
	const orig = "foo bar foo baz\nline two\n"
	s.write(t, env, "e.txt", orig)

	resp := s.call(t, env, environment.EditFileParams{Path: "e.txt", OldString: "foo", NewString: "X"})
	if !resp.IsError {
		t.Errorf("ambiguous edit: IsError = false (content %q)", resp.Content)
	}
	s.wantContent(t, env, "e.txt", orig)

	resp = s.call(t, env, environment.EditFileParams{Path: "e.txt", OldString: "nowhere", NewString: "X"})
	if !resp.IsError {
		t.Errorf("edit of an absent string: IsError = false (content %q)", resp.Content)
	}
	s.wantContent(t, env, "e.txt", orig)

	s.ok(t, env, environment.EditFileParams{Path: "e.txt", OldString: "bar", NewString: "BAR"})
	s.wantContent(t, env, "e.txt", "foo BAR foo baz\nline two\n")

	s.ok(t, env, environment.EditFileParams{Path: "e.txt", OldString: "foo", NewString: "qux", ReplaceAll: true})
	s.wantContent(t, env, "e.txt", "qux BAR qux baz\nline two\n")

	s.ok(t, env, environment.EditFileParams{Path: "e.txt", OldString: "baz\nline", NewString: "joined"})
	s.wantContent(t, env, "e.txt", "qux BAR qux joined two\n")

	s.ok(t, env, environment.EditFileParams{Path: "e.txt", OldString: " two", NewString: ""})
	s.wantContent(t, env, "e.txt", "qux BAR qux joined\n")

	// replace_all with a single occurrence is fine too.
	s.ok(t, env, environment.EditFileParams{Path: "e.txt", OldString: "BAR", NewString: "bar", ReplaceAll: true})
	s.wantContent(t, env, "e.txt", "qux bar qux joined\n")
}

// testListFiles: globs with ** and base-name patterns; sorted, relative to
// the workspace root, one per line, directories not listed.
func (s *suite) testListFiles(t *testing.T) {
	env, _ := s.session(t)
	files := []string{"a.txt", "b.go", "sub/c.txt", "sub/deep/d.txt", "sub/e.go", "other/f.md"}
	for _, f := range files {
		s.write(t, env, "lf/"+f, f)
	}
	s.sh(t, env, "mkdir -p lf/emptydir")
	prefixed := func(names ...string) []string {
		out := make([]string, len(names))
		for i, n := range names {
			out[i] = "lf/" + n
		}
		return out
	}
	cases := []struct {
		p    environment.ListFilesParams
		want []string
	}{
		{environment.ListFilesParams{Pattern: "**", Path: "lf"}, prefixed("a.txt", "b.go", "other/f.md", "sub/c.txt", "sub/deep/d.txt", "sub/e.go")},
		{environment.ListFilesParams{Pattern: "*.txt", Path: "lf"}, prefixed("a.txt", "sub/c.txt", "sub/deep/d.txt")},
		{environment.ListFilesParams{Pattern: "**/*.go", Path: "lf"}, prefixed("b.go", "sub/e.go")},
		{environment.ListFilesParams{Pattern: "*.txt", Path: "lf/sub"}, prefixed("sub/c.txt", "sub/deep/d.txt")},
		{environment.ListFilesParams{Pattern: "**", Path: "lf/sub"}, prefixed("sub/c.txt", "sub/deep/d.txt", "sub/e.go")},
		{environment.ListFilesParams{Pattern: "lf/sub/*.txt"}, prefixed("sub/c.txt")},
		{environment.ListFilesParams{Pattern: "lf/**/d.txt"}, prefixed("sub/deep/d.txt")},
		{environment.ListFilesParams{Pattern: "*.md"}, prefixed("other/f.md")},
	}
	for _, c := range cases {
		got := s.listFiles(t, env, c.p)
		if !slices.Equal(got, c.want) {
			t.Errorf("list_files %+v =\n%q\nwant (sorted, relative to the workspace root)\n%q", c.p, got, c.want)
		}
	}
	// No match: an empty listing. The output is machine-readable: every
	// line is a path, so a message would read as a file of that name.
	resp := s.call(t, env, environment.ListFilesParams{Pattern: "*.nothing", Path: "lf"})
	if resp.Content != "" {
		t.Errorf("list_files with no match: Content %q, want empty (every line of a listing is a path)", resp.Content)
	}
}

// grepLine matches one "path:line:text" result.
var grepLine = regexp.MustCompile(`^([^:]+):([0-9]+):(.*)$`)

// grepResults runs grep and returns its result lines, failing on lines that
// are not results.
func (s *suite) grepResults(t *testing.T, env environment.Environment, p environment.GrepParams) []string {
	t.Helper()
	resp := s.call(t, env, p)
	var out []string
	for _, l := range lines(resp.Content) {
		if grepLine.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

// testGrep: path:line:text output, ignore_case, glob filter, max_results.
func (s *suite) testGrep(t *testing.T) {
	env, _ := s.session(t)
	s.write(t, env, "g/a.go", "package a\nfunc Foo() {}\n// foo bar\n")
	s.write(t, env, "g/b.txt", "FOO\nnothing\nfoo: colon: text\n")
	s.write(t, env, "g/sub/c.go", "foo\n")
	s.write(t, env, "elsewhere.txt", "foo outside g\n")
	cases := []struct {
		p    environment.GrepParams
		want []string
	}{
		{environment.GrepParams{Pattern: "foo", Path: "g"}, []string{"g/a.go:3:// foo bar", "g/b.txt:3:foo: colon: text", "g/sub/c.go:1:foo"}},
		{environment.GrepParams{Pattern: "foo", Path: "g", IgnoreCase: true}, []string{"g/a.go:2:func Foo() {}", "g/a.go:3:// foo bar", "g/b.txt:1:FOO", "g/b.txt:3:foo: colon: text", "g/sub/c.go:1:foo"}},
		{environment.GrepParams{Pattern: "foo", Path: "g", Glob: "*.go"}, []string{"g/a.go:3:// foo bar", "g/sub/c.go:1:foo"}},
		{environment.GrepParams{Pattern: "colon", Path: "g/b.txt"}, []string{"g/b.txt:3:foo: colon: text"}},
		{environment.GrepParams{Pattern: "^fo+$", Path: "g"}, []string{"g/sub/c.go:1:foo"}},
		{environment.GrepParams{Pattern: "outside"}, []string{"elsewhere.txt:1:foo outside g"}},
		{environment.GrepParams{Pattern: "no such text anywhere"}, nil},
	}
	for _, c := range cases {
		got := sortedCopy(s.grepResults(t, env, c.p))
		if !slices.Equal(got, c.want) {
			t.Errorf("grep %+v =\n%q\nwant\n%q", c.p, got, c.want)
		}
	}
	all := []string{"g/a.go:2:func Foo() {}", "g/a.go:3:// foo bar", "g/b.txt:1:FOO", "g/b.txt:3:foo: colon: text", "g/sub/c.go:1:foo"}
	for _, max := range []int{1, 2} {
		got := s.grepResults(t, env, environment.GrepParams{Pattern: "foo", Path: "g", IgnoreCase: true, MaxResults: max})
		if len(got) != max {
			t.Errorf("grep max_results %d returned %d results: %q", max, len(got), got)
		}
		for _, l := range got {
			if !slices.Contains(all, l) {
				t.Errorf("grep max_results %d returned %q, not a match", max, l)
			}
		}
	}
}

// testMissingFiles: file tools on missing files are tool errors, not Go
// errors.
func (s *suite) testMissingFiles(t *testing.T) {
	env, _ := s.session(t)
	s.sh(t, env, "mkdir -p adir")
	for _, p := range []environment.ToolParams{
		environment.ReadFileParams{Path: "missing.txt"},
		environment.ReadFileParams{Path: "missing/deeper.txt"},
		environment.ReadFileParams{Path: "adir"},
		environment.EditFileParams{Path: "missing.txt", OldString: "a", NewString: "b"},
	} {
		resp, err := s.exec(t, env, p)
		if err != nil {
			t.Errorf("%s %+v: Go error %v, want an IsError response", p.ToolName(), p, err)
			continue
		}
		if !resp.IsError {
			t.Errorf("%s %+v: IsError = false, content %q", p.ToolName(), p, resp.Content)
		}
	}
	for _, p := range []environment.ToolParams{
		environment.GrepParams{Pattern: "x", Path: "missing"},
		environment.ListFilesParams{Pattern: "**", Path: "missing"},
	} {
		if _, err := s.exec(t, env, p); err != nil {
			t.Errorf("%s %+v: Go error %v, want a response", p.ToolName(), p, err)
		}
	}
	// edit_file does not create the file.
	s.wantMissing(t, env, "missing.txt")
}

// testBash: exit codes, output of both streams in order, stdin closed,
// duration.
func (s *suite) testBash(t *testing.T) {
	env, _ := s.session(t)
	resp := s.call(t, env, environment.BashParams{Command: "echo out; echo err >&2; exit 3"})
	if resp.ExitCode != 3 || !resp.IsError {
		t.Errorf("exit 3: ExitCode %d IsError %v", resp.ExitCode, resp.IsError)
	}
	if !strings.Contains(resp.Content, "out\n") || !strings.Contains(resp.Content, "err\n") {
		t.Errorf("exit 3: Content %q, want both out and err", resp.Content)
	}
	resp = s.call(t, env, environment.BashParams{Command: "true"})
	if resp.ExitCode != 0 || resp.IsError {
		t.Errorf("true: ExitCode %d IsError %v", resp.ExitCode, resp.IsError)
	}
	resp = s.call(t, env, environment.BashParams{Command: "echo 1; sleep 0.1; echo 2 >&2; sleep 0.1; echo 3"})
	if resp.Content != "1\n2\n3\n" {
		t.Errorf("interleaved streams: Content %q, want %q", resp.Content, "1\n2\n3\n")
	}
	// stdin is not the test's: cat returns at once.
	resp = s.call(t, env, environment.BashParams{Command: "cat", TimeoutMS: 10000})
	if resp.TimedOut || resp.IsError || resp.Content != "" {
		t.Errorf("cat with no input: %+v, want an immediate empty success (stdin must be empty)", resp)
	}
	start := time.Now()
	resp = s.call(t, env, environment.BashParams{Command: "sleep 0.3"})
	if resp.Duration < 250*time.Millisecond || resp.Duration > time.Since(start)+time.Second {
		t.Errorf("sleep 0.3: Duration %v", resp.Duration)
	}
	// The command runs in the workspace root.
	s.sh(t, env, "echo here > at-root.txt")
	s.wantContent(t, env, "at-root.txt", "here\n")
	// A missing command is a tool error.
	resp = s.call(t, env, environment.BashParams{Command: "no-such-command-envtest"})
	if !resp.IsError || resp.ExitCode == 0 {
		t.Errorf("missing command: ExitCode %d IsError %v", resp.ExitCode, resp.IsError)
	}
}

// testBashWorkdir: workdir is relative to the workspace root.
func (s *suite) testBashWorkdir(t *testing.T) {
	env, _ := s.session(t)
	s.sh(t, env, "mkdir -p sub/dir")
	resp := s.ok(t, env, environment.BashParams{Command: "pwd; touch made-here", Workdir: "sub/dir"})
	if !strings.HasSuffix(strings.TrimSpace(resp.Content), "/sub/dir") {
		t.Errorf("pwd in workdir sub/dir = %q", resp.Content)
	}
	s.wantContent(t, env, "sub/dir/made-here", "")
	resp = s.call(t, env, environment.BashParams{Command: "true", Workdir: "no/such/dir"})
	if !resp.IsError {
		t.Errorf("missing workdir: IsError = false")
	}
}

// testBashEnv: SessionConfig.Env reaches commands.
func (s *suite) testBashEnv(t *testing.T) {
	env, _ := s.session(t, func(c *environment.SessionConfig) {
		c.Env = map[string]string{"ENVTEST_VAR": "hello world", "ENVTEST_OTHER": "a=b"}
	})
	if out := s.sh(t, env, `printf '%s|%s' "$ENVTEST_VAR" "$ENVTEST_OTHER"`); out != "hello world|a=b" {
		t.Errorf("env = %q, want %q", out, "hello world|a=b")
	}
}

// testBashTimeout: timeout_ms kills the whole process tree, background
// children included, and the call returns promptly.
func (s *suite) testBashTimeout(t *testing.T) {
	env, _ := s.session(t)
	start := time.Now()
	resp := s.call(t, env, environment.BashParams{
		Command:   "echo $$ > main.pid; sleep 100 & echo $! > bg.pid; sleep 100; echo never",
		TimeoutMS: 500,
	})
	elapsed := time.Since(start)
	if elapsed > 10*time.Second {
		t.Errorf("call with timeout_ms 500 took %v", elapsed)
	}
	if !resp.TimedOut || !resp.IsError {
		t.Errorf("TimedOut %v IsError %v, want both true", resp.TimedOut, resp.IsError)
	}
	if strings.Contains(resp.Content, "never") {
		t.Errorf("Content %q: the command went on after the timeout", resp.Content)
	}
	s.waitDead(t, env, "main.pid", "the timed-out shell")
	s.waitDead(t, env, "bg.pid", "the timed-out shell's background child")
	if out := s.sh(t, env, "echo after"); out != "after\n" {
		t.Errorf("bash after a timeout = %q", out)
	}
}

// testSessionToolTimeout: SessionConfig.ToolTimeout bounds calls without
// timeout_ms.
func (s *suite) testSessionToolTimeout(t *testing.T) {
	env, _ := s.session(t, func(c *environment.SessionConfig) { c.ToolTimeout = time.Second })
	start := time.Now()
	resp := s.call(t, env, environment.BashParams{Command: "sleep 60"})
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("sleep 60 with ToolTimeout 1s took %v", d)
	}
	if !resp.TimedOut || !resp.IsError {
		t.Errorf("TimedOut %v IsError %v, want both true", resp.TimedOut, resp.IsError)
	}
}

// testContextCancel: canceling the context stops the call with the
// context's error; the session stays usable.
func (s *suite) testContextCancel(t *testing.T) {
	env, _ := s.session(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := env.ExecuteTool(ctx, s.request(t, environment.BashParams{Command: "echo x > pre-canceled.txt"}), nil)
	wantErr(t, "ExecuteTool with a canceled context", err, context.Canceled)

	ctx, cancel = context.WithCancel(t.Context())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	_, err = env.ExecuteTool(ctx, s.request(t, environment.BashParams{Command: "sleep 60"}), nil)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("canceled sleep 60 returned after %v", d)
	}
	wantErr(t, "ExecuteTool canceled while running", err, context.Canceled)
	if out := s.sh(t, env, "echo ok"); out != "ok\n" {
		t.Errorf("bash after cancel = %q", out)
	}
}

// progressLog records progress callbacks and checks they never overlap.
type progressLog struct {
	mu      sync.Mutex
	events  []progressEvent
	inside  atomic.Int32
	overlap atomic.Bool
	closed  atomic.Bool
	late    atomic.Int32
}

type progressEvent struct {
	at time.Time
	p  environment.ToolProgress
}

func (l *progressLog) record(p environment.ToolProgress) {
	if l.inside.Add(1) != 1 {
		l.overlap.Store(true)
	}
	defer l.inside.Add(-1)
	if l.closed.Load() {
		l.late.Add(1)
	}
	p.Data = append([]byte(nil), p.Data...)
	l.mu.Lock()
	l.events = append(l.events, progressEvent{time.Now(), p})
	l.mu.Unlock()
	time.Sleep(time.Millisecond) // widen the window for overlaps
}

func (l *progressLog) stream(name string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, e := range l.events {
		if e.p.Stream == name {
			b.Write(e.p.Data)
		}
	}
	return b.String()
}

// testStreaming: output arrives through onProgress while the command runs.
func (s *suite) testStreaming(t *testing.T) {
	env, _ := s.session(t)
	if !env.Capabilities().StreamingProgress {
		t.Skip("Capabilities.StreamingProgress is false")
	}
	var log progressLog
	req := s.request(t, environment.BashParams{Command: "echo a; sleep 1; echo b; echo c >&2"})
	resp, err := s.do(t, env, req, log.record)
	done := time.Now()
	log.closed.Store(true)
	if err != nil {
		t.Fatal(err)
	}
	log.mu.Lock()
	events := slices.Clone(log.events)
	log.mu.Unlock()
	if len(events) == 0 {
		t.Fatal("onProgress was never called")
	}
	if lead := done.Sub(events[0].at); lead < 500*time.Millisecond {
		t.Errorf("first chunk arrived %v before the response; want it before the 1s sleep ended (streaming, not buffered)", lead)
	}
	for _, e := range events {
		if e.p.ToolCallID != req.ToolCallID {
			t.Errorf("progress ToolCallID %q, want %q", e.p.ToolCallID, req.ToolCallID)
		}
		if e.p.Stream != environment.StreamStdout && e.p.Stream != environment.StreamStderr {
			t.Errorf("progress Stream %q", e.p.Stream)
		}
	}
	if got := log.stream(environment.StreamStdout); got != "a\nb\n" {
		t.Errorf("streamed stdout %q, want %q", got, "a\nb\n")
	}
	if got := log.stream(environment.StreamStderr); got != "c\n" {
		t.Errorf("streamed stderr %q, want %q", got, "c\n")
	}
	// b and c go to different pipes microseconds apart: either order.
	if resp.Content != "a\nb\nc\n" && resp.Content != "a\nc\nb\n" {
		t.Errorf("Content %q, want %q", resp.Content, "a\nb\nc\n")
	}
	time.Sleep(200 * time.Millisecond)
	if n := log.late.Load(); n > 0 {
		t.Errorf("onProgress called %d times after ExecuteTool returned", n)
	}
}

// testStreamingSerial: onProgress is never called concurrently with itself,
// and each stream's data arrives in order.
func (s *suite) testStreamingSerial(t *testing.T) {
	env, _ := s.session(t)
	if !env.Capabilities().StreamingProgress {
		t.Skip("Capabilities.StreamingProgress is false")
	}
	var log progressLog
	var wantOut, wantErr strings.Builder
	for i := range 300 {
		wantOut.WriteString("o" + strconv.Itoa(i) + "\n")
		wantErr.WriteString("e" + strconv.Itoa(i) + "\n")
	}
	resp, err := s.do(t, env, s.request(t, environment.BashParams{Command: `i=0; while [ $i -lt 300 ]; do echo o$i; echo e$i >&2; i=$((i+1)); done`}), log.record)
	if err != nil || resp.IsError {
		t.Fatalf("bash: %+v, %v", resp, err)
	}
	if log.overlap.Load() {
		t.Error("onProgress was called concurrently with itself")
	}
	if got := log.stream(environment.StreamStdout); got != wantOut.String() {
		t.Errorf("streamed stdout out of order or incomplete: %q", clip(got))
	}
	if got := log.stream(environment.StreamStderr); got != wantErr.String() {
		t.Errorf("streamed stderr out of order or incomplete: %q", clip(got))
	}
}

// testUnknownTool: names outside the catalogue give ErrUnknownTool.
func (s *suite) testUnknownTool(t *testing.T) {
	env, _ := s.session(t)
	for _, name := range []string{"no_such_tool", "", "Bash"} {
		_, err := s.do(t, env, s.raw(name, `{"command":"true"}`), nil)
		wantErr(t, "tool "+name, err, environment.ErrUnknownTool)
	}
}

// testBadParams: malformed input gives ErrInvalidArgument and runs nothing.
func (s *suite) testBadParams(t *testing.T) {
	env, _ := s.session(t)
	cases := []struct{ tool, input string }{
		{environment.ToolBash, `{"command":5}`},
		{environment.ToolBash, `{"command":"touch ran.txt","bogus":1}`},
		{environment.ToolBash, `{"command":"touch ran.txt","timeout_ms":-1}`},
		{environment.ToolBash, `["touch ran.txt"]`},
		{environment.ToolBash, `not json`},
		{environment.ToolBash, `{}`},
		{environment.ToolWriteFile, `{"path":"ran.txt"}`},
		{environment.ToolWriteFile, `{"path":"ran\u0000.txt","content":"x"}`},
		{environment.ToolReadFile, `{"path":"x","offset":"1"}`},
		{environment.ToolReadFile, `{"path":"x\u0000y"}`},
		{environment.ToolEditFile, `{"path":"x","old_string":"","new_string":"y"}`},
		{environment.ToolListFiles, `{"pattern":"["}`},
		{environment.ToolGrep, `{"pattern":"(unclosed"}`},
		{environment.ToolGrep, `{"pattern":"a","glob":"[","path":"."}`},
	}
	for _, c := range cases {
		_, err := s.do(t, env, s.raw(c.tool, c.input), nil)
		wantErr(t, c.tool+" "+c.input, err, environment.ErrInvalidArgument)
		if errors.Is(err, environment.ErrUnknownTool) {
			t.Errorf("%s %s: ErrUnknownTool for a known tool", c.tool, c.input)
		}
	}
	s.wantMissing(t, env, "ran.txt")
}
