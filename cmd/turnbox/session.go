package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/turnbox/turnbox/environment"
)

// The session commands. Each works on the sessions of the state directory
// in process, or with --server through a turnbox server (client.go); the
// exec command is in session_exec.go, the process commands in process.go,
// the file commands in files.go.

func sessionCmd(g *globals) *cobra.Command {
	c := &cli{g: g, t: &target{}}
	cmd := &cobra.Command{
		Use:   "session",
		Short: "Create, use and remove sessions (on the state directory, or with --server on a turnbox server)",
	}
	c.t.addFlags(cmd)
	cmd.AddCommand(sessionCreateCmd(c), sessionExecCmd(c), sessionSnapshotCmd(c), sessionSnapshotsCmd(c),
		sessionRollbackCmd(c), sessionForkCmd(c), sessionLsCmd(c), sessionInfoCmd(c), sessionRmCmd(c),
		sessionCpCmd(c), sessionStatCmd(c), sessionPublishCmd(c), sessionUnpublishCmd(c), sessionPortsCmd(c),
		sessionPortForwardCmd(c), sessionPauseCmd(c), sessionResumeCmd(c), sessionHibernateCmd(c))
	cmd.AddCommand(sessionProcessCmds(c)...)
	for _, sub := range cmd.Commands() {
		markOpensHost(sub)
	}
	return cmd
}

// printID prints a new session's id, or {"id": ...} with --json.
func printID(cmd *cobra.Command, id string, asJSON bool) error {
	if asJSON {
		return printJSON(cmd.OutOrStdout(), struct {
			ID string `json:"id"`
		}{id})
	}
	_, err := fmt.Fprintln(cmd.OutOrStdout(), id)
	return err
}

// createSession opens the store, creates cfg and prints the id.
func (c *cli) createSession(cmd *cobra.Command, cfg environment.SessionConfig, asJSON bool) error {
	s, err := c.open(cmd.Context())
	if err != nil {
		return err
	}
	defer s.close()
	id, err := s.create(cmd.Context(), cfg)
	if err != nil {
		return err
	}
	return printID(cmd, id, asJSON)
}

func sessionCreateCmd(c *cli) *cobra.Command {
	var cfg environment.SessionConfig
	var env, labels []string
	var netMode string
	var limits limitFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "create [--id ID] [--from SNAPSHOT] [--label K=V]",
		Short: "Create a session and print its id",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Env, err = parseKVs("env", env); err != nil {
				return err
			}
			if cfg.Labels, err = parseKVs("label", labels); err != nil {
				return err
			}
			if cfg.Limits, err = limits.parse(false); err != nil {
				return err
			}
			cfg.Network.Mode = environment.NetworkMode(netMode)
			// Refused before the host is opened: nothing is written.
			if err := cfg.Validate(); err != nil {
				return err
			}
			return c.createSession(cmd, cfg, asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.SessionID, "id", "", "session id (default: generated)")
	f.StringVar(&cfg.FromSnapshot, "from", "", "start from this snapshot id")
	f.StringVar(&cfg.Image, "image", "", "image for isolated runtimes: a name under <state-dir>/images, never a path (default: the host's)")
	f.BoolVar(&cfg.ReadOnlyRoot, "read-only-root", false, "make the session's root filesystem read-only to its commands but for /workspace")
	f.BoolVar(&cfg.SnapshotMemory, "snapshot-memory", false, "snapshots hold the session's processes too: rollback and fork bring them back (gvisor; docs/storage.md)")
	f.StringVar(&netMode, "net", "", "network mode: none (loopback only), egress (only what --allow names) or open (default: the host's)")
	f.StringArrayVar(&cfg.Network.Allow, "allow", nil, "what the sandbox may reach: HOST, *.SUFFIX, ADDRESS or CIDR, each with :PORT or :LO-HI (repeatable; docs/isolation.md)")
	f.StringArrayVar(&env, "env", nil, "KEY=VALUE added to every command's environment (repeatable)")
	f.StringArrayVar(&labels, "label", nil, "KEY=VALUE kept with the session, shown by info and ls, filtered by ls --label (repeatable)")
	limits.add(f, "", "the session's", "default: the host's; only lower")
	limits.diskFlag = "disk"
	f.StringVar(&limits.disk, "disk", "", "the session's disk limit, e.g. 1G (default: the host's; only lower)")
	f.BoolVar(&asJSON, "json", false, `print {"id": ID}`)
	return cmd
}

func sessionSnapshotCmd(c *cli) *cobra.Command {
	var name string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "snapshot SESSION [--name LABEL]",
		Short: "Snapshot a session's workspace as its next turn and print the snapshot's id",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, done, err := c.session(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer done()
			info, err := e.CreateSnapshot(cmd.Context(), name)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), info)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), info.ID)
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "label (labelled snapshots survive retention)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the snapshot as JSON")
	return cmd
}

