package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/internal/regtest"
)

// runRaw runs the CLI's command tree in process with args and returns
// its stdout, stderr and exit status, not normalized.
func runRaw(args ...string) (string, string, string) {
	root := newRootCmd(&globals{})
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(""))
	root.SetArgs(args)
	exit := "0"
	if err := root.Execute(); err != nil {
		exit = "1"
		errOut.WriteString("turnbox: " + err.Error() + "\n")
	}
	return out.String(), errOut.String(), exit
}

// image ls, pull, rm (--json) and prune reach the server's host with
// --server: the CLI's own state dir stays empty; rm of an image in use
// exits non-zero with the error; a replaced image's directory is freed
// by prune.
func TestImageCommandsThroughServer(t *testing.T) {
	const token = "image-token"
	host, url := serveHost(t, token)
	reg := regtest.Start(t)
	ref := reg + "/org/tool:1"
	regtest.Push(t, ref, regtest.Random(t, 4096, 2))
	local := t.TempDir()
	run := func(args ...string) (string, string, string) {
		t.Helper()
		a := append([]string{"--state-dir", local, "--log-level", "error", "image", args[0], "--server", url, "--token", token}, args[1:]...)
		return runRaw(a...)
	}
	if out, errOut, exit := run("pull", "--insecure", ref); exit != "0" || !strings.Contains(errOut, "pulled "+ref+" as tool") {
		t.Fatalf("pull: exit %s %q %q", exit, out, errOut)
	}
	if _, err := host.Image(t.Context(), "tool"); err != nil {
		t.Fatalf("the server's host has no image tool: %v", err)
	}
	out, errOut, exit := run("ls", "--json")
	var metas []rootfs.Meta
	if exit != "0" || json.Unmarshal([]byte(out), &metas) != nil || len(metas) != 1 || metas[0].Name != "tool" || metas[0].Source != "pull:"+ref {
		t.Fatalf("ls --json: exit %s %q %q", exit, out, errOut)
	}
	if out, _, exit := run("ls"); exit != "0" || !strings.Contains(out, "tool") {
		t.Errorf("ls: exit %s %q", exit, out)
	}
	if _, errOut, exit := run("pull", "--insecure", ref); exit == "0" || !strings.Contains(errOut, "--replace") {
		t.Errorf("second pull: exit %s %q; want refused, suggesting --replace", exit, errOut)
	}
	regtest.Push(t, ref, regtest.Random(t, 4096, 2))
	if _, errOut, exit := run("pull", "--insecure", "--replace", ref); exit != "0" {
		t.Fatalf("pull --replace: exit %s %q", exit, errOut)
	}

	// An image saved from a snapshot names tool as its parent.
	imagesDir := host.ImageStore().Dir
	if err := rootfs.WriteMeta(imagesDir, rootfs.Meta{Name: "child", Volume: "image.child.x", Parent: "tool", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if out, errOut, exit := run("rm", "--json", "tool"); exit != "1" || out != "" || !strings.Contains(errOut, "child") || !strings.Contains(errOut, "in use") {
		t.Errorf("rm --json of an image in use: exit %s %q %q; want 1 and the error", exit, out, errOut)
	}
	if _, _, exit := run("rm", "child"); exit != "0" {
		t.Errorf("rm child: exit %s", exit)
	}
	out, errOut, exit = run("rm", "--json", "tool")
	var removed rootfs.Meta
	if exit != "0" || json.Unmarshal([]byte(out), &removed) != nil || removed.Name != "tool" || removed.Digest == "" {
		t.Fatalf("rm --json: exit %s %q %q", exit, out, errOut)
	}
	if _, errOut, exit := run("rm", "tool"); exit != "1" || !strings.Contains(errOut, "not found") {
		t.Errorf("rm of a removed image: exit %s %q", exit, errOut)
	}
	out, errOut, exit = run("prune", "--json")
	var rep pruneView
	if exit != "0" || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Removed) != 1 || !strings.HasPrefix(rep.Removed[0], ".trash/tool.") || rep.FreedBytes <= 0 {
		t.Fatalf("prune --json: exit %s %q %q; want the replaced directory", exit, out, errOut)
	}
	if left, _ := os.ReadDir(filepath.Join(imagesDir, ".trash")); len(left) != 0 {
		t.Errorf("trash after prune: %v", left)
	}
	if ents, _ := os.ReadDir(local); len(ents) != 0 {
		t.Errorf("the CLI wrote its own state dir through a server: %v", ents)
	}
}

// image rm --json in local mode prints the removed image's record, and
// image prune in local mode opens the host and prunes.
func TestImageRmJSONLocal(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "images", "mybox", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "images", "mybox", "bin", "x"), []byte("12345"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runTurnboxOut(t, dir, "image", "rm", "--json", "mybox")
	var m rootfs.Meta
	if err != nil || json.Unmarshal([]byte(out), &m) != nil || m.Name != "mybox" || m.SizeBytes != 5 {
		t.Fatalf("image rm --json: %v %q %q", err, out, stderr)
	}
	if _, err := os.Lstat(filepath.Join(dir, "images", "mybox")); !os.IsNotExist(err) {
		t.Fatalf("image rm --json left the image: %v", err)
	}
	out, stderr, err = runTurnboxOut(t, dir, "--runtime", "none", "image", "prune", "--json")
	if err != nil || !strings.Contains(out, `"freed_bytes": 0`) {
		t.Fatalf("image prune --json: %v %q %q", err, out, stderr)
	}
}
