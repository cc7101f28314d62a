package runc_test

import (
	"testing"
)

func TestEcho(t *testing.T) {
	rt := newRuntime(t)
	sb, _ := start(t, rt)
	if got := mustRun(t, sb, "echo hello"); got != "hello\n" {
		t.Fatalf("got %q", got)
	}
}
