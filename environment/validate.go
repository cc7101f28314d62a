package environment

import (
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// Input limits. Every input that reaches a host path, a mount, a runtime's
// or storage tool's arguments or a sandbox's environment is checked against
// these before anything is written; a violation is ErrInvalidArgument.
const (
	// MaxImageNameLength bounds SessionConfig.Image.
	MaxImageNameLength = 128
	// MaxSnapshotIDLength bounds snapshot ids (Rollback, Fork,
	// SessionConfig.FromSnapshot): a session id, '@' and a turn number.
	MaxSnapshotIDLength = MaxIDLength + 1 + 20
	// MaxSnapshotNameLength bounds snapshot names and turn labels.
	MaxSnapshotNameLength = 256
	// MaxEnvVars bounds the number of SessionConfig.Env entries.
	MaxEnvVars = 256
	// MaxEnvKeyLength bounds one environment variable's name.
	MaxEnvKeyLength = 256
	// MaxEnvBytes bounds SessionConfig.Env as a whole, counted as the
	// "KEY=value" strings a command receives (each with its NUL); one
	// value may use all of it.
	MaxEnvBytes = 128 << 10
	// MaxLabels bounds the number of SessionConfig.Labels entries.
	MaxLabels = 64
	// MaxLabelKeyLength bounds one label's key.
	MaxLabelKeyLength = 128
	// MaxLabelValueLength bounds one label's value.
	MaxLabelValueLength = 1024
	// MaxToolCallIDLength bounds ToolRequest.ToolCallID.
	MaxToolCallIDLength = 256
	// MaxPathLength bounds a tool's path, workdir or pattern parameter.
	MaxPathLength = 4096
	// MaxCommandLength bounds the bash tool's command: below Linux's
	// 128 KiB bound on one exec argument (MAX_ARG_STRLEN), which a longer
	// command would hit inside the sandbox anyway.
	MaxCommandLength = 120 << 10
	// MaxFileContentLength bounds write_file's content and edit_file's
	// old_string and new_string; well below the remote API's default
	// message bound (16 MiB), so a call refused here is refused the same
	// way over the wire.
	MaxFileContentLength = 8 << 20
	// MaxToolInputLength bounds ToolRequest.Input, the JSON of a call's
	// parameters, before it is decoded (room for edit_file's two strings
	// at their bound, JSON-escaped).
	MaxToolInputLength = 64 << 20
	// MaxSessionOutputBytes bounds SessionConfig.MaxOutputBytes: a caller
	// cannot make the host buffer more of one call's output than this
	// (which also fits in one remote message).
	MaxSessionOutputBytes = 8 << 20
)

var (
	// imageNamePattern: an image is one directory directly in the host's
	// image store, named without separators, "..", or a leading dot.
	imageNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	// snapshotIDPattern admits every id SnapshotInfo.ID can hold
	// ("<session>@<turn>") and nothing that could be a path.
	snapshotIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_@-]*$`)
	// envKeyPattern: a name a POSIX shell can expand.
	envKeyPattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// labelKeyPattern: letters, digits and the separators label keys use
	// ("app.example.com/tier").
	labelKeyPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:/-]*$`)
)

// ValidateImageName reports whether name can name an image: 1 to
// MaxImageNameLength characters of [A-Za-z0-9_.-], starting with a letter
// or digit; never a path. The error wraps ErrInvalidArgument.
func ValidateImageName(name string) error {
	return checkToken("image name", name, MaxImageNameLength, imageNamePattern,
		"images are named, not given by path: only letters, digits, '_', '.' and '-', starting with a letter or digit")
}

// checkToken checks a non-empty string of at most max bytes that matches
// pat; rule says what pat allows. The error wraps ErrInvalidArgument.
func checkToken(what, s string, max int, pat *regexp.Regexp, rule string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty %s", ErrInvalidArgument, what)
	case len(s) > max:
		return fmt.Errorf("%w: %s is %d bytes, longer than %d", ErrInvalidArgument, what, len(s), max)
	case !pat.MatchString(s):
		return fmt.Errorf("%w: %s %q: %s", ErrInvalidArgument, what, s, rule)
	}
	return nil
}

// ValidateSnapshotID checks the form of a snapshot id (not whether it
// exists): 1 to MaxSnapshotIDLength characters of [A-Za-z0-9_@-]. The
// error wraps ErrInvalidArgument.
func ValidateSnapshotID(id string) error {
	return checkToken("snapshot id", id, MaxSnapshotIDLength, snapshotIDPattern, "want <session>@<turn>")
}

// ValidateSnapshotName checks a snapshot name or turn label (may be
// empty): valid UTF-8 without control characters, at most
// MaxSnapshotNameLength bytes. The error wraps ErrInvalidArgument.
func ValidateSnapshotName(name string) error {
	return checkLabel("snapshot name", name, MaxSnapshotNameLength)
}

