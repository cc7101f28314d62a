package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

func sessionCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "session", Short: "Create, use and remove sessions on the state directory"}
	cmd.AddCommand(sessionCreateCmd(g), sessionExecCmd(g), sessionSnapshotCmd(g), sessionSnapshotsCmd(g),
		sessionRollbackCmd(g), sessionForkCmd(g), sessionLsCmd(g), sessionRmCmd(g),
		sessionCpCmd(g), sessionStatCmd(g))
	cmd.AddCommand(sessionProcessCmds(g)...)
	return cmd
}

func sessionCreateCmd(g *globals) *cobra.Command {
	var cfg environment.SessionConfig
	var env []string
	var limits limitFlags
	cmd := &cobra.Command{
		Use:   "create [--id ID] [--from SNAPSHOT]",
		Short: "Create a session and print its id",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, kv := range env {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("--env %q: want KEY=VALUE", kv)
				}
				if cfg.Env == nil {
					cfg.Env = map[string]string{}
				}
				cfg.Env[k] = v
			}
			var err error
			if cfg.Limits, err = limits.parse(false); err != nil {
				return err
			}
			// Refused before the host is opened: nothing is written.
			if err := cfg.Validate(); err != nil {
				return err
			}
			h, err := g.openHost(cmd.Context())
			if err != nil {
				return err
			}
			defer closeHost(h)
			e, err := h.CreateSession(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Println(e.SessionID())
			return nil
		},
	}
	cmd.Flags().StringVar(&cfg.SessionID, "id", "", "session id (default: generated)")
	cmd.Flags().StringVar(&cfg.FromSnapshot, "from", "", "start from this snapshot id")
	cmd.Flags().StringVar(&cfg.Image, "image", "", "image for isolated runtimes: a name under <state-dir>/images, never a path")
	cmd.Flags().BoolVar(&cfg.ReadOnlyRoot, "read-only-root", false, "make the session's root filesystem read-only to its commands but for /workspace")
	cmd.Flags().StringArrayVar(&env, "env", nil, "KEY=VALUE added to every command's environment (repeatable)")
	limits.add(cmd.Flags(), "", "the session's", "default: the host's; only lower")
	limits.diskFlag = "disk"
	cmd.Flags().StringVar(&limits.disk, "disk", "", "the session's disk limit, e.g. 1G (default: the host's; only lower)")
	return cmd
}

func sessionExecCmd(g *globals) *cobra.Command {
	var tool, input string
	var snap bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "exec SESSION [--tool NAME --input JSON | -- COMMAND...]",
		Short: "Run a tool call (default: bash with the given command), streaming its output",
		Example: `  turnbox session exec s-abc -- 'ls -la && echo done'
  turnbox session exec s-abc --tool write_file --input '{"path":"a.txt","content":"hi"}'`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := environment.ToolRequest{ToolCallID: fmt.Sprintf("cli-%d", time.Now().UnixNano()), ToolName: tool, Snapshot: snap}
			switch {
			case input != "":
				req.Input = json.RawMessage(input)
			case tool == environment.ToolBash && len(args) > 1:
				b, _ := json.Marshal(environment.BashParams{Command: strings.Join(args[1:], " "), TimeoutMS: timeout.Milliseconds()})
				req.Input = b
			default:
				return fmt.Errorf("give --input JSON, or a command after -- for bash")
			}
			h, e, err := g.attach(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer closeHost(h)
			streamed := false
			resp, err := e.ExecuteTool(cmd.Context(), req, func(p environment.ToolProgress) {
				streamed = true
				if p.Stream == environment.StreamStderr {
					os.Stderr.Write(p.Data)
				} else {
					os.Stdout.Write(p.Data)
				}
			})
			if err != nil {
				return err
			}
			if !streamed || resp.Truncated || resp.TimedOut || (resp.IsError && tool != environment.ToolBash) {
				// Non-streaming tools, and notices the stream did not carry.
				if streamed {
					fmt.Println()
				}
				fmt.Println(resp.Content)
			}
			if resp.SnapshotID != "" {
				fmt.Fprintln(os.Stderr, "snapshot:", resp.SnapshotID)
			}
			if resp.IsError {
				os.Exit(max(resp.ExitCode, 1))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&tool, "tool", environment.ToolBash, "tool name: "+strings.Join(environment.ToolNames(), ", "))
	cmd.Flags().StringVar(&input, "input", "", "tool input as a JSON object")
	cmd.Flags().BoolVar(&snap, "snapshot", false, "snapshot the workspace after the call")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "bash timeout (default: the host's)")
	return cmd
}

