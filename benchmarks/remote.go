package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
	"github.com/turnbox/turnbox/remote/server"
)

// Remote results. RemoteResults measures what serving a host over
// ConnectRPC costs, with every remote figure beside the same calls made
// in process on the same host in the same run. Each op has a row with an
// empty baseline (through the loopback server) and a row with baseline
// "embedded" (the same calls on embedded.Environments):
//
//   - remote_exec: ExecuteTool of bash `true`;
//   - remote_read_file: ExecuteTool of read_file on a 3-byte file (the
//     tool takes microseconds, so the difference is the RPC's own cost);
//   - remote_turn_complete: TurnComplete after a one-file change;
//   - remote_read_file_load: read_file of a 3-byte file from Sessions
//     sessions at once, each driven by its own goroutine in a closed loop
//     (the next call as soon as the last returns) for RemoteLoadDuration:
//     the saturation throughput. OpsPerSec is the calls completed per
//     second and the percentiles are per call (under saturation they are
//     Sessions/OpsPerSec on average, by Little's law);
//   - remote_read_file_rate: the same calls offered at a fixed total rate
//     (RemoteLoadRate, spread evenly over the Sessions sessions, each
//     session one call at a time) for RemoteLoadDuration: the latency at
//     that throughput. Each call's latency counts from when it was due,
//     so a server falling behind shows in the percentiles, and OpsPerSec
//     is the rate achieved.
//
// For the unary ops the embedded and the remote call alternate iteration
// by iteration (which goes first alternating too), so both see the same
// machine load, and a third row, op <op>_overhead with an empty
// baseline, holds the percentiles of the per-iteration difference remote
// minus embedded: what the network hop adds (it may be negative at low
// percentiles on a noisy machine).
const (
	OpRemoteExec         = "remote_exec"
	OpRemoteReadFile     = "remote_read_file"
	OpRemoteTurnComplete = "remote_turn_complete"
	OpRemoteReadFileLoad = "remote_read_file_load"
	OpRemoteReadFileRate = "remote_read_file_rate"
	// OverheadSuffix ends the op of a row of per-iteration differences.
	OverheadSuffix = "_overhead"
	// BaselineEmbedded marks the in-process rows of the remote results.
	BaselineEmbedded = "embedded"
)

// Defaults of the remote load run.
const (
	// RemoteLoadSessions is the number of sessions of the load run.
	RemoteLoadSessions = 50
	// RemoteLoadDuration is how long each side of each load run lasts.
	RemoteLoadDuration = 5 * time.Second
	// RemoteLoadRate is the total rate (calls per second) of the
	// fixed-rate load run.
	RemoteLoadRate = 2000
)

// RemoteOption adjusts RemoteResults.
type RemoteOption func(*remoteConfig)

type remoteConfig struct {
	host          *embedded.Host
	sessions      int
	duration      time.Duration
	rate          float64
	sharedClient  bool
	logger        *slog.Logger
	serverOptions []server.Option
}

// WithRemoteHost measures on h (which RemoteResults does not close)
// instead of a temporary host on localdisk storage and the none runtime.
// The load run creates RemoteLoadSessions sessions on it at once, so an
// isolated runtime needs room for them.
func WithRemoteHost(h *embedded.Host) RemoteOption {
	return func(c *remoteConfig) { c.host = h }
}

// WithRemoteLoad sets the load runs' session count, duration per side and
// the total rate of the fixed-rate run (defaults RemoteLoadSessions,
// RemoteLoadDuration and RemoteLoadRate; zero keeps a default).
func WithRemoteLoad(sessions int, d time.Duration, rate float64) RemoteOption {
	return func(c *remoteConfig) {
		if sessions > 0 {
			c.sessions = sessions
		}
		if d > 0 {
			c.duration = d
		}
		if rate > 0 {
			c.rate = rate
		}
	}
}

// WithSharedClient makes the load run's sessions share one client (one
// HTTP/2 connection, as the sessions of one agent runtime would) instead
// of a client each (a connection per session, as separate agent
// processes would have).
func WithSharedClient() RemoteOption {
	return func(c *remoteConfig) { c.sharedClient = true }
}

