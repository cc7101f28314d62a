package benchmarks

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/turnbox/turnbox/embedded"
)

// Operation names. A baseline's Result carries the name of the turnbox
// operation it is compared with, so that the two sit in the same row.
const (
	OpCreate       = "create"        // CreateSession until it accepts tool calls
	OpStart        = "start"         // CreateSession plus the first bash call completed
	OpExec         = "exec"          // a bash `true` round trip in a running session
	OpReadFile     = "read_file"     // read_file of one line of a small file
	OpWriteFile    = "write_file"    // write_file of a small file
	OpEditFile     = "edit_file"     // edit_file replacing one string in a small file
	OpGrep         = "grep"          // grep over one directory of 100 files
	OpTurnComplete = "turn_complete" // TurnComplete after a one-file change
	OpRollback     = "rollback"      // Rollback to an older snapshot
	OpFork         = "fork"          // Fork a snapshot into a new running session
	OpPauseResume  = "pause_resume"  // Pause then Resume of a session
	OpSaveImage    = "save_image"    // SaveImage of a session now (a snapshot, its clone, the record)
	// The same with a pool of started sandboxes (embedded.Config.PoolSize),
	// each timed once the pool has refilled (sessions created no faster
	// than the pool refills).
	OpCreatePooled = "create_pooled"
	OpStartPooled  = "start_pooled"
	OpForkPooled   = "fork_pooled"
)

// Ops lists the operation names in report order.
var Ops = []string{OpCreate, OpCreatePooled, OpStart, OpStartPooled, OpExec, OpReadFile, OpWriteFile, OpEditFile, OpGrep, OpTurnComplete, OpRollback, OpFork, OpForkPooled, OpPauseResume, OpSaveImage}

// Baseline names (Result.Baseline; "" is turnbox itself).
const (
	// BaselineFullCopy is `cp -a` of the same workspace (under turn_complete:
	// what a snapshot costs without copy-on-write).
	BaselineFullCopy = "full-copy"
	// BaselineRaw is the bare backend operation on a tree of the same
	// shape, with no turnbox around it: the floor on that filesystem. On
	// btrfs the ioctls (RawBtrfs), on zfs the zfs driver's bare calls
	// (RawZFS: the zfs command, or libzfs_core).
	BaselineRaw = "raw"
	// BaselineRunscExec is a `runsc exec` process per call (under exec).
	BaselineRunscExec = "runsc-exec"
	// BaselineRunscRun is a fresh `runsc run` of /bin/true per call (under
	// exec: a container per tool call, as the reference design did).
	BaselineRunscRun = "runsc-run"
	// BaselineRuncExec is a `runc exec` binary process per call (under exec).
	BaselineRuncExec = "runc-exec"
	// BaselineGVisorCheckpoint is `runsc checkpoint --leave-running` of a
	// running sandbox (under turn_complete: saving the whole sandbox).
	BaselineGVisorCheckpoint = "gvisor-checkpoint"
	// BaselineGVisorRestore is `runsc restore` of that checkpoint into a
	// new sandbox (under rollback: going back by restoring the sandbox).
	BaselineGVisorRestore = "gvisor-restore"
	// BaselineHostForkExec is a bare fork+exec+wait on the host, from
	// this process, of the same shell running `true` that exec runs (the
	// image's static busybox sh; bash or sh from PATH on none): no
	// sandbox, no agent, no pipes. The floor under exec on this machine.
	BaselineHostForkExec = "host-fork-exec"
)

// Series names (Result.Series).
const (
	// SeriesFiles is the workspace-size scaling series.
	SeriesFiles = "files"
	// SeriesSessions is the concurrent-sessions scaling series.
	SeriesSessions = "sessions"
)

