package benchmarks

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/snapshot/btrfs"
	"github.com/turnbox/turnbox/zfs"
)

// ErrFailed reports that at least one measurement broke; the report still
// holds everything else, and the failures are in Report.Skipped with
// Failed set.
var ErrFailed = errors.New("benchmarks: some measurements failed")

// Combo is one storage backend × container runtime.
type Combo struct {
	// Storage is the storage backend.
	Storage embedded.StorageBackend
	// Runtime "" is the host's default (gvisor when it can run, else none).
	Runtime embedded.ContainerRuntime
}

// String returns "storage×runtime".
func (c Combo) String() string { return string(c.Storage) + "×" + string(c.Runtime) }

// label names c for a person: "btrfs × gvisor", "localdisk × default
// runtime" when the runtime is left to the host.
func (c Combo) label() string {
	return string(c.Storage) + " × " + cmp.Or(string(c.Runtime), "default runtime")
}

// AllCombos returns every storage backend × container runtime turnbox has,
// grouped by backend.
func AllCombos() []Combo {
	var out []Combo
	for _, s := range []embedded.StorageBackend{embedded.StorageBackendLocalDisk, embedded.StorageBackendBtrfs, embedded.StorageBackendZFS} {
		for _, r := range []embedded.ContainerRuntime{embedded.ContainerRuntimeNone, embedded.ContainerRuntimeGVisor, embedded.ContainerRuntimeRunc} {
			out = append(out, Combo{s, r})
		}
	}
	return out
}

// Suite is a whole bench run: the headline operations on each combination
// and the scaling series, into one Report.
type Suite struct {
	// Config is what each combination measures.
	Config Config
	// Combos are the combinations to measure, in order. A combination
	// that cannot run here (no runsc, no btrfs, no zfs) is recorded in
	// Report.Skipped and the run goes on.
	Combos []Combo
	// Host is the template of every host's configuration: AgentPath,
	// DefaultImage, and StorageRoot (btrfs) or ZFSDataset (zfs) when the
	// caller has a filesystem to use; without one the suite makes a
	// temporary loop-mounted btrfs filesystem or file-backed pool per
	// combination. StateDir is a base directory under which each host
	// gets its own (default: a temporary directory, removed after).
	Host embedded.Config
	// SeriesFiles are the workspace sizes (file counts) of the scaling
	// series on btrfs: turn_complete, rollback and fork with the raw
	// baseline at each size. Empty: no size series.
	SeriesFiles []int
	// SeriesFileSize is the size of each file in the size series (default
	// 1 KiB, so 100,000 files make 100 MB).
	SeriesFileSize int
	// SeriesSessions are the concurrent session counts driving
	// write_file + TurnComplete cycles in parallel on btrfs. Empty: no
	// concurrency series.
	SeriesSessions []int
	// SeriesTurns is the cycles each concurrent session runs (default
	// max(ceil(N/sessions), 5), so every point has at least N samples).
	SeriesTurns int
	// SeriesRuntime is the runtime of both series (default none).
	SeriesRuntime embedded.ContainerRuntime
	// Pool, if positive, also measures create, start and fork on a
	// second host per combination with that many pooled sandboxes
	// (embedded.Config.PoolSize): the ops create_pooled, start_pooled and
	// fork_pooled.
	Pool int
	// Remote adds RemoteResults: remote ExecuteTool, read_file and
	// TurnComplete beside the same calls in process, and the 50-session
	// read_file load, on a localdisk host with the none runtime served
	// over loopback.
	Remote bool
	// Processes adds ProcessResults (process_start beside exec-true, and
	// remote_pty_echo) on localdisk for each runtime of Combos.
	Processes bool
	// Files adds FileThroughput: upload and download of a 100 MB file
	// through the embedded and the remote API beside a raw baseline, on a
	// localdisk host with the none runtime.
	Files bool
	// Logger receives progress (nil: discarded).
	Logger *slog.Logger
	// Progress, if set, receives a line for a person as each combination
	// and each extra measurement starts, and a summary line at the end
	// (the Logger gets the same at info).
	Progress io.Writer
}

