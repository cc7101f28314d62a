package remote_test

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
)

// benchTargets returns, for one host, an embedded environment factory and
// the same through the local adapter and through a loopback server, so a
// single run compares them side by side.
func benchTargets(b *testing.B, host *embedded.Host) []struct {
	name string
	env  func() environment.Environment
} {
	srv := startServer(b, host, "", remote.WithAuthTokens(testToken))
	client := remote.NewClient(srv.URL, remote.WithBearerToken(testToken))
	local := remote.NewLocalService(host)
	return []struct {
		name string
		env  func() environment.Environment
	}{
		{"embedded", func() environment.Environment { return host.NewEnvironment() }},
		{"local", func() environment.Environment {
			return remote.NewNativeSandboxEnvironment(local, remote.DefaultConfig(), nil)
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
