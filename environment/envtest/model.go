package envtest

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"pgregory.net/rapid"

	"github.com/turnbox/turnbox/environment"
)

// tree is the shadow model of a workspace: file contents by path and the
// set of directories.
type tree struct {
	files map[string]string
	dirs  map[string]bool
}

func (m tree) clone() tree {
	return tree{files: maps.Clone(m.files), dirs: maps.Clone(m.dirs)}
}

// addParents records every parent directory of p.
func (m tree) addParents(p string) {
	for i := range len(p) {
		if p[i] == '/' {
			m.dirs[p[:i]] = true
		}
	}
}

// remove deletes p and everything under it, as rm -rf does.
func (m tree) remove(p string) {
	delete(m.files, p)
	delete(m.dirs, p)
	for f := range m.files {
		if strings.HasPrefix(f, p+"/") {
			delete(m.files, f)
		}
	}
	for d := range m.dirs {
		if strings.HasPrefix(d, p+"/") {
			delete(m.dirs, d)
		}
	}
}

// diff describes how got differs from m, or returns "".
func (m tree) diff(got tree) string {
	var b strings.Builder
	for _, p := range slices.Sorted(maps.Keys(m.files)) {
		g, ok := got.files[p]
		switch {
		case !ok:
			fmt.Fprintf(&b, "  file %s missing (want %q)\n", p, m.files[p])
		case g != m.files[p]:
			fmt.Fprintf(&b, "  file %s = %q, want %q\n", p, g, m.files[p])
		}
	}
	for _, p := range slices.Sorted(maps.Keys(got.files)) {
		if _, ok := m.files[p]; !ok {
			fmt.Fprintf(&b, "  unexpected file %s (%q)\n", p, got.files[p])
		}
	}
	for _, d := range slices.Sorted(maps.Keys(m.dirs)) {
		if !got.dirs[d] {
			fmt.Fprintf(&b, "  directory %s missing\n", d)
		}
	}
	for _, d := range slices.Sorted(maps.Keys(got.dirs)) {
		if !m.dirs[d] {
			fmt.Fprintf(&b, "  unexpected directory %s\n", d)
		}
	}
	return b.String()
}

// observe reads the workspace through the Environment: list_files "**",
// read_file of each file, and find for the directories.
func (s *suite) observe(t tb, env environment.Environment) tree {
	t.Helper()
	m := tree{files: map[string]string{}, dirs: map[string]bool{}}
	for _, p := range s.listFiles(t, env, environment.ListFilesParams{Pattern: "**"}) {
		m.files[p] = s.read(t, env, p)
	}
	for _, d := range lines(s.sh(t, env, "find . -mindepth 1 -type d")) {
		m.dirs[strings.TrimPrefix(d, "./")] = true
	}
	return m
}

// Generators of the model test. File names start with f and directory
// names with d, so a path never names a file in one place and a directory
// in another.
var (
	genDirPath = rapid.Custom(func(t *rapid.T) string {
		n := rapid.IntRange(1, 3).Draw(t, "dirDepth")
		parts := make([]string, n)
		for i := range parts {
			parts[i] = rapid.SampledFrom([]string{"d1", "d2", "d 3"}).Draw(t, "dir")
		}
		return strings.Join(parts, "/")
	})
	genFilePath = rapid.Custom(func(t *rapid.T) string {
		name := rapid.SampledFrom([]string{"f1", "f2.txt", "f'3", ".f4"}).Draw(t, "file")
		if rapid.Bool().Draw(t, "nested") {
			return genDirPath.Draw(t, "parent") + "/" + name
		}
		return name
	})
	genContent = rapid.StringOfN(rapid.RuneFrom([]rune("ab \n\tz$'\"\\é✓")), 0, 40, -1)
)

// snapRecord is a snapshot and the model it recorded.
type snapRecord struct {
	id string
	m  tree
}