// WithRemoteLogger sets the logger of the temporary host and of the
// server (default: errors only, to stderr).
func WithRemoteLogger(l *slog.Logger) RemoteOption {
	return func(c *remoteConfig) { c.logger = l }
}

// WithServerOptions passes options to the measured server.Server.
func WithServerOptions(opts ...server.Option) RemoteOption {
	return func(c *remoteConfig) { c.serverOptions = append(c.serverOptions, opts...) }
}

// benchToken is the bearer token of the measured server: auth is on, as in
// production.
const benchToken = "turnbox-bench-token-0123456789abcdef"

// RemoteResults serves a host with server.Server on a loopback listener
// (the http.Server of `turnbox serve`: h2c, bearer-token auth) and measures
// ExecuteTool, TurnComplete and a read_file load through remote.NewClient
// beside the same calls in process (see OpRemoteExec for the rows). By
// default the host is a temporary one (localdisk storage, none runtime)
// removed afterwards; WithRemoteHost measures another. cfg.N is the number
// of timed iterations of each unary op (default 30); Files and FileSize
// are not used.
func RemoteResults(ctx context.Context, cfg Config, opts ...RemoteOption) (_ []Result, err error) {
	rc := remoteConfig{sessions: RemoteLoadSessions, duration: RemoteLoadDuration, rate: RemoteLoadRate}
	for _, o := range opts {
		o(&rc)
	}
	if cfg.N <= 0 {
		cfg.N = 30
	}
	if rc.logger == nil {
		rc.logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	h := rc.host
	if h == nil {
		dir, derr := os.MkdirTemp("", "turnbox-bench-remote-")
		if derr != nil {
			return nil, derr
		}
		defer os.RemoveAll(dir)
		h, err = embedded.NewHost(ctx, embedded.Config{
			StateDir:         dir,
			StorageBackend:   embedded.StorageBackendLocalDisk,
			ContainerRuntime: embedded.ContainerRuntimeNone,
			Logger:           rc.logger,
		})
		if err != nil {
			return nil, fmt.Errorf("bench remote: %w", err)
		}
		defer func() { err = errors.Join(err, h.Close(context.WithoutCancel(ctx))) }()
	}

	url, stop, err := serveLoopback(ctx, h, rc)
	if err != nil {
		return nil, err
	}
	defer func() {
		if e := stop(); e != nil {
			err = errors.Join(err, e)
		}
	}()
	rb := &remoteBench{ctx: ctx, rc: rc, h: h, url: url, caps: h.Capabilities()}

	// One session each way for the unary ops.
	local := h.NewEnvironment()
	rem := remote.NewNativeSandboxEnvironment(rb.newClient(), remote.DefaultConfig(), rc.logger)
	for _, env := range []environment.Environment{local, rem} {
		if err := env.Create(ctx, environment.SessionConfig{}); err != nil {
			return nil, fmt.Errorf("bench remote: create: %w", err)
		}
		defer env.Destroy(context.WithoutCancel(ctx))
	}
	for _, env := range []environment.Environment{local, rem} {
		if err := rb.call(env, environment.WriteFileParams{Path: "small.txt", Content: "abc"}); err != nil {
			return nil, fmt.Errorf("bench remote: %w", err)
		}
	}
	if err := rb.unary(cfg.N, local, rem); err != nil {
		return nil, err
	}
	if err := rb.loads(); err != nil {
		return nil, err
	}
	return rb.results, nil
}

// serveLoopback serves h with server.Server on a loopback listener and
// returns its URL and stop, which drains and shuts the server down and
// returns the error it stopped serving with, if not the usual one.
func serveLoopback(ctx context.Context, h *embedded.Host, rc remoteConfig) (url string, stop func() error, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("bench remote: %w", err)
	}
	srv := server.New(h, append([]server.Option{server.WithAuthTokens(benchToken), server.WithLogger(rc.logger)}, rc.serverOptions...)...)
	hs := srv.HTTPServer(true)
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	stop = func() error {
		srv.Drain()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if e := hs.Shutdown(sctx); e != nil {
			_ = hs.Close()
		}
		if e := <-serveErr; !errors.Is(e, http.ErrServerClosed) {
			return fmt.Errorf("bench remote: serve: %w", e)
		}
		return nil
	}
	return "http://" + ln.Addr().String(), stop, nil
}