func sessionSnapshotsCmd(c *cli) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "snapshots SESSION",
		Short: "List a session's snapshots",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withSession(cmd.Context(), args[0], func(e sessionEnv) error {
				snaps, err := e.ListSnapshots(cmd.Context())
				if err != nil {
					return err
				}
				return printList(cmd.OutOrStdout(), snaps, asJSON, "ID\tTURN\tNAME\tCREATED\tSIZE", func(s environment.SnapshotInfo) string {
					return fmt.Sprintf("%s\t%d\t%s\t%s\t%s", s.ID, s.Turn, orDash(s.Name), s.CreatedAt.Format(time.RFC3339), humanSize(s.SizeBytes))
				})
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (size_bytes 0: the backend cannot tell)")
	return cmd
}

func sessionRollbackCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "rollback SESSION SNAPSHOT",
		Short: "Roll a session's workspace back (or forward) to a snapshot",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, done, err := c.session(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer done()
			return e.Rollback(cmd.Context(), args[1])
		},
	}
}

func sessionForkCmd(c *cli) *cobra.Command {
	var id string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "fork SNAPSHOT [--id ID]",
		Short: "Create a new session from a snapshot and print its id",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.createSession(cmd, environment.SessionConfig{SessionID: id, FromSnapshot: args[0]}, asJSON)
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "id of the new session (default: generated)")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"id": ID}`)
	return cmd
}

func sessionLsCmd(c *cli) *cobra.Command {
	var asJSON bool
	var depth int
	var labels []string
	cmd := &cobra.Command{
		Use:   "ls [SESSION [PATH]] [--label K=V]",
		Short: "List sessions, or with SESSION the files of a session's directory",
		Args:  cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				if len(labels) > 0 {
					return fmt.Errorf("%w: --label filters sessions; it does not go with SESSION", environment.ErrInvalidArgument)
				}
				return c.lsFiles(cmd, args, depth, asJSON)
			}
			want, err := parseKVs("label", labels)
			if err != nil {
				return err
			}
			s, err := c.open(cmd.Context())
			if err != nil {
				return err
			}
			defer s.close()
			all, err := s.list(cmd.Context())
			if err != nil {
				return err
			}
			ss := slices.DeleteFunc(all, func(v sessionView) bool { return !hasLabels(v.Labels, want) })
			return printSessions(cmd, ss, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().IntVar(&depth, "depth", 1, "with SESSION: how many directory levels to list")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "only sessions with this label KEY=VALUE (repeatable: all must match)")
	return cmd
}

// printSessions prints session ls's table or JSON array.
func printSessions(cmd *cobra.Command, ss []sessionView, asJSON bool) error {
	if asJSON {
		if ss == nil {
			ss = []sessionView{}
		}
		return printJSON(cmd.OutOrStdout(), ss)
	}
	tw := newTable(cmd.OutOrStdout())
	fmt.Fprintln(tw, "ID\tSTATE\tTURNS\tCREATED\tFROM\tLABELS")
	for _, s := range ss {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", s.ID, s.State, s.LastTurn, s.CreatedAt.Format(time.RFC3339),
			orDash(s.ParentSnapshot), formatLabels(s.Labels))
	}
	return tw.Flush()
}

func sessionInfoCmd(c *cli) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "info SESSION",
		Short: "Describe a session: state, turns, parent, image, labels, limits",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := c.open(cmd.Context())
			if err != nil {
				return err
			}
			defer s.close()
			v, err := s.get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			return printInfo(cmd, v)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printInfo prints one session as "field: value" lines.
func printInfo(cmd *cobra.Command, v sessionView) error {
	tw := newTable(cmd.OutOrStdout())
	cpus := "-"
	if v.Limits.CPUs > 0 {
		cpus = strconv.FormatFloat(v.Limits.CPUs, 'g', -1, 64)
	}
	pids := "-"
	if v.Limits.Pids > 0 {
		pids = strconv.FormatInt(v.Limits.Pids, 10)
	}
	for _, kv := range [][2]string{
		{"id", v.ID}, {"state", stateText(v)}, {"created", v.CreatedAt.Format(time.RFC3339)},
		{"turns", strconv.Itoa(v.LastTurn)}, {"parent session", orDash(v.ParentSession)}, {"parent snapshot", orDash(v.ParentSnapshot)},
		{"image", orDash(v.Image)}, {"labels", formatLabels(v.Labels)},
		{"memory limit", humanSize(v.Limits.MemoryBytes)}, {"cpu limit", cpus}, {"pids limit", pids}, {"disk limit", humanSize(v.Limits.DiskBytes)},
		{"network", formatNetwork(v.Network)}, {"ports", formatPorts(v.Ports)},
		{"snapshots", snapshotKind(v.SnapshotMemory)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	return tw.Flush()
}

func sessionRmCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "rm SESSION...",
		Short: "Destroy sessions and delete their data",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := c.open(cmd.Context())
			if err != nil {
				return err
			}
			defer s.close()
			for _, id := range args {
				if err := destroy(cmd.Context(), s, id); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func destroy(ctx context.Context, s sessions, id string) error {
	e, err := s.attach(ctx, id)
	if err != nil {
		return err
	}
	return e.Destroy(ctx)
}

// snapshotKind says what a session's snapshots hold.
func snapshotKind(memory bool) string {
	if memory {
		return "files and memory"
	}
	return "files"
}

// stateText is a session's state, "paused (hibernated)" when it is paused
// to disk.
func stateText(v sessionView) string {
	if v.Hibernated {
		return string(v.State) + " (hibernated)"
	}
	return string(v.State)
}
