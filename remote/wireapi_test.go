package remote_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
	"github.com/turnbox/turnbox/remote/server"
)

// connectJSON makes a raw Connect call with the JSON codec, as a client in
// any language would: unary calls post the message, server streams post
// it in an envelope. It returns the HTTP status, the unary response or
// the stream's messages, and the stream's end message.
func connectJSON(t *testing.T, url, procedure string, streaming bool, body string) (status int, msgs []map[string]any, end map[string]any) {
	t.Helper()
	ct, payload := "application/json", []byte(body)
	if streaming {
		ct, payload = "application/connect+json", envelope(0, []byte(body))
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, url+"/"+procedure, bytes.NewReader(payload))
	req.Header.Set("Content-Type", ct)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", procedure, err)
	}
	defer resp.Body.Close()
	if !streaming {
		var m map[string]any
		raw, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("%s: %v in %q", procedure, err, raw)
		}
		return resp.StatusCode, []map[string]any{m}, nil
	}
	r := bufio.NewReader(resp.Body)
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			t.Fatalf("%s: stream ended without an end message: %v", procedure, err)
		}
		data := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
		if _, err := io.ReadFull(r, data); err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("%s: %v in %q", procedure, err, data)
		}
		if hdr[0]&2 != 0 {
			return resp.StatusCode, msgs, m
		}
		msgs = append(msgs, m)
	}
}

func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func envelope(flags byte, data []byte) []byte {
	out := make([]byte, 5, 5+len(data))
	out[0] = flags
	binary.BigEndian.PutUint32(out[1:], uint32(len(data)))
	return append(out, data...)
}