// testSnapshotModel checks snapshots and rollbacks against a shadow model
// with random operation sequences.
func (s *suite) testSnapshotModel(t *testing.T) {
	probe, _ := s.session(t)
	requireSnapshots(t, probe, true)
	// rapid runs -rapid.checks cases (100 by default), small ones first.
	// Each costs a session, so only every stride-th case runs, spread over
	// the whole range; the others pass trivially. While a failure is being
	// shrunk, every case runs.
	stride := 1
	if f := flag.Lookup("rapid.checks"); f != nil {
		if n, err := strconv.Atoi(f.Value.String()); err == nil && n > s.cfg.checks {
			stride = n / s.cfg.checks
		}
	}
	var calls, full atomic.Int32
	var failing atomic.Bool
	rapid.Check(t, func(rt *rapid.T) {
		if n := calls.Add(1); !failing.Load() && (n%int32(stride) != 0 || int(full.Load()) >= s.cfg.checks) {
			return
		}
		full.Add(1)
		defer func() {
			if r := recover(); r != nil {
				failing.Store(true)
				panic(r)
			}
			if rt.Failed() {
				failing.Store(true)
			}
		}()
		s.runModel(t, rt)
	})
	t.Logf("ran %d random operation sequences", full.Load())
}

// runModel runs one random sequence against a fresh session.
func (s *suite) runModel(ft *testing.T, t *rapid.T) {
	env, _ := s.createOn(t, s.factory(ft), s.sessionConfig())
	m := s.observe(t, env)
	initial := m.clone()
	var snaps []snapRecord
	takeSnapshot := func(id string) {
		snaps = append(snaps, snapRecord{id: id, m: m.clone()})
	}
	steps := rapid.IntRange(min(5, s.cfg.steps), s.cfg.steps).Draw(t, "steps")
	for step := range steps {
		action := rapid.SampledFrom([]string{
			"write", "write", "write", "bashwrite", "remove", "mkdir", "snapshot", "rollback", "rollback", "rollbackUnknown",
		}).Draw(t, "action")
		switch action {
		case "write":
			p, c := genFilePath.Draw(t, "path"), genContent.Draw(t, "content")
			req := s.request(t, environment.WriteFileParams{Path: p, Content: c})
			req.Snapshot = rapid.IntRange(0, 4).Draw(t, "withSnapshot") == 0
			resp, err := s.do(t, env, req, nil)
			if err != nil || resp.IsError {
				t.Fatalf("step %d: write_file %q: %+v, %v", step, p, resp, err)
			}
			m.files[p] = c
			m.addParents(p)
			if req.Snapshot {
				if resp.SnapshotID == "" {
					t.Fatalf("step %d: write_file with Snapshot returned no SnapshotID", step)
				}
				takeSnapshot(resp.SnapshotID)
			}
		case "bashwrite":
			p, c := genFilePath.Draw(t, "path"), genContent.Draw(t, "content")
			dir := "."
			if i := strings.LastIndexByte(p, '/'); i >= 0 {
				dir = p[:i]
			}
			s.sh(t, env, fmt.Sprintf("mkdir -p -- %s && printf %%s %s > %s", quote(dir), quote(c), quote(p)))
			m.files[p] = c
			m.addParents(p)
		case "remove":
			// Only what the sequence made (and two names that may not
			// exist): never what the implementation put there.
			candidates := []string{"f1", "d1/f1"}
			for _, p := range slices.Concat(slices.Sorted(maps.Keys(m.files)), slices.Sorted(maps.Keys(m.dirs))) {
				if _, ok := initial.files[p]; !ok && !initial.dirs[p] {
					candidates = append(candidates, p)
				}
			}
			p := rapid.SampledFrom(candidates).Draw(t, "removePath")
			s.sh(t, env, "rm -rf -- "+quote(p))
			m.remove(p)
		case "mkdir":
			p := genDirPath.Draw(t, "mkdirPath")
			s.sh(t, env, "mkdir -p -- "+quote(p))
			m.dirs[p] = true
			m.addParents(p)
		case "snapshot":
			takeSnapshot(s.snapshot(t, env, fmt.Sprintf("step %d", step)).ID)
		case "rollback":
			if len(snaps) == 0 {
				continue
			}
			i := rapid.IntRange(0, len(snaps)-1).Draw(t, "rollbackTo")
			s.rollback(t, env, snaps[i].id)
			m = snaps[i].m.clone()
		case "rollbackUnknown":
			ctx, cancel := s.ctx(t)
			err := env.Rollback(ctx, "unknown-"+newID())
			cancel()
			if !errors.Is(err, environment.ErrSnapshotNotFound) {
				t.Fatalf("step %d: Rollback to an unknown id: %v, want ErrSnapshotNotFound", step, err)
			}
		}
		if d := m.diff(s.observe(t, env)); d != "" {
			t.Fatalf("step %d (%s): workspace differs from the model:\n%s", step, action, d)
		}
	}
}