// ValidateToolCallID checks a tool call id (may be empty): at most
// MaxToolCallIDLength bytes of valid UTF-8 without control characters. The
// error wraps ErrInvalidArgument.
func ValidateToolCallID(id string) error {
	return checkLabel("tool call id", id, MaxToolCallIDLength)
}

// checkLabel checks free text of at most max bytes: valid UTF-8 without
// control characters (may be empty). The error wraps ErrInvalidArgument.
func checkLabel(what, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%w: %s is %d bytes, longer than %d", ErrInvalidArgument, what, len(s), max)
	}
	if err := checkText(s); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidArgument, what, err)
	}
	return nil
}

// ValidateEnv checks environment variables for a session: at most
// MaxEnvVars names matching [A-Za-z_][A-Za-z0-9_]* of at most
// MaxEnvKeyLength bytes, values without NUL, MaxEnvBytes in all. The error
// wraps ErrInvalidArgument.
func ValidateEnv(env map[string]string) error {
	if len(env) > MaxEnvVars {
		return fmt.Errorf("%w: %d environment variables, more than %d", ErrInvalidArgument, len(env), MaxEnvVars)
	}
	total := 0
	for k, v := range env {
		switch {
		case len(k) > MaxEnvKeyLength:
			return fmt.Errorf("%w: environment variable name is %d bytes, longer than %d", ErrInvalidArgument, len(k), MaxEnvKeyLength)
		case !envKeyPattern.MatchString(k):
			return fmt.Errorf("%w: bad environment variable name %q: want letters, digits and '_', not starting with a digit", ErrInvalidArgument, k)
		case strings.IndexByte(v, 0) >= 0:
			return fmt.Errorf("%w: environment variable %s: value contains a NUL byte", ErrInvalidArgument, k)
		}
		total += len(k) + len(v) + 2
	}
	if total > MaxEnvBytes {
		return fmt.Errorf("%w: environment variables take %d bytes, more than %d", ErrInvalidArgument, total, MaxEnvBytes)
	}
	return nil
}

// ValidateLabels checks session labels: at most MaxLabels keys matching
// [A-Za-z0-9][A-Za-z0-9_.:/-]* of at most MaxLabelKeyLength bytes, values
// of at most MaxLabelValueLength bytes of valid UTF-8 without control
// characters. The error wraps ErrInvalidArgument.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("%w: %d labels, more than %d", ErrInvalidArgument, len(labels), MaxLabels)
	}
	for k, v := range labels {
		switch {
		case len(k) > MaxLabelKeyLength:
			return fmt.Errorf("%w: label key is %d bytes, longer than %d", ErrInvalidArgument, len(k), MaxLabelKeyLength)
		case !labelKeyPattern.MatchString(k):
			return fmt.Errorf("%w: bad label key %q: want letters, digits and '_.:/-', starting with a letter or digit", ErrInvalidArgument, k)
		case len(v) > MaxLabelValueLength:
			return fmt.Errorf("%w: label %s: value is %d bytes, longer than %d", ErrInvalidArgument, k, len(v), MaxLabelValueLength)
		}
		if err := checkText(v); err != nil {
			return fmt.Errorf("%w: label %s: %v", ErrInvalidArgument, k, err)
		}
	}
	return nil
}

// Validate checks every field of a session config that a host acts on (ids,
// image name, snapshot id, environment, labels, timeouts), each against the
// rules of its Validate function above; it does not check that the image or
// snapshot exists. The error wraps ErrInvalidArgument.
func (c SessionConfig) Validate() error {
	if c.SessionID != "" {
		if err := ValidateID(c.SessionID); err != nil {
			return err
		}
	}
	if c.Image != "" {
		if err := ValidateImageName(c.Image); err != nil {
			return err
		}
	}
	if c.FromSnapshot != "" {
		if err := ValidateSnapshotID(c.FromSnapshot); err != nil {
			return err
		}
	}
	if c.ToolTimeout < 0 || c.ToolTimeout > 365*24*time.Hour || c.MaxOutputBytes < 0 || c.MaxOutputBytes > MaxSessionOutputBytes {
		return fmt.Errorf("%w: tool timeout %s or output cap %d out of range", ErrInvalidArgument, c.ToolTimeout, c.MaxOutputBytes)
	}
	if err := ValidateEnv(c.Env); err != nil {
		return err
	}
	if err := c.Network.Validate(); err != nil {
		return err
	}
	return ValidateLabels(c.Labels)
}

// checkText refuses invalid UTF-8 and control characters.
func checkText(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("not valid UTF-8")
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("contains control character %U", r)
		}
	}
	return nil
}