// TestUnknownSessionIsNotFoundEverywhere walks every method of every
// service that takes a session id, with an id the server does not know
// and otherwise valid arguments: each answers not_found (HTTP 404) with
// SESSION_NOT_FOUND, and so do the upload and download streams.
func TestUnknownSessionIsNotFoundEverywhere(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	fill := map[string]any{
		"sessionId":  "no-such-session",
		"request":    map[string]any{"toolCallId": "c1", "toolName": "bash", "arguments": map[string]any{"command": "true"}},
		"config":     map[string]any{"command": "true"},
		"snapshotId": "no-such-session@1",
		"pid":        1,
		"path":       "x",
		"src":        "a",
		"dst":        "b",
		"data":       "eA==",
		"size":       map[string]any{"rows": 24, "cols": 80},
		"signal":     15,
	}
	walked := 0
	for _, svc := range []string{"turnbox.v1.SandboxService", "turnbox.v1.ProcessService", "turnbox.v1.FilesService"} {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
		if err != nil {
			t.Fatal(err)
		}
		methods := d.(protoreflect.ServiceDescriptor).Methods()
		for i := range methods.Len() {
			m := methods.Get(i)
			fields := m.Input().Fields()
			if fields.ByName("session_id") == nil {
				continue
			}
			body := map[string]any{}
			for j := range fields.Len() {
				f := fields.Get(j)
				if v, ok := fill[f.JSONName()]; ok {
					if f.Name() == "config" && m.Name() == "Fork" {
						v = map[string]any{}
					}
					body[f.JSONName()] = v
				}
			}
			b, _ := json.Marshal(body)
			status, msgs, end := connectJSON(t, srv.URL, svc+"/"+string(m.Name()), m.IsStreamingServer(), string(b))
			e := end["error"]
			if !m.IsStreamingServer() {
				e = msgs[0]
			} else {
				status = 0 // a stream's error is in its end message
			}
			got, _ := e.(map[string]any)
			msg, _ := got["message"].(string)
			if got["code"] != "not_found" || (status != 0 && status != http.StatusNotFound) || !strings.HasPrefix(msg, "session not found") {
				t.Errorf("%s.%s(%s) = HTTP %d %v, want not_found", svc, m.Name(), b, status, e)
			}
			walked++
		}
	}
	if walked < 20 {
		t.Errorf("walked %d methods, want every method with a session id", walked)
	}
	// The stream's error after its headers were sent, over gRPC (in
	// trailers) and gRPC-Web (whose headers are not sent early).
	for name, svc := range map[string]turnboxv1connect.SandboxServiceClient{
		"grpc":     remote.NewClient(srv.URL, remote.WithGRPC()),
		"grpc-web": turnboxv1connect.NewSandboxServiceClient(http.DefaultClient, srv.URL, connect.WithGRPCWeb()),
	} {
		st, err := svc.ExecuteToolStream(t.Context(), connect.NewRequest(&turnboxv1.ExecuteToolStreamRequest{SessionId: "no-such-session",
			Request: &turnboxv1.ToolRequest{ToolCallId: "c1", ToolName: "bash", Arguments: mustStruct(t, map[string]any{"command": "true"})}}))
		if err == nil {
			for st.Receive() {
			}
			err = st.Err()
			st.Close()
		}
		if connect.CodeOf(err) != connect.CodeNotFound || !errors.Is(err, environment.ErrSessionNotFound) && name == "grpc" {
			t.Errorf("%s: ExecuteToolStream(unknown) = %v (code %v), want not_found", name, err, connect.CodeOf(err))
		}
	}
	for _, c := range []struct{ method, path string }{{"PUT", server.UploadPath}, {"GET", server.DownloadPath}} {
		req, _ := http.NewRequestWithContext(t.Context(), c.method, srv.URL+c.path+"?session=no-such-session&path=x", strings.NewReader("x"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(resp.Header.Get(server.ErrorInfoHeader), "SESSION_NOT_FOUND") {
			t.Errorf("%s %s = %d %q, want 404 SESSION_NOT_FOUND", c.method, c.path, resp.StatusCode, resp.Header.Get(server.ErrorInfoHeader))
		}
	}
}

// TestToolJSONOverTheWire: a JSON client sends the tool's arguments as an
// object and reads its output as text, in unary calls and streams (where a
// UTF-8 character split between two writes arrives whole); binary output
// comes in the bytes field; input and arguments together are refused.
func TestToolJSONOverTheWire(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	env := newEnv(t, remote.NewClient(srv.URL))
	id := env.SessionID()
	exec := "turnbox.v1.SandboxService/ExecuteTool"
	call := func(callID, args string) map[string]any {
		_, msgs, _ := connectJSON(t, srv.URL, exec, false,
			fmt.Sprintf(`{"sessionId":%q,"request":{"toolCallId":%q,"toolName":"bash","arguments":%s}}`, id, callID, args))
		return msgs[0]
	}
	if r, _ := call("text", `{"command":"echo hi","timeout_ms":1e4}`)["response"].(map[string]any); r["output"] != "hi\n" || r["content"] != nil {
		t.Errorf("text output: %v", r)
	}
	if r, _ := call("bin", `{"command":"printf 'a\\377'"}`)["response"].(map[string]any); r["output"] != nil || r["content"] != "Yf8=" {
		t.Errorf("binary output: %v", r)
	}
	both := call("both", `{"command":"true"},"input":"e30="`)
	if both["code"] != "invalid_argument" {
		t.Errorf("input and arguments: %v", both)
	}

	_, events, end := connectJSON(t, srv.URL, "turnbox.v1.SandboxService/ExecuteToolStream", true,
		fmt.Sprintf(`{"sessionId":%q,"request":{"toolCallId":"s","toolName":"bash","arguments":{"command":"printf 'x\\346'; sleep 0.3; printf '\\227\\245y'"}}}`, id))
	if end["error"] != nil {
		t.Fatalf("stream: %v", end)
	}
	var text strings.Builder
	var final map[string]any
	for _, ev := range events {
		if p, ok := ev["progress"].(map[string]any); ok {
			if p["data"] != nil {
				t.Errorf("progress with bytes: %v", p)
			}
			s, _ := p["output"].(string)
			text.WriteString(s)
		}
		if r, ok := ev["response"].(map[string]any); ok {
			final = r
		}
	}
	if text.String() != "x日y" || final["output"] != "x日y" {
		t.Errorf("stream progress %q, response %v, want x日y", text.String(), final)
	}
	// The Go client reads both forms back unchanged.
	var progress []byte
	resp, err := env.ExecuteTool(t.Context(), environment.ToolRequest{ToolCallID: "go", ToolName: "bash",
		Input: []byte(`{"command":"printf 'x\\346'; sleep 0.3; printf '\\227\\245\\377'"}`)},
		func(p environment.ToolProgress) { progress = append(progress, p.Data...) })
	if err != nil || resp.Content != "x日\xff" || string(progress) != "x日\xff" {
		t.Errorf("Go client: content %q, progress %q, %v", resp.Content, progress, err)
	}
}

// TestStreamHeadersAtOnce: a stream's response headers arrive as soon as
// the call is accepted, before any event, although the command is quiet
// for longer than the wait.
func TestStreamHeadersAtOnce(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	env := newEnv(t, remote.NewClient(srv.URL))
	body := envelope(0, fmt.Appendf(nil, `{"sessionId":%q,"request":{"toolCallId":"q","toolName":"bash","arguments":{"command":"sleep 5"}}}`, env.SessionID()))
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/turnbox.v1.SandboxService/ExecuteToolStream", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/connect+json")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req) // returns once the headers arrived
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if took := time.Since(start); took > 2*time.Second || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/connect+json" {
		t.Errorf("headers after %v: %d %q, want 200 application/connect+json at once", took, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// TestContentLengthRefusedAtOnce: a request announcing a body larger than
// the message bound is answered resource_exhausted at once, without
// waiting for the body (here sent slowly, and never in full).
func TestContentLengthRefusedAtOnce(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "", server.WithMaxMessageBytes(1<<20))
	for _, c := range []struct{ path, ct string }{
		{"/turnbox.v1.SandboxService/ExecuteTool", "application/json"},
		{"/turnbox.v1.SandboxService/ExecuteToolStream", "application/connect+json"},
		{"/turnbox.v1.FilesService/Stat", "application/proto"},
	} {
		conn, err := net.Dial("tcp", srv.Addr)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n{\"sessionId\":", c.path, c.ct, 80<<20)
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		took := time.Since(start)
		conn.Close()
		if took > 2*time.Second || !strings.Contains(string(raw), "resource_exhausted") || !strings.Contains(string(raw), "exceeds the server's message bound") {
			t.Errorf("%s: HTTP %d after %v: %q, want resource_exhausted naming the bound, at once", c.path, resp.StatusCode, took, raw)
		}
	}
}
