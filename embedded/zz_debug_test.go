package embedded_test

import (
	"context"
	"testing"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

func TestZZDebug(t *testing.T) {
	cfg := matrixConfig(t, embedded.StorageBackendLocalDisk, embedded.ContainerRuntimeGVisor)
	h := openCheckedHost(t, cfg)
	env, err := h.CreateSession(context.Background(), environment.SessionConfig{Limits: environment.Limits{MemoryBytes: 64 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"for p in /proc/[0-9]*; do cat $p/stat; echo; cat $p/statm; done", "dd if=/dev/zero of=/dev/null bs=256M count=4", "for p in /proc/[0-9]*; do cat $p/stat; echo; cat $p/statm; done", "echo hi"} {
		r, err := env.ExecuteTool(context.Background(), environment.ToolRequest{ToolName: "bash", Input: []byte(`{"command":` + quoteJSON(c) + `}`)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s -> oom %v exit %d\n%s", c, r.OOMKilled, r.ExitCode, r.Content)
	}
}

func quoteJSON(s string) string {
	b := []byte{'"'}
	for _, r := range s {
		if r == '"' || r == '\\' {
			b = append(b, '\\')
		}
		b = append(b, string(r)...)
	}
	return string(append(b, '"'))
}
