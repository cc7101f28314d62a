package envtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/environment"
)

// Inputs a caller (or a model) controls that reach host paths, mounts, a
// runtime's or storage tool's arguments or a sandbox's environment. Each
// must fail with ErrInvalidArgument and change nothing.

// pathImages are image "names" that are host paths or climb out of the
// image store.
var pathImages = []string{
	"/", "/etc", "/tmp", "../x", "a/b", "..", ".", "./busybox", "busybox/",
	"/proc/self/root", "x\x00y", " busybox", strings.Repeat("a", environment.MaxImageNameLength+1),
}

// badIDs are session ids that are not a single safe path element.
var badIDs = []string{
	"../x", "a/b", "/", "/etc", ".", "..", "x\x00y", "-x", "a b", "a\nb", strings.Repeat("a", environment.MaxIDLength+1),
}

// badSnapshotIDs are snapshot ids that could name a path or carry bytes no
// id has.
var badSnapshotIDs = []string{
	"../x@1", "/etc/passwd", "a/b@1", "x\x00@1", "@1", "x@1/..", "s@1 ", strings.Repeat("a", environment.MaxSnapshotIDLength+1),
}

// configWith returns the suite's session config with mod applied after
// the suite's own hook, so the bad field reaches Create as written.
func (s *suite) configWith(mod func(*environment.SessionConfig)) environment.SessionConfig {
	c := s.sessionConfig()
	mod(&c)
	return c
}

// wantCreateRefused fails unless Create(c) fails with ErrInvalidArgument
// and leaves no trace: the environment stays unbound and no session with
// c's id (if it is a valid one) exists.
func (s *suite) wantCreateRefused(t *testing.T, what string, c environment.SessionConfig) {
	t.Helper()
	env := s.newEnv(t)
	ctx, cancel := s.ctx(t)
	defer cancel()
	err := env.Create(ctx, c)
	if err == nil {
		s.destroyAtEnd(t, env)
		t.Errorf("Create with %s: succeeded, want ErrInvalidArgument", what)
		return
	}
	if !errors.Is(err, environment.ErrInvalidArgument) {
		t.Errorf("Create with %s: err = %v, want ErrInvalidArgument", what, err)
	}
	if st := env.State(); st != environment.StateUnbound {
		t.Errorf("Create with %s: State() = %q after the refusal, want %q", what, st, environment.StateUnbound)
	}
	if environment.ValidateID(c.SessionID) == nil {
		if err := s.newEnv(t).AttachSession(c.SessionID); !errors.Is(err, environment.ErrSessionNotFound) {
			t.Errorf("Create with %s was refused but AttachSession(%q): err = %v, want ErrSessionNotFound", what, c.SessionID, err)
		}
	}
}

// turnboxEntry reports whether dir holds a ".turnbox" entry, which a
// runtime that set up mount points in it would have created.
func turnboxEntry(dir string) bool {
	_, err := os.Lstat(filepath.Join(dir, ".turnbox"))
	return err == nil
}

// testImagePaths: SessionConfig.Image is a name in the host's image store,
// never a path; a path is refused before anything is written, in the named
// directory or anywhere else.
func (s *suite) testImagePaths(t *testing.T) {
	rootHad := turnboxEntry("/")
	images := pathImages
	var decoy string
	if s.cfg.hostLocal {
		// A directory an attacker would like used as a root filesystem.
		var err error
		if decoy, err = os.MkdirTemp("", "envtest-image-"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(decoy) })
		images = append(images, decoy)
	}
	for _, img := range images {
		s.wantCreateRefused(t, fmt.Sprintf("Image %q", img), s.configWith(func(c *environment.SessionConfig) { c.Image = img }))
	}
	if s.cfg.hostLocal {
		if turnboxEntry(decoy) {
			t.Errorf("a refused Create wrote %s/.turnbox", decoy)
		}
		if !rootHad && turnboxEntry("/") {
			t.Errorf("a refused Create wrote /.turnbox on the host")
		}
	}
	// Forks take the same check.
	env, _ := s.session(t)
	if _, ok := env.(environment.Forker); !ok || !env.Capabilities().Snapshots {
		return
	}
	snap := s.snapshot(t, env, "")
	for _, img := range []string{"/", "../x"} {
		ctx, cancel := s.ctx(t)
		c := s.configWith(func(c *environment.SessionConfig) { c.Image = img })
		child, err := env.(environment.Forker).Fork(ctx, snap.ID, c)
		cancel()
		if err == nil {
			s.destroyAtEnd(t, child)
		}
		wantErr(t, fmt.Sprintf("Fork with Image %q", img), err, environment.ErrInvalidArgument)
	}
}

