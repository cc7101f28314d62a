package environment

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
)

// Tool names of the catalogue.
const (
	ToolBash      = "bash"
	ToolReadFile  = "read_file"
	ToolWriteFile = "write_file"
	ToolEditFile  = "edit_file"
	ToolListFiles = "list_files"
	ToolGrep      = "grep"
)

// MaxIDLength bounds session ids.
const MaxIDLength = 64

// idPattern: ids are safe as a path element, a ZFS dataset component and a
// container id: no separators, no "..", bounded length.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)

// ValidateID reports whether id is a valid session id: 1 to MaxIDLength
// characters of [A-Za-z0-9_-], starting with a letter or digit. The error
// wraps ErrInvalidArgument.
func ValidateID(id string) error {
	return checkToken("id", id, MaxIDLength, idPattern, "only letters, digits, '_' and '-' are allowed, starting with a letter or digit")
}

// ToolRequest is one tool call.
type ToolRequest struct {
	// ToolCallID identifies the call (the model's tool_use id). Remote
	// hosts use it to make retries idempotent.
	ToolCallID string `json:"tool_call_id"`
	// ToolName is one of the catalogue's names.
	ToolName string `json:"tool_name"`
	// Input holds the tool's parameters as a JSON object, as the model
	// produced them. Build it from typed parameters with NewToolRequest.
	Input json.RawMessage `json:"input"`
	// Snapshot asks for a snapshot of the workspace after the call (needs
	// Capabilities.Snapshots); its id comes back in ToolResponse.SnapshotID.
	Snapshot bool `json:"snapshot,omitempty"`
}

// ToolResponse is the result of one tool call.
type ToolResponse struct {
	// ToolCallID echoes the request's.
	ToolCallID string `json:"tool_call_id"`
	// Content is the tool's output: for bash, stdout and stderr interleaved
	// as produced; for file tools, the file content, listing or matches.
	Content string `json:"content"`
	// ExitCode is the command's exit status (bash); 0 or 1 for other tools.
	ExitCode int `json:"exit_code"`
	// IsError reports that the tool ran and failed (non-zero exit, missing
	// file, no match for an edit, timeout).
	IsError bool `json:"is_error,omitempty"`
	// TimedOut reports that the call hit its timeout and its process tree
	// was killed.
	TimedOut bool `json:"timed_out,omitempty"`
	// Truncated reports that Content was cut at the output cap.
	Truncated bool `json:"truncated,omitempty"`
	// OOMKilled reports that the command was killed for exceeding the
	// session's memory limit (Content ends with a notice); the session
	// lives on.
	OOMKilled bool `json:"oom_killed,omitempty"`
	// Duration is how long the call ran.
	Duration time.Duration `json:"duration"`
	// SnapshotID is the snapshot taken after the call, if one was asked for.
	SnapshotID string `json:"snapshot_id,omitempty"`
	// PID is the bash command's process id inside the sandbox, where the
	// environment implements ProcessRunner (0 otherwise): its output can
	// be followed later with AttachProcess.
	PID int `json:"pid,omitempty"`
}

// Progress streams.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

// ToolProgress is a piece of a running tool's output.
type ToolProgress struct {
	// ToolCallID is the call the output belongs to.
	ToolCallID string `json:"tool_call_id"`
	// Stream is StreamStdout or StreamStderr.
	Stream string `json:"stream"`
	// Data is the output, in the order it was produced on its stream.
	Data []byte `json:"data"`
}

// ToolParams is implemented by the typed parameters of each tool.
type ToolParams interface {
	// ToolName is the catalogue name of the tool these parameters are for.
	ToolName() string
	// Validate checks the parameters; the error wraps ErrInvalidArgument.
	Validate() error
}

