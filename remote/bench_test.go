package remote_test

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
	"github.com/turnbox/turnbox/remote/server"
)

// benchTargets returns, for one host, an embedded environment factory and
// the same through a loopback server over the gRPC and the Connect
// protocols, so a single run compares them side by side.
func benchTargets(b *testing.B, host *embedded.Host) []struct {
	name string
	env  func() environment.Environment
} {
	srv := startServer(b, host, "", server.WithAuthTokens(testToken))
	client := remote.NewClient(srv.URL, remote.WithBearerToken(testToken))
	grpc := remote.NewClient(srv.URL, remote.WithBearerToken(testToken), remote.WithGRPC())
	return []struct {
		name string
		env  func() environment.Environment
	}{
		{"embedded", func() environment.Environment { return host.NewEnvironment() }},
		{"grpc", func() environment.Environment {
			return remote.NewNativeSandboxEnvironment(grpc, remote.DefaultConfig(), nil)
		}},
		{"remote", func() environment.Environment {
			return remote.NewNativeSandboxEnvironment(client, remote.DefaultConfig(), nil)
		}},
	}
}

func benchSession(b *testing.B, env environment.Environment) environment.Environment {
	b.Helper()
	if err := env.Create(b.Context(), environment.SessionConfig{}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = env.Destroy(b.Context()) })
	return env
}

var benchCalls atomic.Int64

func benchRequest(b *testing.B, p environment.ToolParams) environment.ToolRequest {
	req, err := environment.NewToolRequest(fmt.Sprintf("bench-%d", benchCalls.Add(1)), p)
	if err != nil {
		b.Fatal(err)
	}
	return req
}

// BenchmarkExecuteToolBashTrue: one `true` through bash, embedded vs the
// local adapter vs a loopback server (h2c, token auth, idempotency cache).
func BenchmarkExecuteToolBashTrue(b *testing.B) {
	host := newHost(b)
	for _, tg := range benchTargets(b, host) {
		b.Run(tg.name, func(b *testing.B) {
			env := benchSession(b, tg.env())
			for b.Loop() {
				resp, err := env.ExecuteTool(b.Context(), benchRequest(b, environment.BashParams{Command: "true"}), nil)
				if err != nil || resp.IsError {
					b.Fatal(resp, err)
				}
			}
		})
	}
}

// BenchmarkExecuteToolReadSmall: read_file of a 3-byte file, a tool that
// runs on the host side in microseconds, so the difference between the
// targets is the RPC's own cost.
func BenchmarkExecuteToolReadSmall(b *testing.B) {
	host := newHost(b)
	for _, tg := range benchTargets(b, host) {
		b.Run(tg.name, func(b *testing.B) {
			env := benchSession(b, tg.env())
			if _, err := env.ExecuteTool(b.Context(), benchRequest(b, environment.WriteFileParams{Path: "a.txt", Content: "abc"}), nil); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				resp, err := env.ExecuteTool(b.Context(), benchRequest(b, environment.ReadFileParams{Path: "a.txt"}), nil)
				if err != nil || resp.Content != "abc" {
					b.Fatal(resp, err)
				}
			}
		})
	}
}

