package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// Golden tests: the CLI's help and output are an interface. Every
// command's help, and the human and --json output of each session command
// (in process, none runtime), must match testdata/golden byte for byte
// after normalize. Regenerate after an intended change with
//
//	go test ./cmd/turnbox -run 'TestGolden' -update
var update = flag.Bool("update", false, "rewrite testdata/golden from the current output")

// volatile output: times, durations, ids made from the clock, sizes
// that depend on the filesystem under the test's temporary directory.
var normalizers = []struct {
	re   *regexp.Regexp
	repl string
}{
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`), "<time>"},
	{regexp.MustCompile(`"duration": \d+`), `"duration": <n>`},
	{regexp.MustCompile(`cli-\d+`), "cli-<n>"},
	{regexp.MustCompile(`"pid": \d+`), `"pid": <n>`},
	{regexp.MustCompile(`"size_bytes": \d+`), `"size_bytes": <n>`},
	{regexp.MustCompile(`\d+(\.\d)? (B|KiB|MiB)(\s)`), "<size>$3"},
}

func normalize(s, stateDir string) string {
	s = strings.ReplaceAll(s, stateDir, "<state-dir>")
	for _, n := range normalizers {
		s = n.re.ReplaceAllString(s, n.repl)
	}
	return s
}

// runInProcess runs the CLI's command tree with args and stdin (nil:
// /dev/null) and returns its transcript: the command line, stdout, stderr
// and exit status.
func runInProcess(t *testing.T, stateDir string, stdin *string, args ...string) string {
	t.Helper()
	root := newRootCmd(&globals{})
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	if stdin != nil {
		root.SetIn(strings.NewReader(*stdin))
	} else {
		devnull, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		defer devnull.Close()
		root.SetIn(devnull)
	}
	root.SetArgs(args)
	status := 0
	if err := root.Execute(); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			status = ee.code
		} else {
			status = 1
			errOut.WriteString("turnbox: " + err.Error() + "\n")
		}
	}
	return normalize("$ turnbox "+strings.Join(args, " ")+"\n--- stdout\n"+out.String()+"--- stderr\n"+errOut.String()+
		"--- exit "+strconv.Itoa(status)+"\n", stateDir)
}

// checkGolden compares got with testdata/golden/name (or writes it with
// -update).
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the current output (run with -update if intended):\n--- want\n%s\n--- got\n%s", path, want, got)
	}
}

// commandPaths lists every command of the tree but cobra's own.
func commandPaths(cmd *cobra.Command) [][]string {
	var out [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		out = append(out, path)
		for _, sub := range c.Commands() {
			if sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			walk(sub, append(append([]string(nil), path...), sub.Name()))
		}
	}
	walk(cmd, nil)
	return out
}

// TestGoldenHelp: the help of every command.
func TestGoldenHelp(t *testing.T) {
	state := t.TempDir()
	t.Setenv("TURNBOX_STATE_DIR", state)
	paths := commandPaths(newRootCmd(&globals{}))
	if len(paths) < 20 {
		t.Fatalf("only %d commands found", len(paths))
	}
	for _, p := range paths {
		name := "turnbox"
		if len(p) > 0 {
			name += "_" + strings.Join(p, "_")
		}
		checkGolden(t, filepath.Join("help", name+".txt"), runInProcess(t, state, nil, append(p, "--help")...))
	}
}

// goldenSession is the session commands' script: each line is a step
// whose transcript goes into one golden file.
var goldenSession = []struct {
	name  string
	stdin *string
	args  []string
}{
	{"create", nil, []string{"session", "create", "--id", "g1", "--label", "team=a", "--label", "role=dev"}},
	{"create_json", nil, []string{"session", "create", "--id", "g2", "--json"}},
	{"exec", nil, []string{"session", "exec", "g1", "--", "echo out; echo err >&2"}},
	{"exec_no_output", nil, []string{"session", "exec", "g1", "--", "true"}},
	{"exec_exit_code", nil, []string{"session", "exec", "g1", "--", "echo failing; exit 3"}},
	{"exec_stdin", ptr("piped\n"), []string{"session", "exec", "g1", "--", "cat"}},
	{"exec_timeout", nil, []string{"session", "exec", "g1", "--timeout", "1s", "--", "echo start; sleep 10"}},
	{"exec_json", nil, []string{"session", "exec", "g1", "--json", "--", "echo j"}},
	{"exec_write_file", nil, []string{"session", "exec", "g1", "--tool", "write_file", "--input", `{"path":"a.txt","content":"hello\n"}`}},
	{"exec_read_file", nil, []string{"session", "exec", "g1", "--tool", "read_file", "--input", `{"path":"a.txt"}`}},
	{"snapshot", nil, []string{"session", "snapshot", "g1", "--name", "first"}},
	{"snapshot_json", nil, []string{"session", "snapshot", "g1", "--json"}},
	{"snapshots", nil, []string{"session", "snapshots", "g1"}},
	{"snapshots_json", nil, []string{"session", "snapshots", "g1", "--json"}},
	{"fork", nil, []string{"session", "fork", "g1@1", "--id", "g3"}},
	{"rollback", nil, []string{"session", "rollback", "g1", "g1@1"}},
	{"pause", nil, []string{"session", "pause", "g1"}},
	{"exec_paused", nil, []string{"session", "exec", "g1", "--", "true"}},
	{"resume", nil, []string{"session", "resume", "g1"}},
	{"hibernate_unsupported", nil, []string{"session", "hibernate", "g1"}},
	{"create_memory_unsupported", nil, []string{"session", "create", "--snapshot-memory"}},
	{"ls", nil, []string{"session", "ls"}},
	{"ls_json", nil, []string{"session", "ls", "--json"}},
	{"ls_label", nil, []string{"session", "ls", "--label", "team=a"}},
	{"ls_label_none", nil, []string{"session", "ls", "--label", "team=b", "--json"}},
	{"publish", nil, []string{"session", "publish", "g1", "8080"}},
	{"publish_json", nil, []string{"session", "publish", "g1", "3000", "--public", "--json"}},
	{"publish_bad", nil, []string{"session", "publish", "g1", "http"}},
	{"unpublish_missing", nil, []string{"session", "unpublish", "g1", "9"}},
	{"ports", nil, []string{"session", "ports", "g1"}},
	{"ports_json", nil, []string{"session", "ports", "g1", "--json"}},
	{"info", nil, []string{"session", "info", "g1"}},
	{"info_json", nil, []string{"session", "info", "g3", "--json"}},
	{"ls_files_json", nil, []string{"session", "ls", "g1", "--json"}},
	{"stat", nil, []string{"session", "stat", "g1", "a.txt"}},
	{"cp_out", nil, []string{"session", "cp", "g1:a.txt", "-"}},
	{"ps", nil, []string{"session", "ps", "g1"}},
	{"ps_json", nil, []string{"session", "ps", "g1", "--json"}},
	{"rm", nil, []string{"session", "rm", "g2", "g3"}},
	{"info_missing", nil, []string{"session", "info", "g2"}},
}

func ptr(s string) *string { return &s }

// TestGoldenSessionOutput runs goldenSession in process on the none
// runtime and compares each step's transcript.
func TestGoldenSessionOutput(t *testing.T) {
	state := t.TempDir()
	for _, step := range goldenSession {
		args := append([]string{"--state-dir", state, "--runtime", "none", "--log-level", "error"}, step.args...)
		got := runInProcess(t, state, step.stdin, args...)
		checkGolden(t, filepath.Join("session", step.name+".txt"), got)
	}
}