// remoteBench is one RemoteResults run: the host, the URL serving it and
// the rows measured so far.
type remoteBench struct {
	ctx     context.Context
	rc      remoteConfig
	h       *embedded.Host
	url     string
	caps    environment.Capabilities
	seq     atomic.Int64 // numbers the tool call ids
	results []Result
}

// newClient returns a client of the served host (its own connection).
func (rb *remoteBench) newClient() turnboxv1connect.SandboxServiceClient {
	return remote.NewClient(rb.url, remote.WithBearerToken(benchToken))
}

// add records r as a row of the host's backend and runtime.
func (rb *remoteBench) add(r Result, baseline string) {
	r.Backend, r.Runtime, r.Baseline = rb.caps.Storage, string(rb.caps.Isolation), baseline
	rb.results = append(rb.results, r)
}

// call runs one tool call on env under a fresh id; a tool error is an
// error.
func (rb *remoteBench) call(env environment.Environment, p environment.ToolParams) error {
	req, err := environment.NewToolRequest(fmt.Sprintf("bench-%d", rb.seq.Add(1)), p)
	if err != nil {
		return err
	}
	resp, err := env.ExecuteTool(rb.ctx, req, nil)
	if err != nil {
		return err
	}
	if resp.IsError {
		return fmt.Errorf("%s failed: %s", req.ToolName, resp.Content)
	}
	return nil
}

// unary measures the unary ops n times each, local and rem interleaved,
// and adds their remote, embedded and overhead rows.
func (rb *remoteBench) unary(n int, local, rem environment.Environment) error {
	unary := []struct {
		op     string
		before func(env environment.Environment, i int) error
		run    func(env environment.Environment) error
	}{
		{OpRemoteExec, nil, func(env environment.Environment) error {
			return rb.call(env, environment.BashParams{Command: "true"})
		}},
		{OpRemoteReadFile, nil, func(env environment.Environment) error {
			return rb.call(env, environment.ReadFileParams{Path: "small.txt"})
		}},
		{OpRemoteTurnComplete, func(env environment.Environment, i int) error {
			return rb.call(env, environment.WriteFileParams{Path: "turn.txt", Content: fmt.Sprint(i)})
		}, func(env environment.Environment) error {
			_, err := env.(environment.TurnCompleter).TurnComplete(rb.ctx, "")
			return err
		}},
	}
	for _, u := range unary {
		emb, rmt, diff, err := interleave(n, local, rem, u.before, u.run)
		if err != nil {
			return fmt.Errorf("bench %s: %w", u.op, err)
		}
		rb.add(Latencies(u.op, rmt), "")
		rb.add(Latencies(u.op, emb), BaselineEmbedded)
		rb.add(Latencies(u.op+OverheadSuffix, diff), "")
	}
	return nil
}

// loads runs the closed-loop and the fixed-rate read_file loads:
// rc.sessions sessions, one goroutine each, embedded first.
func (rb *remoteBench) loads() error {
	shared := rb.newClient()
	for _, op := range []string{OpRemoteReadFileLoad, OpRemoteReadFileRate} {
		rate := 0.0
		if op == OpRemoteReadFileRate {
			rate = rb.rc.rate
		}
		for _, remoteSide := range []bool{false, true} {
			envs := make([]environment.Environment, rb.rc.sessions)
			for i := range envs {
				if !remoteSide {
					envs[i] = rb.h.NewEnvironment()
				} else if rb.rc.sharedClient {
					envs[i] = remote.NewNativeSandboxEnvironment(shared, remote.DefaultConfig(), rb.rc.logger)
				} else {
					envs[i] = remote.NewNativeSandboxEnvironment(rb.newClient(), remote.DefaultConfig(), rb.rc.logger)
				}
			}
			r, err := load(rb.ctx, envs, rb.rc.duration, rate, rb.call)
			if err != nil {
				return fmt.Errorf("bench %s: %w", op, err)
			}
			r.Op = op
			if remoteSide {
				rb.add(r, "")
			} else {
				rb.add(r, BaselineEmbedded)
			}
		}
	}
	return nil
}