// Result is one measured operation.
type Result struct {
	// Op is the operation (Op* constants; a baseline carries the op it is
	// compared with).
	Op string `json:"op"`
	// Backend is the storage backend: localdisk, btrfs or zfs.
	Backend string `json:"backend"`
	// Runtime is the container runtime; "" for a storage baseline
	// (full-copy, raw), which does not depend on it.
	Runtime string `json:"runtime"`
	// Files is the workspace's file count.
	Files int `json:"files"`
	// N is the number of timed runs.
	N int `json:"n"`
	// P50MS, P90MS and P99MS are percentiles in milliseconds (nearest
	// rank).
	P50MS float64 `json:"p50_ms"`
	P90MS float64 `json:"p90_ms"`
	P99MS float64 `json:"p99_ms"`
	// Baseline is "" for turnbox's own figures, else the comparison's name
	// (Baseline* constants).
	Baseline string `json:"baseline"`
	// Sessions is the number of sessions driven concurrently (0 or 1:
	// one at a time).
	Sessions int `json:"sessions,omitempty"`
	// OpsPerSec is the sustained throughput of a load run (0 when the
	// result is a latency series only).
	OpsPerSec float64 `json:"ops_per_s,omitempty"`
	// MBPerSec is a transfer's throughput at the median (10^6 bytes per
	// second; the file API's rows, FileThroughput).
	MBPerSec float64 `json:"mb_per_s,omitempty"`
	// Series is "" for the backend × runtime matrix, else the scaling
	// series the result belongs to (SeriesFiles, SeriesSessions).
	Series string `json:"series,omitempty"`
	// VsBaselines, on a turnbox figure, are its ratios to the baselines
	// measured beside it, as a number and in words (Report.SetRatios).
	VsBaselines []VsBaseline `json:"vs_baselines,omitempty"`
}

// Skip records a combination or an operation that was not measured, and
// why. Failed is set when it was attempted and broke (as opposed to not
// being able to run on this machine).
type Skip struct {
	// Backend and Runtime name the combination.
	Backend string `json:"backend"`
	Runtime string `json:"runtime"`
	// Op is "" when the whole combination was skipped.
	Op string `json:"op,omitempty"`
	// Reason says why, in the words of the error that stopped it.
	Reason string `json:"reason"`
	// Failed: attempted and broke (not merely unable to run here).
	Failed bool `json:"failed,omitempty"`
}

// Report is a whole run.
type Report struct {
	// Results are turnbox's figures and the baselines, in measuring order.
	Results []Result `json:"results"`
	// Skipped lists what was not measured, and why.
	Skipped []Skip `json:"skipped,omitempty"`
	// Machine is where the run happened.
	Machine Machine `json:"machine"`
	// Config is what each combination measured.
	Config Config `json:"config"`
	// Series says how the scaling series were run (zero when they were not).
	Series SeriesConfig `json:"series"`
}

// SeriesConfig records a Suite's scaling series settings in its Report.
type SeriesConfig struct {
	// Files and FileSize are Suite.SeriesFiles and the file size used.
	Files    []int `json:"files,omitempty"`
	FileSize int   `json:"file_size,omitempty"`
	// Sessions and Turns are Suite.SeriesSessions and SeriesTurns.
	Sessions []int `json:"sessions,omitempty"`
	Turns    int   `json:"turns,omitempty"`
	// Runtime is the runtime of both series.
	Runtime string `json:"runtime,omitempty"`
}

// Machine describes where a report was measured.
type Machine struct {
	// OS and Arch are runtime.GOOS and runtime.GOARCH.
	OS   string `json:"os"`
	Arch string `json:"arch"`
	// CPUs is runtime.NumCPU.
	CPUs int `json:"cpus"`
	// Kernel is the kernel release.
	Kernel string `json:"kernel"`
	// When is the start of the run (UTC).
	When time.Time `json:"when"`
	// CPUModel is the first "model name" of /proc/cpuinfo.
	CPUModel string `json:"cpu_model,omitempty"`
	// MemoryBytes is MemTotal of /proc/meminfo.
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	// LoadAvg is the 1, 5 and 15 minute load averages when the run began.
	LoadAvg [3]float64 `json:"load_avg"`
	// Note is free text from whoever ran it (e.g. "shared, loaded").
	Note string `json:"note,omitempty"`
}

