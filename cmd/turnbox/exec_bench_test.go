package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/turnbox/turnbox/environment"
)

// BenchmarkSessionExec compares `session exec ID -- true` run by the CLI's
// command tree through a turnbox server (command parsing, a new client
// and connection, the RPCs, the output) with the same tool call made in
// process on the server's host. The two run alternately, so that load
// from elsewhere on the machine hits both alike; it reports each one's
// median (inproc-p50-ms, cli-p50-ms) and the median of the paired
// differences (delta-p50-ms; the goal is under 2).
//
//	go test -run '^$' -bench BenchmarkSessionExec -benchtime 300x ./cmd/turnbox
func BenchmarkSessionExec(b *testing.B) {
	host, url := serveHost(b, "bench-token")
	e, err := host.CreateSession(context.Background(), environment.SessionConfig{SessionID: "b1"})
	if err != nil {
		b.Fatal(err)
	}
	input, _ := json.Marshal(environment.BashParams{Command: "true"})
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		b.Fatal(err)
	}
	defer devnull.Close()
	b.Setenv("TURNBOX_TOKEN", "bench-token")
	inProcess := func(i int) error {
		req := environment.ToolRequest{ToolCallID: fmt.Sprintf("b-%d", i), ToolName: environment.ToolBash, Input: input}
		_, err := e.ExecuteTool(context.Background(), req, func(environment.ToolProgress) {})
		return err
	}
	cli := func(int) error {
		root := newRootCmd(&globals{})
		root.SetIn(devnull)
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		root.SetArgs([]string{"--log-level", "error", "session", "exec", "b1", "--server", url, "--", "true"})
		return root.Execute()
	}
	var in, out, delta []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a, err := timed(func() error { return inProcess(i) })
		if err != nil {
			b.Fatal(err)
		}
		c, err := timed(func() error { return cli(i) })
		if err != nil {
			b.Fatal(err)
		}
		in, out, delta = append(in, a), append(out, c), append(delta, c-a)
	}
	b.StopTimer()
	b.ReportMetric(median(in), "inproc-p50-ms")
	b.ReportMetric(median(out), "cli-p50-ms")
	b.ReportMetric(median(delta), "delta-p50-ms")
}

func timed(fn func() error) (time.Duration, error) {
	start := time.Now()
	err := fn()
	return time.Since(start), err
}

// median of d in milliseconds (d is sorted in place).
func median(d []time.Duration) float64 {
	slices.Sort(d)
	return float64(d[len(d)/2]) / float64(time.Millisecond)
}
