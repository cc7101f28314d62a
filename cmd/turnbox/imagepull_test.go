package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/turnbox/turnbox/container/rootfs"
)

// runTurnboxOut runs this test binary as the turnbox CLI on stateDir and
// returns its stdout and stderr apart.
func runTurnboxOut(t *testing.T, stateDir string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "TURNBOX_STATE_DIR="+stateDir, "TURNBOX_SERVER=")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

// image pull from a loopback registry records the image; image ls --json
// shows the record (and an image without one); image rm removes both.
func TestImagePullLsRm(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{Env: []string{"A=1"}, WorkingDir: "/w", User: "7"})
	if err != nil {
		t.Fatal(err)
	}
	ref := strings.TrimPrefix(srv.URL, "http://") + "/org/tool:1"
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	digest, _ := img.Digest()

	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "images", "handmade", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := runTurnboxOut(t, dir, "image", "pull", "--insecure", "example.com/tool:1"); err == nil || !strings.Contains(stderr, "loopback") {
		t.Fatalf("pull --insecure off loopback: %v, %q; want refused", err, stderr)
	}
	out, stderr, err := runTurnboxOut(t, dir, "image", "pull", "--insecure", ref)
	if err != nil {
		t.Fatalf("image pull: %v: %s", err, stderr)
	}
	if strings.TrimSpace(out) != filepath.Join(dir, "images", "tool") || !strings.Contains(stderr, "pulling tool") {
		t.Errorf("image pull printed %q, stderr %q", out, stderr)
	}
	if _, stderr, err := runTurnboxOut(t, dir, "image", "pull", "--insecure", ref); err == nil || !strings.Contains(stderr, "turnbox image rm tool") {
		t.Errorf("second pull: %v, %q; want told to rm it", err, stderr)
	}

	out, stderr, err = runTurnboxOut(t, dir, "image", "ls", "--json")
	if err != nil {
		t.Fatalf("image ls --json: %v: %s", err, stderr)
	}
	var metas []rootfs.Meta
	if err := json.Unmarshal([]byte(out), &metas); err != nil {
		t.Fatalf("image ls --json: %v: %q", err, out)
	}
	if len(metas) != 2 || metas[0].Name != "handmade" || metas[1].Name != "tool" {
		t.Fatalf("image ls --json: %+v, want handmade and tool", metas)
	}
	m := metas[1]
	if m.Source != "pull:"+ref || m.Digest != digest.String() || m.SizeBytes <= 0 || m.Created.IsZero() ||
		!slices.Equal(m.Config.Env, []string{"A=1"}) || m.Config.WorkingDir != "/w" || m.Config.User != "7" {
		t.Errorf("tool's record: %+v", m)
	}
	if metas[0].Source != "" || metas[0].Created.IsZero() {
		t.Errorf("handmade's record: %+v", metas[0])
	}
	out, _, err = runTurnboxOut(t, dir, "image", "ls")
	if err != nil || !strings.Contains(out, "SOURCE") || !strings.Contains(out, strings.TrimPrefix(digest.String(), "sha256:")[:12]) {
		t.Errorf("image ls: %v, %q", err, out)
	}

	if _, stderr, err := runTurnboxOut(t, dir, "image", "rm", "tool"); err != nil {
		t.Fatalf("image rm: %v: %s", err, stderr)
	}
	if _, err := rootfs.ReadMeta(filepath.Join(dir, "images"), "tool"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("tool's record after rm: %v", err)
	}
	out, _, _ = runTurnboxOut(t, dir, "image", "ls", "--json")
	if strings.Contains(out, `"tool"`) {
		t.Errorf("image ls after rm: %s", out)
	}
}
