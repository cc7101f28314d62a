package environment_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/environment"
)

// paramTypes maps each tool to the zero value of its typed parameters.
var paramTypes = map[string]environment.ToolParams{
	environment.ToolBash:      environment.BashParams{},
	environment.ToolReadFile:  environment.ReadFileParams{},
	environment.ToolWriteFile: environment.WriteFileParams{},
	environment.ToolEditFile:  environment.EditFileParams{},
	environment.ToolListFiles: environment.ListFilesParams{},
	environment.ToolGrep:      environment.GrepParams{},
}

// jsonFields returns the json names of v's struct fields and the subset
// without omitempty.
func jsonFields(v any) (all, required []string) {
	rt := reflect.TypeOf(v)
	for i := range rt.NumField() {
		tag := rt.Field(i).Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" || name == "-" {
			continue
		}
		all = append(all, name)
		if !strings.Contains(opts, "omitempty") {
			required = append(required, name)
		}
	}
	sort.Strings(all)
	sort.Strings(required)
	return all, required
}

func TestCatalogue(t *testing.T) {
	names := environment.ToolNames()
	if len(names) != len(paramTypes) {
		t.Fatalf("ToolNames() = %v, want the %d tools with typed parameters", names, len(paramTypes))
	}
	specs := environment.Tools()
	if len(specs) != len(names) {
		t.Fatalf("Tools() has %d specs, ToolNames() %d names", len(specs), len(names))
	}
	for i, name := range names {
		if specs[i].Name != name {
			t.Errorf("Tools()[%d].Name = %q, want %q (ToolNames order)", i, specs[i].Name, name)
		}
		spec, ok := environment.Tool(name)
		if !ok || spec.Name != name {
			t.Errorf("Tool(%q) = %+v, %v", name, spec, ok)
		}
		if strings.TrimSpace(spec.Description) == "" {
			t.Errorf("%s: empty description", name)
		}
		p, ok := paramTypes[name]
		if !ok {
			t.Errorf("%s: no typed parameters", name)
			continue
		}
		if p.ToolName() != name {
			t.Errorf("%T.ToolName() = %q, want %q", p, p.ToolName(), name)
		}
	}
	if _, ok := environment.Tool("no_such_tool"); ok {
		t.Error(`Tool("no_such_tool") reported ok`)
	}
}

func TestSchemasMatchParams(t *testing.T) {
	for _, spec := range environment.Tools() {
		t.Run(spec.Name, func(t *testing.T) {
			if !json.Valid(spec.InputSchema) {
				t.Fatalf("schema is not valid JSON: %s", spec.InputSchema)
			}
			var s struct {
				Type                 string                     `json:"type"`
				Properties           map[string]json.RawMessage `json:"properties"`
				Required             []string                   `json:"required"`
				AdditionalProperties *bool                      `json:"additionalProperties"`
			}
			if err := json.Unmarshal(spec.InputSchema, &s); err != nil {
				t.Fatal(err)
			}
			if s.Type != "object" {
				t.Errorf("type = %q, want object", s.Type)
			}
			if s.AdditionalProperties == nil || *s.AdditionalProperties {
				t.Error("additionalProperties must be false")
			}
			var props []string
			for k, v := range s.Properties {
				props = append(props, k)
				var prop map[string]any
				if err := json.Unmarshal(v, &prop); err != nil {
					t.Errorf("property %s: %v", k, err)
				} else if _, ok := prop["type"]; !ok {
					t.Errorf("property %s has no type", k)
				}
			}
			sort.Strings(props)
			req := slices.Clone(s.Required)
			sort.Strings(req)
			all, required := jsonFields(paramTypes[spec.Name])
			if !slices.Equal(props, all) {
				t.Errorf("schema properties %v, struct json fields %v", props, all)
			}
			if !slices.Equal(req, required) {
				t.Errorf("schema required %v, struct fields without omitempty %v", req, required)
			}
		})
	}
}

