package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

func demoCmd(g *globals) *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a scripted agent session: tools, per-turn snapshots, rollback, fork",
		Long: `demo creates a session on the configured backend and runtime and plays a short
agent session: write a file, run a command with streamed output, snapshot each
turn, break things, roll back, roll forward, fork. Each step prints its latency.
It checks every result and exits non-zero if anything is not as expected.
Without --state-dir it uses a fresh temporary directory and removes it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("state-dir") && os.Getenv("TURNBOX_STATE_DIR") == "" {
				dir, err := os.MkdirTemp("", "turnbox-demo-")
				if err != nil {
					return err
				}
				if !keep {
					defer os.RemoveAll(dir)
				}
				g.stateDir = dir
			}
			h, err := g.openHost(cmd.Context())
			if err != nil {
				return err
			}
			defer closeHost(h)
			return runDemo(cmd.Context(), h)
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the temporary state directory")
	return cmd
}

type demo struct {
	ctx   context.Context
	env   environment.Environment
	step  int
	calls int // tool calls made: each gets its own tool call id
}

// callID returns a fresh tool call id: the host answers a repeated id
// from its cache instead of running the call.
func (d *demo) callID() string {
	d.calls++
	return fmt.Sprintf("demo-%d", d.calls)
}

func (d *demo) say(format string, args ...any) {
	d.step++
	fmt.Printf("\n[%d] %s\n", d.step, fmt.Sprintf(format, args...))
}

func took(start time.Time) string {
	return fmt.Sprintf("(%.2f ms)", float64(time.Since(start).Microseconds())/1000)
}

// tool runs a call, streaming bash output with a prefix, and returns it.
func (d *demo) tool(env environment.Environment, params environment.ToolParams) (*environment.ToolResponse, error) {
	req, err := environment.NewToolRequest(d.callID(), params)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	var first time.Duration
	midLine := false // the last chunk did not end a line
	resp, err := env.ExecuteTool(d.ctx, req, func(p environment.ToolProgress) {
		if first == 0 {
			first = time.Since(start)
		}
		for _, line := range strings.SplitAfter(string(p.Data), "\n") {
			if line != "" {
				fmt.Printf("    %s| %s", p.Stream, line)
				midLine = !strings.HasSuffix(line, "\n")
			}
		}
	})
	if midLine {
		fmt.Println()
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", params.ToolName(), err)
	}
	if first > 0 {
		fmt.Printf("    first output after %.2f ms, done %s\n", float64(first.Microseconds())/1000, took(start))
	} else {
		out := strings.TrimSpace(resp.Content)
		if out == "" {
			out = "(no output)"
		}
		fmt.Printf("    %s %s\n", out, took(start))
	}
	if resp.IsError {
		return resp, fmt.Errorf("%s failed: %s", params.ToolName(), resp.Content)
	}
	return resp, nil
}

func (d *demo) expectFile(env environment.Environment, path, want string) error {
	resp, err := env.ExecuteTool(d.ctx, environment.ToolRequest{ToolCallID: d.callID(), ToolName: environment.ToolReadFile,
		Input: []byte(fmt.Sprintf(`{"path":%q}`, path))}, nil)
	if err != nil {
		return err
	}
	if resp.Content != want {
		return fmt.Errorf("CHECK FAILED: %s is %q, want %q", path, resp.Content, want)
	}
	fmt.Printf("    check: %s = %q ✓\n", path, want)
	return nil
}

func runDemo(ctx context.Context, h *embedded.Host) error {
	caps := h.Capabilities()
	fmt.Printf("turnbox demo: storage=%s runtime=%s\n", caps.Storage, caps.Isolation)
	if caps.Isolation == environment.IsolationNone {
		fmt.Println("note: runtime \"none\" runs commands as host processes; it isolates nothing")
	}
	d := &demo{ctx: ctx}
	begin := time.Now()

	d.say("create a session")
	start := time.Now()
	env := h.NewEnvironment()
	if err := env.Create(ctx, environment.SessionConfig{Env: map[string]string{"GREETING": "hello from turnbox"}}); err != nil {
		return err
	}
	d.env = env
	defer env.Destroy(context.WithoutCancel(ctx))
	fmt.Printf("    session %s %s\n", env.SessionID(), took(start))

	t1, t2, err := d.turns(env)
	if err != nil {
		return err
	}
	if err := d.rollTo(env, "roll back to turn 1", "rolled back", t1.ID, "version 1\n", environment.ListFilesParams{Pattern: "**"}); err != nil {
		return err
	}
	if err := d.rollTo(env, "roll forward to turn 2 (newer snapshots survive a rollback)", "rolled forward", t2.ID, "version 2\nmore\n", environment.GrepParams{Pattern: "package"}); err != nil {
		return err
	}

	d.say("fork a new session from turn 1")
	start = time.Now()
	forked, err := env.Fork(ctx, t1.ID, environment.SessionConfig{})
	if err != nil {
		return err
	}
	defer forked.Destroy(context.WithoutCancel(ctx))
	fmt.Printf("    forked %s\n", took(start))
	if err := d.checkFork(env, forked); err != nil {
		return err
	}

	d.say("a path that escapes the workspace is refused")
	_, err = env.ExecuteTool(ctx, environment.ToolRequest{ToolCallID: "escape", ToolName: environment.ToolReadFile, Input: []byte(`{"path":"../../etc/passwd"}`)}, nil)
	if err == nil {
		return fmt.Errorf("CHECK FAILED: reading ../../etc/passwd succeeded")
	}
	fmt.Printf("    refused: %v ✓\n", err)

	d.say("destroy both sessions")
	start = time.Now()
	if err := forked.Destroy(ctx); err != nil {
		return err
	}
	if err := env.Destroy(ctx); err != nil {
		return err
	}
	fmt.Printf("    destroyed %s; state %s\n", took(start), env.State())
	fmt.Printf("\ndemo finished in %s: all checks passed\n", time.Since(begin).Round(time.Millisecond))
	return nil
}

// turns plays the agent's three turns on env: two it snapshots, whose
// snapshots it returns, and one that breaks things.
func (d *demo) turns(env *embedded.Environment) (t1, t2 *environment.SnapshotInfo, err error) {
	d.say("turn 1: write_file notes.txt, run a command with streamed output")
	if _, err := d.tool(env, environment.WriteFileParams{Path: "notes.txt", Content: "version 1\n"}); err != nil {
		return nil, nil, err
	}
	if _, err := d.tool(env, environment.BashParams{Command: `echo "$GREETING"; for i in 1 2 3; do echo "working $i"; sleep 0.1; done; wc -l notes.txt`}); err != nil {
		return nil, nil, err
	}
	if t1, err = d.turnComplete(env, "first draft"); err != nil {
		return nil, nil, err
	}

	d.say("turn 2: edit_file, append with bash, snapshot")
	if _, err := d.tool(env, environment.EditFileParams{Path: "notes.txt", OldString: "version 1", NewString: "version 2"}); err != nil {
		return nil, nil, err
	}
	if _, err := d.tool(env, environment.BashParams{Command: `mkdir -p src && echo 'package main' > src/main.go && echo "more" >> notes.txt`}); err != nil {
		return nil, nil, err
	}
	if t2, err = d.turnComplete(env, ""); err != nil {
		return nil, nil, err
	}

	d.say("turn 3: the agent breaks things")
	if _, err := d.tool(env, environment.BashParams{Command: `rm -rf notes.txt src && ls -A | wc -l`}); err != nil {
		return nil, nil, err
	}
	return t1, t2, nil
}

// turnComplete snapshots env's turn under label and prints the snapshot.
func (d *demo) turnComplete(env *embedded.Environment, label string) (*environment.SnapshotInfo, error) {
	start := time.Now()
	t, err := env.TurnComplete(d.ctx, label)
	if err != nil {
		return nil, err
	}
	fmt.Printf("    turn complete: snapshot %s (turn %d) %s\n", t.ID, t.Turn, took(start))
	return t, nil
}

// rollTo announces step, rolls env to snapshot id, reports it as done,
// checks notes.txt holds want and runs the tool call then.
func (d *demo) rollTo(env *embedded.Environment, step, done, id, want string, then environment.ToolParams) error {
	d.say("%s", step)
	start := time.Now()
	if err := env.Rollback(d.ctx, id); err != nil {
		return err
	}
	fmt.Printf("    %s %s\n", done, took(start))
	if err := d.expectFile(env, "notes.txt", want); err != nil {
		return err
	}
	_, err := d.tool(env, then)
	return err
}

// checkFork writes to the fork and checks that env does not see it.
func (d *demo) checkFork(env *embedded.Environment, forked environment.Environment) error {
	if _, err := d.tool(forked, environment.WriteFileParams{Path: "notes.txt", Content: "the fork's own version\n"}); err != nil {
		return err
	}
	if err := d.expectFile(forked, "notes.txt", "the fork's own version\n"); err != nil {
		return err
	}
	return d.expectFile(env, "notes.txt", "version 2\nmore\n")
}
