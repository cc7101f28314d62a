package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/container/agent/agenttest"
	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/internal/testenv"
	"github.com/turnbox/turnbox/remote/server"
)

// image save through a server: the session's snapshot becomes an image a
// session made by the CLI starts from; a second save of the name is
// refused, --replace takes it.
func TestImageSaveThroughServer(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "runsc")
	host, err := embedded.NewHost(context.Background(), embedded.Config{StateDir: t.TempDir(), ContainerRuntime: embedded.ContainerRuntimeGVisor,
		AgentPath: agenttest.Build(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close(context.Background()) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := server.New(host).HTTPServer(true)
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	url := "http://" + ln.Addr().String()
	env, err := host.CreateSession(t.Context(), environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Upload(t.Context(), "/opt/tool", strings.NewReader("saved\n"), environment.UploadOptions{}); err != nil {
		t.Fatal(err)
	}
	local := t.TempDir()
	run := func(args ...string) (string, string, string) {
		t.Helper()
		return runRaw(append([]string{"--state-dir", local, "--log-level", "error", "--server", url}, args...)...)
	}
	out, errOut, exit := runRaw("--state-dir", local, "image", "save", "--server", url, "--json", env.SessionID(), "tmpl")
	var m rootfs.Meta
	if exit != "0" || json.Unmarshal([]byte(out), &m) != nil || m.Name != "tmpl" || !strings.HasPrefix(m.Source, "snapshot:"+env.SessionID()+"@") {
		t.Fatalf("image save: exit %s %q %q", exit, out, errOut)
	}
	if _, errOut, exit := runRaw("--state-dir", local, "image", "save", "--server", url, env.SessionID(), "tmpl"); exit != "1" || !strings.Contains(errOut, "already exists") {
		t.Errorf("a second save: exit %s %q", exit, errOut)
	}
	if _, errOut, exit := runRaw("--state-dir", local, "image", "save", "--server", url, "--replace", env.SessionID(), "tmpl"); exit != "0" {
		t.Errorf("save --replace: exit %s %q", exit, errOut)
	}
	id, errOut, exit := run("session", "create", "--image", "tmpl")
	if exit != "0" {
		t.Fatalf("session create --image tmpl: exit %s %q", exit, errOut)
	}
	if out, errOut, exit := run("session", "exec", strings.TrimSpace(id), "--", "cat /opt/tool"); exit != "0" || out != "saved\n" {
		t.Fatalf("a session from the saved image: exit %s %q %q", exit, out, errOut)
	}
}