// BashParams are the parameters of the bash tool: run a command with
// /bin/sh -c semantics (bash where the image has it) in the workspace.
type BashParams struct {
	Command string `json:"command"`
	// TimeoutMS bounds this call (0: the session's default). The whole
	// process tree is killed at the bound.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// Workdir is a directory relative to the workspace root (default:
	// the session's image's WORKDIR where the host applies it, else ".").
	Workdir string `json:"workdir,omitempty"`
}

// ReadFileParams are the parameters of read_file: the content of a file,
// optionally a range of lines.
type ReadFileParams struct {
	Path string `json:"path"`
	// Offset is the first line to return, from 1 (0 means 1).
	Offset int `json:"offset,omitempty"`
	// Limit is the number of lines to return (0: all).
	Limit int `json:"limit,omitempty"`
}

// WriteFileParams are the parameters of write_file: create or replace a
// file, creating parent directories.
type WriteFileParams struct {
	Path    string `json:"path"`
	Content string `json:"content"`
}

// EditFileParams are the parameters of edit_file: replace OldString with
// NewString. OldString must occur exactly once unless ReplaceAll is set.
type EditFileParams struct {
	Path       string `json:"path"`
	OldString  string `json:"old_string"`
	NewString  string `json:"new_string"`
	ReplaceAll bool   `json:"replace_all,omitempty"`
}

// ListFilesParams are the parameters of list_files: paths under Path
// matching a glob, where "**" matches any number of directories.
type ListFilesParams struct {
	Pattern string `json:"pattern"`
	// Path is the directory to search, relative to the workspace (".").
	Path string `json:"path,omitempty"`
}

// GrepParams are the parameters of grep: lines matching an RE2 regular
// expression in files under Path, as "path:line:text".
type GrepParams struct {
	Pattern string `json:"pattern"`
	// Path is a file or directory relative to the workspace (default ".").
	Path string `json:"path,omitempty"`
	// Glob filters file names (e.g. "*.go", "**/*.py").
	Glob string `json:"glob,omitempty"`
	// IgnoreCase matches case-insensitively.
	IgnoreCase bool `json:"ignore_case,omitempty"`
	// MaxResults caps the number of matching lines (0: 1000).
	MaxResults int `json:"max_results,omitempty"`
}

// ToolName implements ToolParams.
func (BashParams) ToolName() string { return ToolBash }

// ToolName implements ToolParams.
func (ReadFileParams) ToolName() string { return ToolReadFile }

// ToolName implements ToolParams.
func (WriteFileParams) ToolName() string { return ToolWriteFile }

// ToolName implements ToolParams.
func (EditFileParams) ToolName() string { return ToolEditFile }

// ToolName implements ToolParams.
func (ListFilesParams) ToolName() string { return ToolListFiles }

// ToolName implements ToolParams.
func (GrepParams) ToolName() string { return ToolGrep }

func invalid(tool, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidArgument, tool, fmt.Sprintf(format, args...))
}

func checkPath(tool, field, p string, required bool) error {
	if p == "" {
		if required {
			return invalid(tool, "%s is required", field)
		}
		return nil
	}
	if strings.IndexByte(p, 0) >= 0 {
		return invalid(tool, "%s contains a NUL byte", field)
	}
	if len(p) > MaxPathLength {
		return invalid(tool, "%s is longer than %d bytes", field, MaxPathLength)
	}
	return nil
}

// Validate implements ToolParams.
func (p BashParams) Validate() error {
	if strings.TrimSpace(p.Command) == "" {
		return invalid(ToolBash, "command is required")
	}
	if strings.IndexByte(p.Command, 0) >= 0 {
		return invalid(ToolBash, "command contains a NUL byte")
	}
	if len(p.Command) > MaxCommandLength {
		return invalid(ToolBash, "command is %d bytes, longer than %d", len(p.Command), MaxCommandLength)
	}
	if p.TimeoutMS < 0 {
		return invalid(ToolBash, "timeout_ms is negative")
	}
	return checkPath(ToolBash, "workdir", p.Workdir, false)
}

