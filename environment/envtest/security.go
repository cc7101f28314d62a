package envtest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnbox/turnbox/environment"
)

func (s *suite) securityTests() []test {
	return []test{
		{"PathEscapes", s.testPathEscapes},
		{"SymlinkEscapes", s.testSymlinkEscapes},
		{"WriteThroughSymlink", s.testWriteThroughSymlink},
		{"SymlinkRace", s.testSymlinkRace},
		{"NULInPath", s.testNULInPath},
		{"HugeOutput", s.testHugeOutput},
		{"WorkspaceSwap", s.testWorkspaceSwap},
		{"WorkspaceSealed", s.testWorkspaceSealed},
		{"WorkspaceSwapRace", s.testWorkspaceSwapRace},
		{"ImagePaths", s.testImagePaths},
		{"BadIDs", s.testBadIDs},
		{"BadSnapshotIDs", s.testBadSnapshotIDs},
		{"BadEnv", s.testBadEnv},
		{"BadLabels", s.testBadLabels},
		{"BadLimits", s.testBadLimits},
		{"OversizedInputs", s.testOversizedInputs},
		{"ForkBomb", s.testForkBombBounded},
		{"KillEverything", s.testKillEverything},
		{"AgentPipes", s.testAgentPipes},
		{"MemoryHog", s.testMemoryHog},
		{"LimitsRefused", s.testLimitsRefused},
		{"DiskFillBeside", s.testDiskFillBeside},
	}
}

// fileToolsOn returns a call of every file tool on path p. Writes and edits
// only ever target paths the test controls.
func fileToolsOn(p string) []environment.ToolParams {
	return []environment.ToolParams{
		environment.ReadFileParams{Path: p},
		environment.WriteFileParams{Path: p, Content: "envtest escaped"},
		environment.EditFileParams{Path: p, OldString: "envtest-original", NewString: "envtest escaped"},
		environment.ListFilesParams{Pattern: "**", Path: p},
		environment.GrepParams{Pattern: "envtest", Path: p},
	}
}

// wantEscape fails unless running p fails with ErrPathEscapes.
func (s *suite) wantEscape(t *testing.T, env environment.Environment, p environment.ToolParams) {
	t.Helper()
	resp, err := s.exec(t, env, p)
	if err == nil {
		t.Errorf("%s %+v: got a response (IsError %v, %q), want errors.Is(err, ErrPathEscapes)", p.ToolName(), p, resp.IsError, clip(resp.Content))
		return
	}
	if !errors.Is(err, environment.ErrPathEscapes) {
		t.Errorf("%s %+v: err = %v, want ErrPathEscapes", p.ToolName(), p, err)
	}
}

// testPathEscapes: "..", absolute paths and the like fail with
// ErrPathEscapes; paths that only pass through ".." inside the workspace
// work.
func (s *suite) testPathEscapes(t *testing.T) {
	env, _ := s.session(t)
	// The writes below must fail; if an implementation wrongly resolved
	// them, they would land in a scratch file of ours, not a system file.
	outside := "/tmp/envtest-escape-" + newID()
	for _, p := range []string{"../x", "../../etc/passwd", "/etc/passwd", "a/../../x", "sub/../../x", "..", outside} {
		for _, params := range fileToolsOn(p) {
			if _, isWrite := params.(environment.WriteFileParams); isWrite && strings.HasPrefix(p, "/etc") {
				params = environment.WriteFileParams{Path: outside + "/nested", Content: "x"}
			}
			if _, isEdit := params.(environment.EditFileParams); isEdit && strings.HasPrefix(p, "/etc") {
				continue
			}
			s.wantEscape(t, env, params)
		}
	}
	for _, wd := range []string{"..", "../..", "/", "/etc"} {
		s.wantEscape(t, env, environment.BashParams{Command: "touch escaped-workdir", Workdir: wd})
	}
	if s.cfg.hostLocal {
		if _, err := os.Stat(outside); err == nil {
			t.Errorf("%s was created outside the workspace", outside)
		}
	}
	// Lexically inside: fine.
	s.write(t, env, "sub/in.txt", "inside")
	s.wantContent(t, env, "sub/../sub/in.txt", "inside")
	s.wantContent(t, env, "./sub/in.txt", "inside")
	s.ok(t, env, environment.BashParams{Command: "true", Workdir: "sub/.."})
}

