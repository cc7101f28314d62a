package remote_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// portServerPy is the server a session runs for the port tests: in mode
// "http" an HTTP/1.1 keep-alive server answering every request with its
// method, target and headers as JSON; in mode "tcp" a server that reads
// a connection to its end (the client's half-close) and sends back what
// it read in upper case, then closes.
const portServerPy = `
import json, socket, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
mode, port = sys.argv[1], int(sys.argv[2])
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # one write per answer (flushed after each request)
    disable_nagle_algorithm = True
    def do_GET(self):
        body = json.dumps({"method": self.command, "path": self.path,
            "headers": {k: v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
def echo(c):
    data = b""
    while True:
        b = c.recv(65536)
        if not b:
            break
        data += b
    c.sendall(data.upper())
    c.close()
if mode == "http":
    ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
else:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    while True:
        c, _ = s.accept()
        threading.Thread(target=echo, args=(c,), daemon=True).start()
`

// freePort returns a loopback port nothing listens on (on the none
// runtime a sandbox shares the host's loopback).
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// portSession creates a session on host, destroyed when the test ends
// (unless the test destroyed it).
func portSession(tb testing.TB, host *embedded.Host) *embedded.Environment {
	tb.Helper()
	env, err := host.CreateSession(context.Background(), environment.SessionConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = env.Destroy(context.Background()) })
	return env
}

// startPortServer runs portServerPy in mode inside the session on a free
// port and returns the port once it accepts connections.
func startPortServer(tb testing.TB, env *embedded.Environment, mode string) int {
	tb.Helper()
	port := freePort(tb)
	_, err := env.StartProcess(context.Background(), environment.ProcessConfig{
		Args: []string{"python3", "-c", portServerPy, mode, fmt.Sprint(port)},
	})
	if err != nil {
		tb.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := env.DialPort(context.Background(), port)
		if err == nil {
			c.Close()
			return port
		}
		if !errors.Is(err, environment.ErrPortRefused) || time.Now().After(deadline) {
			tb.Fatalf("the session's %s server on port %d: %v", mode, port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publish publishes port of env's session.
func publish(tb testing.TB, env *embedded.Environment, port int, public bool) {
	tb.Helper()
	if _, err := env.PublishPort(context.Background(), port, environment.PublishOptions{Public: public}); err != nil {
		tb.Fatal(err)
	}
}

// portAnswer is the status and body of an answer.
type portAnswer struct {
	status int
	body   []byte
}

// portGet sends GET url (with host as the Host header when set, and the
// bearer token when set) and returns the status and body.
func portGet(tb testing.TB, url, host, token string, header http.Header) portAnswer {
	tb.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if host != "" {
		req.Host = host
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return portAnswer{resp.StatusCode, body}
}

// timedGet GETs url through c with the test token, fails unless the
// answer is 200 (with body want, unless want is empty), and returns how
// long it took in nanoseconds.
func timedGet(tb testing.TB, c *http.Client, url, want string) float64 {
	start := time.Now()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := c.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || (want != "" && string(body) != want) {
		tb.Fatalf("GET %s: %s %q", url, resp.Status, body)
	}
	return float64(time.Since(start))
}
