package embedded_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// BenchmarkPoolNetwork measures pooled create and pooled fork on a host
// whose default mode is egress (its pooled sandboxes have namespaces)
// and on one whose default is none, side by side: each iteration times
// one create and one fork on each host, in turn (which host goes first
// alternates), each once its pool has refilled (untimed). It reports the medians (ms) and the median of the
// paired differences egress - none (the target: within 5 ms).
// Run with e.g. -bench PoolNetwork -benchtime 20x.
func BenchmarkPoolNetwork(b *testing.B) {
	for _, rt := range []embedded.ContainerRuntime{embedded.ContainerRuntimeGVisor, embedded.ContainerRuntimeRunc} {
		b.Run(string(rt), func(b *testing.B) {
			egress := benchPoolHost(b, netHostConfig(b, rt), environment.NetworkPolicy{Mode: environment.NetworkEgress, Allow: []string{"pkg.example:80"}})
			none := benchPoolHost(b, netConfig(b, rt), environment.NetworkPolicy{})
			var create, fork [2][]time.Duration // [0] none, [1] egress
			b.ResetTimer()
			hosts := []*benchHost{none, egress}
			for n := range b.N {
				// Alternate which host goes first: the second one
				// measured was the slower whichever it was.
				for _, i := range [][]int{{0, 1}, {1, 0}}[n%2] {
					create[i] = append(create[i], hosts[i].timeCreate(b))
					fork[i] = append(fork[i], hosts[i].timeFork(b))
				}
			}
			b.StopTimer()
			reportPair(b, "create", create)
			reportPair(b, "fork", fork)
		})
	}
}

// benchHost is a host with a pool of one and a snapshot to fork.
type benchHost struct {
	h        *embedded.Host
	snap     string
	stateDir string
	netns    int // namespaces with the pool full and no session but the parent
}

// benchPoolHost opens a host of cfg (a pool of one) with policy as its
// default, and a session with a snapshot to fork from.
func benchPoolHost(b *testing.B, cfg embedded.Config, policy environment.NetworkPolicy) *benchHost {
	cfg.Network = policy
	h, err := embedded.NewHost(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close(context.Background()) })
	e, err := h.CreateSession(context.Background(), environment.SessionConfig{})
	if err != nil {
		b.Fatal(err)
	}
	snap, err := e.TurnComplete(context.Background(), "")
	if err != nil {
		b.Fatal(err)
	}
	bh := &benchHost{h: h, snap: snap.ID, stateDir: cfg.StateDir}
	for deadline := time.Now().Add(2 * time.Minute); h.PoolReady() < 1; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("the pool did not fill in 2 minutes")
		}
	}
	bh.netns = len(poolNamespaces(b, cfg.StateDir))
	return bh
}

// refilled waits, untimed, for the pool to be full and the background
// teardown of the last destroyed session's namespace to be over (only
// the pooled sandbox's and the parent's are left), and a little more.
func (bh *benchHost) refilled(b *testing.B) {
	b.StopTimer()
	defer b.StartTimer()
	settled := func() bool { return bh.h.PoolReady() == 1 && len(poolNamespaces(b, bh.stateDir)) <= bh.netns }
	for deadline := time.Now().Add(2 * time.Minute); !settled(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("the pool did not refill in 2 minutes")
		}
	}
	time.Sleep(50 * time.Millisecond)
}

// timeCreate times one pooled create (CreateSession returning).
func (bh *benchHost) timeCreate(b *testing.B) time.Duration {
	return bh.timed(b, func(ctx context.Context) (*embedded.Environment, error) {
		return bh.h.CreateSession(ctx, environment.SessionConfig{})
	})
}

// timeFork times one pooled fork of the host's snapshot.
func (bh *benchHost) timeFork(b *testing.B) time.Duration {
	return bh.timed(b, func(ctx context.Context) (*embedded.Environment, error) {
		return bh.h.Fork(ctx, bh.snap, environment.SessionConfig{})
	})
}

// timed runs op once the pool has refilled, checks it took the pooled
// sandbox, destroys the session (untimed) and returns op's time.
func (bh *benchHost) timed(b *testing.B, op func(context.Context) (*embedded.Environment, error)) time.Duration {
	ctx := context.Background()
	bh.refilled(b)
	hits := poolClaims(b, bh.h, "hit")
	start := time.Now()
	e, err := op(ctx)
	took := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	defer b.StartTimer()
	if poolClaims(b, bh.h, "hit") != hits+1 {
		b.Fatal("the operation did not take the pooled sandbox")
	}
	if err := e.Destroy(ctx); err != nil {
		b.Fatal(err)
	}
	return took
}

// reportPair reports the medians of samples[0] (none) and samples[1]
// (egress) and the median of their paired differences, in ms.
func reportPair(b *testing.B, op string, samples [2][]time.Duration) {
	diffs := make([]time.Duration, len(samples[0]))
	for i := range diffs {
		diffs[i] = samples[1][i] - samples[0][i]
	}
	none, egress, diff := median(samples[0]), median(samples[1]), median(diffs)
	b.ReportMetric(ms(none), op+"-none-ms")
	b.ReportMetric(ms(egress), op+"-egress-ms")
	b.ReportMetric(ms(diff), op+"-diff-ms")
	b.Logf("%s: none %v, egress %v, paired difference %v (n=%d)", op, none, egress, diff, len(diffs))
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
