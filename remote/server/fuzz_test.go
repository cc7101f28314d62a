package server

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func protojsonUnmarshal(b []byte, m proto.Message) error { return protojson.Unmarshal(b, m) }

// fuzzServer is a Server on an embedded host with one session, "fz".
func fuzzServer(f *testing.F) http.Handler {
	f.Helper()
	host, err := embedded.NewHost(context.Background(), embedded.Config{StateDir: f.TempDir(), ContainerRuntime: embedded.ContainerRuntimeNone, Logger: discardLogger()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = host.Close(ctx)
	})
	if _, err := host.CreateSession(context.Background(), environment.SessionConfig{SessionID: "fz"}); err != nil {
		f.Fatal(err)
	}
	return New(host, WithMaxMessageBytes(1<<20), WithLogger(discardLogger())).Handler()
}

// post sends body to a procedure with the Connect unary protocol and
// returns the HTTP status.
func post(t *testing.T, h http.Handler, procedure, contentType string, body []byte) (int, string) {
	req := httptest.NewRequestWithContext(t.Context(), "POST", "/turnbox.v1.SandboxService/"+procedure, bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// safeTool reports whether a decoded request may run: the fuzzer must not
// run random shell commands on the test machine (runtime none isolates
// nothing). The file tools are confined to the workspace.
func safeTool(body []byte, json bool) bool {
	var m turnboxv1.ExecuteToolRequest
	var err error
	if json {
		err = protojsonUnmarshal(body, &m)
	} else {
		err = proto.Unmarshal(body, &m)
	}
	return err != nil || m.GetRequest().GetToolName() != environment.ToolBash
}

// checkStatus fails on an answer that is neither success nor a client
// error: random input must never crash the server or reach a 5xx.
func checkStatus(t *testing.T, status int, body string) {
	if status >= 500 && !strings.Contains(body, `"code":"unavailable"`) {
		t.Fatalf("status %d: %s", status, body)
	}
}

// FuzzExecuteToolRequest feeds random protobuf bodies to the server's
// ExecuteTool decoding (message, tool request, JSON input, session id).
func FuzzExecuteToolRequest(f *testing.F) {
	h := fuzzServer(f)
	seed := func(m *turnboxv1.ExecuteToolRequest) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(&turnboxv1.ExecuteToolRequest{SessionId: "fz", Request: &turnboxv1.ToolRequest{ToolCallId: "a", ToolName: "write_file", Input: []byte(`{"path":"a.txt","content":"x"}`)}})
	seed(&turnboxv1.ExecuteToolRequest{SessionId: "fz", Request: &turnboxv1.ToolRequest{ToolCallId: "b", ToolName: "read_file", Input: []byte(`{"path":"a.txt","offset":1}`)}})
	seed(&turnboxv1.ExecuteToolRequest{SessionId: "fz", Request: &turnboxv1.ToolRequest{ToolName: "grep", Input: []byte(`{"pattern":"(","path":"."}`)}})
	seed(&turnboxv1.ExecuteToolRequest{SessionId: "fz", Request: &turnboxv1.ToolRequest{ToolName: "list_files", Input: []byte(`{"pattern":"**/*"}`)}})
	seed(&turnboxv1.ExecuteToolRequest{SessionId: "fz", Request: &turnboxv1.ToolRequest{ToolName: "edit_file", Input: []byte(`{"path":"../x","old_string":"a","new_string":"b"}`)}})
	seed(&turnboxv1.ExecuteToolRequest{SessionId: "../fz"})
	f.Add([]byte{0xff, 0x01, 0x12})
	f.Fuzz(func(t *testing.T, body []byte) {
		if !safeTool(body, false) {
			return
		}
		status, resp := post(t, h, "ExecuteTool", "application/proto", body)
		checkStatus(t, status, resp)
	})
}

// FuzzExecuteToolJSON does the same through the JSON codec.
func FuzzExecuteToolJSON(f *testing.F) {
	h := fuzzServer(f)
	f.Add([]byte(`{"sessionId":"fz","request":{"toolCallId":"a","toolName":"write_file","input":"eyJwYXRoIjoiYSIsImNvbnRlbnQiOiJ4In0="}}`))
	f.Add([]byte(`{"sessionId":"fz","request":{"toolName":"read_file","input":"e30="}}`))
	f.Add([]byte(`{"sessionId":7}`))
	f.Add([]byte(`{"sessionId":"fz","request":{"toolCallId":"c","toolName":"read_file","arguments":{"path":"a","offset":1e6,"limit":[1,{"x":null}]}}}`))
	f.Add([]byte(`{"sessionId":"fz","request":{"toolName":"write_file","arguments":{"path":"b","content":"x"},"input":"e30="}}`))
	f.Add([]byte(`{"sessionId":"fz","request":{"snapshot":true,"toolName":"list_files","input":"eyJwYXR0ZXJuIjoiKiJ9"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if !safeTool(body, true) {
			return
		}
		status, resp := post(t, h, "ExecuteTool", "application/json", body)
		checkStatus(t, status, resp)
	})
}
