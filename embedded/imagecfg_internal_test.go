package embedded

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/environment"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// An image's ENV keeps valid entries (the last of a repeated key), skips
// bad ones and the host's variables, and keeps what fits in a session's
// env bounds.
func TestImageEnv(t *testing.T) {
	got := imageEnv([]string{"A=1", "noequals", "1X=y", "=v", "PWD=/", "TURNBOX_EXEC_ID=1", "N=a\x00b", "A=2", "B=x=y", "E="}, discard)
	if want := []string{"A=2", "B=x=y", "E="}; !slices.Equal(got, want) {
		t.Errorf("imageEnv = %q, want %q", got, want)
	}
	var many []string
	for i := range 2 * environment.MaxEnvVars {
		many = append(many, fmt.Sprintf("V%d=1", i))
	}
	if got := imageEnv(many, discard); len(got) != environment.MaxEnvVars || got[0] != "V0=1" {
		t.Errorf("%d entries: kept %d starting %q", len(many), len(got), got[:1])
	}
	big := strings.Repeat("x", environment.MaxEnvBytes)
	got = imageEnv([]string{"BIG=" + big, "SMALL=1", "HALF=" + big[:environment.MaxEnvBytes/2], "HALF2=" + big[:environment.MaxEnvBytes/2]}, discard)
	if want := []string{"SMALL=1", "HALF=" + big[:environment.MaxEnvBytes/2]}; !slices.Equal(got, want) {
		t.Errorf("oversized env: kept %d entries", len(got))
	}
}

// WORKDIR must be absolute (cleaned); USER a name, uid or uid:gid.
func TestImageWorkDirUser(t *testing.T) {
	for in, want := range map[string]string{"": "", "/srv/app/": "/srv/app", "/a/../../etc": "/etc", "../../etc": "", "srv": "", "/a\x00b": ""} {
		if got := imageWorkDir(in, discard); got != want {
			t.Errorf("imageWorkDir(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"": "", "user": "user", "1000": "1000", "1000:1000": "1000:1000", "app:staff": "app:staff",
		"../x": "", "a b": "", "a\n": "", ":0": "", "0:": "", strings.Repeat("u", maxImageUserBytes+1): ""} {
		if got := imageUser(in, discard); got != want {
			t.Errorf("imageUser(%q) = %q, want %q", in, got, want)
		}
	}
}

// makeWorkDir creates a missing WORKDIR in the tree, resolving links as
// the sandbox would (inside the tree), and never writes outside it.
func TestMakeWorkDir(t *testing.T) {
	host := t.TempDir()
	tree := t.TempDir()
	for link, target := range map[string]string{"abs": host, "up": "../../../..", "file": "etc/passwd", "inside": "/real"} {
		if err := os.Symlink(target, filepath.Join(tree, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(tree, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "etc", "passwd"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := unix.Open(tree, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(root)
	for dir, made := range map[string]string{
		"/srv/app": "srv/app", "/": "", "/up/x": "x", "/etc": "etc",
	} {
		if err := makeWorkDir(root, dir); err != nil {
			t.Errorf("makeWorkDir(%q): %v", dir, err)
		}
		if fi, err := os.Lstat(filepath.Join(tree, made)); made != "" && (err != nil || !fi.IsDir()) {
			t.Errorf("makeWorkDir(%q): %s not a directory: %v", dir, made, err)
		}
	}
	// /inside is a link to /real, missing: it stays a dangling link.
	for _, dir := range []string{"/abs/app", "/file/x", "/inside/y"} {
		if err := makeWorkDir(root, dir); err == nil {
			t.Errorf("makeWorkDir(%q) succeeded", dir)
		}
	}
	if ents, _ := os.ReadDir(host); len(ents) != 0 {
		t.Errorf("makeWorkDir wrote outside the tree: %v", ents)
	}
}
