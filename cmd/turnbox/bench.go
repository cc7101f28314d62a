package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/turnbox/turnbox/benchmarks"
)

func benchCmd(g *globals) *cobra.Command {
	var cfg benchmarks.Config
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure create, exec, snapshot, rollback and fork latency beside baselines",
		Long: `bench creates sessions on the configured backend and runtime (in a fresh
temporary state directory unless --state-dir is given), fills a synthetic
workspace of --files files, and times each operation --n times. Baselines
measured in the same run are marked in the baseline field: full-copy (cp -a of
the same workspace), raw (the bare btrfs ioctl or zfs command on a tree of the
same shape), runsc-exec and runsc-run (a runsc process per call, on gvisor),
runc-exec (a runc binary process per call, on runc). With
--storage btrfs and no --storage-root it makes a temporary loop-mounted btrfs
filesystem; with --storage zfs and no --zfs-dataset a temporary file-backed
pool (starting zfs-fuse when no kernel ZFS is present); both are removed
afterwards.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("state-dir") && os.Getenv("TURNBOX_STATE_DIR") == "" {
				dir, err := os.MkdirTemp("", "turnbox-bench-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				g.stateDir = dir
			}
			// Without a filesystem to use, make a temporary one sized for
			// the workspace, its copies and the baselines' trees.
			size := int64(cfg.Files)*int64(cfg.FileSize)*8 + 1<<30
			switch {
			case g.storage == "btrfs" && g.root == "":
				s, err := benchmarks.TempBtrfs(size)
				if err != nil {
					return err
				}
				defer s.Close()
				g.root = s.Dir
			case g.storage == "zfs" && g.dataset == "":
				s, err := benchmarks.TempZFSPool(size)
				if err != nil {
					return err
				}
				defer s.Close()
				g.dataset = s.Dataset
			}
			h, err := g.openHost(cmd.Context())
			if err != nil {
				return err
			}
			defer closeHost(h)
			rep := benchmarks.NewReport()
			res, err := benchmarks.Run(cmd.Context(), h, cfg)
			if err != nil {
				return err
			}
			rep.Results = append(rep.Results, res...)
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "op\tbackend\truntime\tfiles\tn\tp50 ms\tp90 ms\tp99 ms\tbaseline\t")
			for _, r := range rep.Results {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%.2f\t%.2f\t%.2f\t%s\t\n", r.Op, r.Backend, r.Runtime, r.Files, r.N, r.P50MS, r.P90MS, r.P99MS, r.Baseline)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().IntVar(&cfg.Files, "files", 1000, "files in the synthetic workspace")
	cmd.Flags().IntVar(&cfg.FileSize, "file-size", 10<<10, "bytes per file")
	cmd.Flags().IntVarP(&cfg.N, "n", "n", 30, "timed runs per operation")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the JSON report")
	return cmd
}