// testSymlinkEscapes: symlinks planted from bash never let file tools out
// of the workspace; symlinks that stay inside work.
func (s *suite) testSymlinkEscapes(t *testing.T) {
	env, _ := s.session(t)
	s.sh(t, env, `ln -s /etc/passwd leak && ln -s .. up && ln -s / root && mkdir -p d && ln -s ../.. d/esc && echo hi > real.txt && ln -s real.txt alias && ln -s /etc etcdir`)
	for _, p := range []string{"leak", "up/x", "root/etc/passwd", "d/esc/etc/passwd", "etcdir/passwd"} {
		s.wantEscape(t, env, environment.ReadFileParams{Path: p})
		s.wantEscape(t, env, environment.GrepParams{Pattern: "root", Path: p})
	}
	for _, p := range []string{"up", "root", "etcdir", "d/esc"} {
		s.wantEscape(t, env, environment.ListFilesParams{Pattern: "**", Path: p})
	}
	// Inside the workspace, a symlink is followed.
	s.wantContent(t, env, "alias", "hi\n")
	// Walking the workspace does not follow links out (and terminates
	// despite up -> ..).
	for _, l := range s.listFiles(t, env, environment.ListFilesParams{Pattern: "**"}) {
		for _, bad := range []string{"up/", "root/", "etcdir/", "d/esc/"} {
			if strings.HasPrefix(l, bad) {
				t.Errorf("list_files ** followed a symlink out of the workspace: %q", l)
			}
		}
	}
	resp := s.call(t, env, environment.GrepParams{Pattern: "root:"})
	for _, l := range lines(resp.Content) {
		if strings.Contains(l, "root:x:") || strings.HasPrefix(l, "leak:") || strings.HasPrefix(l, "etcdir/") || strings.HasPrefix(l, "root/") {
			t.Errorf("grep over the workspace read through a symlink to the host: %q", l)
		}
	}
}

