package e2b

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/container/agent/agenttest"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/internal/testenv"
	"github.com/turnbox/turnbox/remote/gen/envd/filesystem/filesystempbconnect"
)

// fsRig is an embedded host running gVisor sandboxes of the busybox image
// (which has a "user" account, uid 1000, home /home/user), an e2b Server
// over it on a loopback httptest server, and one sandbox.
type fsRig struct {
	host *embedded.Host
	srv  *Server
	hs   *httptest.Server
	id   string
	env  *embedded.Environment
}

// newFSRig starts the rig with one sandbox of the given limits, skipping
// (failing under CI=1) without root or runsc.
func newFSRig(t *testing.T, limits environment.Limits, opts ...Option) *fsRig {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "runsc")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	host, err := embedded.NewHost(context.Background(), embedded.Config{StateDir: t.TempDir(),
		ContainerRuntime: embedded.ContainerRuntimeGVisor, AgentPath: agenttest.Build(t), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := host.Close(ctx); err != nil {
			t.Errorf("closing the host: %v", err)
		}
	})
	opts = append([]Option{WithAccessTokenSecret([]byte("0123456789abcdef0123456789abcdef")), WithLogger(log)}, opts...)
	srv, err := New(host, opts...)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler(http.NotFoundHandler()))
	t.Cleanup(hs.Close)
	r := &fsRig{host: host, srv: srv, hs: hs}
	r.id, r.env = r.sandbox(t, "fsbox", limits)
	return r
}

// sandbox creates a sandbox (session) id.
func (r *fsRig) sandbox(t *testing.T, id string, limits environment.Limits) (string, *embedded.Environment) {
	t.Helper()
	env, err := r.host.CreateSession(t.Context(), environment.SessionConfig{SessionID: id, Limits: limits})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Destroy(context.WithoutCancel(t.Context())) })
	return id, env
}

// headers are the envd headers of sandbox id.
func (r *fsRig) headers(id string) http.Header {
	return http.Header{"E2b-Sandbox-Id": {id}, "X-Access-Token": {r.srv.accessToken(id)}}
}

// fsClient is a filesystem.Filesystem client of sandbox id, in JSON (as
// the JS SDK) or binary.
func (r *fsRig) fsClient(id string, json bool) filesystempbconnect.FilesystemClient {
	opts := []connect.ClientOption{connect.WithInterceptors(fsHeaders(r.headers(id)))}
	if json {
		opts = append(opts, connect.WithProtoJSON())
	}
	return filesystempbconnect.NewFilesystemClient(r.hs.Client(), r.hs.URL, opts...)
}

// fsShCalls numbers fsSh's tool calls (ids must be unique).
var fsShCalls atomic.Int64

// fsSh runs a command in sandbox env as root and returns its output.
func fsSh(t *testing.T, env environment.Environment, cmd string) string {
	t.Helper()
	req, err := environment.NewToolRequest(fmt.Sprintf("sh-%d", fsShCalls.Add(1)), environment.BashParams{Command: cmd})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := env.ExecuteTool(t.Context(), req, nil)
	if err != nil || resp.IsError {
		t.Fatalf("%s: %+v %v", cmd, resp, err)
	}
	return resp.Content
}

// fsHeaders adds h to every request.
type fsHeaders http.Header

func (h fsHeaders) set(dst http.Header) {
	for k, v := range h {
		dst[k] = v
	}
}

func (h fsHeaders) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		h.set(req.Header())
		return next(ctx, req)
	}
}

func (h fsHeaders) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		h.set(conn.RequestHeader())
		return conn
	}
}

func (h fsHeaders) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
