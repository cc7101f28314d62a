package benchmarks

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container/agent/agenttest"
	"github.com/turnbox/turnbox/container/runc"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/zfs/zfstest"
)

func TestMain(m *testing.M) {
	runc.Init() // libcontainer re-executes this binary as each runc sandbox's init
	code := m.Run()
	zfstest.Shutdown()
	os.Exit(code)
}

// benchFiles is the workspace of the Go benchmarks: 1,000 files of 10 KiB.
const benchFiles, benchFileSize = 1000, 10 << 10

// BenchmarkOps times each headline operation on every storage backend ×
// runtime that runs here (the others skip with the reason), with the same
// operation bodies as `turnbox bench`. Run a few iterations at a time on a
// shared machine, e.g.
//
//	go test -run '^$' -bench 'Ops/btrfs-none' -benchtime 20x ./benchmarks
func BenchmarkOps(b *testing.B) {
	agent := ""
	for _, c := range AllCombos() {
		b.Run(string(c.Storage)+"-"+string(c.Runtime), func(b *testing.B) {
			if c.Runtime != embedded.ContainerRuntimeNone {
				if os.Geteuid() != 0 {
					b.Skip("isolated runtimes need root")
				}
				if c.Runtime == embedded.ContainerRuntimeGVisor {
					if _, err := exec.LookPath("runsc"); err != nil {
						b.Skip("no runsc on PATH")
					}
				}
				if agent == "" {
					agent = agenttest.Build(b)
				}
			}
			s := Suite{Host: embedded.Config{AgentPath: agent}}
			ran := false
			_, skips, err := s.runCombo(context.Background(), c, b.TempDir(), 2<<30, func(h *embedded.Host) ([]Result, []Skip, error) {
				ran = true
				benchHost(b, h)
				return nil, nil, nil
			})
			if err != nil {
				b.Fatal(err)
			}
			if !ran {
				var why []string
				for _, s := range skips {
					why = append(why, s.Reason)
				}
				b.Skip("cannot run here: " + strings.Join(why, "; "))
			}
		})
	}
}

// benchHost runs a sub-benchmark per operation on h.
func benchHost(b *testing.B, h *embedded.Host) {
	ctx := context.Background()
	f, err := newFixture(ctx, h, benchFiles, benchFileSize)
	if err != nil {
		b.Fatal(err)
	}
	defer f.close()
	ops := []struct {
		name string
		fn   body
	}{
		{OpCreate, f.create}, {OpStart, f.start}, {OpExec, f.exec},
		{OpReadFile, f.readFile}, {OpWriteFile, f.writeFile}, {OpEditFile, f.editFile}, {OpGrep, f.grep},
		{OpTurnComplete, f.turnComplete}, {OpRollback, f.rollback}, {OpFork, f.fork},
	}
	if h.Capabilities().Pause {
		ops = append(ops, struct {
			name string
			fn   body
		}{OpPauseResume, f.pauseResume})
	}
	if h.Capabilities().Isolation != environment.IsolationNone {
		ops = append(ops, struct {
			name string
			fn   body
		}{OpSaveImage, f.saveImage})
	}
	for _, op := range ops {
		b.Run(op.name, func(b *testing.B) { benchBody(b, op.fn) })
	}
}

// benchBody runs fn b.N times with the benchmark's timer following the
// body's Start and Stop marks.
func benchBody(b *testing.B, fn body) {
	ctx := context.Background()
	b.StopTimer()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l := lap{onStart: b.StartTimer, onOff: b.StopTimer}
		if err := fn(ctx, i, &l); err != nil {
			b.Fatal(err)
		}
	}
}

// TestLapFollowsMarks checks that only the marked part of a body counts.
func TestLapFollowsMarks(t *testing.T) {
	samples, err := measure(context.Background(), 3, func(_ context.Context, i int, l *lap) error {
		time.Sleep(100 * time.Millisecond) // preparation: not timed
		l.Start()
		time.Sleep(time.Millisecond)
		l.Stop()
		return nil
	})
	if err != nil || len(samples) != 3 {
		t.Fatalf("measure: %v %v", samples, err)
	}
	for _, s := range samples {
		if s < time.Millisecond || s >= 100*time.Millisecond {
			t.Errorf("a 1 ms Start/Stop span after 100 ms of preparation measured %v", s)
		}
	}
}
