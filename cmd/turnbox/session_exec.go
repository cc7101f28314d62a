package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/turnbox/turnbox/environment"
)

// execOpts are session exec's flags.
type execOpts struct {
	tool, input string
	snap        bool
	timeout     time.Duration
	asJSON      bool
	noStdin     bool
}

func sessionExecCmd(c *cli) *cobra.Command {
	var o execOpts
	cmd := &cobra.Command{
		Use:   "exec SESSION [--tool NAME --input JSON | -- COMMAND...]",
		Short: "Run a tool call (default: bash with the given command), streaming its output",
		Long: `Run a tool call in a session. With a command after -- it runs bash, streams
the command's stdout and stderr and ends with the command's exit status.
When standard input is a pipe or a file it is forwarded to the command
(through the process API: echo hi | turnbox session exec ID -- cat)
unless --no-stdin is given.
With --json nothing streams: the tool's response is printed as JSON.`,
		Example: `  turnbox session exec s-abc -- 'ls -la && echo done'
  turnbox session exec s-abc --tool write_file --input '{"path":"a.txt","content":"hi"}'`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := environment.ToolRequest{ToolCallID: fmt.Sprintf("cli-%d", time.Now().UnixNano()), ToolName: o.tool, Snapshot: o.snap}
			command := strings.Join(args[1:], " ")
			switch {
			case o.input != "":
				req.Input = json.RawMessage(o.input)
			case o.tool == environment.ToolBash && len(args) > 1:
				b, _ := json.Marshal(environment.BashParams{Command: command, TimeoutMS: o.timeout.Milliseconds()})
				req.Input = b
			default:
				return fmt.Errorf("%w: give --input JSON, or a command after -- for bash", environment.ErrInvalidArgument)
			}
			e, done, err := c.session(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer done()
			if o.input == "" && o.tool == environment.ToolBash && !o.asJSON && !o.noStdin && inputPiped(cmd.InOrStdin()) {
				return execWithInput(cmd, e, command, o)
			}
			return execTool(cmd, e, req, o.asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.tool, "tool", environment.ToolBash, "tool name: "+strings.Join(environment.ToolNames(), ", "))
	f.StringVar(&o.input, "input", "", "tool input as a JSON object")
	f.BoolVar(&o.snap, "snapshot", false, "snapshot the workspace after the call")
	f.DurationVar(&o.timeout, "timeout", 0, "bash timeout (default: the host's)")
	f.BoolVar(&o.asJSON, "json", false, "print the tool's response as JSON instead of streaming")
	f.BoolVar(&o.noStdin, "no-stdin", false, "do not forward standard input, even when it is a pipe or a file")
	return cmd
}

// inputPiped reports whether r is input to forward: a pipe or a regular
// file, not a terminal or /dev/null (any reader that is no *os.File,
// as tests give one, counts as piped).
func inputPiped(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return r != nil
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	return fi.Mode()&os.ModeNamedPipe != 0 || fi.Mode().IsRegular()
}

// execTool runs req, streaming its output (unless asJSON), and turns a
// failed call into the CLI's exit status. Streamed output is never
// printed again: truncation and timeouts get a one-line notice on
// stderr instead of the response's content.
func execTool(cmd *cobra.Command, e environment.Environment, req environment.ToolRequest, asJSON bool) error {
	out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
	var onProgress func(environment.ToolProgress)
	streamed, lastOut := false, byte('\n')
	if !asJSON {
		onProgress = func(p environment.ToolProgress) {
			if len(p.Data) == 0 {
				return
			}
			streamed = true
			if p.Stream == environment.StreamStderr {
				errOut.Write(p.Data)
			} else {
				out.Write(p.Data)
				lastOut = p.Data[len(p.Data)-1]
			}
		}
	}
	resp, err := e.ExecuteTool(cmd.Context(), req, onProgress)
	if err != nil {
		return err
	}
	if asJSON {
		if err := printJSON(out, resp); err != nil {
			return err
		}
		return toolExit(resp)
	}
	switch {
	case !streamed && resp.Content != "":
		io.WriteString(out, resp.Content)
		if !strings.HasSuffix(resp.Content, "\n") {
			io.WriteString(out, "\n")
		}
	case streamed && resp.Truncated:
		fmt.Fprintln(errOut, "[turnbox: output truncated; the response holds the first part only]")
	case streamed && req.ToolName != environment.ToolBash && lastOut != '\n':
		// A file tool's message ends the line; a command's output is
		// left as the command wrote it.
		io.WriteString(out, "\n")
	}
	if resp.TimedOut {
		fmt.Fprintln(errOut, "[turnbox: timed out; the command's processes were killed]")
	}
	if resp.SnapshotID != "" {
		fmt.Fprintln(errOut, "snapshot:", resp.SnapshotID)
	}
	return toolExit(resp)
}

// toolExit is the CLI's end for a tool response: 124 after a timeout (as
// timeout(1)), the command's exit code, 1 for a failed call without one,
// nil on success.
func toolExit(resp *environment.ToolResponse) error {
	switch {
	case resp.TimedOut:
		return &exitError{124}
	case resp.ExitCode != 0:
		return &exitError{resp.ExitCode}
	case resp.IsError:
		return &exitError{1}
	}
	return nil
}

// execWithInput runs command as a process whose stdin is this command's
// (forwarded, then closed at EOF), follows its output and ends with its
// exit status.
func execWithInput(cmd *cobra.Command, e sessionEnv, command string, o execOpts) error {
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	info, err := e.StartProcess(ctx, environment.ProcessConfig{Command: command, Stdin: true, Timeout: o.timeout, Tag: "exec"})
	if err != nil {
		return err
	}
	go forwardInput(ctx, e, info.PID, cmd.InOrStdin(), true)
	exit, err := followOutput(ctx, e, info.PID, 0, cmd.OutOrStdout(), cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	if o.snap {
		s, err := e.CreateSnapshot(ctx, "")
		if err != nil {
			return err
		}
		fmt.Fprintln(cmd.ErrOrStderr(), "snapshot:", s.ID)
	}
	return processExit(exit, cmd.ErrOrStderr())
}

// processExit is the CLI's end for a process: its exit code, 124 after
// its timeout (as timeout(1)), 137 when killed.
func processExit(x *environment.ProcessExit, errOut io.Writer) error {
	switch {
	case x == nil:
		return nil
	case x.TimedOut:
		fmt.Fprintln(errOut, "[turnbox: timed out; the command's processes were killed]")
		return &exitError{124}
	case x.Killed:
		return &exitError{137}
	case x.Code != 0:
		return &exitError{x.Code}
	}
	return nil
}