// BenchmarkTurnComplete: snapshot a small workspace as the next turn.
func BenchmarkTurnComplete(b *testing.B) {
	host := newHost(b)
	for _, tg := range benchTargets(b, host) {
		b.Run(tg.name, func(b *testing.B) {
			env := benchSession(b, tg.env())
			if _, err := env.ExecuteTool(b.Context(), benchRequest(b, environment.WriteFileParams{Path: "a.txt", Content: "x"}), nil); err != nil {
				b.Fatal(err)
			}
			tc := env.(environment.TurnCompleter)
			for b.Loop() {
				if _, err := tc.TurnComplete(b.Context(), ""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReadFile50Sessions: read_file of a 64 KiB file from 50 sessions
// in parallel; MB/s is the throughput.
func BenchmarkReadFile50Sessions(b *testing.B) {
	const sessions, size = 50, 64 << 10
	host := newHost(b)
	content := strings.Repeat("0123456789abcde\n", size/16)
	for _, tg := range benchTargets(b, host) {
		b.Run(tg.name, func(b *testing.B) {
			envs := make([]environment.Environment, sessions)
			for i := range envs {
				envs[i] = benchSession(b, tg.env())
				if _, err := envs[i].ExecuteTool(b.Context(), benchRequest(b, environment.WriteFileParams{Path: "f.txt", Content: content}), nil); err != nil {
					b.Fatal(err)
				}
			}
			var next atomic.Int64
			b.SetBytes(size)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					env := envs[next.Add(1)%sessions]
					resp, err := env.ExecuteTool(b.Context(), benchRequest(b, environment.ReadFileParams{Path: "f.txt"}), nil)
					if err != nil || len(resp.Content) != size {
						b.Errorf("read_file: %d bytes, %v", len(resp.Content), err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkRemoteOverhead runs the same operation on an embedded
// environment and through a loopback server alternately, iteration by
// iteration, so both see the same machine load, and reports the medians of
// each and of their per-iteration difference (overhead-ns): what the
// network hop adds.
func BenchmarkRemoteOverhead(b *testing.B) {
	host := newHost(b)
	targets := benchTargets(b, host)
	ops := []struct {
		name  string
		setup func(b *testing.B, env environment.Environment)
		op    func(b *testing.B, env environment.Environment) error
	}{
		{"bash_true", nil, func(b *testing.B, env environment.Environment) error {
			_, err := env.ExecuteTool(b.Context(), benchRequest(b, environment.BashParams{Command: "true"}), nil)
			return err
		}},
		{"read_file_small", func(b *testing.B, env environment.Environment) {
			if _, err := env.ExecuteTool(b.Context(), benchRequest(b, environment.WriteFileParams{Path: "a.txt", Content: "abc"}), nil); err != nil {
				b.Fatal(err)
			}
		}, func(b *testing.B, env environment.Environment) error {
			_, err := env.ExecuteTool(b.Context(), benchRequest(b, environment.ReadFileParams{Path: "a.txt"}), nil)
			return err
		}},
		{"turn_complete", nil, func(b *testing.B, env environment.Environment) error {
			_, err := env.(environment.TurnCompleter).TurnComplete(b.Context(), "")
			return err
		}},
	}
	for _, o := range ops {
		b.Run(o.name, func(b *testing.B) {
			emb := benchSession(b, targets[0].env())
			rem := benchSession(b, targets[2].env())
			if o.setup != nil {
				o.setup(b, emb)
				o.setup(b, rem)
			}
			var te, tr, diff []float64
			timed := func(env environment.Environment) float64 {
				start := time.Now()
				if err := o.op(b, env); err != nil {
					b.Fatal(err)
				}
				return float64(time.Since(start))
			}
			for i := 0; b.Loop(); i++ {
				var e, r float64
				if i%2 == 0 { // alternate which goes first
					e = timed(emb)
					r = timed(rem)
				} else {
					r = timed(rem)
					e = timed(emb)
				}
				te, tr, diff = append(te, e), append(tr, r), append(diff, r-e)
			}
			b.ReportMetric(median(te), "embedded-ns")
			b.ReportMetric(median(tr), "remote-ns")
			b.ReportMetric(median(diff), "overhead-ns")
		})
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkReadFileLoad: read_file of a 3-byte file from 50 sessions at
// once (50 goroutines, one session each, closed loop), in process and
// through a loopback server with one client per session (a connection
// each) or one client shared by all sessions (one HTTP/2 connection).
// ops/s is the throughput; p50-ms and p99-ms are per call; cpu-us/op is
// the CPU time (user and system) the process spent per call, client and
// server together, which a loaded machine changes less than the latency.
func BenchmarkReadFileLoad(b *testing.B) {
	const sessions = 50
	host := newHost(b)
	srv := startServer(b, host, "", server.WithAuthTokens(testToken))
	shared := remote.NewClient(srv.URL, remote.WithBearerToken(testToken))
	targets := []struct {
		name string
		env  func() environment.Environment
	}{
		{"embedded", func() environment.Environment { return host.NewEnvironment() }},
		{"remote-client-per-session", func() environment.Environment {
			return remote.NewNativeSandboxEnvironment(remote.NewClient(srv.URL, remote.WithBearerToken(testToken)), remote.DefaultConfig(), nil)
		}},
		{"remote-shared-client", func() environment.Environment {
			return remote.NewNativeSandboxEnvironment(shared, remote.DefaultConfig(), nil)
		}},
	}
	for _, tg := range targets {
		b.Run(tg.name, func(b *testing.B) {
			envs := make([]environment.Environment, sessions)
			for i := range envs {
				envs[i] = benchSession(b, tg.env())
				if _, err := envs[i].ExecuteTool(b.Context(), benchRequest(b, environment.WriteFileParams{Path: "a.txt", Content: "abc"}), nil); err != nil {
					b.Fatal(err)
				}
			}
			var (
				next    atomic.Int64
				mu      sync.Mutex
				samples []float64
			)
			b.SetParallelism((sessions + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			cpu0 := cpuTime()
			start := time.Now()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				env := envs[int(next.Add(1)-1)%sessions]
				var mine []float64
				for pb.Next() {
					t := time.Now()
					resp, err := env.ExecuteTool(b.Context(), benchRequest(b, environment.ReadFileParams{Path: "a.txt"}), nil)
					if err != nil || resp.Content != "abc" {
						b.Errorf("read_file: %v %v", resp, err)
						return
					}
					mine = append(mine, float64(time.Since(t)))
				}
				mu.Lock()
				samples = append(samples, mine...)
				mu.Unlock()
			})
			b.StopTimer()
			elapsed, cpu := time.Since(start), cpuTime()-cpu0
			slices.Sort(samples)
			if n := len(samples); n > 0 {
				b.ReportMetric(float64(n)/elapsed.Seconds(), "ops/s")
				b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-us/op")
				b.ReportMetric(samples[n/2]/1e6, "p50-ms")
				b.ReportMetric(samples[min(n-1, n*99/100)]/1e6, "p99-ms")
			}
		})
	}
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkResponseGzip: read_file of a 3-byte and of an 8 KiB file
// through a server that gzips every response (WithCompressMinBytes(1), the
// Connect default) and through one with the default threshold
// (DefaultCompressMinBytes), which sends both uncompressed. cpu-us/op is
// the process's CPU time per call, client and server together.
func BenchmarkResponseGzip(b *testing.B) {
	host := newHost(b)
	servers := []struct {
		name string
		opts []server.Option
	}{
		{"gzip-all", []server.Option{server.WithCompressMinBytes(1)}},
		{"default", nil},
	}
	for _, size := range []int{3, 8 << 10} {
		content := strings.Repeat("x", size)
		for _, sv := range servers {
			b.Run(fmt.Sprintf("%dB/%s", size, sv.name), func(b *testing.B) {
				srv := startServer(b, host, "", sv.opts...)
				env := benchSession(b, remote.NewNativeSandboxEnvironment(remote.NewClient(srv.URL), remote.DefaultConfig(), nil))
				if _, err := env.ExecuteTool(b.Context(), benchRequest(b, environment.WriteFileParams{Path: "a.txt", Content: content}), nil); err != nil {
					b.Fatal(err)
				}
				cpu0 := cpuTime()
				for b.Loop() {
					resp, err := env.ExecuteTool(b.Context(), benchRequest(b, environment.ReadFileParams{Path: "a.txt"}), nil)
					if err != nil || len(resp.Content) != size {
						b.Fatal(resp, err)
					}
				}
				b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-us/op")
			})
		}
	}
}
