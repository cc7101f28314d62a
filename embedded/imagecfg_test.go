package embedded_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// addImage makes image name in cfg's image store: a busybox root (its
// /etc/passwd has user, uid 1000) with config as its record's. edit, if
// set, changes the root's files first.
func addImage(t *testing.T, cfg embedded.Config, name string, config rootfs.ImageConfig, edit func(dir string)) {
	t.Helper()
	images := filepath.Join(cfg.StateDir, "images")
	dir := filepath.Join(images, name)
	if err := rootfs.BuildBusybox(dir); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(dir)
	}
	if err := rootfs.WriteMeta(images, rootfs.Meta{Name: name, Source: "test", Config: config}); err != nil {
		t.Fatal(err)
	}
}

// shOut runs a bash tool call and returns its output, failing on a
// non-zero exit.
func shOut(t *testing.T, e environment.Environment, p environment.BashParams) string {
	t.Helper()
	r := call(t, e, p)
	if r.ExitCode != 0 {
		t.Fatalf("%q: exit %d: %s", p.Command, r.ExitCode, r.Content)
	}
	return r.Content
}

// procOut runs a process to its end and returns its output.
func procOut(t *testing.T, e *embedded.Environment, cfg environment.ProcessConfig) string {
	t.Helper()
	ctx := context.Background()
	info, err := e.StartProcess(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	exit, err := e.WaitProcess(ctx, info.PID)
	if err != nil || exit.Code != 0 {
		t.Fatalf("process %q: %+v, %v", cfg.Command, exit, err)
	}
	var out strings.Builder
	if err := e.AttachProcess(ctx, info.PID, 0, func(ev environment.ProcessEvent) error {
		out.Write(ev.Data)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// whereWho prints the environment, directory and user a command gets.
const whereWho = `echo "$FOO $BAR"; echo $PATH; pwd; id -u; id -g`

// A session made from an image with a config runs its commands with the
// image's ENV (under the session's own Env), in its WORKDIR (made, as it
// was missing) and as its USER; a call naming a directory or user wins;
// forks and a restarted host keep the defaults even after the image's
// record changed; a session from busybox (no record) gets none.
func TestImageConfig(t *testing.T) {
	for _, rt := range []embedded.ContainerRuntime{embedded.ContainerRuntimeGVisor, embedded.ContainerRuntimeRunc} {
		t.Run(string(rt), func(t *testing.T) { testImageConfig(t, rt) })
	}
}

func testImageConfig(t *testing.T, rt embedded.ContainerRuntime) {
	ctx := context.Background()
	cfg := matrixConfig(t, embedded.StorageBackendLocalDisk, rt)
	addImage(t, cfg, "app", rootfs.ImageConfig{
		Env:        []string{"FOO=img", "BAR=img", "PATH=/opt/bin:/usr/bin:/bin"},
		WorkingDir: "/srv/app", User: "user",
		Entrypoint: []string{"/bin/false"}, Cmd: []string{"never-run"},
	}, nil)
	h := openCheckedHost(t, cfg) // closed below too (a second Close does nothing)
	e, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "app", Image: "app", Env: map[string]string{"FOO": "sess"}})
	if err != nil {
		t.Fatal(err)
	}
	want := "sess img\n/opt/bin:/usr/bin:/bin\n/srv/app\n1000\n1000\n"
	if got := shOut(t, e, environment.BashParams{Command: whereWho}); got != want {
		t.Errorf("image defaults: got %q, want %q", got, want)
	}
	if got := shOut(t, e, environment.BashParams{Command: "pwd", Workdir: "."}); got != "/workspace\n" {
		t.Errorf("a relative workdir is the workspace's: pwd = %q", got)
	}
	if got := procOut(t, e, environment.ProcessConfig{Command: "pwd; id -u", Cwd: "/tmp", User: "0"}); got != "/tmp\n0\n" {
		t.Errorf("a process naming cwd and user: %q", got)
	}
	if got := procOut(t, e, environment.ProcessConfig{Command: "pwd; id -un; echo $FOO", Env: map[string]string{"FOO": "proc"}}); got != "/srv/app\nuser\nproc\n" {
		t.Errorf("a process naming neither: %q", got)
	}
	info, err := h.Session("app")
	if err != nil || info.WorkDir != "/srv/app" || info.User != "user" {
		t.Errorf("SessionInfo: WorkDir %q User %q (%v)", info.WorkDir, info.User, err)
	}
	if fi, err := os.Lstat(filepath.Join(info.Root, "srv", "app")); err != nil || !fi.IsDir() {
		t.Errorf("the WORKDIR in the session's root: %v", err)
	}
	if exists(filepath.Join(cfg.StateDir, "images", "app", "srv")) {
		t.Error("the WORKDIR was made in the image's directory")
	}

	// A fork keeps its parent's defaults (not its own config's image).
	snap, err := e.TurnComplete(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	fork, err := h.Fork(ctx, snap.ID, environment.SessionConfig{SessionID: "fork"})
	if err != nil {
		t.Fatal(err)
	}
	if got := shOut(t, fork, environment.BashParams{Command: whereWho}); got != "img img\n/opt/bin:/usr/bin:/bin\n/srv/app\n1000\n1000\n" {
		t.Errorf("fork: got %q", got)
	}
	plain, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: "plain"})
	if err != nil {
		t.Fatal(err)
	}
	if got := shOut(t, plain, environment.BashParams{Command: "echo \"[$FOO]\"; pwd; id -u"}); got != "[]\n/workspace\n0\n" {
		t.Errorf("busybox session: got %q", got)
	}
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// The image's record changes; the sessions keep theirs.
	if err := rootfs.WriteMeta(filepath.Join(cfg.StateDir, "images"), rootfs.Meta{Name: "app", Source: "test"}); err != nil {
		t.Fatal(err)
	}
	h2 := openCheckedHost(t, cfg)
	for id, want := range map[string]string{"app": "sess img", "fork": "img img"} {
		e := h2.NewEnvironment()
		if err := e.AttachSession(id); err != nil {
			t.Fatal(err)
		}
		if got := shOut(t, e, environment.BashParams{Command: `echo "$FOO $BAR"; pwd; id -u`}); got != want+"\n/srv/app\n1000\n" {
			t.Errorf("%s after a host restart: got %q", id, got)
		}
	}
}

// A hostile image config cannot make a create write outside the
// session's volume nor fail it: a relative or escaping WORKDIR and one
// through a link to a host directory are ignored (commands start in the
// workspace), bad ENV entries are skipped and an oversized ENV capped
// (or, past the record's bound, the whole config ignored); an unknown
// USER is a clear error on each call that names no user.
func TestImageConfigHostile(t *testing.T) {
	for _, rt := range []embedded.ContainerRuntime{embedded.ContainerRuntimeGVisor, embedded.ContainerRuntimeRunc} {
		t.Run(string(rt), func(t *testing.T) { testImageConfigHostile(t, rt) })
	}
}

func testImageConfigHostile(t *testing.T, rt embedded.ContainerRuntime) {
	ctx := context.Background()
	cfg := matrixConfig(t, embedded.StorageBackendLocalDisk, rt)
	hostDir := t.TempDir()
	many := []string{"1BAD=x", "noequals", "PWD=/evil", "TURNBOX_EXEC_ID=x", "NUL=a\x00b", "BIG=" + strings.Repeat("b", 200<<10), "GOOD=1"}
	for i := range 1000 {
		many = append(many, fmt.Sprintf("E%04d=%s", i, strings.Repeat("v", 200)))
	}
	images := map[string]rootfs.ImageConfig{
		"dotdot":  {WorkingDir: "../../etc"},
		"escape":  {WorkingDir: "/escape/app"},
		"env":     {Env: many, WorkingDir: "/"},
		"huge":    {Env: []string{"HUGE=" + strings.Repeat("x", 10<<20)}, WorkingDir: "/srv"},
		"nouser":  {User: "nosuchuser"},
		"baduser": {User: "../../x\n"},
	}
	for name, c := range images {
		addImage(t, cfg, name, c, func(dir string) {
			if err := os.Symlink(hostDir, filepath.Join(dir, "escape")); err != nil {
				t.Fatal(err)
			}
		})
	}
	h := openCheckedHost(t, cfg) // builds the busybox image
	imageTree := treeOf(t, filepath.Join(cfg.StateDir, "images"))
	session := func(image string) *embedded.Environment {
		e, err := h.CreateSession(ctx, environment.SessionConfig{SessionID: image, Image: image})
		if err != nil {
			t.Fatalf("image %s: %v", image, err)
		}
		return e
	}
	for _, image := range []string{"dotdot", "escape", "huge", "baduser"} {
		e := session(image)
		if got := shOut(t, e, environment.BashParams{Command: `pwd; id -u; echo "[$HUGE]"`}); got != "/workspace\n0\n[]\n" {
			t.Errorf("image %s: got %q", image, got)
		}
		if info, _ := h.Session(image); info.WorkDir != "" || info.User != "" {
			t.Errorf("image %s: SessionInfo WorkDir %q User %q", image, info.WorkDir, info.User)
		}
	}
	if ents, err := os.ReadDir(hostDir); err != nil || len(ents) != 0 {
		t.Errorf("the host directory the image links to: %v %v", ents, err)
	}

	e := session("env")
	out := shOut(t, e, environment.BashParams{Command: `pwd; echo "$GOOD [$PWD] [$NUL] [$BIG]"; env | grep -c '^E[0-9]'; echo ${#E0000}`})
	lines := strings.Split(out, "\n")
	if len(lines) < 4 || lines[0] != "/" || lines[1] != "1 [/] [] []" || lines[3] != "200" {
		t.Errorf("image env: %q", out)
	}
	if n := 0; len(lines) > 2 {
		fmt.Sscan(lines[2], &n)
		if n == 0 || n > environment.MaxEnvVars || n*206 > environment.MaxEnvBytes {
			t.Errorf("image env: %d entries kept, want some within the bounds", n)
		}
	}

	e = session("nouser")
	req, _ := environment.NewToolRequest(callID(), environment.BashParams{Command: "id -u"})
	if _, err := e.ExecuteTool(ctx, req, nil); !errors.Is(err, environment.ErrInvalidArgument) || !strings.Contains(err.Error(), "nosuchuser") {
		t.Errorf("unknown image USER: err = %v", err)
	}
	if got := procOut(t, e, environment.ProcessConfig{Command: "id -u", User: "1000"}); got != "1000\n" {
		t.Errorf("a process naming a user in a session whose image's USER is unknown: %q", got)
	}
	after := treeOf(t, filepath.Join(cfg.StateDir, "images"))
	for p, was := range imageTree {
		if after[p] != was {
			t.Errorf("sessions changed the image store: %s: %q, was %q", p, after[p], was)
		}
	}
	for p := range after {
		if _, ok := imageTree[p]; !ok {
			t.Errorf("sessions added %s to the image store", p)
		}
	}
}
