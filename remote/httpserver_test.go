package remote_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
	"github.com/turnbox/turnbox/remote/server"
)

// TestHTTPServerProtocols: the http.Server of `turnbox serve` answers
// cleartext HTTP/2 with prior knowledge and HTTP/1.1 on the same port, and
// a client's calls over it share one connection.
func TestHTTPServerProtocols(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	for name, want := range map[string]int{"h2c": 2, "http1": 1} {
		tr := &http.Transport{Protocols: protocols(name == "http1", name == "h2c")}
		resp, err := (&http.Client{Transport: tr}).Get(srv.URL + "/healthz")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		if resp.ProtoMajor != want || resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
			t.Errorf("%s: %s %d %q, want HTTP/%d 200 ok", name, resp.Proto, resp.StatusCode, body, want)
		}
	}

	var dials atomic.Int32
	d := &net.Dialer{}
	tr := &http.Transport{Protocols: protocols(false, true), DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return d.DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	env := newEnv(t, remote.NewClient(srv.URL, remote.WithHTTPClient(&http.Client{Transport: tr})))
	for i := range 20 {
		bash(t, env, fmt.Sprint("c", i), "true")
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d connections for 21 calls, want 1", n)
	}
}

func protocols(http1, h2c bool) *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(http1)
	p.SetUnencryptedHTTP2(h2c)
	return &p
}

// TestCompressMinBytes: a client accepting gzip gets small responses
// uncompressed and large ones compressed by default; WithCompressMinBytes
// moves the threshold, and a negative one turns compression off.
func TestCompressMinBytes(t *testing.T) {
	host := newHost(t)
	const big = server.DefaultCompressMinBytes + 1000
	content := strings.Repeat("turnbox ", big/8)
	for _, tc := range []struct {
		name      string
		opts      []server.Option
		smallGzip bool
		bigGzip   bool
	}{
		{"default", nil, false, true},
		{"every", []server.Option{server.WithCompressMinBytes(1)}, true, true},
		{"never", []server.Option{server.WithCompressMinBytes(-1)}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, host, "", tc.opts...)
			env := newEnv(t, remote.NewClient(srv.URL))
			write := mustRequest(t, "w", environment.WriteFileParams{Path: "big.txt", Content: content})
			if _, err := env.ExecuteTool(t.Context(), write, nil); err != nil {
				t.Fatal(err)
			}
			readBig, _ := json.Marshal(map[string]any{"sessionId": env.SessionID(), "request": map[string]any{"toolName": "read_file", "arguments": environment.ReadFileParams{Path: "big.txt"}}})
			for _, c := range []struct {
				proc, body string
				gzip       bool
				check      func(raw []byte) error
			}{
				{"Health", "{}", tc.smallGzip, func(raw []byte) error {
					if !strings.Contains(string(raw), "SERVING") {
						return fmt.Errorf("response %s", raw)
					}
					return nil
				}},
				{"ExecuteTool", string(readBig), tc.bigGzip, func(raw []byte) error {
					var out struct {
						Response struct {
							Output string `json:"output"`
						} `json:"response"`
					}
					if err := json.Unmarshal(raw, &out); err != nil {
						return err
					}
					if out.Response.Output != content {
						return fmt.Errorf("read %d bytes, want %d", len(out.Response.Output), len(content))
					}
					return nil
				}},
			} {
				// A raw Connect unary call with the JSON codec, accepting gzip.
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/turnbox.v1.SandboxService/"+c.proc, strings.NewReader(c.body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept-Encoding", "gzip")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				gz := resp.Header.Get("Content-Encoding") == "gzip"
				if resp.StatusCode != http.StatusOK || gz != c.gzip {
					t.Fatalf("%s: status %d, Content-Encoding %q (want gzip %v): %.200q", c.proc, resp.StatusCode, resp.Header.Get("Content-Encoding"), c.gzip, raw)
				}
				if gz {
					zr, err := gzip.NewReader(bytes.NewReader(raw))
					if err != nil {
						t.Fatal(err)
					}
					if raw, err = io.ReadAll(zr); err != nil {
						t.Fatal(err)
					}
				}
				if err := c.check(raw); err != nil {
					t.Fatalf("%s over raw Connect: %v", c.proc, err)
				}
			}
			// The Go client reads both kinds.
			resp, err := env.ExecuteTool(t.Context(), mustRequest(t, "r", environment.ReadFileParams{Path: "big.txt"}), nil)
			if err != nil || resp.Content != content {
				t.Fatalf("read_file through the client: %v", err)
			}
		})
	}
}
