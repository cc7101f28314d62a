package remote_test

import (
	"errors"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
)

// TestInputsInvalidArgument: over the wire, path-like images, bad env
// names, labels, snapshot ids and tool call ids fail with code
// InvalidArgument (reason INVALID_ARGUMENT) and leave no session.
func TestInputsInvalidArgument(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	client := remote.NewClient(srv.URL)
	ctx := t.Context()
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, environment.ErrInvalidArgument) || connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("%s: err = %v (code %v), want ErrInvalidArgument with code InvalidArgument", what, err, connect.CodeOf(err))
		}
	}
	for what, c := range map[string]*turnboxv1.SessionConfig{
		"image /":        {SessionId: "in-1", Image: "/"},
		"image ../x":     {SessionId: "in-2", Image: "../x"},
		"env name A=B":   {SessionId: "in-3", Env: map[string]string{"A=B": "x"}},
		"env value NUL":  {SessionId: "in-4", Env: map[string]string{"A": "x\x00"}},
		"label key":      {SessionId: "in-5", Labels: map[string]string{"a/../b c": "x"}},
		"from /etc":      {SessionId: "in-6", FromSnapshot: "/etc/passwd"},
		"huge output":    {SessionId: "in-7", MaxOutputBytes: environment.MaxSessionOutputBytes + 1},
		"session id ../": {SessionId: "../x"},
	} {
		_, err := rpc(ctx, client.CreateSession, &turnboxv1.CreateSessionRequest{Config: c})
		check("CreateSession "+what, err)
	}
	list, err := rpc(ctx, client.ListSessions, &turnboxv1.ListSessionsRequest{})
	if err != nil || len(list.GetSessions()) != 0 {
		t.Errorf("after refused creates: sessions %v, err %v", list.GetSessions(), err)
	}

	created, err := rpc(ctx, client.CreateSession, &turnboxv1.CreateSessionRequest{Config: &turnboxv1.SessionConfig{SessionId: "in-ok"}})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetSession().GetId()
	for _, callID := range []string{"a\x00b", strings.Repeat("c", environment.MaxToolCallIDLength+1)} {
		_, err := rpc(ctx, client.ExecuteTool, &turnboxv1.ExecuteToolRequest{SessionId: id,
			Request: &turnboxv1.ToolRequest{ToolCallId: callID, ToolName: "write_file", Input: []byte(`{"path":"x.txt","content":"x"}`)}})
		check("ExecuteTool with a bad tool call id", err)
	}
	_, err = rpc(ctx, client.Rollback, &turnboxv1.RollbackRequest{SessionId: id, SnapshotId: "../x@1"})
	check("Rollback(../x@1)", err)
	_, err = rpc(ctx, client.Fork, &turnboxv1.ForkRequest{SessionId: id, SnapshotId: "/etc@1"})
	check("Fork(/etc@1)", err)
	_, err = rpc(ctx, client.TurnComplete, &turnboxv1.TurnCompleteRequest{SessionId: id, Label: "a\nb"})
	check("TurnComplete with a newline in the label", err)
	resp, err := rpc(ctx, client.ExecuteTool, &turnboxv1.ExecuteToolRequest{SessionId: id,
		Request: &turnboxv1.ToolRequest{ToolCallId: "read", ToolName: "read_file", Input: []byte(`{"path":"x.txt"}`)}})
	if err != nil || !resp.GetResponse().GetIsError() {
		t.Errorf("x.txt exists after refused writes: %v %v", resp, err)
	}
}
