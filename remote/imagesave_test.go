package remote_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/container/agent/agenttest"
	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/internal/testenv"
	"github.com/turnbox/turnbox/remote"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
)

// SaveImage over the wire: a session's snapshot becomes an image a new
// session (made through the API) starts from; bad saves get their codes
// and reasons.
func TestSaveImageRPC(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "runsc")
	state := t.TempDir()
	host, err := embedded.NewHost(context.Background(), embedded.Config{StateDir: state,
		ContainerRuntime: embedded.ContainerRuntimeGVisor, AgentPath: agenttest.Build(t), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeHost(t, host) })
	srv := startServer(t, host, "")
	ctx := context.Background()
	images := turnboxv1connect.NewImageServiceClient(http.DefaultClient, srv.URL)
	env := remote.NewNativeSandboxEnvironment(remote.NewClient(srv.URL), remote.DefaultConfig(), nil)
	if err := env.Create(ctx, environment.SessionConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Upload(ctx, "/etc/saved", strings.NewReader("kept\n"), environment.UploadOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err := rpc(ctx, images.SaveImage, &turnboxv1.SaveImageRequest{SessionId: env.SessionID(), Name: "tmpl"})
	if err != nil {
		t.Fatal(err)
	}
	if img := res.GetImage(); img.GetName() != "tmpl" || img.GetCreated() == nil || len(img.GetSource()) < len("snapshot:") {
		t.Fatalf("saved image: %v", img)
	}
	checkImageDefaultsOnTheWire(t, srv.URL, filepath.Join(state, "images"))
	from := remote.NewNativeSandboxEnvironment(remote.NewClient(srv.URL), remote.DefaultConfig(), nil)
	if err := from.Create(ctx, environment.SessionConfig{Image: "tmpl"}); err != nil {
		t.Fatal(err)
	}
	defer from.Destroy(ctx)
	if err := env.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	rc, _, err := from.Download(ctx, "/etc/saved")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(b) != "kept\n" {
		t.Fatalf("a session from the saved image reads %q, %v", b, err)
	}
	for _, c := range []struct {
		req    *turnboxv1.SaveImageRequest
		code   connect.Code
		reason string
	}{
		{&turnboxv1.SaveImageRequest{SessionId: from.SessionID(), Name: "tmpl"}, connect.CodeAlreadyExists, "ALREADY_EXISTS"},
		{&turnboxv1.SaveImageRequest{SessionId: from.SessionID(), Name: "../x"}, connect.CodeInvalidArgument, "INVALID_ARGUMENT"},
		{&turnboxv1.SaveImageRequest{SessionId: "nosuch", Name: "y"}, connect.CodeNotFound, "SESSION_NOT_FOUND"},
		{&turnboxv1.SaveImageRequest{SessionId: from.SessionID(), Name: "y", SnapshotId: "nosuch@1"}, connect.CodeNotFound, "SNAPSHOT_NOT_FOUND"},
	} {
		_, err := rpc(ctx, images.SaveImage, c.req)
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != c.code || !hasReason(ce, c.reason) {
			t.Errorf("SaveImage(%v): %v, want %v with reason %s", c.req, err, c.code, c.reason)
		}
	}
}

// hasReason reports whether ce's ErrorInfo names reason.
func hasReason(ce *connect.Error, reason string) bool {
	for _, d := range ce.Details() {
		v, err := d.Value()
		if info, ok := v.(*turnboxv1.ErrorInfo); err == nil && ok {
			for _, r := range info.GetReasons() {
				if r.String() == "ERROR_REASON_"+reason {
					return true
				}
			}
		}
	}
	return false
}

// checkImageDefaultsOnTheWire: a session from an image with WORKDIR and
// USER reports them in its Session.
func checkImageDefaultsOnTheWire(t *testing.T, url, images string) {
	t.Helper()
	if err := rootfs.BuildBusybox(filepath.Join(images, "wd")); err != nil {
		t.Fatal(err)
	}
	if err := rootfs.WriteMeta(images, rootfs.Meta{Name: "wd", Source: "test", Config: rootfs.ImageConfig{WorkingDir: "/srv", User: "1000"}}); err != nil {
		t.Fatal(err)
	}
	c := remote.NewClient(url)
	res, err := rpc(context.Background(), c.CreateSession, &turnboxv1.CreateSessionRequest{Config: &turnboxv1.SessionConfig{Image: "wd"}})
	if err != nil {
		t.Fatal(err)
	}
	defer rpc(context.Background(), c.DestroySession, &turnboxv1.DestroySessionRequest{SessionId: res.GetSession().GetId()})
	if s := res.GetSession(); s.GetWorkDir() != "/srv" || s.GetUser() != "1000" {
		t.Fatalf("a session from an image with WORKDIR and USER: %v", s)
	}
}
