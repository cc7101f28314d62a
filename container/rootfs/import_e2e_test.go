package rootfs_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/turnbox/turnbox/container/agent/agenttest"
	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/internal/testenv"
)

// busyboxImage builds, from the host's static busybox, an image of three
// layers: the binary and directories; its applet symlinks; and a layer
// that adds a marker file and deletes a file of the first (a whiteout).
func busyboxImage(t *testing.T) v1.Image {
	t.Helper()
	bb, err := rootfs.FindBusybox()
	testenv.Require(t, err == nil, "static busybox (apt install busybox-static)")
	bin, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	base := []ent{
		dir("bin/", 0o755), dir("etc/", 0o755), dir("root/", 0o700), dir("tmp/", 0o1777),
		file("bin/busybox", string(bin), 0o755),
		file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
		file("etc/doomed", "x", 0o644),
	}
	var links []ent
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" && !strings.Contains(a, "/") {
			links = append(links, symlink("bin/"+a, "busybox"))
		}
	}
	top := []ent{
		dir("etc/", 0o755),
		file("etc/marker", "imported", 0o644),
		file("etc/.wh.doomed", "", 0o644),
	}
	return image(t, "", layer(t, base...), layer(t, links...), layer(t, top...))
}

// TestImportedImageRunsInGVisor imports a busybox image and runs a bash
// tool call in a gVisor session whose root filesystem it is.
func TestImportedImageRunsInGVisor(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "runsc")
	img := busyboxImage(t)
	state := t.TempDir()
	res, err := rootfs.Import(context.Background(), writeLayout(t, layoutImage{img: img}), filepath.Join(state, "images", "bb"), rootfs.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.HasShell {
		t.Fatal("imported busybox image has no /bin/sh")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	host, err := embedded.NewHost(ctx, embedded.Config{
		StateDir:         state,
		ContainerRuntime: embedded.ContainerRuntimeGVisor,
		DefaultImage:     "bb",
		AgentPath:        agenttest.Build(t),
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close(context.WithoutCancel(ctx))
	env := host.NewEnvironment()
	if err := env.Create(ctx, environment.SessionConfig{}); err != nil {
		t.Fatal(err)
	}
	defer env.Destroy(context.WithoutCancel(ctx))
	req, err := environment.NewToolRequest("1", environment.BashParams{Command: "cat /etc/marker; test -e /etc/doomed && echo doomed-present; echo hi > f && cat f && pwd"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := env.ExecuteTool(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ExitCode != 0 || resp.Content != "importedhi\n/workspace\n" {
		t.Fatalf("bash in the imported image: exit %d, output %q", resp.ExitCode, resp.Content)
	}
}