// Config says what to measure.
type Config struct {
	// Files is the synthetic workspace's file count for the matrix.
	Files int `json:"files"`
	// FileSize is the size of each file (default 10 KiB: 10,000 files make
	// 100 MB).
	FileSize int `json:"file_size"`
	// N is the number of timed runs of each operation (default 30).
	N int `json:"n"`
	// ExecN is the number of timed runs of exec and its per-call baselines
	// runsc-exec and runc-exec (default max(N, 50)).
	ExecN int `json:"exec_n"`
	// ZFSDriver is the zfs driver the zfs combinations were measured
	// through ("command" or "libzfs_core"), raw baseline included; empty
	// when the run measured no zfs backend. Suite.Run records it from
	// Suite.Host.ZFSDriver; it is not an input.
	ZFSDriver string `json:"zfs_driver,omitempty"`
	// SkipStorageBaselines leaves out full-copy and raw (a matrix measures
	// them once per backend, not once per runtime).
	SkipStorageBaselines bool `json:"-"`
	// Logger receives progress and skipped operations (nil: discarded).
	Logger *slog.Logger `json:"-"`
}

func (c Config) withDefaults() Config {
	if c.N <= 0 {
		c.N = 30
	}
	if c.ExecN <= 0 {
		c.ExecN = max(c.N, 50)
	}
	if c.FileSize <= 0 {
		c.FileSize = 10 << 10
	}
	if c.Files < 0 {
		c.Files = 0
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Latencies turns samples into a Result's percentiles (nearest rank).
func Latencies(op string, samples []time.Duration) Result {
	s := append([]time.Duration(nil), samples...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	pct := func(p float64) float64 {
		if len(s) == 0 {
			return 0
		}
		i := int(p*float64(len(s))+0.999999) - 1
		return float64(s[min(max(i, 0), len(s)-1)].Nanoseconds()) / 1e6
	}
	return Result{Op: op, N: len(s), P50MS: pct(0.50), P90MS: pct(0.90), P99MS: pct(0.99)}
}

// Needle is a word that Fill writes into the first file of every
// directory, for the grep op to find.
const Needle = "TURNBOX_NEEDLE"

// Fill writes files text files of size bytes under dir, 100 to a
// directory (d000/f00000.txt, ...): lines of base64 of random bytes, so
// the content neither compresses nor deduplicates, and grep has text to
// scan. The first file of each directory holds Needle on its first line.
func Fill(dir string, files, size int) error {
	raw := make([]byte, size)
	text := make([]byte, 0, size+80)
	for i := range files {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/100))
		if i%100 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return fmt.Errorf("bench fill: %w", err)
			}
		}
		_, _ = rand.Read(raw)
		text = text[:0]
		if i%100 == 0 {
			text = append(text, Needle+"\n"...)
		}
		enc := base64.StdEncoding.EncodeToString(raw)
		for len(text) < size && len(enc) > 0 {
			n := min(76, len(enc), size-len(text))
			text = append(text, enc[:n]...)
			text = append(text, '\n')
			enc = enc[n:]
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d.txt", i)), text[:min(len(text), max(size, 1))], 0o644); err != nil {
			return fmt.Errorf("bench fill: %w", err)
		}
	}
	return nil
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

func loadAvg() [3]float64 {
	var out [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return out
	}
	f := strings.Fields(string(b))
	for i := 0; i < 3 && i < len(f); i++ {
		out[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return out
}

// NewReport returns an empty report stamped with this machine.
func NewReport() Report {
	return Report{Results: []Result{}, Machine: Machine{
		OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), Kernel: kernel(),
		When: time.Now().UTC(), CPUModel: cpuModel(), MemoryBytes: memTotal(), LoadAvg: loadAvg(),
	}}
}

// Run measures the headline operations on h (one backend × runtime) and
// returns their results, followed by the baselines measured in the same
// run. Operations the host cannot do (pause on a runtime without it) and
// baselines whose tools are missing are left out and logged to
// cfg.Logger; the Suite records them in its report instead.
func Run(ctx context.Context, h *embedded.Host, cfg Config) ([]Result, error) {
	res, skips, err := runHost(ctx, h, cfg)
	cfg = cfg.withDefaults()
	for _, s := range skips {
		cfg.Logger.Warn("bench: not measured", "backend", s.Backend, "runtime", s.Runtime, "op", s.Op, "reason", s.Reason)
	}
	return res, err
}