// testWriteThroughSymlink: write_file and edit_file through a symlink to a
// host file outside the workspace fail and leave the file alone.
func (s *suite) testWriteThroughSymlink(t *testing.T) {
	env, _ := s.session(t)
	var dir, outside string
	if s.cfg.hostLocal {
		dir = t.TempDir()
		outside = filepath.Join(dir, "outside.txt")
		if err := os.WriteFile(outside, []byte("envtest-original"), 0o644); err != nil {
			t.Fatal(err)
		}
	} else {
		dir = "/tmp/envtest-" + newID()
		outside = dir + "/outside.txt"
	}
	s.sh(t, env, "ln -s "+quote(outside)+" wlink && ln -s "+quote(dir)+" dlink && ln -s wlink chain")
	for _, p := range []string{"wlink", "chain", "dlink/outside.txt"} {
		s.wantEscape(t, env, environment.WriteFileParams{Path: p, Content: "envtest escaped"})
		s.wantEscape(t, env, environment.EditFileParams{Path: p, OldString: "envtest-original", NewString: "envtest escaped"})
		s.wantEscape(t, env, environment.ReadFileParams{Path: p})
	}
	s.wantEscape(t, env, environment.WriteFileParams{Path: "dlink/new.txt", Content: "envtest escaped"})
	s.wantEscape(t, env, environment.WriteFileParams{Path: "dlink/newdir/new.txt", Content: "envtest escaped"})
	if !s.cfg.hostLocal {
		return
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "envtest-original" {
		t.Errorf("host file behind the symlink now holds %q (err %v), want it untouched", b, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("host directory behind the symlink now holds %v, want only outside.txt", names)
	}
}

// testSymlinkRace: a symlink flipped between a directory inside and one
// outside while writes go through it never lets a write out.
func (s *suite) testSymlinkRace(t *testing.T) {
	if !s.cfg.hostLocal {
		t.Skip("needs to see the host filesystem")
	}
	env, _ := s.session(t)
	dir := t.TempDir()
	s.sh(t, env, "mkdir -p inside && ln -s inside flip")
	var wg sync.WaitGroup
	wg.Go(func() {
		req, _ := environment.NewToolRequest("flipper", environment.BashParams{
			Command: `end=$(($(date +%s)+3)); while [ "$(date +%s)" -lt $end ]; do ln -sfn ` + quote(dir) + ` flip; ln -sfn inside flip; done`,
		})
		ctx, cancel := s.ctx(t)
		defer cancel()
		if resp, err := env.ExecuteTool(ctx, req, nil); err != nil || resp.IsError {
			t.Errorf("symlink flipper: %+v, %v", resp, err)
		}
	})
	deadline := time.Now().Add(3 * time.Second)
	var wrote, escaped int
	for i := 0; time.Now().Before(deadline); i++ {
		resp, err := s.exec(t, env, environment.WriteFileParams{Path: "flip/race.txt", Content: "envtest escaped"})
		switch {
		case err == nil && !resp.IsError:
			wrote++
		case errors.Is(err, environment.ErrPathEscapes):
			escaped++
		case err == nil:
			// A tool error (e.g. the link was mid-replacement) is fine.
		default:
			t.Errorf("write through a flipping symlink: %v", err)
		}
		if i%4 == 0 {
			_, _ = s.exec(t, env, environment.ReadFileParams{Path: "flip/race.txt"})
		}
	}
	wg.Wait()
	t.Logf("%d writes landed inside, %d refused as escapes", wrote, escaped)
	if _, err := os.Stat(filepath.Join(dir, "race.txt")); err == nil {
		t.Error("a write through a flipping symlink landed outside the workspace")
	}
}

// testNULInPath: NUL bytes in paths are invalid arguments.
func (s *suite) testNULInPath(t *testing.T) {
	env, _ := s.session(t)
	for _, c := range []struct{ tool, input string }{
		{environment.ToolReadFile, `{"path":"a\u0000b"}`},
		{environment.ToolWriteFile, `{"path":"a\u0000b","content":"x"}`},
		{environment.ToolEditFile, `{"path":"a\u0000b","old_string":"x","new_string":"y"}`},
		{environment.ToolListFiles, `{"pattern":"**","path":"a\u0000b"}`},
		{environment.ToolGrep, `{"pattern":"x","path":"a\u0000b"}`},
		{environment.ToolBash, `{"command":"true","workdir":"a\u0000b"}`},
	} {
		_, err := s.do(t, env, s.raw(c.tool, c.input), nil)
		wantErr(t, c.tool+" "+c.input, err, environment.ErrInvalidArgument)
	}
}

// testHugeOutput: output beyond MaxOutputBytes is cut, flagged and does not
// slow the call down much.
func (s *suite) testHugeOutput(t *testing.T) {
	const max = 64 << 10
	env, _ := s.session(t, func(c *environment.SessionConfig) { c.MaxOutputBytes = max })
	check := func(what string, resp *environment.ToolResponse, prefix string, took time.Duration) {
		t.Helper()
		if len(resp.Content) > max {
			t.Errorf("%s: %d bytes of Content, cap is %d", what, len(resp.Content), max)
		}
		if !resp.Truncated {
			t.Errorf("%s: Truncated = false", what)
		}
		if !strings.HasPrefix(resp.Content, prefix) {
			t.Errorf("%s: Content starts %q, want the beginning of the output %q", what, clip(resp.Content[:min(len(resp.Content), 40)]), prefix)
		}
		if took > 30*time.Second {
			t.Errorf("%s took %v", what, took)
		}
	}
	start := time.Now()
	resp := s.call(t, env, environment.BashParams{Command: "yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 50000000"})
	check("bash printing 50 MB", resp, "0123456789abcdefghijklmnopqrstuvwxyz\n", time.Since(start))
	if resp.ExitCode != 0 {
		t.Errorf("bash printing 50 MB: exit code %d", resp.ExitCode)
	}

	s.sh(t, env, "yes 0123456789abcdef | head -c 10000000 > big.txt")
	start = time.Now()
	resp = s.call(t, env, environment.ReadFileParams{Path: "big.txt"})
	check("read_file of 10 MB", resp, "0123456789abcdef\n", time.Since(start))
	if resp := s.ok(t, env, environment.ReadFileParams{Path: "big.txt", Offset: 3, Limit: 2}); resp.Content != "0123456789abcdef\n0123456789abcdef\n" || resp.Truncated {
		t.Errorf("read_file of 2 lines of a big file: %q truncated %v", resp.Content, resp.Truncated)
	}
	start = time.Now()
	resp = s.call(t, env, environment.GrepParams{Pattern: "abc", Path: "big.txt", MaxResults: 1 << 20})
	check("grep with 500k matches", resp, "big.txt:1:0123456789abcdef", time.Since(start))
}