func sessionSnapshotCmd(g *globals) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "snapshot SESSION [--name LABEL]",
		Short: "Snapshot a session's workspace as its next turn",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			h, e, err := g.attach(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer closeHost(h)
			info, err := e.CreateSnapshot(cmd.Context(), name)
			if err != nil {
				return err
			}
			fmt.Println(info.ID)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "label (labelled snapshots survive retention)")
	return cmd
}

func sessionSnapshotsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "snapshots SESSION",
		Short: "List a session's snapshots",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			h, e, err := g.attach(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer closeHost(h)
			snaps, err := e.ListSnapshots(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTURN\tNAME\tCREATED\tSIZE")
			for _, s := range snaps {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\n", s.ID, s.Turn, s.Name, s.CreatedAt.Format(time.RFC3339), s.SizeBytes)
			}
			return tw.Flush()
		},
	}
}

func sessionRollbackCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rollback SESSION SNAPSHOT",
		Short: "Roll a session's workspace back (or forward) to a snapshot",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			h, e, err := g.attach(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer closeHost(h)
			return e.Rollback(cmd.Context(), args[1])
		},
	}
}

func sessionForkCmd(g *globals) *cobra.Command {
	var id string
	cmd := &cobra.Command{
		Use:   "fork SNAPSHOT [--id ID]",
		Short: "Create a new session from a snapshot and print its id",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			h, err := g.openHost(cmd.Context())
			if err != nil {
				return err
			}
			defer closeHost(h)
			e, err := h.Fork(cmd.Context(), args[0], environment.SessionConfig{SessionID: id})
			if err != nil {
				return err
			}
			fmt.Println(e.SessionID())
			return nil
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "id of the new session (default: generated)")
	return cmd
}

func sessionLsCmd(g *globals) *cobra.Command {
	var asJSON bool
	var depth int
	cmd := &cobra.Command{
		Use:   "ls [SESSION [PATH]]",
		Short: "List sessions, or with SESSION the files of a session's directory (files.go)",
		Args:  cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return g.lsFiles(cmd.Context(), args, depth, asJSON)
			}
			h, err := g.openHost(cmd.Context())
			if err != nil {
				return err
			}
			defer closeHost(h)
			ss := h.Sessions()
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(ss)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tTURNS\tCREATED\tFROM")
			for _, s := range ss {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", s.ID, s.State, s.LastTurn, s.CreatedAt.Format(time.RFC3339), s.ParentSnapshot)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().IntVar(&depth, "depth", 1, "with SESSION: how many directory levels to list")
	return cmd
}

func sessionRmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rm SESSION...",
		Short: "Destroy sessions and delete their data",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			h, err := g.openHost(cmd.Context())
			if err != nil {
				return err
			}
			defer closeHost(h)
			for _, id := range args {
				e := h.NewEnvironment()
				if err := e.AttachSession(id); err != nil {
					return err
				}
				if err := e.Destroy(cmd.Context()); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// attach opens the host and binds an Environment to session id. The
// caller closes the host.
func (g *globals) attach(ctx context.Context, id string) (*embedded.Host, *embedded.Environment, error) {
	h, err := g.openHost(ctx)
	if err != nil {
		return nil, nil, err
	}
	e := h.NewEnvironment()
	if err := e.AttachSession(id); err != nil {
		closeHost(h)
		return nil, nil, err
	}
	return h, e, nil
}
