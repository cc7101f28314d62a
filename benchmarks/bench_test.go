package benchmarks_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/benchmarks"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/snapshot/btrfs/btrfstest"
	"github.com/turnbox/turnbox/zfs"
	"github.com/turnbox/turnbox/zfs/zfstest"
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
		if r.Op == benchmarks.OpExec && (r.Baseline == "" || r.Baseline == benchmarks.BaselineHostForkExec) {
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
	want := []string{"create/", "start/", "exec/", "read_file/", "write_file/", "edit_file/", "grep/", "turn_complete/", "rollback/", "fork/", "turn_complete/full-copy", "exec/host-fork-exec"}
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

// TestRunZFS runs the bench on a zfs host through the command driver
// (kernel OpenZFS or zfs-fuse here), raw baseline included: the driver's
// bare calls.
func TestRunZFS(t *testing.T) {
	pool := zfstest.NewPool(t, 1<<30)
	runSmall(t, embedded.Config{StorageBackend: embedded.StorageBackendZFS, ZFSDataset: pool + "/tb", ZFSDriver: zfs.DriverCommand},
		"turn_complete/raw", "rollback/raw", "fork/raw")
}

// TestSuiteZFSDriver checks that a run records the zfs driver it used, and
// that a driver which cannot open here (libzfs_core outside a libzfs_core
// build on kernel OpenZFS) makes the combination a skip, not a failure.
func TestSuiteZFSDriver(t *testing.T) {
	lzc, err := zfs.OpenDriver(zfs.DriverLZC)
	if err == nil {
		if c, ok := lzc.(interface{ Close() error }); ok {
			c.Close()
		}
		t.Skip("the libzfs_core driver opens here: nothing to check")
	}
	s := benchmarks.Suite{
		Config: benchmarks.Config{Files: 10, FileSize: 64, N: 1, ExecN: 1},
		Combos: []benchmarks.Combo{{Storage: embedded.StorageBackendZFS, Runtime: embedded.ContainerRuntimeNone}},
		Host:   embedded.Config{StateDir: t.TempDir(), ZFSDataset: "nosuchpool/tb", ZFSDriver: zfs.DriverLZC},
	}
	rep, err := s.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Config.ZFSDriver != zfs.DriverLZC {
		t.Errorf("config.zfs_driver %q, want %q", rep.Config.ZFSDriver, zfs.DriverLZC)
	}
	if len(rep.Results) != 0 || len(rep.Skipped) != 1 || rep.Skipped[0].Failed || !strings.Contains(rep.Skipped[0].Reason, "libzfs") {
		t.Errorf("results %+v skipped %+v: want one skip naming libzfs", rep.Results, rep.Skipped)
	}
	// No zfs combination: no driver recorded.
	s.Combos = []benchmarks.Combo{{Storage: embedded.StorageBackendLocalDisk, Runtime: "nosuchruntime"}}
	rep, _ = s.Run(context.Background())
	if rep.Config.ZFSDriver != "" {
		t.Errorf("localdisk only: config.zfs_driver %q, want empty", rep.Config.ZFSDriver)
	}
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

// TestSuite runs a small suite: localdisk × none, a combination that
// cannot start (gvisor with a missing agent binary: skipped, loudly), and
// both series on btrfs; then writes and checks the report directory.
func TestSuite(t *testing.T) {
	var progress bytes.Buffer
	s := benchmarks.Suite{
		Config: benchmarks.Config{Files: 120, FileSize: 512, N: 3, ExecN: 3},
		Combos: []benchmarks.Combo{
			{Storage: embedded.StorageBackendLocalDisk, Runtime: embedded.ContainerRuntimeNone},
			{Storage: embedded.StorageBackendLocalDisk, Runtime: embedded.ContainerRuntimeGVisor},
		},
		Host:           embedded.Config{StateDir: t.TempDir(), AgentPath: "/nonexistent/turnbox-agent"},
		SeriesFiles:    []int{50, 200},
		SeriesFileSize: 256,
		SeriesSessions: []int{1, 3},
		SeriesTurns:    2,
		Pool:           1,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		Progress:       &progress,
	}
	rep, err := s.Run(context.Background())
	if err != nil {
		t.Fatalf("%v (skipped: %+v)", err, rep.Skipped)
	}
	// A person sees each combination start, and a summary at the end.
	for _, want := range []string{"bench: [1/2] localdisk × none: starting\n", "bench: [2/2] localdisk × gvisor: starting\n", "bench: finished in "} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, progress.String())
		}
	}
	if rep.Series.FileSize != 256 || fmt.Sprint(rep.Series.Files, rep.Series.Sessions) != "[50 200] [1 3]" || rep.Series.Runtime != "none" {
		t.Errorf("series settings %+v", rep.Series)
	}
	if rep.Config.N != 3 || rep.Machine.CPUs == 0 || rep.Machine.Kernel == "" {
		t.Errorf("config %+v machine %+v", rep.Config, rep.Machine)
	}
	var gvisorSkipped bool
	for _, sk := range rep.Skipped {
		if sk.Backend == "localdisk" && sk.Runtime == "gvisor" && sk.Op == "" && !sk.Failed && strings.Contains(sk.Reason, "turnbox-agent") {
			gvisorSkipped = true
		}
		if sk.Failed {
			t.Errorf("failed: %+v", sk)
		}
	}
	if !gvisorSkipped {
		t.Errorf("localdisk × gvisor with no agent binary is not reported as skipped: %+v", rep.Skipped)
	}
	count := map[string]int{}
	for _, r := range rep.Results {
		count[r.Backend+"/"+r.Runtime+"/"+r.Series+"/"+r.Op+"/"+r.Baseline]++
		if r.N == 0 || r.P50MS <= 0 {
			t.Errorf("empty result %+v", r)
		}
	}
	for _, k := range []string{"localdisk/none//create/", "localdisk/none//grep/", "localdisk/none//turn_complete/", "localdisk///turn_complete/full-copy",
		"localdisk/none//create_pooled/", "localdisk/none//start_pooled/", "localdisk/none//fork_pooled/", "localdisk/none//exec/host-fork-exec"} {
		if count[k] != 1 {
			t.Errorf("%s: %d results, want 1", k, count[k])
		}
	}
	if os.Geteuid() == 0 {
		for _, k := range []string{"btrfs/none/files/turn_complete/", "btrfs/none/files/rollback/", "btrfs/none/files/fork/", "btrfs//files/fork/raw"} {
			if count[k] != 2 {
				t.Errorf("%s: %d results, want one per size (2)", k, count[k])
			}
		}
		var sessions, raw []int
		for _, r := range rep.Results {
			if r.Series == benchmarks.SeriesSessions {
				if r.Baseline == benchmarks.BaselineRaw {
					raw = append(raw, r.Sessions)
				} else {
					sessions = append(sessions, r.Sessions)
				}
				if r.N != 2*r.Sessions || r.OpsPerSec <= 0 {
					t.Errorf("sessions series: %+v, want n = 2 turns × sessions and a throughput", r)
				}
			}
		}
		if fmt.Sprint(sessions) != "[1 3]" || fmt.Sprint(raw) != "[1 3]" {
			t.Errorf("sessions series points %v, raw baseline %v; want [1 3] each", sessions, raw)
		}
	}
	dir := t.TempDir()
	if err := benchmarks.WriteDir(dir, rep); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, benchmarks.ReportMD))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## localdisk × none", "| turn_complete | 3 |", "full-copy", "## Not measured", "| localdisk | gvisor | (all) |"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}
}
