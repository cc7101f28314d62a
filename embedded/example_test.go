package embedded_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// A host on localdisk storage and the none runtime, one session, one tool
// call with streamed output, one snapshot. docs/getting-started.md shows
// this function; cmd/turnbox's docs test keeps the two identical.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "turnbox-")
	defer os.RemoveAll(dir)

	host, err := embedded.NewHost(ctx, embedded.Config{
		StateDir:         dir,                           // ledger and localdisk data
		ContainerRuntime: embedded.ContainerRuntimeNone, // isolates NOTHING: development only
		Logger:           slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer host.Close(ctx) // keeps every session's data; a new host on dir recovers them

	env := host.NewEnvironment()
	if err := env.Create(ctx, environment.SessionConfig{}); err != nil {
		log.Fatal(err)
	}
	req, _ := environment.NewToolRequest("call-1", environment.BashParams{Command: "echo hi | tee a.txt"})
	resp, err := env.ExecuteTool(ctx, req, func(p environment.ToolProgress) { fmt.Printf("[%s] %s", p.Stream, p.Data) })
	if err != nil {
		log.Fatal(err)
	}
	turn1, err := env.TurnComplete(ctx, "first turn") // quiesce, snapshot, thaw
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("exit", resp.ExitCode, "snapshot turn", turn1.Turn)
	// Output:
	// [stdout] hi
	// exit 0 snapshot turn 1
}

// A whole session: file and shell tools, a snapshot per turn, rollback to
// an older turn (the newer one survives), and a fork that is independent
// of its parent.
func Example_session() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "turnbox-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	host, err := embedded.NewHost(ctx, embedded.Config{
		StateDir:         dir,
		ContainerRuntime: embedded.ContainerRuntimeNone, // isolates NOTHING: development only
		Logger:           slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer host.Close(ctx)

	// run executes one tool call on env and returns its output. Each
	// call gets its own tool call id: a repeated id is answered from the
	// host's cache without running again.
	calls := 0
	run := func(env environment.Environment, p environment.ToolParams) string {
		calls++
		req, err := environment.NewToolRequest(fmt.Sprintf("call-%d", calls), p)
		if err != nil {
			log.Fatal(err)
		}
		resp, err := env.ExecuteTool(ctx, req, nil)
		if err != nil {
			log.Fatal(err)
		}
		return resp.Content
	}

	env := host.NewEnvironment()
	if err := env.Create(ctx, environment.SessionConfig{}); err != nil {
		log.Fatal(err)
	}
	defer env.Destroy(ctx) // deletes the session's workspace and snapshots

	// Turn 1: write a file with a file tool, change it with a command.
	fmt.Println(run(env, environment.WriteFileParams{Path: "notes.txt", Content: "one\n"}))
	fmt.Print(run(env, environment.BashParams{Command: "echo two >> notes.txt && wc -l < notes.txt"}))
	turn1, err := env.TurnComplete(ctx, "notes written")
	if err != nil {
		log.Fatal(err)
	}

	// Turn 2: the agent breaks something.
	run(env, environment.BashParams{Command: "rm notes.txt"})
	turn2, err := env.TurnComplete(ctx, "")
	if err != nil {
		log.Fatal(err)
	}

	// Roll back to turn 1. Turn 2's snapshot survives: Rollback(turn2.ID)
	// would go forward again.
	if err := env.Rollback(ctx, turn1.ID); err != nil {
		log.Fatal(err)
	}
	fmt.Print(run(env, environment.ReadFileParams{Path: "notes.txt"}))
	snaps, _ := env.ListSnapshots(ctx)
	for _, s := range snaps {
		fmt.Printf("turn %d %q\n", s.Turn, s.Name)
	}

	// Fork turn 2 into a new session; the two workspaces are independent.
	fork, err := env.Fork(ctx, turn2.ID, environment.SessionConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer fork.Destroy(ctx)
	fmt.Print(run(fork, environment.BashParams{Command: "ls; echo fork > f.txt; echo exit $?"}))
	fmt.Println(run(env, environment.ListFilesParams{Pattern: "*.txt"}))
	// Output:
	// wrote 4 bytes to notes.txt
	// 2
	// one
	// two
	// turn 1 "notes written"
	// turn 2 ""
	// exit 0
	// notes.txt
}

// A host that keeps two sandboxes started ahead of time: new sessions and
// forks take one (on gVisor that saves a ~300 ms sandbox start per
// session) and the pool refills in the background.
func Example_pool() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "turnbox-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	host, err := embedded.NewHost(ctx, embedded.Config{
		StateDir:         dir,
		ContainerRuntime: embedded.ContainerRuntimeNone, // gvisor or runc in production
		PoolSize:         2,
		Logger:           slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer host.Close(ctx) // stops the pooled sandboxes and deletes their empty volumes
	for host.PoolReady() < 2 {
		time.Sleep(10 * time.Millisecond) // only to make the example deterministic
	}

	env, err := host.CreateSession(ctx, environment.SessionConfig{Env: map[string]string{"GREETING": "hello"}})
	if err != nil {
		log.Fatal(err)
	}
	req, _ := environment.NewToolRequest("call-1", environment.BashParams{Command: "echo $GREETING; ls -A | wc -l"})
	resp, err := env.ExecuteTool(ctx, req, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(resp.Content)
	// Output:
	// hello
	// 0
}

// A prepared session saved as an image that new sessions start from: pull
// a base image, set it up once, save it, start many from it. Needs root,
// an isolated runtime and a registry; not run as a test.
func ExampleHost_SaveImage() {
	ctx := context.Background()
	host, err := embedded.NewHost(ctx, embedded.Config{StateDir: "/var/lib/turnbox", ContainerRuntime: embedded.ContainerRuntimeGVisor})
	if err != nil {
		log.Fatal(err)
	}
	defer host.Close(ctx)
	if _, err := host.PullImage(ctx, "python:3.12-slim", embedded.PullImageOptions{Name: "python"}); err != nil {
		log.Fatal(err)
	}
	prep, err := host.CreateSession(ctx, environment.SessionConfig{Image: "python"})
	if err != nil {
		log.Fatal(err)
	}
	req, _ := environment.NewToolRequest("setup", environment.BashParams{Command: "pip install --quiet requests"})
	if _, err := prep.ExecuteTool(ctx, req, nil); err != nil {
		log.Fatal(err)
	}
	img, err := host.SaveImage(ctx, prep.SessionID(), "python-requests", embedded.SaveImageOptions{})
	if err != nil {
		log.Fatal(err)
	}
	_ = prep.Destroy(ctx) // the image outlives the session
	for range 3 {
		e, err := host.CreateSession(ctx, environment.SessionConfig{Image: img.Name})
		if err != nil {
			log.Fatal(err)
		}
		defer e.Destroy(ctx)
	}
}
