package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/turnbox/turnbox/benchmarks"
	"github.com/turnbox/turnbox/embedded"
)

// benchOpts are the bench command's flags.
type benchOpts struct {
	cfg                  benchmarks.Config
	asJSON, matrix, both bool
	remoteToo, filesToo  bool
	processes            bool
	out, note, from      string
	backends, runtimes   []string
	seriesFiles          []int
	seriesSessions       []int
	seriesFileSize       int
	seriesTurns          int
	seriesRuntime        string
}

func benchCmd(g *globals) *cobra.Command {
	var o benchOpts
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure every headline operation beside baselines; write a report with a chart",
		Long: `bench creates sessions and times create, start, exec, read_file, write_file,
edit_file, grep, turn_complete, rollback, fork and pause_resume --n times each
(exec --exec-n times) on a synthetic workspace of --files files, beside
baselines measured in the same run: full-copy (cp -a of the same workspace) and
raw (the bare btrfs ioctl, or on zfs the bare call of the --zfs-driver: the zfs
command, or the libzfs_core call) for turn_complete, rollback and fork;
runsc-exec, runsc-run (gvisor) and runc-exec (runc) for exec; gvisor-checkpoint
(runsc checkpoint --leave-running) for turn_complete and gvisor-restore (runsc
restore) for rollback.

By default it measures the global --storage × --runtime. --matrix measures
every backend × runtime (localdisk, btrfs, zfs × none, gvisor, runc), and
--backends/--runtimes a chosen product; a combination that cannot run here is
skipped and listed in the report. btrfs without --storage-root gets a temporary
loop-mounted filesystem, zfs without --zfs-dataset a temporary file-backed pool
(starting zfs-fuse when no kernel ZFS is present); both are removed afterwards.
The zfs backend uses the global --zfs-driver (command or libzfs_core), which
the report records (config.zfs_driver).

--series adds the scaling series on btrfs: workspace size (--series-files:
turn_complete, rollback, fork and the raw baseline at each size) and
concurrent sessions (--series-sessions: write_file + TurnComplete cycles in
parallel, p50/p99 and cycles per second).

--remote adds the network hop: ExecuteTool (bash true, read_file) and
TurnComplete through a loopback turnbox server beside the same calls in
process (remote_* ops, baseline embedded, and their paired _overhead), and a
read_file load over 50 sessions (closed loop, and a fixed 2,000 calls/s).

--pool N adds create_pooled, start_pooled and fork_pooled: the same calls on
a second host that keeps N sandboxes started ahead of time, each timed once
the pool has refilled.

--out DIR writes DIR/report.json, DIR/report.md (tables with ratios to the
baselines) and DIR/chart.svg; --json prints the JSON; otherwise a table.
--from FILE --out DIR renders an earlier report.json again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.from != "" {
				return o.rerender(cmd)
			}
			s, err := o.suite(cmd, g)
			if err != nil {
				return err
			}
			return o.run(cmd, s)
		},
	}
	o.register(cmd)
	return cmd
}

// register defines the bench flags on cmd.
func (o *benchOpts) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.IntVar(&o.cfg.Files, "files", 1000, "files in the synthetic workspace")
	f.IntVar(&o.cfg.FileSize, "file-size", 10<<10, "bytes per file")
	f.IntVarP(&o.cfg.N, "n", "n", 30, "timed runs per operation")
	f.IntVar(&o.cfg.ExecN, "exec-n", 0, "timed runs of exec and its per-call baselines (default max(n, 50))")
	f.BoolVar(&o.asJSON, "json", false, "print the JSON report")
	f.StringVar(&o.out, "out", "", "write report.json, report.md and chart.svg into this directory")
	f.StringVar(&o.from, "from", "", "render this report.json again into --out (no measuring)")
	f.StringVar(&o.note, "note", "", "a note on the machine for the report (e.g. \"shared, loaded machine\")")
	f.BoolVar(&o.matrix, "matrix", false, "measure every storage backend × runtime (skipping, in the report, those that cannot run here)")
	f.StringSliceVar(&o.backends, "backends", nil, "storage backends to measure (localdisk,btrfs,zfs; default --storage)")
	f.StringSliceVar(&o.runtimes, "runtimes", nil, "runtimes to measure (none,gvisor,runc; default --runtime)")
	f.BoolVar(&o.remoteToo, "remote", false, "also measure remote (loopback ConnectRPC) ExecuteTool, read_file and TurnComplete beside embedded, and a 50-session read_file load")
	f.BoolVar(&o.processes, "processes", false, "also measure a background process start (pid) beside a one-shot bash true, and PTY keystroke echo through the remote API on loopback, per runtime")
	f.BoolVar(&o.filesToo, "file-io", false, "also measure upload and download of a 100 MB file through the embedded and remote (loopback) file API beside plain file I/O")
	f.BoolVar(&o.both, "series", false, "also run the workspace-size and concurrent-sessions series on btrfs")
	f.IntSliceVar(&o.seriesFiles, "series-files", []int{1000, 10000, 100000}, "workspace sizes (files) of the size series")
	f.IntVar(&o.seriesFileSize, "series-file-size", 1<<10, "bytes per file in the size series")
	f.IntSliceVar(&o.seriesSessions, "series-sessions", []int{1, 10, 50}, "concurrent session counts of the sessions series")
	f.IntVar(&o.seriesTurns, "series-turns", 0, "cycles per session in the sessions series (default max(n/sessions, 5))")
	f.StringVar(&o.seriesRuntime, "series-runtime", "none", "runtime of both series: none|gvisor|runc")
}

// rerender renders an earlier run's report again (--from); it measures
// nothing.
func (o *benchOpts) rerender(cmd *cobra.Command) error {
	if o.out == "" {
		return errors.New("bench: --from needs --out")
	}
	rep, err := benchmarks.ReadReport(o.from)
	if err != nil {
		return err
	}
	if cmd.Flags().Changed("note") {
		rep.Machine.Note = o.note
	}
	return benchmarks.WriteDir(o.out, rep)
}

// suite checks the flags and returns the suite they ask for.
func (o *benchOpts) suite(cmd *cobra.Command, g *globals) (benchmarks.Suite, error) {
	cfg := o.cfg
	if cfg.N < 1 || cfg.Files < 0 || cfg.FileSize < 1 || cfg.ExecN < 0 {
		return benchmarks.Suite{}, fmt.Errorf("bench: --n must be at least 1, --files at least 0, --file-size at least 1, --exec-n at least 0")
	}
	s := benchmarks.Suite{Config: cfg, Logger: g.logger, Progress: cmd.ErrOrStderr()}
	combos, err := benchCombos(g, o.matrix, o.backends, o.runtimes)
	if err != nil {
		return benchmarks.Suite{}, err
	}
	s.Combos = combos
	if cmd.Flags().Changed("state-dir") || os.Getenv("TURNBOX_STATE_DIR") != "" {
		s.Host.StateDir = g.stateDir
	}
	// Hosts log at warn at most: their per-session lines would bury
	// the bench's progress (shown with --log-level info).
	hostLog := g.logger
	if g.logLevel != "warn" && g.logLevel != "error" {
		if l, err := newLogger("warn", g.logJSON); err == nil {
			hostLog = l
		}
	}
	s.Host.AgentPath, s.Host.DefaultImage, s.Host.Logger = g.agent, g.image, hostLog
	s.Host.StorageRoot, s.Host.ZFSDataset, s.Host.ZFSDriver = g.root, g.dataset, g.zfsDrv
	if o.both || cmd.Flags().Changed("series-files") {
		s.SeriesFiles = o.seriesFiles
	}
	if o.both || cmd.Flags().Changed("series-sessions") {
		s.SeriesSessions = o.seriesSessions
	}
	for _, n := range append(append([]int(nil), s.SeriesFiles...), s.SeriesSessions...) {
		if n < 1 {
			return benchmarks.Suite{}, fmt.Errorf("bench: series sizes and session counts must be at least 1, got %d", n)
		}
	}
	s.SeriesFileSize, s.SeriesTurns = o.seriesFileSize, o.seriesTurns
	s.SeriesRuntime = embedded.ContainerRuntime(o.seriesRuntime)
	s.Remote = o.remoteToo
	s.Processes = o.processes
	s.Files = o.filesToo
	if g.pool < 0 {
		return benchmarks.Suite{}, fmt.Errorf("bench: --pool must be at least 0")
	}
	s.Pool = g.pool
	return s, nil
}

// run runs s and writes its report where the flags say, then lists what
// was not measured.
func (o *benchOpts) run(cmd *cobra.Command, s benchmarks.Suite) error {
	rep, runErr := s.Run(cmd.Context())
	rep.Machine.Note = o.note
	if runErr != nil && !errors.Is(runErr, benchmarks.ErrFailed) {
		return runErr
	}
	if o.out != "" {
		if err := benchmarks.WriteDir(o.out, rep); err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s/%s, %s, %s\n", o.out, benchmarks.ReportJSON, benchmarks.ReportMD, benchmarks.ReportChart)
	}
	switch {
	case o.asJSON:
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	case o.out == "":
		if err := printTable(cmd.OutOrStdout(), rep); err != nil {
			return err
		}
	}
	for _, sk := range rep.Skipped {
		what := "not measured"
		if sk.Failed {
			what = "FAILED"
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "bench: %s: %s×%s %s: %s\n", what, sk.Backend, sk.Runtime, sk.Op, sk.Reason)
	}
	return runErr
}

// benchCombos returns the combinations the flags ask for.
func benchCombos(g *globals, matrix bool, backends, runtimes []string) ([]benchmarks.Combo, error) {
	if matrix {
		if len(backends) > 0 || len(runtimes) > 0 {
			return nil, errors.New("bench: --matrix measures every combination; drop --backends/--runtimes, or drop --matrix")
		}
		return benchmarks.AllCombos(), nil
	}
	if len(backends) == 0 {
		backends = []string{cmp.Or(g.storage, string(embedded.StorageBackendLocalDisk))}
	}
	if len(runtimes) == 0 {
		// "" is the host's default: gvisor when it can run here, else none.
		runtimes = []string{g.runtime}
	}
	var out []benchmarks.Combo
	for _, b := range backends {
		switch embedded.StorageBackend(b) {
		case embedded.StorageBackendLocalDisk, embedded.StorageBackendBtrfs, embedded.StorageBackendZFS:
		default:
			return nil, fmt.Errorf("bench: unknown storage backend %q (localdisk, btrfs, zfs)", b)
		}
		for _, r := range runtimes {
			switch embedded.ContainerRuntime(r) {
			case "", embedded.ContainerRuntimeNone, embedded.ContainerRuntimeGVisor, embedded.ContainerRuntimeRunc:
			default:
				return nil, fmt.Errorf("bench: unknown runtime %q (none, gvisor, runc)", r)
			}
			out = append(out, benchmarks.Combo{Storage: embedded.StorageBackend(b), Runtime: embedded.ContainerRuntime(r)})
		}
	}
	return out, nil
}

func printTable(w io.Writer, rep benchmarks.Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\tbackend\truntime\tfiles\tsessions\tn\tp50 ms\tp90 ms\tp99 ms\tbaseline\tseries\t turnbox vs baselines")
	for _, r := range rep.Results {
		var vs []string
		for _, v := range r.VsBaselines {
			vs = append(vs, v.String())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%.2f\t%.2f\t%.2f\t%s\t%s\t %s\n", r.Op, r.Backend, r.Runtime, r.Files, r.Sessions, r.N, r.P50MS, r.P90MS, r.P99MS, r.Baseline, r.Series, strings.Join(vs, "; "))
	}
	return tw.Flush()
}
