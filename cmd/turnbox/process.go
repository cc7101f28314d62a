package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
)

// Process commands: session start, ps, attach, signal, shell. Each works
// in-process on the state directory (the host, and so every process it
// starts, lives only as long as the command: start then follows the
// process to its end) or, with --server, through a turnbox server, where
// processes outlive the command.

// procTarget says where a process command goes.
type procTarget struct {
	server string
	token  string
}

func (p *procTarget) addFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&p.server, "server", "", "turnbox server URL (e.g. http://127.0.0.1:7420); default: in-process on the state directory")
	cmd.Flags().StringVar(&p.token, "token", "", "bearer token for --server (default $TURNBOX_TOKEN)")
}

// procEnv is an environment bound to one session that runs processes.
type procEnv interface {
	environment.Environment
	environment.ProcessRunner
}

// open binds to session id, in-process or on the server; close releases it.
func (p *procTarget) open(ctx context.Context, g *globals, id string) (procEnv, func(), error) {
	if p.server == "" {
		h, e, err := g.attach(ctx, id)
		if err != nil {
			return nil, nil, err
		}
		return e, func() { closeHost(h) }, nil
	}
	token := p.token
	if token == "" {
		token = os.Getenv("TURNBOX_TOKEN")
	}
	e := remote.NewNativeSandboxEnvironment(remote.NewClient(p.server, remote.WithBearerToken(token)), remote.DefaultConfig(), g.logger)
	if err := e.AttachSession(id); err != nil {
		return nil, nil, err
	}
	return e, func() {}, nil
}

func sessionProcessCmds(g *globals) []*cobra.Command {
	return []*cobra.Command{sessionStartCmd(g), sessionPsCmd(g), sessionAttachCmd(g), sessionSignalCmd(g), sessionShellCmd(g)}
}

