package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
)

// TestArgumentsNumbers: integers sent by a JSON client as arguments
// (doubles in a google.protobuf.Struct) reach the tools as integer
// literals, exactly, up to 2^53; beyond that the server refuses them and
// the Go client sends input bytes instead.
func TestArgumentsNumbers(t *testing.T) {
	// What a JSON client sends, decoded as the server decodes it.
	var req turnboxv1.ToolRequest
	body := `{"toolCallId":"c","toolName":"read_file","arguments":{"path":"a","offset":1e6,"limit":9007199254740992,"nested":[{"x":-3}],"f":0.5}}`
	if err := protojson.Unmarshal([]byte(body), &req); err != nil {
		t.Fatal(err)
	}
	got, err := ToolRequestFromProto(&req)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"f":0.5,"limit":9007199254740992,"nested":[{"x":-3}],"offset":1000000,"path":"a"}`
	if string(got.Input) != want {
		t.Errorf("input = %s, want %s", got.Input, want)
	}
	var p environment.ReadFileParams
	if err := json.Unmarshal(got.Input, &p); err != nil || p.Offset != 1000000 || p.Limit != 1<<53 {
		t.Errorf("ReadFileParams = %+v, %v", p, err)
	}

	for _, bad := range []string{`{"offset":9007199254740994}`, `{"offset":-1e300}`} {
		var r turnboxv1.ToolRequest
		if err := protojson.Unmarshal([]byte(`{"toolCallId":"c","toolName":"read_file","arguments":`+bad+`}`), &r); err != nil {
			t.Fatal(err)
		}
		if _, err := ToolRequestFromProto(&r); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("arguments %s: err = %v, want ErrInvalidArgument", bad, err)
		}
	}

	// The Go client: arguments when exact, input bytes otherwise.
	for in, wantArgs := range map[string]bool{
		`{"command":"ls","timeout_ms":120000}`: true,
		`{"offset":9007199254740992}`:          true,
		`{"offset":9007199254740993}`:          false, // not a double
		`{"offset":123456789012345678901}`:     false,
		`{"command":"` + "\xff" + `"}`:         false, // not UTF-8
		`["not","an","object"]`:                false,
		`{"command":"ls"} trailing`:            false,
		`{"command":`:                          false,
		``:                                     false,
	} {
		pr := ToolRequestToProto(environment.ToolRequest{ToolCallID: "c", ToolName: "bash", Input: []byte(in)})
		sentArgs := pr.GetArguments() != nil && len(pr.GetInput()) == 0
		sentInput := pr.GetArguments() == nil && string(pr.GetInput()) == in
		if wantArgs && !sentArgs || !wantArgs && !sentInput {
			t.Errorf("ToolRequestToProto(%q): arguments %v, input %q", in, pr.GetArguments(), pr.GetInput())
			continue
		}
		back, err := ToolRequestFromProto(pr)
		if in == "" {
			if !errors.Is(err, environment.ErrInvalidArgument) {
				t.Errorf("empty input: err = %v, want ErrInvalidArgument", err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ToolRequestFromProto(%q): %v", in, err)
			continue
		}
		if wantArgs {
			var a, b any
			_ = json.Unmarshal([]byte(in), &a)
			_ = json.Unmarshal(back.Input, &b)
			ab, _ := json.Marshal(a)
			bb, _ := json.Marshal(b)
			if !bytes.Equal(ab, bb) || strings.Contains(string(back.Input), "e+") {
				t.Errorf("round trip of %s gave %s", in, back.Input)
			}
		} else if string(back.Input) != in {
			t.Errorf("input bytes %q came back as %q", in, back.Input)
		}
	}
}

// TestToolRequestInputOrArguments: exactly one of input and arguments.
func TestToolRequestInputOrArguments(t *testing.T) {
	args, _ := structpb.NewStruct(map[string]any{"command": "ls"})
	for name, r := range map[string]*turnboxv1.ToolRequest{
		"both":    {ToolCallId: "c", ToolName: "bash", Input: []byte(`{"command":"ls"}`), Arguments: args},
		"neither": {ToolCallId: "c", ToolName: "bash"},
	} {
		if _, err := ToolRequestFromProto(r); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", name, err)
		}
	}
	r, err := ToolRequestFromProto(&turnboxv1.ToolRequest{ToolCallId: "c", ToolName: "bash", Arguments: &structpb.Struct{}})
	if err != nil || string(r.Input) != "{}" {
		t.Errorf("empty arguments: %q, %v", r.Input, err)
	}
}

// TestOutputTextOrBytes: valid UTF-8 travels in output, anything else in
// the bytes field, and both come back as the same content.
func TestOutputTextOrBytes(t *testing.T) {
	for _, content := range []string{"hi\n", "日本語 €𝄞", "\xff\xfebin", ""} {
		pr := ToolResponseToProto(&environment.ToolResponse{ToolCallID: "c", Content: content})
		text := utf8.ValidString(content)
		if text && (pr.GetOutput() != content || pr.GetContent() != nil) || !text && (pr.GetOutput() != "" || string(pr.GetContent()) != content) {
			t.Errorf("%q: output %q, content %q", content, pr.GetOutput(), pr.GetContent())
		}
		if back := ToolResponseFromProto(pr); back.Content != content {
			t.Errorf("%q came back as %q", content, back.Content)
		}
		pp := ToolProgressToProto(environment.ToolProgress{ToolCallID: "c", Stream: environment.StreamStdout, Data: []byte(content)})
		if back := ToolProgressFromProto(pp); string(back.Data) != content || back.Stream != environment.StreamStdout {
			t.Errorf("progress %q came back as %q on %q", content, back.Data, back.Stream)
		}
	}
}

// TestProgressEncoderSplitsUTF8: text cut at every byte offset into
// chunks, interleaved on two streams, travels as whole UTF-8 in output
// fields, with at most utf8.UTFMax-1 bytes held per stream; invalid bytes
// go in data at once, and an incomplete end is flushed as data.
func TestProgressEncoderSplitsUTF8(t *testing.T) {
	text := "aé日𝄞€ b\n"
	for cut1 := 0; cut1 <= len(text); cut1++ {
		for cut2 := cut1; cut2 <= len(text); cut2++ {
			var e ProgressEncoder
			var got = map[string]*strings.Builder{environment.StreamStdout: {}, environment.StreamStderr: {}}
			for _, chunk := range []string{text[:cut1], text[cut1:cut2], text[cut2:]} {
				for _, s := range []string{environment.StreamStdout, environment.StreamStderr} {
					ev := e.Encode(environment.ToolProgress{ToolCallID: "c", Stream: s, Data: []byte(chunk)})
					if len(e.held[s]) >= utf8.UTFMax {
						t.Fatalf("held %d bytes", len(e.held[s]))
					}
					if ev == nil {
						continue
					}
					if len(ev.GetData()) != 0 || !utf8.ValidString(ev.GetOutput()) {
						t.Fatalf("cuts %d,%d: event with data %q output %q", cut1, cut2, ev.GetData(), ev.GetOutput())
					}
					got[s].WriteString(ev.GetOutput())
				}
			}
			if rest := e.Flush("c"); len(rest) != 0 {
				t.Fatalf("cuts %d,%d: flushed %v", cut1, cut2, rest)
			}
			for s, b := range got {
				if b.String() != text {
					t.Fatalf("cuts %d,%d: %s = %q", cut1, cut2, s, b.String())
				}
			}
		}
	}

	var e ProgressEncoder
	ev := e.Encode(environment.ToolProgress{Stream: environment.StreamStdout, Data: []byte("ok\xff\xe6\x97")})
	if string(ev.GetData()) != "ok\xff" || ev.GetOutput() != "" {
		t.Errorf("invalid chunk: data %q output %q", ev.GetData(), ev.GetOutput())
	}
	rest := e.Flush("c")
	if len(rest) != 1 || string(rest[0].GetData()) != "\xe6\x97" || rest[0].GetToolCallId() != "c" {
		t.Errorf("Flush = %v, want the held \\xe6\\x97 as data", rest)
	}
	if again := e.Flush("c"); len(again) != 0 {
		t.Errorf("second Flush = %v", again)
	}
}

// BenchmarkToolRequestRoundTrip measures what arguments add to a tool
// call: the client's ToolRequestToProto and the server's
// ToolRequestFromProto of a typical bash call.
func BenchmarkToolRequestRoundTrip(b *testing.B) {
	req := environment.ToolRequest{ToolCallID: "call-1", ToolName: "bash", Input: []byte(`{"command":"cd src && go test ./... 2>&1 | tail -20","timeout_ms":120000}`)}
	for b.Loop() {
		if _, err := ToolRequestFromProto(ToolRequestToProto(req)); err != nil {
			b.Fatal(err)
		}
	}
}
