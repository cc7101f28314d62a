package environment_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/environment"
)

func TestValidateImageName(t *testing.T) {
	for _, ok := range []string{"busybox", "debian12", "my_image-1.2", "A"} {
		if err := environment.ValidateImageName(ok); err != nil {
			t.Errorf("ValidateImageName(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "/", "/etc", "../x", "a/b", ".", "..", ".hidden", "-x", "x\x00", "a b", "a\\b", strings.Repeat("a", environment.MaxImageNameLength+1)} {
		if err := environment.ValidateImageName(bad); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("ValidateImageName(%q) = %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func TestValidateSnapshotID(t *testing.T) {
	for _, ok := range []string{"s-abc@1", "envtest-0123@12", "no-such-snapshot", strings.Repeat("a", environment.MaxIDLength) + "@99999"} {
		if err := environment.ValidateSnapshotID(ok); err != nil {
			t.Errorf("ValidateSnapshotID(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "../x@1", "/x@1", "a/b@1", "x\x00@1", "@1", "x@1 ", strings.Repeat("a", environment.MaxSnapshotIDLength+1)} {
		if err := environment.ValidateSnapshotID(bad); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("ValidateSnapshotID(%q) = %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func TestValidateTextInputs(t *testing.T) {
	for _, ok := range []string{"", "turn 3: tests pass", "ünïcode ✓"} {
		if err := environment.ValidateSnapshotName(ok); err != nil {
			t.Errorf("ValidateSnapshotName(%q) = %v", ok, err)
		}
		if err := environment.ValidateToolCallID(ok); err != nil {
			t.Errorf("ValidateToolCallID(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"a\x00b", "a\nb", "a\x7fb", "\xff"} {
		if err := environment.ValidateSnapshotName(bad); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("ValidateSnapshotName(%q) = %v, want ErrInvalidArgument", bad, err)
		}
		if err := environment.ValidateToolCallID(bad); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("ValidateToolCallID(%q) = %v, want ErrInvalidArgument", bad, err)
		}
	}
	if err := environment.ValidateSnapshotName(strings.Repeat("n", environment.MaxSnapshotNameLength+1)); !errors.Is(err, environment.ErrInvalidArgument) {
		t.Errorf("oversized snapshot name: %v", err)
	}
	if err := environment.ValidateToolCallID(strings.Repeat("c", environment.MaxToolCallIDLength+1)); !errors.Is(err, environment.ErrInvalidArgument) {
		t.Errorf("oversized tool call id: %v", err)
	}
}

func TestValidateEnvAndLabels(t *testing.T) {
	if err := environment.ValidateEnv(map[string]string{"PATH_X": "/a:/b", "_U": "", "A1": "x=y\nz"}); err != nil {
		t.Errorf("ValidateEnv(good) = %v", err)
	}
	if err := environment.ValidateEnv(map[string]string{"BIG": strings.Repeat("x", environment.MaxEnvBytes-5)}); err != nil {
		t.Errorf("ValidateEnv(at the bound) = %v", err)
	}
	many := map[string]string{}
	for i := 0; i <= environment.MaxEnvVars; i++ {
		many[fmt.Sprintf("V%d", i)] = ""
	}
	for name, env := range map[string]map[string]string{
		"=": {"A=B": ""}, "NUL": {"A\x00": ""}, "empty": {"": "x"}, "digit": {"1A": ""},
		"value NUL": {"A": "\x00"}, "many": many, "big": {"BIG": strings.Repeat("x", environment.MaxEnvBytes-4)},
		"long name": {strings.Repeat("A", environment.MaxEnvKeyLength+1): ""},
	} {
		if err := environment.ValidateEnv(env); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("ValidateEnv(%s) = %v, want ErrInvalidArgument", name, err)
		}
	}
	if err := environment.ValidateLabels(map[string]string{"team": "infra", "app.example.com/tier": "web", "v": ""}); err != nil {
		t.Errorf("ValidateLabels(good) = %v", err)
	}
	for name, l := range map[string]map[string]string{
		"empty key": {"": "x"}, "space": {"a b": ""}, "dotdot": {"../x": ""}, "NUL value": {"a": "\x00"},
		"newline value": {"a": "\n"}, "long value": {"a": strings.Repeat("v", environment.MaxLabelValueLength+1)},
	} {
		if err := environment.ValidateLabels(l); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("ValidateLabels(%s) = %v, want ErrInvalidArgument", name, err)
		}
	}
}

func TestSessionConfigValidate(t *testing.T) {
	good := environment.SessionConfig{SessionID: "s1", Image: "busybox", FromSnapshot: "s0@1", Env: map[string]string{"A": "b"}, Labels: map[string]string{"k": "v"}, ToolTimeout: time.Minute}
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate(good) = %v", err)
	}
	if err := (environment.SessionConfig{}).Validate(); err != nil {
		t.Fatalf("Validate(zero) = %v", err)
	}
	for name, mod := range map[string]func(*environment.SessionConfig){
		"id":        func(c *environment.SessionConfig) { c.SessionID = "../x" },
		"image":     func(c *environment.SessionConfig) { c.Image = "/" },
		"snapshot":  func(c *environment.SessionConfig) { c.FromSnapshot = "/etc@1" },
		"env":       func(c *environment.SessionConfig) { c.Env = map[string]string{"A=B": ""} },
		"labels":    func(c *environment.SessionConfig) { c.Labels = map[string]string{"": ""} },
		"timeout":   func(c *environment.SessionConfig) { c.ToolTimeout = -time.Second },
		"outputcap": func(c *environment.SessionConfig) { c.MaxOutputBytes = -1 },
		"hugecap":   func(c *environment.SessionConfig) { c.MaxOutputBytes = environment.MaxSessionOutputBytes + 1 },
	} {
		c := good
		mod(&c)
		if err := c.Validate(); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("Validate with a bad %s = %v, want ErrInvalidArgument", name, err)
		}
	}
}

func TestToolInputBounds(t *testing.T) {
	for name, p := range map[string]environment.ToolParams{
		"command":  environment.BashParams{Command: strings.Repeat("x", environment.MaxCommandLength+1)},
		"content":  environment.WriteFileParams{Path: "a", Content: strings.Repeat("x", environment.MaxFileContentLength+1)},
		"old":      environment.EditFileParams{Path: "a", OldString: strings.Repeat("x", environment.MaxFileContentLength+1), NewString: "y"},
		"path":     environment.ReadFileParams{Path: strings.Repeat("x", environment.MaxPathLength+1)},
		"workdir0": environment.BashParams{Command: "true", Workdir: "a\x00"},
	} {
		if _, err := environment.NewToolRequest("c1", p); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("NewToolRequest(%s) = %v, want ErrInvalidArgument", name, err)
		}
	}
	if _, err := environment.NewToolRequest("c1", environment.BashParams{Command: strings.Repeat("x", environment.MaxCommandLength)}); err != nil {
		t.Errorf("a command at the bound: %v", err)
	}
	huge := environment.ToolRequest{ToolCallID: "c2", ToolName: environment.ToolBash,
		Input: []byte(`{"command":"true"` + strings.Repeat(" ", environment.MaxToolInputLength) + `}`)}
	if _, err := environment.ParseParams(huge); !errors.Is(err, environment.ErrInvalidArgument) {
		t.Errorf("ParseParams of an oversized input = %v, want ErrInvalidArgument", err)
	}
	req := environment.ToolRequest{ToolCallID: "bad\x00id", ToolName: environment.ToolBash, Input: []byte(`{"command":"true"}`)}
	if _, err := environment.ParseParams(req); !errors.Is(err, environment.ErrInvalidArgument) {
		t.Errorf("ParseParams with a NUL in the tool call id = %v, want ErrInvalidArgument", err)
	}
}
