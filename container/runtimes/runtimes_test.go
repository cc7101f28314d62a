package runtimes_test

import (
	"strings"
	"testing"

	"github.com/turnbox/turnbox/container/runtimes"
)

func TestOpenRefusesBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    runtimes.Options
		want string
	}{
		{"nosuch", runtimes.Options{Root: t.TempDir()}, "unknown container runtime"},
		{runtimes.GVisor, runtimes.Options{}, "no state directory"},
		{runtimes.Runc, runtimes.Options{}, "no state directory"},
	} {
		if _, err := runtimes.Open(tc.name, tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q): %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

func TestOpenNone(t *testing.T) {
	rt, err := runtimes.Open(runtimes.None, runtimes.Options{Instance: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := rt.(interface{ Close() error }); ok {
		defer c.Close()
	}
	if rt.Kind() != runtimes.None {
		t.Fatalf("Kind %q, want %q", rt.Kind(), runtimes.None)
	}
}

func TestDetect(t *testing.T) {
	name, why := runtimes.Detect(t.TempDir() + "/no-agent")
	if name != runtimes.None || why == nil || !strings.Contains(why.Error(), "agent") {
		t.Fatalf("Detect with a missing agent: %q, %v; want none and a reason naming the agent", name, why)
	}
}