func TestParseParamsValid(t *testing.T) {
	cases := []struct {
		tool, input string
		want        environment.ToolParams
	}{
		{"bash", `{"command":"ls -l"}`, environment.BashParams{Command: "ls -l"}},
		{"bash", ` {"command":"ls","timeout_ms":500,"workdir":"sub"} `, environment.BashParams{Command: "ls", TimeoutMS: 500, Workdir: "sub"}},
		{"read_file", `{"path":"a.txt","offset":2,"limit":3}`, environment.ReadFileParams{Path: "a.txt", Offset: 2, Limit: 3}},
		{"write_file", `{"path":"a.txt","content":""}`, environment.WriteFileParams{Path: "a.txt"}},
		{"write_file", `{"path":"a.txt","content":"x\u0000y"}`, environment.WriteFileParams{Path: "a.txt", Content: "x\x00y"}},
		{"edit_file", `{"path":"a","old_string":"x","new_string":"","replace_all":true}`, environment.EditFileParams{Path: "a", OldString: "x", ReplaceAll: true}},
		{"list_files", `{"pattern":"**/*.go","path":"src"}`, environment.ListFilesParams{Pattern: "**/*.go", Path: "src"}},
		{"grep", `{"pattern":"fo+","glob":"*.go","ignore_case":true,"max_results":3}`, environment.GrepParams{Pattern: "fo+", Glob: "*.go", IgnoreCase: true, MaxResults: 3}},
		{"grep", `{"pattern":"x","path":null}`, environment.GrepParams{Pattern: "x"}},
	}
	for _, c := range cases {
		got, err := environment.ParseParams(environment.ToolRequest{ToolName: c.tool, Input: json.RawMessage(c.input)})
		if err != nil {
			t.Errorf("ParseParams(%s, %s): %v", c.tool, c.input, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseParams(%s, %s) = %#v, want %#v", c.tool, c.input, got, c.want)
		}
	}
}

func TestParseParamsUnknownTool(t *testing.T) {
	for _, name := range []string{"", "Bash", "shell", "read_file ", "rm"} {
		_, err := environment.ParseParams(environment.ToolRequest{ToolName: name, Input: json.RawMessage(`{"command":"ls"}`)})
		if !errors.Is(err, environment.ErrUnknownTool) {
			t.Errorf("tool %q: err = %v, want ErrUnknownTool", name, err)
		}
		if errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("tool %q: err = %v also matches ErrInvalidArgument", name, err)
		}
	}
}

func TestParseParamsInvalid(t *testing.T) {
	cases := []struct{ tool, input, why string }{
		{"bash", ``, "empty input"},
		{"bash", `null`, "null"},
		{"bash", `[]`, "array"},
		{"bash", `"ls"`, "string"},
		{"bash", `{`, "truncated"},
		{"bash", `{"command":"ls"`, "unterminated object"},
		{"bash", `{"command":"ls"} {}`, "two objects"},
		{"bash", `{"command":"ls"}]`, "trailing bracket"},
		{"bash", `{"command":"ls"}}`, "trailing brace"},
		{"bash", `{"command":"ls"} x`, "trailing garbage"},
		{"bash", `{}`, "missing command"},
		{"bash", `{"command":""}`, "empty command"},
		{"bash", `{"command":"  \n"}`, "blank command"},
		{"bash", `{"command":"ls","extra":1}`, "unknown field"},
		{"bash", `{"Command":"ls"}`, "field name in the wrong case"},
		{"bash", `{"command":"ls","command":"rm -rf ."}`, "duplicate field"},
		{"bash", `{"command":5}`, "command not a string"},
		{"bash", `{"command":"ls","timeout_ms":"5"}`, "timeout_ms a string"},
		{"bash", `{"command":"ls","timeout_ms":1.5}`, "timeout_ms fractional"},
		{"bash", `{"command":"ls","timeout_ms":-1}`, "timeout_ms negative"},
		{"bash", `{"command":"a\u0000b"}`, "NUL in command"},
		{"bash", `{"command":"ls","workdir":"a\u0000"}`, "NUL in workdir"},
		{"read_file", `{}`, "missing path"},
		{"read_file", `{"path":""}`, "empty path"},
		{"read_file", `{"path":"a\u0000b"}`, "NUL in path"},
		{"read_file", `{"path":"` + strings.Repeat("a", 4097) + `"}`, "path too long"},
		{"read_file", `{"path":"a","offset":-1}`, "negative offset"},
		{"read_file", `{"path":"a","limit":-2}`, "negative limit"},
		{"read_file", `{"path":"a","limit":"2"}`, "limit a string"},
		{"read_file", `{"path":["a"]}`, "path an array"},
		{"write_file", `{"path":"a"}`, "missing content"},
		{"write_file", `{"content":"x"}`, "missing path"},
		{"write_file", `{"path":"\u0000","content":"x"}`, "NUL path"},
		{"write_file", `{"path":"a","content":7}`, "content a number"},
		{"edit_file", `{"path":"a","old_string":"x"}`, "missing new_string"},
		{"edit_file", `{"path":"a","old_string":"","new_string":"y"}`, "empty old_string"},
		{"edit_file", `{"path":"a","old_string":"x","new_string":"x"}`, "old equals new"},
		{"edit_file", `{"path":"a","old_string":"x","new_string":"y","replace_all":"yes"}`, "replace_all a string"},
		{"edit_file", `{"path":"a\u0000","old_string":"x","new_string":"y"}`, "NUL path"},
		{"list_files", `{}`, "missing pattern"},
		{"list_files", `{"pattern":""}`, "empty pattern"},
		{"list_files", `{"pattern":"["}`, "bad glob"},
		{"list_files", `{"pattern":"src/**/[a-"}`, "bad glob element"},
		{"list_files", `{"pattern":"*.go","path":"a\u0000"}`, "NUL path"},
		{"list_files", `{"pattern":"a\u0000"}`, "NUL pattern"},
		{"grep", `{}`, "missing pattern"},
		{"grep", `{"pattern":"("}`, "bad regexp"},
		{"grep", `{"pattern":"a","glob":"["}`, "bad glob"},
		{"grep", `{"pattern":"a","max_results":-1}`, "negative max_results"},
		{"grep", `{"pattern":"a","ignore_case":1}`, "ignore_case a number"},
		{"grep", `{"pattern":"a","path":"x\u0000"}`, "NUL path"},
	}
	for _, c := range cases {
		_, err := environment.ParseParams(environment.ToolRequest{ToolName: c.tool, Input: json.RawMessage(c.input)})
		if !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("%s (%s %s): err = %v, want ErrInvalidArgument", c.why, c.tool, c.input, err)
		}
	}
}

