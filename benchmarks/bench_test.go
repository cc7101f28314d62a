package benchmarks_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/turnbox/turnbox/benchmarks"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/snapshot/btrfs/btrfstest"
)

// runSmall runs the bench with a tiny workspace and checks that every
// operation (and the expected baselines) is reported with ordered
// percentiles, in the JSON shape `turnbox bench --json` prints.
func runSmall(t *testing.T, cfg embedded.Config, wantBaselines ...string) {
	t.Helper()
	cfg.StateDir = t.TempDir()
	cfg.ContainerRuntime = embedded.ContainerRuntimeNone
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	h, err := embedded.NewHost(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(ctx)
	res, err := benchmarks.Run(ctx, h, benchmarks.Config{Files: 150, FileSize: 1024, N: 3, ExecN: 4})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range res {
		got[r.Op+"/"+r.Baseline] = true
		wantN := 3
		if r.Op == benchmarks.OpExec && r.Baseline == "" {
			wantN = 4
		}
		if r.N != wantN || r.P50MS <= 0 || r.P50MS > r.P90MS || r.P90MS > r.P99MS {
			t.Errorf("%s/%s: n=%d p50=%v p90=%v p99=%v", r.Op, r.Baseline, r.N, r.P50MS, r.P90MS, r.P99MS)
		}
		wantRuntime := "none"
		if r.Baseline == benchmarks.BaselineFullCopy || r.Baseline == benchmarks.BaselineRaw {
			wantRuntime = "" // storage baselines do not depend on the runtime
		}
		if r.Backend != h.Capabilities().Storage || r.Runtime != wantRuntime || r.Files != 150 {
			t.Errorf("%s: backend %q runtime %q", r.Op, r.Backend, r.Runtime)
		}
	}
	want := []string{"create/", "start/", "exec/", "read_file/", "write_file/", "edit_file/", "grep/", "turn_complete/", "rollback/", "fork/", "turn_complete/full-copy"}
	if h.Capabilities().Pause {
		want = append(want, "pause_resume/")
	}
	want = append(want, wantBaselines...)
	for _, w := range want {
		if !got[w] {
			t.Errorf("missing result %s; have %v", w, got)
		}
	}
	rep := benchmarks.NewReport()
	rep.Results = res
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var decoded struct {
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(b, &decoded); err != nil || len(decoded.Results) != len(res) {
		t.Fatalf("JSON: %v", err)
	}
	for _, k := range []string{"op", "backend", "runtime", "files", "n", "p50_ms", "p90_ms", "p99_ms", "baseline"} {
		if _, ok := decoded.Results[0][k]; !ok {
			t.Errorf("JSON result lacks %q", k)
		}
	}
}

func TestRunLocalDisk(t *testing.T) { runSmall(t, embedded.Config{}) }

func TestRunBtrfs(t *testing.T) {
	root := btrfstest.Mount(t, 1<<30)
	runSmall(t, embedded.Config{StorageBackend: embedded.StorageBackendBtrfs, StorageRoot: root},
		"turn_complete/raw", "rollback/raw", "fork/raw")
}

func TestLatencies(t *testing.T) {
	r := benchmarks.Latencies("x", nil)
	if r.N != 0 || r.P50MS != 0 {
		t.Fatalf("empty samples: %+v", r)
	}
	var samples []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		samples = append(samples, time.Duration(i)*time.Millisecond)
	}
	r = benchmarks.Latencies("x", samples)
	if r.N != 100 || r.P50MS != 50 || r.P90MS != 90 || r.P99MS != 99 {
		t.Fatalf("1..100 ms: %+v, want p50 50, p90 90, p99 99", r)
	}
}