// announce tells the Progress writer (if any) and log at info that a step
// starts or ended.
func (s Suite) announce(log *slog.Logger, format string, args ...any) {
	line := "bench: " + fmt.Sprintf(format, args...)
	if s.Progress != nil {
		fmt.Fprintln(s.Progress, line)
	}
	log.Info(line)
}

// Run measures everything the suite names. It returns the report and,
// when a measurement broke, an error wrapping ErrFailed beside it; a
// combination that cannot run here is not an error.
func (s Suite) Run(ctx context.Context) (Report, error) {
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s.Config.Logger = log
	s.Config = s.Config.withDefaults()
	rep := NewReport()
	rep.Config = s.reportConfig()
	base := s.Host.StateDir
	if base == "" {
		d, err := os.MkdirTemp("", "turnbox-bench-")
		if err != nil {
			return rep, fmt.Errorf("benchmarks: %w", err)
		}
		defer os.RemoveAll(d)
		base = d
	}
	t0 := time.Now()
	failed, err := s.runCombos(ctx, &rep, base, log)
	if err != nil {
		return rep, err
	}
	failed = append(failed, s.runExtras(ctx, &rep, base, log)...)
	rep.SetRatios()
	s.announce(log, "finished in %s: %d results, %d not measured, %d failed",
		time.Since(t0).Round(time.Second), len(rep.Results), len(rep.Skipped), len(failed))
	if len(failed) > 0 {
		return rep, fmt.Errorf("%w: %w", ErrFailed, errors.Join(failed...))
	}
	return rep, nil
}

// runExtras runs what the suite adds to the combinations: the series,
// remote, process and file measurements. It returns the ones that broke.
func (s Suite) runExtras(ctx context.Context, rep *Report, base string, log *slog.Logger) []error {
	var failed []error
	failed = append(failed, s.runSeries(ctx, rep, base, log)...)
	if s.Remote {
		s.announce(log, "remote (loopback ConnectRPC) beside embedded")
		// localdisk × none in a temporary directory: the rows measure
		// the network hop, not a runtime.
		res, err := RemoteResults(ctx, s.Config)
		rep.Results = append(rep.Results, res...)
		if err != nil {
			failed = append(failed, fmt.Errorf("remote: %w", err))
		}
	}
	if s.Processes {
		failed = append(failed, s.runProcesses(ctx, rep, log)...)
	}
	if s.Files {
		s.announce(log, "file upload and download throughput")
		res, err := FileThroughput(ctx, nil, FileThroughputBytes, 0)
		rep.Results = append(rep.Results, res...)
		if err != nil {
			failed = append(failed, fmt.Errorf("files: %w", err))
		}
	}
	return failed
}

// reportConfig is the Config the report records: s.Config with the zfs
// driver named when a combination runs on zfs.
func (s Suite) reportConfig() Config {
	cfg := s.Config
	cfg.ZFSDriver = ""
	for _, c := range s.Combos {
		if c.Storage == embedded.StorageBackendZFS {
			// The driver embedded opens for these hosts ("" is the
			// command driver), so the report tells runs apart.
			cfg.ZFSDriver = s.Host.ZFSDriver
			if cfg.ZFSDriver == "" {
				cfg.ZFSDriver = zfs.DriverCommand
			}
		}
	}
	return cfg
}

