package environment_test

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/turnbox/turnbox/environment"
)

// Build a tool call from typed parameters, then decode it back the way a
// host does before running it.
func ExampleNewToolRequest() {
	req, err := environment.NewToolRequest("call-1", environment.WriteFileParams{Path: "notes/a.txt", Content: "hi\n"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(req.ToolName, string(req.Input))

	p, err := environment.ParseParams(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	w := p.(environment.WriteFileParams)
	fmt.Printf("%s: %q\n", w.Path, w.Content)

	// Invalid parameters are refused before anything runs.
	_, err = environment.NewToolRequest("call-2", environment.BashParams{Command: "  "})
	fmt.Println(errors.Is(err, environment.ErrInvalidArgument))
	// Output:
	// write_file {"path":"notes/a.txt","content":"hi\n"}
	// notes/a.txt: "hi\n"
	// true
}

// A model produced the input: ParseParams checks it against the tool's
// schema (exact field names, no extras, required fields present).
func ExampleParseParams() {
	req := environment.ToolRequest{
		ToolCallID: "toolu_01",
		ToolName:   environment.ToolGrep,
		Input:      json.RawMessage(`{"pattern":"TODO","glob":"**/*.go","max_results":10}`),
	}
	p, err := environment.ParseParams(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	g := p.(environment.GrepParams)
	fmt.Println(g.Pattern, g.Glob, g.MaxResults)

	req.Input = json.RawMessage(`{"pattern":"TODO","Path":"src"}`)
	_, err = environment.ParseParams(req)
	fmt.Println(err)

	req.ToolName = "python"
	_, err = environment.ParseParams(req)
	fmt.Println(errors.Is(err, environment.ErrUnknownTool))
	// Output:
	// TODO **/*.go 10
	// invalid argument: grep: unknown field "Path"
	// true
}

// The catalogue, with a JSON Schema per tool, to hand to a model.
func ExampleTools() {
	for _, t := range environment.Tools() {
		var schema struct {
			Required []string `json:"required"`
		}
		if err := json.Unmarshal(t.InputSchema, &schema); err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(t.Name, schema.Required)
	}
	// Output:
	// bash [command]
	// read_file [path]
	// write_file [path content]
	// edit_file [path old_string new_string]
	// list_files [pattern]
	// grep [pattern]
}

// Globs as list_files and grep use them: "**" spans directories, and a
// pattern without "/" matches the base name at any depth.
func ExampleMatchGlob() {
	for _, c := range []struct{ pattern, name string }{
		{"**/*.go", "main.go"},
		{"**/*.go", "cmd/turnbox/main.go"},
		{"*.go", "cmd/turnbox/main.go"},
		{"cmd/*.go", "cmd/turnbox/main.go"},
		{"cmd/**/main.go", "cmd/turnbox/main.go"},
	} {
		ok, _ := environment.MatchGlob(c.pattern, c.name)
		fmt.Println(c.pattern, c.name, ok)
	}
	_, err := environment.MatchGlob("[a-", "x")
	fmt.Println(err)
	// Output:
	// **/*.go main.go true
	// **/*.go cmd/turnbox/main.go true
	// *.go cmd/turnbox/main.go true
	// cmd/*.go cmd/turnbox/main.go false
	// cmd/**/main.go cmd/turnbox/main.go true
	// syntax error in pattern
}
