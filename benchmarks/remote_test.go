package benchmarks_test

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/turnbox/turnbox/benchmarks"
	"github.com/turnbox/turnbox/embedded"
)

var (
	remoteN        = flag.Int("remote.n", 5, "timed iterations of each unary op in TestRemoteResults")
	remoteDuration = flag.Duration("remote.load", 300*time.Millisecond, "duration of each side of the load runs in TestRemoteResults")
	remoteRate     = flag.Float64("remote.rate", benchmarks.RemoteLoadRate, "total calls per second of the fixed-rate load run in TestRemoteResults")
)

// checkRemote checks that res holds every remote row, with sane
// percentiles, and logs them.
func checkRemote(t *testing.T, res []benchmarks.Result, n, sessions int) {
	t.Helper()
	got := map[string]benchmarks.Result{}
	for _, r := range res {
		got[r.Op+"/"+r.Baseline] = r
		t.Logf("%-32s %-9s n=%-6d p50=%8.3fms p90=%8.3fms p99=%8.3fms sessions=%d ops/s=%.0f",
			r.Op, r.Baseline, r.N, r.P50MS, r.P90MS, r.P99MS, r.Sessions, r.OpsPerSec)
		if r.P50MS > r.P90MS || r.P90MS > r.P99MS {
			t.Errorf("%s/%s: percentiles out of order", r.Op, r.Baseline)
		}
		if r.Runtime != "none" || r.Backend == "" {
			t.Errorf("%s/%s: backend %q runtime %q", r.Op, r.Baseline, r.Backend, r.Runtime)
		}
	}
	for _, op := range []string{benchmarks.OpRemoteExec, benchmarks.OpRemoteReadFile, benchmarks.OpRemoteTurnComplete} {
		for _, key := range []string{op + "/", op + "/" + benchmarks.BaselineEmbedded, op + benchmarks.OverheadSuffix + "/"} {
			r, ok := got[key]
			if !ok {
				t.Errorf("missing %s", key)
				continue
			}
			if r.N != n {
				t.Errorf("%s: n=%d, want %d", key, r.N, n)
			}
			if r.Sessions != 0 || r.OpsPerSec != 0 {
				t.Errorf("%s: a latency row with load fields %+v", key, r)
			}
		}
		if r := got[op+"/"]; r.P50MS <= 0 {
			t.Errorf("%s: p50 %v", op, r.P50MS)
		}
	}
	for _, key := range []string{
		benchmarks.OpRemoteReadFileLoad + "/", benchmarks.OpRemoteReadFileLoad + "/" + benchmarks.BaselineEmbedded,
		benchmarks.OpRemoteReadFileRate + "/", benchmarks.OpRemoteReadFileRate + "/" + benchmarks.BaselineEmbedded,
	} {
		r, ok := got[key]
		if !ok {
			t.Errorf("missing %s", key)
			continue
		}
		if r.Sessions != sessions || r.OpsPerSec <= 0 || r.N < sessions || r.P50MS <= 0 {
			t.Errorf("%s: %+v", key, r)
		}
	}
}

// TestRemoteResults runs the remote bench on its own temporary host, with
// a short load. Longer runs: go test ./benchmarks/ -run TestRemoteResults
// -v -remote.n 200 -remote.load 5s.
func TestRemoteResults(t *testing.T) {
	res, err := benchmarks.RemoteResults(context.Background(), benchmarks.Config{N: *remoteN},
		benchmarks.WithRemoteLoad(benchmarks.RemoteLoadSessions, *remoteDuration, *remoteRate))
	if err != nil {
		t.Fatal(err)
	}
	checkRemote(t, res, *remoteN, benchmarks.RemoteLoadSessions)
}

// TestRemoteResultsOnHost measures on a host of the caller's, with one
// shared client for the load, and leaves the host open and empty.
func TestRemoteResultsOnHost(t *testing.T) {
	ctx := context.Background()
	h, err := embedded.NewHost(ctx, embedded.Config{
		StateDir:         t.TempDir(),
		ContainerRuntime: embedded.ContainerRuntimeNone,
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(ctx)
	res, err := benchmarks.RemoteResults(ctx, benchmarks.Config{N: 3},
		benchmarks.WithRemoteHost(h), benchmarks.WithSharedClient(), benchmarks.WithRemoteLoad(4, 100*time.Millisecond, 200))
	if err != nil {
		t.Fatal(err)
	}
	checkRemote(t, res, 3, 4)
	// 200 calls/s for 100 ms over 4 sessions: each session has a call due
	// every 20 ms, 5 of them, whatever the machine's speed.
	for _, r := range res {
		if r.Op == benchmarks.OpRemoteReadFileRate && (r.N != 20 || r.OpsPerSec > 200) {
			t.Errorf("%s/%s: %d calls at %.1f/s, want 20 at most at 200/s", r.Op, r.Baseline, r.N, r.OpsPerSec)
		}
	}
	if s := h.Sessions(); len(s) != 0 {
		t.Errorf("%d sessions left on the host: %+v", len(s), s)
	}
}

// TestRemoteResultsCanceled: a canceled context fails the run with the
// context's error.
func TestRemoteResultsCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := benchmarks.RemoteResults(ctx, benchmarks.Config{N: 2}); err == nil {
		t.Fatal("a canceled run succeeded")
	}
}
