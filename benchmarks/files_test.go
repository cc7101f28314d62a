package benchmarks

import (
	"testing"
)

// TestFileThroughput runs FileThroughput small and checks its rows: both
// ops on the three sides, with a throughput.
func TestFileThroughput(t *testing.T) {
	res, err := FileThroughput(t.Context(), nil, 8<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 6 {
		t.Fatalf("%d rows, want 6 (two ops, three sides): %+v", len(res), res)
	}
	for _, r := range res {
		if r.N != 2 || r.MBPerSec <= 0 || (r.Baseline != BaselineEmbedded && r.Baseline != BaselineRemote && r.Baseline != BaselineRaw) {
			t.Errorf("row %+v: want 2 runs, a throughput and a side", r)
		}
		t.Logf("%s %s: p50 %.1f ms, %.0f MB/s", r.Op, r.Baseline, r.P50MS, r.MBPerSec)
	}
}

// BenchmarkFileThroughput reports the 100 MB figures:
// go test -run '^$' -bench FileThroughput ./benchmarks/
func BenchmarkFileThroughput(b *testing.B) {
	for range b.N {
		res, err := FileThroughput(b.Context(), nil, FileThroughputBytes, 5)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res {
			b.ReportMetric(r.MBPerSec, r.Op+"_"+r.Baseline+"_MB/s")
		}
	}
}