// testBadIDs: malformed session ids are refused by Create and
// AttachSession.
func (s *suite) testBadIDs(t *testing.T) {
	for _, id := range badIDs {
		s.wantCreateRefused(t, fmt.Sprintf("SessionID %q", id), s.configWith(func(c *environment.SessionConfig) { c.SessionID = id }))
		env := s.newEnv(t)
		wantErr(t, fmt.Sprintf("AttachSession(%q)", id), env.AttachSession(id), environment.ErrInvalidArgument)
		if st := env.State(); st != environment.StateUnbound {
			t.Errorf("AttachSession(%q) refused but State() = %q", id, st)
		}
	}
}

// testBadSnapshotIDs: snapshot ids that could be paths are refused by
// Create (FromSnapshot), Rollback and Fork, and change nothing.
func (s *suite) testBadSnapshotIDs(t *testing.T) {
	for _, id := range badSnapshotIDs {
		s.wantCreateRefused(t, fmt.Sprintf("FromSnapshot %q", id), s.configWith(func(c *environment.SessionConfig) { c.FromSnapshot = id }))
	}
	env, _ := s.session(t)
	if !env.Capabilities().Rollback {
		return
	}
	s.write(t, env, "f.txt", "before")
	s.snapshot(t, env, "")
	s.write(t, env, "f.txt", "after")
	for _, id := range badSnapshotIDs {
		ctx, cancel := s.ctx(t)
		wantErr(t, fmt.Sprintf("Rollback(%q)", id), env.Rollback(ctx, id), environment.ErrInvalidArgument)
		if f, ok := env.(environment.Forker); ok {
			child, err := f.Fork(ctx, id, s.sessionConfig())
			if err == nil {
				s.destroyAtEnd(t, child)
			}
			wantErr(t, fmt.Sprintf("Fork(%q)", id), err, environment.ErrInvalidArgument)
		}
		cancel()
	}
	s.wantContent(t, env, "f.txt", "after")
}

// testBadLimits: a negative or oversized output cap and a negative tool
// timeout are refused.
func (s *suite) testBadLimits(t *testing.T) {
	for what, mod := range map[string]func(*environment.SessionConfig){
		"negative MaxOutputBytes": func(c *environment.SessionConfig) { c.MaxOutputBytes = -1 },
		"huge MaxOutputBytes":     func(c *environment.SessionConfig) { c.MaxOutputBytes = environment.MaxSessionOutputBytes + 1 },
		"negative ToolTimeout":    func(c *environment.SessionConfig) { c.ToolTimeout = -time.Second },
	} {
		s.wantCreateRefused(t, what, s.configWith(mod))
	}
}

// testBadEnv: environment variables whose name has '=' or NUL, is empty or
// not a shell name, values with NUL, and too many or too large ones are
// refused.
func (s *suite) testBadEnv(t *testing.T) {
	many := map[string]string{}
	for i := 0; i <= environment.MaxEnvVars; i++ {
		many[fmt.Sprintf("V%d", i)] = "x"
	}
	cases := map[string]map[string]string{
		"name with '='":     {"A=B": "x"},
		"name with NUL":     {"A\x00B": "x"},
		"empty name":        {"": "x"},
		"name from a digit": {"1X": "x"},
		"name with a space": {"A B": "x"},
		"value with NUL":    {"A": "x\x00y"},
		"too many":          many,
		"too large":         {"BIG": strings.Repeat("x", environment.MaxEnvBytes)},
		"name too long":     {strings.Repeat("A", environment.MaxEnvKeyLength+1): "x"},
	}
	for what, env := range cases {
		s.wantCreateRefused(t, "Env "+what, s.configWith(func(c *environment.SessionConfig) { c.Env = env }))
	}
}