// runCombos measures each combination (and its pooled host when s.Pool is
// set) into rep under base. It returns the measurements that broke, or
// the context's error when it ended between combinations.
func (s Suite) runCombos(ctx context.Context, rep *Report, base string, log *slog.Logger) ([]error, error) {
	var failed []error
	storageDone := map[embedded.StorageBackend]bool{}
	for i, c := range s.Combos {
		if ctx.Err() != nil {
			return failed, ctx.Err()
		}
		cfg := s.Config
		cfg.SkipStorageBaselines = storageDone[c.Storage]
		s.announce(log, "[%d/%d] %s: starting", i+1, len(s.Combos), c.label())
		t0 := time.Now()
		res, skips, err := s.runCombo(ctx, c, filepath.Join(base, fmt.Sprintf("c%d", i)), s.fsSize(cfg.Files, cfg.FileSize), func(h *embedded.Host) ([]Result, []Skip, error) {
			return runHost(ctx, h, cfg)
		})
		rep.Results = append(rep.Results, res...)
		rep.Skipped = append(rep.Skipped, skips...)
		if err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", c, err))
			continue
		}
		if res != nil {
			storageDone[c.Storage] = true
		}
		if s.Pool > 0 && res != nil {
			ps := s
			ps.Host.PoolSize = s.Pool
			pres, pskips, err := ps.runCombo(ctx, c, filepath.Join(base, fmt.Sprintf("c%d-pool", i)), s.fsSize(cfg.Files, cfg.FileSize), func(h *embedded.Host) ([]Result, []Skip, error) {
				return runPooled(ctx, h, s.Pool, cfg)
			})
			rep.Results = append(rep.Results, pres...)
			rep.Skipped = append(rep.Skipped, tagSkips(pskips, "pooled")...)
			if err != nil {
				failed = append(failed, fmt.Errorf("%s pooled: %w", c, err))
				continue
			}
		}
		s.announce(log, "[%d/%d] %s: done in %s", i+1, len(s.Combos), c.label(), time.Since(t0).Round(time.Millisecond))
	}
	return failed, nil
}

// runSeries runs the workspace size and concurrent sessions series the
// suite names into rep under base, and returns the ones that broke.
func (s Suite) runSeries(ctx context.Context, rep *Report, base string, log *slog.Logger) []error {
	var failed []error
	rt := s.SeriesRuntime
	if rt == "" {
		rt = embedded.ContainerRuntimeNone
	}
	series := Combo{embedded.StorageBackendBtrfs, rt}
	size := s.SeriesFileSize
	if size <= 0 {
		size = 1 << 10
	}
	if len(s.SeriesFiles) > 0 || len(s.SeriesSessions) > 0 {
		rep.Series = SeriesConfig{Files: s.SeriesFiles, Sessions: s.SeriesSessions, Turns: s.SeriesTurns, Runtime: string(rt)}
		if len(s.SeriesFiles) > 0 {
			rep.Series.FileSize = size
		}
	}
	if len(s.SeriesFiles) > 0 {
		largest := 0
		for _, n := range s.SeriesFiles {
			largest = max(largest, n)
		}
		s.announce(log, "workspace size series: %v files, runtime %s", s.SeriesFiles, rt)
		res, skips, err := s.runCombo(ctx, series, filepath.Join(base, "series-files"), s.fsSize(largest, size)+int64(largest)*8<<10, func(h *embedded.Host) ([]Result, []Skip, error) {
			return filesSeries(ctx, h, s.SeriesFiles, size, s.Config.N, log)
		})
		rep.Results = append(rep.Results, res...)
		rep.Skipped = append(rep.Skipped, tagSkips(skips, "size series")...)
		if err != nil {
			failed = append(failed, fmt.Errorf("size series: %w", err))
		}
	}
	if len(s.SeriesSessions) > 0 {
		s.announce(log, "concurrent sessions series: %v sessions, runtime %s", s.SeriesSessions, rt)
		res, skips, err := s.runCombo(ctx, series, filepath.Join(base, "series-sessions"), 2<<30, func(h *embedded.Host) ([]Result, []Skip, error) {
			return sessionsSeries(ctx, h, s.SeriesSessions, s.SeriesTurns, s.Config.N, log)
		})
		rep.Results = append(rep.Results, res...)
		rep.Skipped = append(rep.Skipped, tagSkips(skips, "sessions series")...)
		if err != nil {
			failed = append(failed, fmt.Errorf("sessions series: %w", err))
		}
	}
	return failed
}