// Validate implements ToolParams.
func (p ReadFileParams) Validate() error {
	if p.Offset < 0 || p.Limit < 0 {
		return invalid(ToolReadFile, "offset and limit must not be negative")
	}
	return checkPath(ToolReadFile, "path", p.Path, true)
}

// Validate implements ToolParams.
func (p WriteFileParams) Validate() error {
	if len(p.Content) > MaxFileContentLength {
		return invalid(ToolWriteFile, "content is %d bytes, longer than %d", len(p.Content), MaxFileContentLength)
	}
	return checkPath(ToolWriteFile, "path", p.Path, true)
}

// Validate implements ToolParams.
func (p EditFileParams) Validate() error {
	if p.OldString == "" {
		return invalid(ToolEditFile, "old_string is required")
	}
	if p.OldString == p.NewString {
		return invalid(ToolEditFile, "old_string and new_string are equal")
	}
	if len(p.OldString) > MaxFileContentLength || len(p.NewString) > MaxFileContentLength {
		return invalid(ToolEditFile, "old_string or new_string is longer than %d bytes", MaxFileContentLength)
	}
	return checkPath(ToolEditFile, "path", p.Path, true)
}

// Validate implements ToolParams.
func (p ListFilesParams) Validate() error {
	if p.Pattern == "" {
		return invalid(ToolListFiles, "pattern is required")
	}
	if err := checkPath(ToolListFiles, "pattern", p.Pattern, true); err != nil {
		return err
	}
	if _, err := MatchGlob(p.Pattern, ""); err != nil {
		return invalid(ToolListFiles, "pattern: %v", err)
	}
	return checkPath(ToolListFiles, "path", p.Path, false)
}

// Validate implements ToolParams.
func (p GrepParams) Validate() error {
	if p.Pattern == "" {
		return invalid(ToolGrep, "pattern is required")
	}
	if _, err := regexp.Compile(p.Pattern); err != nil {
		return invalid(ToolGrep, "pattern: %v", err)
	}
	if p.Glob != "" {
		if _, err := MatchGlob(p.Glob, ""); err != nil {
			return invalid(ToolGrep, "glob: %v", err)
		}
	}
	if p.MaxResults < 0 {
		return invalid(ToolGrep, "max_results is negative")
	}
	return checkPath(ToolGrep, "path", p.Path, false)
}

// NewToolRequest builds a validated ToolRequest from typed parameters.
func NewToolRequest(toolCallID string, params ToolParams) (ToolRequest, error) {
	if err := ValidateToolCallID(toolCallID); err != nil {
		return ToolRequest{}, err
	}
	if err := params.Validate(); err != nil {
		return ToolRequest{}, err
	}
	input, err := json.Marshal(params)
	if err != nil {
		return ToolRequest{}, fmt.Errorf("%w: %s: %v", ErrInvalidArgument, params.ToolName(), err)
	}
	return ToolRequest{ToolCallID: toolCallID, ToolName: params.ToolName(), Input: input}, nil
}

