package benchmarks

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded"
)

// TestProcessResults: the process rows come out, with positive
// latencies, on the none runtime.
func TestProcessResults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := ProcessResults(ctx, Config{N: procBenchN()}, embedded.Config{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{OpProcessStart: false, OpProcessStart + "/" + BaselineExecTrue: false, OpProcessStart + OverheadSuffix: false, OpPTYEcho: false}
	for _, r := range res {
		t.Logf("%s %s %s: n %d p50 %.3f ms p99 %.3f ms", r.Op, r.Baseline, r.Runtime, r.N, r.P50MS, r.P99MS)
		key := r.Op
		if r.Baseline != "" {
			key += "/" + r.Baseline
		}
		if _, ok := want[key]; !ok {
			t.Errorf("unexpected row %s", key)
		}
		want[key] = true
		if r.N != procBenchN() || r.Runtime != "none" || (r.Op != OpProcessStart+OverheadSuffix && r.P50MS <= 0) {
			t.Errorf("row %+v", r)
		}
	}
	for k, seen := range want {
		if !seen {
			t.Errorf("no row %s", k)
		}
	}
}

// procBenchN is TURNBOX_BENCH_N, or 10 (a quick check).
func procBenchN() int {
	if n, err := strconv.Atoi(os.Getenv("TURNBOX_BENCH_N")); err == nil && n > 0 {
		return n
	}
	return 10
}