func tagSkips(skips []Skip, what string) []Skip {
	for i := range skips {
		skips[i].Reason = what + ": " + skips[i].Reason
	}
	return skips
}

// fsSize is the size of a temporary filesystem for a workspace of files
// files: the workspace, its copies and the baselines' trees, plus room.
func (s Suite) fsSize(files, size int) int64 {
	return int64(files)*int64(size)*8 + 1<<30
}

// runCombo opens a host for c in stateDir (making a scratch filesystem
// when needed), runs fn on it and closes everything. A host that cannot
// be opened is a skip; an error from fn is returned with a failed skip
// recorded.
func (s Suite) runCombo(ctx context.Context, c Combo, stateDir string, fsSize int64, fn func(*embedded.Host) ([]Result, []Skip, error)) ([]Result, []Skip, error) {
	cantRun := func(err error) ([]Result, []Skip, error) {
		reason := err.Error()
		if s.Logger != nil {
			s.Logger.Warn("bench: combination cannot run here; skipped", "storage", c.Storage, "runtime", c.Runtime, "reason", reason)
		}
		return nil, []Skip{{Backend: string(c.Storage), Runtime: string(c.Runtime), Reason: reason}}, nil
	}
	hc := s.Host
	hc.StateDir = stateDir
	hc.StorageBackend = c.Storage
	hc.ContainerRuntime = c.Runtime
	hc.Storage, hc.Runtime = nil, nil
	if hc.Logger == nil {
		hc.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("benchmarks: %w", err)
	}
	defer os.RemoveAll(stateDir)
	switch c.Storage {
	case embedded.StorageBackendBtrfs:
		if hc.StorageRoot == "" {
			sc, err := TempBtrfs(fsSize)
			if err != nil {
				return cantRun(err)
			}
			defer sc.Close()
			hc.StorageRoot = sc.Dir
		} else {
			hc.StorageRoot = filepath.Join(hc.StorageRoot, "turnbox-bench-"+filepath.Base(stateDir))
			if err := os.MkdirAll(hc.StorageRoot, 0o700); err != nil {
				return nil, nil, fmt.Errorf("benchmarks: %w", err)
			}
			defer os.RemoveAll(hc.StorageRoot)
		}
	case embedded.StorageBackendZFS:
		if hc.ZFSDataset == "" {
			sc, err := TempZFSPool(fsSize)
			if err != nil {
				return cantRun(err)
			}
			defer sc.Close()
			hc.ZFSDataset = sc.Dataset
		}
	default:
		hc.StorageRoot = ""
	}
	h, err := embedded.NewHost(ctx, hc)
	if err != nil {
		return cantRun(err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = h.Close(cctx)
	}()
	caps := h.Capabilities()
	if caps.Storage != string(c.Storage) || c.Runtime != "" && string(caps.Isolation) != string(c.Runtime) {
		return cantRun(fmt.Errorf("asked for %s, the host runs %s×%s", c, caps.Storage, caps.Isolation))
	}
	res, skips, err := fn(h)
	if err != nil {
		skips = append(skips, Skip{Backend: string(c.Storage), Runtime: string(c.Runtime), Reason: err.Error(), Failed: true})
		if s.Logger != nil {
			s.Logger.Warn("bench: combination failed", "storage", c.Storage, "runtime", c.Runtime, "err", err)
		}
		return res, skips, err
	}
	return res, skips, nil
}

// filesSeries measures turn_complete, rollback and fork with a workspace
// of each size, and the raw btrfs baseline at each size.
func filesSeries(ctx context.Context, h *embedded.Host, sizes []int, size, n int, log *slog.Logger) ([]Result, []Skip, error) {
	caps := h.Capabilities()
	var out []Result
	for _, files := range sizes {
		log.Info("bench: size series", "files", files)
		f, err := newFixture(ctx, h, files, size)
		if err != nil {
			return out, nil, err
		}
		c := &collector{backend: caps.Storage, runtime: string(caps.Isolation), files: files}
		for _, s := range []struct {
			op string
			fn body
		}{{OpTurnComplete, f.turnComplete}, {OpRollback, f.rollback}, {OpFork, f.fork}} {
			samples, err := measure(ctx, n, s.fn)
			if err != nil {
				f.close()
				return out, nil, fmt.Errorf("%s at %d files: %w", s.op, files, err)
			}
			c.add(s.op, "", samples)
		}
		f.close()
		if b, ok := h.Storage().(*btrfs.Backend); ok {
			raw, err := RawBtrfs(ctx, b.Root(), files, size, n)
			if err != nil {
				return out, nil, fmt.Errorf("raw at %d files: %w", files, err)
			}
			for _, r := range raw {
				r.Backend, r.Files, r.Baseline = caps.Storage, files, BaselineRaw
				c.res = append(c.res, r)
			}
		}
		for _, r := range c.res {
			r.Series = SeriesFiles
			out = append(out, r)
		}
	}
	return out, nil, nil
}

// seriesSessionFiles is the workspace of each session in the concurrency
// series: small, since the series is about parallel turns, not size.
const seriesSessionFiles = 100

// sessionsSeries drives write_file + TurnComplete cycles in count
// concurrent sessions for each count, timing each TurnComplete; OpsPerSec
// is the cycles completed per second of wall time.
func sessionsSeries(ctx context.Context, h *embedded.Host, counts []int, turns, n int, log *slog.Logger) ([]Result, []Skip, error) {
	caps := h.Capabilities()
	var out []Result
	for _, count := range counts {
		if count <= 0 {
			return out, nil, fmt.Errorf("benchmarks: concurrent sessions must be positive, got %d", count)
		}
		k := turns
		if k <= 0 {
			k = max((n+count-1)/count, 5)
		}
		log.Info("bench: sessions series", "sessions", count, "turns", k)
		fixtures := make([]*fixture, 0, count)
		closeAll := func() {
			for _, f := range fixtures {
				f.close()
			}
		}
		for range count {
			f, err := newFixture(ctx, h, seriesSessionFiles, 1<<10)
			if err != nil {
				closeAll()
				return out, nil, fmt.Errorf("%d sessions: %w", count, err)
			}
			fixtures = append(fixtures, f)
		}
		samples := make([][]time.Duration, count)
		errs := make([]error, count)
		var wg sync.WaitGroup
		t0 := time.Now()
		for j, f := range fixtures {
			wg.Go(func() {
				samples[j], errs[j] = measure(ctx, k, f.turnComplete)
			})
		}
		wg.Wait()
		wall := time.Since(t0)
		closeAll()
		if err := errors.Join(errs...); err != nil {
			return out, nil, fmt.Errorf("%d sessions: %w", count, err)
		}
		var all []time.Duration
		for _, s := range samples {
			all = append(all, s...)
		}
		r := Latencies(OpTurnComplete, all)
		r.Backend, r.Runtime, r.Files, r.Sessions, r.Series = caps.Storage, string(caps.Isolation), seriesSessionFiles, count, SeriesSessions
		r.OpsPerSec = float64(len(all)) / wall.Seconds()
		out = append(out, r)
		if b, ok := h.Storage().(*btrfs.Backend); ok {
			raw, err := RawBtrfsConcurrent(ctx, b.Root(), count, k, seriesSessionFiles)
			if err != nil {
				return out, nil, fmt.Errorf("%d sessions: %w", count, err)
			}
			raw.Backend = caps.Storage
			out = append(out, raw)
		}
	}
	return out, nil, nil
}
