package remote_test

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/remote/server"
)

// bufBinary finds the pinned buf: $TURNBOX_TOOLS/buf, the default tools
// directory of remote/scripts/gen.sh, or PATH.
func bufBinary() string {
	dirs := []string{os.Getenv("TURNBOX_TOOLS"), "/var/cache/turnbox/bin"}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if p := filepath.Join(d, "buf"); exec.Command(p, "--version").Run() == nil {
			return p
		}
	}
	if p, err := exec.LookPath("buf"); err == nil {
		return p
	}
	return ""
}

// TestBufCurl calls the server from a client that is not Go: buf curl
// (Connect protocol over h2c, schema compiled from remote/proto), creating
// a session and running a tool in it. Skipped without a buf binary
// (install it with remote/scripts/gen.sh).
func TestBufCurl(t *testing.T) {
	buf := bufBinary()
	if buf == "" {
		t.Skip("buf not found: run remote/scripts/gen.sh to install it")
	}
	host := newHost(t)
	srv := startServer(t, host, "", server.WithAuthTokens(testToken))
	curl := func(procedure, data string, extra ...string) map[string]any {
		t.Helper()
		args := append([]string{"curl", "--schema", "proto", "--http2-prior-knowledge",
			"-H", "Authorization: Bearer " + testToken, "--data", data}, extra...)
		args = append(args, srv.URL+"/turnbox.v1.SandboxService/"+procedure)
		cmd := exec.CommandContext(t.Context(), buf, args...)
		cmd.Env = append(os.Environ(), "BUF_CACHE_DIR="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("buf %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("buf curl %s: %v\n%s", procedure, err, out)
		}
		return m
	}
	created := curl("CreateSession", `{"config":{"sessionId":"from-buf-curl"}}`)
	if id := created["session"].(map[string]any)["id"]; id != "from-buf-curl" {
		t.Fatalf("CreateSession = %v", created)
	}
	// Tool input as a JSON object, output as text: no base64 either way.
	resp := curl("ExecuteTool", `{"sessionId":"from-buf-curl","request":{"toolCallId":"c1","toolName":"bash","arguments":{"command":"echo hello from $((40+2))","timeout_ms":5000}}}`)
	if out, _ := resp["response"].(map[string]any)["output"].(string); out != "hello from 42\n" {
		t.Errorf("ExecuteTool = %v (output %q)", resp, out)
	}
	// The older form, input as base64 bytes, keeps working.
	input := base64.StdEncoding.EncodeToString([]byte(`{"command":"echo old form"}`))
	resp = curl("ExecuteTool", `{"sessionId":"from-buf-curl","request":{"toolCallId":"c2","toolName":"bash","input":"`+input+`"}}`)
	if out, _ := resp["response"].(map[string]any)["output"].(string); out != "old form\n" {
		t.Errorf("ExecuteTool with input = %v (output %q)", resp, out)
	}
	// The gRPC protocol too.
	got := curl("GetSession", `{"sessionId":"from-buf-curl"}`, "--protocol", "grpc")
	if got["session"].(map[string]any)["state"] != "SESSION_STATE_ACTIVE" {
		t.Errorf("GetSession over gRPC = %v", got)
	}
}