func TestValidateParams(t *testing.T) {
	bad := []environment.ToolParams{
		environment.BashParams{},
		environment.BashParams{Command: "ls", TimeoutMS: -5},
		environment.ReadFileParams{},
		environment.ReadFileParams{Path: "a\x00"},
		environment.WriteFileParams{},
		environment.EditFileParams{Path: "a"},
		environment.ListFilesParams{Pattern: "a[", Path: "."},
		environment.GrepParams{Pattern: "a(b"},
		environment.GrepParams{Pattern: "a", Glob: "**/["},
	}
	for _, p := range bad {
		if err := p.Validate(); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("%#v.Validate() = %v, want ErrInvalidArgument", p, err)
		}
		if _, err := environment.NewToolRequest("id", p); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("NewToolRequest(%#v) = %v, want ErrInvalidArgument", p, err)
		}
	}
}

// TestNewToolRequestRoundTrip checks that every request NewToolRequest
// builds parses back to the same parameters.
func TestNewToolRequestRoundTrip(t *testing.T) {
	params := []environment.ToolParams{
		environment.BashParams{Command: "echo hi", TimeoutMS: 10, Workdir: "d"},
		environment.ReadFileParams{Path: "a"},
		environment.ReadFileParams{Path: "a", Offset: 3, Limit: 4},
		environment.WriteFileParams{Path: "a/b", Content: ""},
		environment.WriteFileParams{Path: "a/b", Content: "x\ny"},
		environment.EditFileParams{Path: "a", OldString: "x", NewString: ""},
		environment.EditFileParams{Path: "a", OldString: "x", NewString: "y", ReplaceAll: true},
		environment.ListFilesParams{Pattern: "**"},
		environment.GrepParams{Pattern: "x", Path: "p", Glob: "*.go", IgnoreCase: true, MaxResults: 9},
	}
	for _, p := range params {
		req, err := environment.NewToolRequest("call-1", p)
		if err != nil {
			t.Errorf("NewToolRequest(%#v): %v", p, err)
			continue
		}
		if req.ToolCallID != "call-1" || req.ToolName != p.ToolName() || req.Snapshot {
			t.Errorf("NewToolRequest(%#v) = %+v", p, req)
		}
		got, err := environment.ParseParams(req)
		if err != nil {
			t.Errorf("ParseParams(%s): %v", req.Input, err)
			continue
		}
		if !reflect.DeepEqual(got, p) {
			t.Errorf("round trip: got %#v, want %#v", got, p)
		}
	}
	// Pointers to parameters work too.
	req, err := environment.NewToolRequest("c", &environment.BashParams{Command: "true"})
	if err != nil || req.ToolName != environment.ToolBash {
		t.Errorf("NewToolRequest(*BashParams) = %+v, %v", req, err)
	}
}

func TestValidateID(t *testing.T) {
	good := []string{"a", "A", "0", "s-1", "sess_2", "abc-DEF_123", strings.Repeat("x", environment.MaxIDLength)}
	for _, id := range good {
		if err := environment.ValidateID(id); err != nil {
			t.Errorf("ValidateID(%q) = %v, want nil", id, err)
		}
	}
	bad := []string{
		"", "/", "a/b", "..", ".", "../x", "./a", "-a", "_a", "a b", "a.b",
		"a\x00", "a\n", "\na", "ü", "a:b", `a\b`, "a*", "a@b",
		strings.Repeat("x", environment.MaxIDLength+1),
	}
	for _, id := range bad {
		if err := environment.ValidateID(id); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("ValidateID(%q) = %v, want ErrInvalidArgument", id, err)
		}
	}
}

func TestSentinelErrorsDistinct(t *testing.T) {
	errs := []error{
		environment.ErrCapabilityNotSupported, environment.ErrSessionNotFound,
		environment.ErrSnapshotNotFound, environment.ErrNotActive, environment.ErrNotBound,
		environment.ErrAlreadyBound, environment.ErrAlreadyExists, environment.ErrInvalidArgument,
		environment.ErrUnknownTool, environment.ErrPathEscapes, environment.ErrBusy,
		environment.ErrLimitExceeded, environment.ErrClosed,
	}
	for i, a := range errs {
		for j, b := range errs {
			if i != j && errors.Is(a, b) {
				t.Errorf("%v matches %v", a, b)
			}
		}
	}
}
