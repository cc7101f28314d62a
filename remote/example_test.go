package remote_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
	"github.com/turnbox/turnbox/remote/server"
)

// Example serves an embedded host on a loopback address and drives a
// session through it, as an agent runtime on another machine would.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "turnbox-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	// Server side: a host, and the ConnectRPC server over HTTP/2 (h2c).
	host, err := embedded.NewHost(ctx, embedded.Config{StateDir: dir, ContainerRuntime: embedded.ContainerRuntimeNone, Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer host.Close(ctx) // keeps the sessions' data
	srv := server.New(host, server.WithAuthTokens("s3cret"), server.WithLogger(quiet))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	hs := &http.Server{Handler: srv.Handler(), Protocols: &protocols}
	go hs.Serve(ln)
	defer hs.Shutdown(ctx)

	// Client side: the environment the agent runtime codes against.
	client := remote.NewClient("http://"+ln.Addr().String(), remote.WithBearerToken("s3cret"))
	env := remote.NewNativeSandboxEnvironment(client, remote.DefaultConfig(), quiet)
	if err := env.Create(ctx, environment.SessionConfig{}); err != nil {
		log.Fatal(err)
	}
	defer env.Destroy(ctx)

	req, err := environment.NewToolRequest("call-1", environment.BashParams{Command: "echo hello > greeting.txt; cat greeting.txt"})
	if err != nil {
		log.Fatal(err)
	}
	resp, err := env.ExecuteTool(ctx, req, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(resp.Content)

	snap, err := env.TurnComplete(ctx, "greeted")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("turn", snap.Turn, snap.Name)

	if _, err := env.ExecuteTool(ctx, mustReq(environment.BashParams{Command: "rm greeting.txt"}), nil); err != nil {
		log.Fatal(err)
	}
	if err := env.Rollback(ctx, snap.ID); err != nil {
		log.Fatal(err)
	}
	resp, err = env.ExecuteTool(ctx, mustReq(environment.ReadFileParams{Path: "greeting.txt"}), nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print("after rollback: ", resp.Content)
	fmt.Println(env.State())
	// Output:
	// hello
	// turn 1 greeted
	// after rollback: hello
	// active
}

// Example_inProcess drives a host in the same process through the real
// server handler, mounted on an httptest server: the same code path as
// over the network, without a listener of one's own to manage.
func Example_inProcess() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "turnbox-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	host, err := embedded.NewHost(ctx, embedded.Config{StateDir: dir, ContainerRuntime: embedded.ContainerRuntimeNone, Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer host.Close(ctx)

	hs := httptest.NewServer(server.New(host, server.WithLogger(quiet)).Handler())
	defer hs.Close()
	client := remote.NewClient(hs.URL, remote.WithHTTPClient(hs.Client())) // HTTP/1.1
	env := remote.NewNativeSandboxEnvironment(client, remote.DefaultConfig(), quiet)
	if err := env.Create(ctx, environment.SessionConfig{SessionID: "demo"}); err != nil {
		log.Fatal(err)
	}
	defer env.Destroy(ctx)
	resp, err := env.ExecuteTool(ctx, mustReq(environment.BashParams{Command: "echo $((6 * 7))"}), nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(env.SessionID(), ": ", resp.Content)
	// Output:
	// demo: 42
}

var exampleCalls int

// mustReq builds a tool request with a fresh call id.
func mustReq(p environment.ToolParams) environment.ToolRequest {
	exampleCalls++
	req, err := environment.NewToolRequest(fmt.Sprintf("example-%d", exampleCalls), p)
	if err != nil {
		log.Fatal(err)
	}
	return req
}
