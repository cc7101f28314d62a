package e2b_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"

	"github.com/turnbox/turnbox/remote/e2b"
)

// startHeaderEcho serves, on a loopback port (what a sandbox's process
// listens with on the none runtime), JSON of each request's target and
// headers.
func startHeaderEcho(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"uri": r.RequestURI, "headers": r.Header})
	})}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// portReply is what startHeaderEcho answered.
type portReply struct {
	URI     string      `json:"uri"`
	Headers http.Header `json:"headers"`
}

// getPort sends GET path to the server for host with headers and
// returns the status and, on 200, the echo.
func getPort(t *testing.T, c *controlPlane, host, path string, headers map[string]string) (int, portReply) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out portReply
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
	}
	return resp.StatusCode, out
}

// TestSandboxPorts: every port of a sandbox is reachable at
// <port>-<id>.<domain> (and by the E2B routing headers) with no publish
// step; public by default, behind the create answer's traffic access
// token with network.allowPublicTraffic false; envd's and the API's
// credentials never reach the sandbox.
func TestSandboxPorts(t *testing.T) {
	c := serve(t, noneHost(t), e2b.WithDomain("sb.test"))
	port := startHeaderEcho(t)

	var pub struct {
		SandboxID          string `json:"sandboxID"`
		EnvdAccessToken    string `json:"envdAccessToken"`
		TrafficAccessToken string `json:"trafficAccessToken"`
	}
	c.expect(c.do("POST", "/v2/sandboxes", map[string]any{}), http.StatusCreated, "create").decode(t, &pub)
	if pub.TrafficAccessToken != "" {
		t.Errorf("a public sandbox got a traffic token")
	}
	host := fmt.Sprintf("%d-%s.sb.test", port, pub.SandboxID)
	status, got := getPort(t, c, host, "/app/x?y=1", map[string]string{"X-Access-Token": pub.EnvdAccessToken, "X-API-KEY": testAPIKey})
	if status != http.StatusOK || got.URI != "/app/x?y=1" {
		t.Fatalf("public port: %d %+v", status, got)
	}
	for _, h := range []string{"X-Access-Token", "X-Api-Key", "Authorization"} {
		if v := got.Headers.Get(h); v != "" {
			t.Errorf("the sandbox received %s: %s", h, v)
		}
	}
	status, got = getPort(t, c, "127.0.0.1", "/by-header", map[string]string{"E2b-Sandbox-Id": pub.SandboxID, "E2b-Sandbox-Port": strconv.Itoa(port)})
	if status != http.StatusOK || got.URI != "/by-header" {
		t.Fatalf("routed by headers: %d %+v", status, got)
	}
	if status, _ := getPort(t, c, fmt.Sprintf("%d-nosuch.sb.test", port), "/", nil); status != http.StatusBadGateway {
		t.Errorf("an unknown sandbox: %d, want 502", status)
	}

	var priv struct {
		SandboxID          string `json:"sandboxID"`
		TrafficAccessToken string `json:"trafficAccessToken"`
	}
	c.expect(c.do("POST", "/v2/sandboxes", map[string]any{"network": map[string]any{"allowPublicTraffic": false}}), http.StatusCreated, "create private").decode(t, &priv)
	if priv.TrafficAccessToken == "" {
		t.Fatal("a private sandbox got no traffic token")
	}
	host = fmt.Sprintf("%d-%s.sb.test", port, priv.SandboxID)
	if status, _ := getPort(t, c, host, "/", nil); status != http.StatusUnauthorized {
		t.Errorf("private without the token: %d, want 401", status)
	}
	status, got = getPort(t, c, host, "/", map[string]string{"E2b-Traffic-Access-Token": priv.TrafficAccessToken})
	if status != http.StatusOK || got.Headers.Get("E2b-Traffic-Access-Token") != "" {
		t.Errorf("private with the token: %d %+v", status, got)
	}
	var again struct {
		TrafficAccessToken string `json:"trafficAccessToken"`
	}
	c.expect(c.do("POST", "/sandboxes/"+priv.SandboxID+"/connect", map[string]any{}), http.StatusOK, "connect").decode(t, &again)
	if again.TrafficAccessToken != priv.TrafficAccessToken {
		t.Errorf("connect reported traffic token %q, create %q", again.TrafficAccessToken, priv.TrafficAccessToken)
	}
}
