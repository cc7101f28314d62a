package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/turnbox/turnbox/environment"
)

// Process commands: session start, ps, attach, signal, shell. Each works
// in-process on the state directory (the host, and so every process it
// starts, lives only as long as the command: start then follows the
// process to its end) or, with --server, through a turnbox server, where
// processes outlive the command.

func sessionProcessCmds(c *cli) []*cobra.Command {
	return []*cobra.Command{sessionStartCmd(c), sessionPsCmd(c), sessionAttachCmd(c), sessionSignalCmd(c), sessionShellCmd(c)}
}

func sessionStartCmd(c *cli) *cobra.Command {
	var cfg environment.ProcessConfig
	var envs []string
	var pty, asJSON bool
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
			var err error
			if cfg.Env, err = parseKVs("env", envs); err != nil {
				return err
			}
			if pty {
				cfg.PTY = termSize(int(os.Stdout.Fd()))
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			e, done, err := c.session(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer done()
			info, err := e.StartProcess(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if asJSON {
				err = printJSON(cmd.OutOrStdout(), info)
			} else {
				_, err = fmt.Fprintln(cmd.OutOrStdout(), info.PID)
			}
			if err != nil || c.t.url() != "" {
				return err
			}
			return followProcess(cmd, e, info.PID, 0)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&pty, "pty", false, "run in a pseudo-terminal (of this terminal's size, else 24x80)")
	f.StringVar(&cfg.User, "user", "", "user in the sandbox: name, uid or uid:gid")
	f.StringVar(&cfg.Cwd, "cwd", "", "working directory (absolute in the sandbox or relative to /workspace)")
	f.StringArrayVar(&envs, "env", nil, "KEY=VALUE (repeatable)")
	f.StringVar(&cfg.Tag, "tag", "", "a label kept with the process")
	f.BoolVar(&cfg.Stdin, "stdin", false, "keep standard input open for input")
	f.DurationVar(&cfg.Timeout, "timeout", 0, "kill the process tree after this long (0: never)")
	f.BoolVar(&asJSON, "json", false, "print the process as JSON (in process: before its output)")
	return cmd
}

func sessionPsCmd(c *cli) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ps SESSION [--json]",
		Short: "List a session's running and recently ended processes",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withSession(cmd.Context(), args[0], func(e sessionEnv) error {
				list, err := e.ListProcesses(cmd.Context())
				if err != nil {
					return err
				}
				return printList(cmd.OutOrStdout(), list, asJSON, "PID\tSTATUS\tSTARTED\tOUTPUT\tTAG\tCOMMAND", func(p environment.ProcessInfo) string {
					return fmt.Sprintf("%d\t%s\t%s\t%d\t%s\t%s", p.PID, procStatus(p), p.StartedAt.Local().Format(time.TimeOnly),
						p.OutputBytes, p.Tag, strconv.Quote(strings.Join(p.Args, " ")))
				})
			})
		},
	}
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

func sessionAttachCmd(c *cli) *cobra.Command {
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
			e, done, err := c.session(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer done()
			if stdin {
				go forwardInput(cmd.Context(), e, pid, os.Stdin, true)
			}
			return followProcess(cmd, e, pid, offset)
		},
	}
	cmd.Flags().BoolVar(&stdin, "stdin", false, "forward this command's standard input (EOF closes the process's)")
	cmd.Flags().Int64Var(&offset, "offset", 0, "start at this output offset")
	return cmd
}

func sessionSignalCmd(c *cli) *cobra.Command {
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
			e, done, err := c.session(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer done()
			return e.SignalProcess(cmd.Context(), pid, sig)
		},
	}
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

// followOutput copies a process's output to out (its stderr to errOut)
// from offset until it ends, and returns how it ended.
func followOutput(ctx context.Context, e environment.ProcessRunner, pid int, offset int64, out, errOut io.Writer) (*environment.ProcessExit, error) {
	var exit *environment.ProcessExit
	err := e.AttachProcess(ctx, pid, offset, func(ev environment.ProcessEvent) error {
		switch {
		case ev.Dropped > 0:
			fmt.Fprintf(errOut, "\n[turnbox: %d bytes of output dropped]\n", ev.Dropped)
		case ev.Stream == environment.StreamStderr:
			errOut.Write(ev.Data)
		default:
			out.Write(ev.Data)
		}
		if ev.Exit != nil {
			exit = ev.Exit
		}
		return nil
	})
	return exit, err
}

// followProcess is followOutput to the command's output, reporting a
// failed or killed end as an error.
func followProcess(cmd *cobra.Command, e environment.ProcessRunner, pid int, offset int64) error {
	exit, err := followOutput(cmd.Context(), e, pid, offset, cmd.OutOrStdout(), cmd.ErrOrStderr())
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

func sessionShellCmd(c *cli) *cobra.Command {
	var user, shell string
	cmd := &cobra.Command{
		Use:   "shell SESSION [--user U] [--shell PATH]",
		Short: "Open an interactive shell in a session (a PTY; the terminal in raw mode)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, done, err := c.session(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer done()
			return runShell(cmd.Context(), e, environment.ProcessConfig{
				Command: "exec " + shell + " -i", User: user, Tag: "shell", PTY: termSize(int(os.Stdin.Fd())),
			})
		},
	}
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
