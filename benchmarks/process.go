package benchmarks

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
)

// Process ops (ProcessResults):
//
//   - process_start: StartProcess of `true` until it returns the pid,
//     in process, interleaved with a bash `true` tool call on the same
//     session (the row with baseline exec-true) and their per-iteration
//     difference (process_start_overhead). Target: within 1 ms of
//     exec-true.
//   - remote_pty_echo: one keystroke sent with SendInput to a shell's PTY
//     through the remote API on loopback, until its echo arrives on an
//     attach stream. Target: p99 under 10 ms on gVisor.
const (
	OpProcessStart = "process_start"
	OpPTYEcho      = "remote_pty_echo"
	// BaselineExecTrue marks the one-shot bash `true` beside
	// process_start.
	BaselineExecTrue = "exec-true"
)

// ProcessResults measures process_start and remote_pty_echo (see above)
// cfg.N times each on a temporary host made from hostCfg (its StateDir is
// replaced by a temporary directory, removed afterwards; its storage
// defaults to localdisk, its runtime to none).
func ProcessResults(ctx context.Context, cfg Config, hostCfg embedded.Config) (_ []Result, err error) {
	cfg = cfg.withDefaults()
	dir, err := os.MkdirTemp("", "turnbox-bench-proc-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	hostCfg.StateDir = dir
	if hostCfg.ContainerRuntime == "" && hostCfg.Runtime == nil {
		hostCfg.ContainerRuntime = embedded.ContainerRuntimeNone
	}
	if hostCfg.Logger == nil {
		hostCfg.Logger = slog.New(slog.DiscardHandler)
	}
	h, err := embedded.NewHost(ctx, hostCfg)
	if err != nil {
		return nil, fmt.Errorf("bench processes: %w", err)
	}
	defer func() { err = errors.Join(err, h.Close(context.WithoutCancel(ctx))) }()
	caps := h.Capabilities()
	tag := func(rs []Result) []Result {
		for i := range rs {
			rs[i].Backend, rs[i].Runtime = caps.Storage, string(caps.Isolation)
		}
		return rs
	}
	start, err := startVsExec(ctx, h, cfg.N)
	if err != nil {
		return nil, err
	}
	echo, err := ptyEcho(ctx, h, cfg.N)
	if err != nil {
		return tag(start), err
	}
	return tag(append(start, echo)), nil
}

// startVsExec interleaves StartProcess(true) and a bash `true` call.
func startVsExec(ctx context.Context, h *embedded.Host, n int) ([]Result, error) {
	env := h.NewEnvironment()
	if err := env.Create(ctx, environment.SessionConfig{}); err != nil {
		return nil, fmt.Errorf("bench processes: %w", err)
	}
	defer env.Destroy(context.WithoutCancel(ctx))
	start := func() (time.Duration, error) {
		t0 := time.Now()
		info, err := env.StartProcess(ctx, environment.ProcessConfig{Args: []string{"true"}})
		d := time.Since(t0)
		if err == nil {
			_, err = env.WaitProcess(ctx, info.PID) // untimed: do not pile up processes
		}
		return d, err
	}
	exec := func() (time.Duration, error) {
		t0 := time.Now()
		err := tool(ctx, env, environment.BashParams{Command: "true"})
		return time.Since(t0), err
	}
	var starts, execs, diff []time.Duration
	for i := -1; i < n; i++ { // i == -1: an untimed warm-up round
		first, second := start, exec
		if i%2 != 0 {
			first, second = exec, start
		}
		d1, err := first()
		if err != nil {
			return nil, fmt.Errorf("bench processes: %w", err)
		}
		d2, err := second()
		if err != nil {
			return nil, fmt.Errorf("bench processes: %w", err)
		}
		if i%2 != 0 {
			d1, d2 = d2, d1
		}
		if i >= 0 {
			starts, execs, diff = append(starts, d1), append(execs, d2), append(diff, d1-d2)
		}
	}
	ex := Latencies(OpProcessStart, execs)
	ex.Baseline = BaselineExecTrue
	return []Result{Latencies(OpProcessStart, starts), ex, Latencies(OpProcessStart+OverheadSuffix, diff)}, nil
}

// ptyEcho measures keystroke echo through the remote API on loopback.
func ptyEcho(ctx context.Context, h *embedded.Host, n int) (_ Result, err error) {
	logger := slog.New(slog.DiscardHandler)
	url, stop, err := serveLoopback(ctx, h, remoteConfig{logger: logger})
	if err != nil {
		return Result{}, err
	}
	defer func() { err = errors.Join(err, stop()) }()
	env := remote.NewNativeSandboxEnvironment(remote.NewClient(url, remote.WithBearerToken(benchToken)), remote.DefaultConfig(), logger)
	if err := env.Create(ctx, environment.SessionConfig{}); err != nil {
		return Result{}, fmt.Errorf("bench pty echo: %w", err)
	}
	defer env.Destroy(context.WithoutCancel(ctx))
	info, err := env.StartProcess(ctx, environment.ProcessConfig{Args: []string{"cat"}, PTY: &environment.TermSize{Rows: 24, Cols: 80}})
	if err != nil {
		return Result{}, fmt.Errorf("bench pty echo: %w", err)
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var out []byte
	got := make(chan struct{}, 1)
	go env.AttachProcess(actx, info.PID, 0, func(ev environment.ProcessEvent) error {
		mu.Lock()
		out = append(out, ev.Data...)
		mu.Unlock()
		select {
		case got <- struct{}{}:
		default:
		}
		return nil
	})
	samples := make([]time.Duration, 0, n)
	for i := -1; i < n; i++ {
		key := []byte{'a' + byte((i+26)%26)}
		mu.Lock()
		from := len(out)
		mu.Unlock()
		t0 := time.Now()
		if err := env.SendInput(ctx, info.PID, key); err != nil {
			return Result{}, fmt.Errorf("bench pty echo: %w", err)
		}
		if err := waitEcho(ctx, got, &mu, &out, from, key); err != nil {
			return Result{}, err
		}
		if i >= 0 {
			samples = append(samples, time.Since(t0))
		}
	}
	return Latencies(OpPTYEcho, samples), nil
}

// waitEcho waits until out holds key past from.
func waitEcho(ctx context.Context, got <-chan struct{}, mu *sync.Mutex, out *[]byte, from int, key []byte) error {
	timeout := time.After(10 * time.Second)
	for {
		mu.Lock()
		ok := bytes.Contains((*out)[from:], key)
		mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-got:
		case <-timeout:
			return fmt.Errorf("bench pty echo: no echo of %q within 10s", key)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// runProcesses runs ProcessResults once per runtime of s.Combos.
func (s Suite) runProcesses(ctx context.Context, rep *Report, log *slog.Logger) []error {
	var failed []error
	seen := map[embedded.ContainerRuntime]bool{}
	for _, c := range s.Combos {
		if seen[c.Runtime] {
			continue
		}
		seen[c.Runtime] = true
		s.announce(log, "background processes and PTY echo, runtime %s", cmp.Or(string(c.Runtime), "default"))
		hc := s.Host
		hc.StorageBackend, hc.ContainerRuntime, hc.StorageRoot, hc.ZFSDataset = embedded.StorageBackendLocalDisk, c.Runtime, "", ""
		res, err := ProcessResults(ctx, s.Config, hc)
		rep.Results = append(rep.Results, res...)
		if err != nil {
			failed = append(failed, fmt.Errorf("processes on %s: %w", c.Runtime, err))
		}
	}
	return failed
}