// ParseParams decodes and validates req.Input into the typed parameters of
// req.ToolName. Unknown tools give ErrUnknownTool; bad input (not an object,
// unknown fields, wrong types, failed validation, a malformed ToolCallID)
// gives ErrInvalidArgument.
func ParseParams(req ToolRequest) (ToolParams, error) {
	if err := ValidateToolCallID(req.ToolCallID); err != nil {
		return nil, err
	}
	if len(req.Input) > MaxToolInputLength {
		return nil, invalid(req.ToolName, "input is %d bytes, longer than %d", len(req.Input), MaxToolInputLength)
	}
	var p ToolParams
	switch req.ToolName {
	case ToolBash:
		p = &BashParams{}
	case ToolReadFile:
		p = &ReadFileParams{}
	case ToolWriteFile:
		p = &WriteFileParams{}
	case ToolEditFile:
		p = &EditFileParams{}
	case ToolListFiles:
		p = &ListFilesParams{}
	case ToolGrep:
		p = &GrepParams{}
	default:
		return nil, fmt.Errorf("%w: %q (known: %s)", ErrUnknownTool, req.ToolName, strings.Join(ToolNames(), ", "))
	}
	input := bytes.TrimSpace(req.Input)
	if len(input) == 0 || input[0] != '{' {
		return nil, invalid(req.ToolName, "input must be a JSON object")
	}
	// encoding/json matches keys case-insensitively, lets the last of
	// duplicate keys win and ignores absent ones; the schema says exact
	// names, no extras, and the required ones present. Check that first.
	if err := checkKeys(req.ToolName, input); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(input))
	dec.DisallowUnknownFields()
	if err := dec.Decode(p); err != nil {
		return nil, invalid(req.ToolName, "decoding input: %v", err)
	}
	// Dereference so callers switch on value types.
	var v ToolParams
	switch q := p.(type) {
	case *BashParams:
		v = *q
	case *ReadFileParams:
		v = *q
	case *WriteFileParams:
		v = *q
	case *EditFileParams:
		v = *q
	case *ListFilesParams:
		v = *q
	case *GrepParams:
		v = *q
	}
	if err := v.Validate(); err != nil {
		return nil, err
	}
	return v, nil
}

// schemaFields holds, per tool, the property names of its input schema and
// which of them are required.
type schemaFields struct {
	props    map[string]bool
	required []string
}

var toolFields = func() map[string]schemaFields {
	m := make(map[string]schemaFields, len(toolSpecs))
	for name, spec := range toolSpecs {
		var s struct {
			Properties map[string]json.RawMessage `json:"properties"`
			Required   []string                   `json:"required"`
		}
		if err := json.Unmarshal(spec.InputSchema, &s); err != nil {
			panic(fmt.Sprintf("environment: schema of %s: %v", name, err))
		}
		f := schemaFields{props: make(map[string]bool, len(s.Properties)), required: s.Required}
		for k := range s.Properties {
			f.props[k] = true
		}
		m[name] = f
	}
	return m
}()

// checkKeys checks that input is exactly one JSON object whose keys are
// properties of tool's schema, spelled exactly, each at most once, with
// every required property present.
func checkKeys(tool string, input []byte) error {
	fields := toolFields[tool]
	dec := json.NewDecoder(bytes.NewReader(input))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return invalid(tool, "input must be a JSON object")
	}
	seen := make(map[string]bool, len(fields.props))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return invalid(tool, "decoding input: %v", err)
		}
		key, _ := tok.(string)
		if !fields.props[key] {
			return invalid(tool, "unknown field %q", key)
		}
		if seen[key] {
			return invalid(tool, "duplicate field %q", key)
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return invalid(tool, "decoding input: %v", err)
		}
	}
	if _, err := dec.Token(); err != nil {
		return invalid(tool, "decoding input: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalid(tool, "trailing data after the input object")
	}
	for _, r := range fields.required {
		if !seen[r] {
			return invalid(tool, "%s is required", r)
		}
	}
	return nil
}

// ToolSpec describes one tool for a model: its name, what it does and the
// JSON Schema of its input.
type ToolSpec struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	InputSchema json.RawMessage `json:"input_schema"`
}

// ToolNames lists the catalogue's tool names in a stable order.
func ToolNames() []string {
	return []string{ToolBash, ToolReadFile, ToolWriteFile, ToolEditFile, ToolListFiles, ToolGrep}
}

// Tools returns the catalogue: every tool's name, description and JSON
// Schema (draft 2020-12), ready to hand to a model.
func Tools() []ToolSpec {
	specs := make([]ToolSpec, 0, len(toolSpecs))
	for _, name := range ToolNames() {
		specs = append(specs, toolSpecs[name])
	}
	return specs
}

