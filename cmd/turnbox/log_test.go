package main

import (
	"bytes"
	"strings"
	"testing"
)

// An ERROR line carries no Go stack trace at the ordinary log levels; at
// debug it does.
func TestLoggerStackOnlyAtDebug(t *testing.T) {
	for _, tc := range []struct {
		level string
		json  bool
		stack bool
	}{
		{"warn", false, false}, {"info", false, false}, {"error", true, false}, {"debug", false, true},
	} {
		var buf bytes.Buffer
		l, err := newLoggerTo(&buf, tc.level, tc.json)
		if err != nil {
			t.Fatal(err)
		}
		l.Error("closing host", "err", "boom")
		out := buf.String()
		if !strings.Contains(out, "closing host") {
			t.Fatalf("level %s: error line missing: %q", tc.level, out)
		}
		if got := strings.Contains(out, "TestLoggerStackOnlyAtDebug"); got != tc.stack {
			t.Errorf("level %s json %v: stack trace present = %v, want %v:\n%s", tc.level, tc.json, got, tc.stack, out)
		}
	}
	if _, err := newLoggerTo(&bytes.Buffer{}, "loud", false); err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Fatalf("bad level: %v; want an error naming --log-level", err)
	}
}
