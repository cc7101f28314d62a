package remote_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/remote/server"
)

const testToken = "test-token-0123456789"

// newHost opens an embedded host (localdisk, runtime none) on a temporary
// directory, closed when the test ends.
func newHost(tb testing.TB) *embedded.Host {
	tb.Helper()
	return openHost(tb, tb.TempDir())
}

func openHost(tb testing.TB, dir string) *embedded.Host {
	tb.Helper()
	host, err := embedded.NewHost(context.Background(), embedded.Config{StateDir: dir, ContainerRuntime: embedded.ContainerRuntimeNone, Logger: quietLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { closeHost(tb, host) })
	return host
}

func closeHost(tb testing.TB, host *embedded.Host) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := host.Close(ctx); err != nil {
		tb.Errorf("closing host: %v", err)
	}
}

// testServer is a server.Server on a loopback listener speaking HTTP/1.1
// and h2c, with the http.Server of `turnbox serve`.
type testServer struct {
	URL  string
	Addr string
	srv  *server.Server
	hs   *http.Server
}

// startServer serves host on 127.0.0.1 (port 0 unless addr is given)
// until the test ends.
func startServer(tb testing.TB, host *embedded.Host, addr string, opts ...server.Option) *testServer {
	tb.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	srv := server.New(host, opts...)
	hs := srv.HTTPServer(true) // what `turnbox serve` runs
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			tb.Errorf("serve: %v", err)
		}
	}()
	tb.Cleanup(func() { _ = hs.Close() })
	return &testServer{URL: "http://" + ln.Addr().String(), Addr: ln.Addr().String(), srv: srv, hs: hs}
}

// kill closes the listener and every connection at once, as a crashed
// server would.
func (s *testServer) kill() { _ = s.hs.Close() }

// quietLogger drops everything below errors.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// rpc makes one call through a generated client and returns the response
// message (nil on error).
func rpc[Req, Res any](ctx context.Context, fn func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), req *Req) (*Res, error) {
	resp, err := fn(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}
