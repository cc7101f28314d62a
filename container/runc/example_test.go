package runc_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/runc"
)

// A binary that starts runc sandboxes calls runc.Init first thing in main;
// here TestMain does. The agent is found through $TURNBOX_AGENT, next to
// the executable or on PATH (or set with runc.WithAgent).
func Example() {
	rt, err := runc.New("/var/lib/turnbox/runc")
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	// Remove sandboxes a crashed process left behind.
	if err := rt.Reap(ctx); err != nil {
		log.Print(err)
	}
	sb, err := rt.Start(ctx, container.Spec{
		ID:        "session-1",
		RootFS:    "/var/lib/turnbox/images/busybox",
		Workspace: "/var/lib/turnbox/volumes/session-1/ws",
		Limits:    container.Limits{CPUs: 1, MemoryBytes: 512 << 20, Pids: 256},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sb.Stop(ctx)
	st, err := sb.Exec(ctx, container.Process{
		Args:   []string{"sh", "-c", "echo hello from $(hostname)"},
		Stdout: os.Stdout,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("exit code", st.Code)
}