// testBadLabels: label keys that are empty or carry separators or NUL,
// values with control characters, and too many or too long labels are
// refused.
func (s *suite) testBadLabels(t *testing.T) {
	many := map[string]string{}
	for i := 0; i <= environment.MaxLabels; i++ {
		many[fmt.Sprintf("l%d", i)] = "x"
	}
	cases := map[string]map[string]string{
		"empty key":          {"": "x"},
		"key with NUL":       {"a\x00b": "x"},
		"key with a space":   {"a b": "x"},
		"key from a dot":     {"../x": "x"},
		"value with NUL":     {"a": "x\x00y"},
		"value with newline": {"a": "x\ny"},
		"too many":           many,
		"key too long":       {strings.Repeat("k", environment.MaxLabelKeyLength+1): "x"},
		"value too long":     {"a": strings.Repeat("v", environment.MaxLabelValueLength+1)},
	}
	for what, labels := range cases {
		s.wantCreateRefused(t, "Labels "+what, s.configWith(func(c *environment.SessionConfig) { c.Labels = labels }))
	}
}

// testOversizedInputs: tool calls past the documented bounds (command,
// write_file content, paths, tool call id) and bad snapshot names are
// refused with ErrInvalidArgument and change nothing.
func (s *suite) testOversizedInputs(t *testing.T) {
	env, _ := s.session(t)
	input := func(v any) string {
		t.Helper()
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	refused := func(what string, req environment.ToolRequest) {
		t.Helper()
		resp, err := s.do(t, env, req, nil)
		if err == nil {
			t.Errorf("%s: got a response (IsError %v, %q), want ErrInvalidArgument", what, resp.IsError, clip(resp.Content))
			return
		}
		wantErr(t, what, err, environment.ErrInvalidArgument)
	}
	refused("bash with an oversized command", s.raw(environment.ToolBash,
		input(map[string]any{"command": "touch big.txt #" + strings.Repeat("x", environment.MaxCommandLength)})))
	refused("write_file with oversized content", s.raw(environment.ToolWriteFile,
		input(map[string]any{"path": "big.txt", "content": strings.Repeat("x", environment.MaxFileContentLength+1)})))
	refused("write_file with an oversized path", s.raw(environment.ToolWriteFile,
		input(map[string]any{"path": strings.Repeat("d/", environment.MaxPathLength/2) + "big.txt", "content": "x"})))
	refused("bash with a NUL in workdir", s.raw(environment.ToolBash,
		input(map[string]any{"command": "touch big.txt", "workdir": "a\x00b"})))
	for _, id := range []string{strings.Repeat("c", environment.MaxToolCallIDLength+1), "call\x00id", "call\nid"} {
		req := s.raw(environment.ToolWriteFile, input(map[string]any{"path": "big.txt", "content": "x"}))
		req.ToolCallID = id
		refused(fmt.Sprintf("write_file with tool call id %q", clip(id)), req)
	}
	s.wantMissing(t, env, "big.txt")

	if !env.Capabilities().Snapshots {
		return
	}
	before := s.snapshotCount(t, env)
	for _, name := range []string{"a\x00b", "a\nb", strings.Repeat("n", environment.MaxSnapshotNameLength+1)} {
		ctx, cancel := s.ctx(t)
		_, err := env.CreateSnapshot(ctx, name)
		cancel()
		wantErr(t, fmt.Sprintf("CreateSnapshot(%q)", clip(name)), err, environment.ErrInvalidArgument)
	}
	if after := s.snapshotCount(t, env); after != before {
		t.Errorf("refused CreateSnapshot calls changed the snapshot count from %d to %d", before, after)
	}
}

// snapshotCount returns how many snapshots env lists (-1 if it cannot list).
func (s *suite) snapshotCount(t *testing.T, env environment.Environment) int {
	t.Helper()
	l, ok := env.(environment.SnapshotLister)
	if !ok {
		return -1
	}
	ctx, cancel := s.ctx(t)
	defer cancel()
	snaps, err := l.ListSnapshots(ctx)
	if err != nil {
		t.Fatalf("ListSnapshots: %v", err)
	}
	return len(snaps)
}