// interleave runs before (if any, untimed) and then run on a and b, n
// times, alternating which goes first, and returns the times of each and
// the per-iteration differences b minus a.
func interleave(n int, a, b environment.Environment, before func(environment.Environment, int) error, run func(environment.Environment) error) (ta, tb, diff []time.Duration, err error) {
	timed := func(env environment.Environment, i int) (time.Duration, error) {
		if before != nil {
			if err := before(env, i); err != nil {
				return 0, err
			}
		}
		start := time.Now()
		err := run(env)
		return time.Since(start), err
	}
	// One untimed round: the first call of a connection or a session
	// pays set-up costs that are not the steady state.
	if _, err := timed(a, -1); err != nil {
		return nil, nil, nil, err
	}
	if _, err := timed(b, -1); err != nil {
		return nil, nil, nil, err
	}
	for i := range n {
		first, second := a, b
		if i%2 == 1 {
			first, second = b, a
		}
		d1, err := timed(first, i)
		if err != nil {
			return nil, nil, nil, err
		}
		d2, err := timed(second, i)
		if err != nil {
			return nil, nil, nil, err
		}
		if i%2 == 1 {
			d1, d2 = d2, d1
		}
		ta, tb, diff = append(ta, d1), append(tb, d2), append(diff, d2-d1)
	}
	return ta, tb, diff, nil
}

// load creates a session on each of envs (destroyed afterwards), writes a
// small file in each, then reads it from every session at once for d, and
// reports the per-call latencies and the throughput. With rate 0 each
// session calls again as soon as its last call returns (a closed loop);
// else session i of n makes its calls due every n/rate seconds, offset by
// i/rate, and a call's latency counts from when it was due.
func load(ctx context.Context, envs []environment.Environment, d time.Duration, rate float64, call func(environment.Environment, environment.ToolParams) error) (Result, error) {
	defer func() {
		for _, env := range envs {
			if env.State() != environment.StateUnbound {
				_ = env.Destroy(context.WithoutCancel(ctx))
			}
		}
	}()
	for _, env := range envs {
		if err := env.Create(ctx, environment.SessionConfig{}); err != nil {
			return Result{}, err
		}
		if err := call(env, environment.WriteFileParams{Path: "small.txt", Content: "abc"}); err != nil {
			return Result{}, err
		}
		// Warm up: a first call per session (and connection).
		if err := call(env, environment.ReadFileParams{Path: "small.txt"}); err != nil {
			return Result{}, err
		}
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		samples []time.Duration
		errs    []error
	)
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(len(envs)) / rate * float64(time.Second))
	}
	start := time.Now()
	deadline := start.Add(d)
	for i, env := range envs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			var err error
			due := start.Add(time.Duration(i) * interval / time.Duration(len(envs)))
			for due.Before(deadline) && ctx.Err() == nil {
				t := time.Now()
				if interval > 0 {
					time.Sleep(time.Until(due))
					t = due
					due = due.Add(interval)
				} else if !t.Before(deadline) {
					break
				}
				if err = call(env, environment.ReadFileParams{Path: "small.txt"}); err != nil {
					break
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			defer mu.Unlock()
			samples = append(samples, mine...)
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	// The run lasts d, or until its last call returned if later: with a
	// rate, calls falling behind make the achieved rate lower than the
	// offered one (and one keeping up achieves it).
	elapsed := max(time.Since(start), d)
	if err := errors.Join(append(errs, ctx.Err())...); err != nil {
		return Result{}, err
	}
	r := Latencies(OpRemoteReadFileLoad, samples)
	r.Sessions = len(envs)
	r.OpsPerSec = float64(len(samples)) / elapsed.Seconds()
	return r, nil
}