// Tool returns one tool's spec and whether it exists.
func Tool(name string) (ToolSpec, bool) {
	s, ok := toolSpecs[name]
	return s, ok
}

var toolSpecs = map[string]ToolSpec{
	ToolBash: {
		Name:        ToolBash,
		Description: "Run a shell command in the workspace. stdout and stderr stream as the command runs; the whole process tree is killed at the timeout. Output beyond the session's cap is dropped and the response says it was truncated.",
		InputSchema: json.RawMessage(`{
  "type": "object",
  "properties": {
    "command": {"type": "string", "minLength": 1, "description": "Shell command, run with sh -c in the workspace."},
    "timeout_ms": {"type": "integer", "minimum": 0, "description": "Timeout in milliseconds; 0 uses the session default."},
    "workdir": {"type": "string", "description": "Working directory relative to the workspace root."}
  },
  "required": ["command"],
  "additionalProperties": false
}`),
	},
	ToolReadFile: {
		Name:        ToolReadFile,
		Description: "Read a file in the workspace, optionally a range of lines.",
		InputSchema: json.RawMessage(`{
  "type": "object",
  "properties": {
    "path": {"type": "string", "minLength": 1, "description": "File path relative to the workspace root."},
    "offset": {"type": "integer", "minimum": 0, "description": "First line to return, from 1."},
    "limit": {"type": "integer", "minimum": 0, "description": "Number of lines to return; 0 returns all."}
  },
  "required": ["path"],
  "additionalProperties": false
}`),
	},
	ToolWriteFile: {
		Name:        ToolWriteFile,
		Description: "Create or replace a file in the workspace with the given content, creating parent directories.",
		InputSchema: json.RawMessage(`{
  "type": "object",
  "properties": {
    "path": {"type": "string", "minLength": 1, "description": "File path relative to the workspace root."},
    "content": {"type": "string", "description": "The whole new content of the file."}
  },
  "required": ["path", "content"],
  "additionalProperties": false
}`),
	},
	ToolEditFile: {
		Name:        ToolEditFile,
		Description: "Replace old_string with new_string in a file. old_string must occur exactly once unless replace_all is true.",
		InputSchema: json.RawMessage(`{
  "type": "object",
  "properties": {
    "path": {"type": "string", "minLength": 1, "description": "File path relative to the workspace root."},
    "old_string": {"type": "string", "minLength": 1, "description": "Exact text to replace."},
    "new_string": {"type": "string", "description": "Replacement text."},
    "replace_all": {"type": "boolean", "description": "Replace every occurrence instead of exactly one."}
  },
  "required": ["path", "old_string", "new_string"],
  "additionalProperties": false
}`),
	},
	ToolListFiles: {
		Name:        ToolListFiles,
		Description: "List files under a directory whose paths match a glob; ** matches any number of directories. Paths are relative to the workspace root, sorted.",
		InputSchema: json.RawMessage(`{
  "type": "object",
  "properties": {
    "pattern": {"type": "string", "minLength": 1, "description": "Glob such as **/*.go or src/*.txt."},
    "path": {"type": "string", "description": "Directory to search, relative to the workspace root."}
  },
  "required": ["pattern"],
  "additionalProperties": false
}`),
	},
	ToolGrep: {
		Name:        ToolGrep,
		Description: "Search file contents with an RE2 regular expression; prints path:line:text for each matching line.",
		InputSchema: json.RawMessage(`{
  "type": "object",
  "properties": {
    "pattern": {"type": "string", "minLength": 1, "description": "RE2 regular expression."},
    "path": {"type": "string", "description": "File or directory to search, relative to the workspace root."},
    "glob": {"type": "string", "description": "Only search files whose path matches this glob."},
    "ignore_case": {"type": "boolean"},
    "max_results": {"type": "integer", "minimum": 0, "description": "Maximum matching lines; 0 means 1000."}
  },
  "required": ["pattern"],
  "additionalProperties": false
}`),
	},
}