func sessionStartCmd(g *globals) *cobra.Command {
	var t procTarget
	var cfg environment.ProcessConfig
	var envs []string
	var pty bool
	cmd := &cobra.Command{
		Use:   "start SESSION [--pty] [--user U] [--cwd D] [--env K=V] [--tag T] -- CMD...",
		Short: "Start a process in the background and print its pid",
		Long: `Start a process in a session and print its pid. With --server the process
outlives this command (follow it with 'session attach'); in-process, the
host lives only as long as the command, so start follows the process's
output until it ends.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Args = args[1:]
			for _, kv := range envs {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("--env %q: want KEY=VALUE", kv)
				}
				if cfg.Env == nil {
					cfg.Env = map[string]string{}
				}
				cfg.Env[k] = v
			}
			if pty {
				cfg.PTY = termSize(int(os.Stdout.Fd()))
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			e, done, err := t.open(cmd.Context(), g, args[0])
			if err != nil {
				return err
			}
			defer done()
			info, err := e.StartProcess(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Println(info.PID)
			if t.server != "" {
				return nil
			}
			return followOutput(cmd.Context(), e, info.PID, 0)
		},
	}
	t.addFlags(cmd)
	f := cmd.Flags()
	f.BoolVar(&pty, "pty", false, "run in a pseudo-terminal (of this terminal's size, else 24x80)")
	f.StringVar(&cfg.User, "user", "", "user in the sandbox: name, uid or uid:gid")
	f.StringVar(&cfg.Cwd, "cwd", "", "working directory (absolute in the sandbox or relative to /workspace)")
	f.StringArrayVar(&envs, "env", nil, "KEY=VALUE (repeatable)")
	f.StringVar(&cfg.Tag, "tag", "", "a label kept with the process")
	f.BoolVar(&cfg.Stdin, "stdin", false, "keep standard input open for input")
	f.DurationVar(&cfg.Timeout, "timeout", 0, "kill the process tree after this long (0: never)")
	return cmd
}

func sessionPsCmd(g *globals) *cobra.Command {
	var t procTarget
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ps SESSION [--json]",
		Short: "List a session's running and recently ended processes",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, done, err := t.open(cmd.Context(), g, args[0])
			if err != nil {
				return err
			}
			defer done()
			list, err := e.ListProcesses(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PID\tSTATUS\tSTARTED\tOUTPUT\tTAG\tCOMMAND")
			for _, p := range list {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", p.PID, procStatus(p), p.StartedAt.Local().Format(time.TimeOnly),
					p.OutputBytes, p.Tag, strconv.Quote(strings.Join(p.Args, " ")))
			}
			return tw.Flush()
		},
	}
	t.addFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// procStatus is a process's STATUS column.
func procStatus(p environment.ProcessInfo) string {
	switch x := p.Exit; {
	case x == nil:
		return "running"
	case x.Killed:
		return "killed (" + x.Reason + ")"
	case x.TimedOut:
		return "timed out"
	}
	return "exit " + strconv.Itoa(p.Exit.Code)
}

func sessionAttachCmd(g *globals) *cobra.Command {
	var t procTarget
	var stdin bool
	var offset int64
	cmd := &cobra.Command{
		Use:   "attach SESSION PID [--stdin] [--offset N]",
		Short: "Stream a process's output (from its start by default); --stdin forwards input",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := strconv.Atoi(args[1])
			if err != nil {
				return fmt.Errorf("pid %q: %w", args[1], environment.ErrInvalidArgument)
			}
			e, done, err := t.open(cmd.Context(), g, args[0])
			if err != nil {
				return err
			}
			defer done()
			if stdin {
				go forwardInput(cmd.Context(), e, pid, os.Stdin, true)
			}
			return followOutput(cmd.Context(), e, pid, offset)
		},
	}
	t.addFlags(cmd)
	cmd.Flags().BoolVar(&stdin, "stdin", false, "forward this command's standard input (EOF closes the process's)")
	cmd.Flags().Int64Var(&offset, "offset", 0, "start at this output offset")
	return cmd
}

func sessionSignalCmd(g *globals) *cobra.Command {
	var t procTarget
	cmd := &cobra.Command{
		Use:   "signal SESSION PID SIGNAL",
		Short: "Send a signal (TERM, SIGINT, 9, ...) to a process",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := strconv.Atoi(args[1])
			if err != nil {
				return fmt.Errorf("pid %q: %w", args[1], environment.ErrInvalidArgument)
			}
			sig, err := parseSignal(args[2])
			if err != nil {
				return err
			}
			e, done, err := t.open(cmd.Context(), g, args[0])
			if err != nil {
				return err
			}
			defer done()
			return e.SignalProcess(cmd.Context(), pid, sig)
		},
	}
	t.addFlags(cmd)
	return cmd
}

// parseSignal reads a signal as a number or a name, with or without SIG.
func parseSignal(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return n, environment.ValidateSignal(n)
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return int(sig), nil
	}
	return 0, fmt.Errorf("%w: unknown signal %q", environment.ErrInvalidArgument, s)
}

// followOutput copies a process's output to stdout (stderr to stderr)
// until it ends, and reports a failed or killed end as an error.
func followOutput(ctx context.Context, e environment.ProcessRunner, pid int, offset int64) error {
	var exit *environment.ProcessExit
	err := e.AttachProcess(ctx, pid, offset, func(ev environment.ProcessEvent) error {
		switch {
		case ev.Dropped > 0:
			fmt.Fprintf(os.Stderr, "\n[turnbox: %d bytes of output dropped]\n", ev.Dropped)
		case ev.Stream == environment.StreamStderr:
			os.Stderr.Write(ev.Data)
		default:
			os.Stdout.Write(ev.Data)
		}
		exit = ev.Exit
		return nil
	})
	if err != nil || exit == nil {
		return err
	}
	if exit.Killed || exit.Code != 0 {
		return fmt.Errorf("process %d: %s", pid, procStatus(environment.ProcessInfo{Exit: exit}))
	}
	return nil
}

// forwardInput copies r to the process's input until EOF (then closes
// it, if closeAtEOF) or ctx ends.
func forwardInput(ctx context.Context, e environment.ProcessRunner, pid int, r io.Reader, closeAtEOF bool) {
	buf := make([]byte, 32<<10)
	for ctx.Err() == nil {
		n, err := r.Read(buf)
		if n > 0 {
			if e.SendInput(ctx, pid, buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) && closeAtEOF {
				_ = e.CloseInput(ctx, pid)
			}
			return
		}
	}
}

// termSize is fd's terminal size, or 24x80 when fd is no terminal.
func termSize(fd int) *environment.TermSize {
	w, h, err := term.GetSize(fd)
	if err != nil || w <= 0 || h <= 0 || w > 10000 || h > 10000 {
		return &environment.TermSize{Rows: 24, Cols: 80}
	}
	return &environment.TermSize{Rows: uint16(h), Cols: uint16(w)}
}

func sessionShellCmd(g *globals) *cobra.Command {
	var t procTarget
	var user, shell string
	cmd := &cobra.Command{
		Use:   "shell SESSION [--user U] [--shell PATH]",
		Short: "Open an interactive shell in a session (a PTY; the terminal in raw mode)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, done, err := t.open(cmd.Context(), g, args[0])
			if err != nil {
				return err
			}
			defer done()
			return runShell(cmd.Context(), e, environment.ProcessConfig{
				Command: "exec " + shell + " -i", User: user, Tag: "shell", PTY: termSize(int(os.Stdin.Fd())),
			})
		},
	}
	t.addFlags(cmd)
	cmd.Flags().StringVar(&user, "user", "", "user in the sandbox")
	cmd.Flags().StringVar(&shell, "shell", "/bin/sh", "shell to run")
	return cmd
}

// runShell runs cfg in a PTY wired to this terminal: raw mode (restored
// on every return), keystrokes forwarded, resized on SIGWINCH, until the
// shell exits.
func runShell(ctx context.Context, e environment.ProcessRunner, cfg environment.ProcessConfig) error {
	info, err := e.StartProcess(ctx, cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	in := int(os.Stdin.Fd())
	if term.IsTerminal(in) {
		old, err := term.MakeRaw(in)
		if err != nil {
			_ = e.SignalProcess(context.WithoutCancel(ctx), info.PID, int(syscall.SIGKILL))
			return fmt.Errorf("terminal raw mode: %w", err)
		}
		defer term.Restore(in, old)
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-winch:
				_ = e.ResizeProcess(ctx, info.PID, *termSize(in))
			}
		}
	}()
	go forwardInput(ctx, e, info.PID, os.Stdin, false)
	var exit *environment.ProcessExit
	err = e.AttachProcess(ctx, info.PID, 0, func(ev environment.ProcessEvent) error {
		os.Stdout.Write(ev.Data)
		exit = ev.Exit
		return nil
	})
	if err == nil && exit != nil && exit.Killed {
		err = fmt.Errorf("shell %s", procStatus(environment.ProcessInfo{Exit: exit}))
	}
	return err
}
