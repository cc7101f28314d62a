package containertest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
)

// BenchProcessStart measures, in one loop that alternates them so that
// they see the same machine, a one-shot Exec of `true` and a
// StartProcess of a background `sleep` up to its pid (the process is then
// killed outside the timing). It reports both medians and the median of
// their per-iteration differences (start minus exec), in milliseconds.
func BenchProcessStart(b *testing.B, sb container.Sandbox) {
	ps, ok := sb.(container.ProcessStarter)
	if !ok {
		b.Fatalf("%T does not implement container.ProcessStarter", sb)
	}
	ctx := context.Background()
	exec := container.Process{Args: []string{"true"}}
	spec := container.ProcessSpec{Process: container.Process{Args: []string{"sleep", "1000"}}}
	var execD, startD, diff []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		st, err := sb.Exec(ctx, exec)
		t1 := time.Now()
		if err != nil || st.Code != 0 {
			b.Fatalf("Exec: %+v %v", st, err)
		}
		rp, err := ps.StartProcess(ctx, spec)
		t2 := time.Now()
		if err != nil || rp.PID() <= 0 {
			b.Fatalf("StartProcess: %v", err)
		}
		b.StopTimer()
		if err := rp.Kill(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := rp.Wait(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		execD = append(execD, t1.Sub(t0))
		startD = append(startD, t2.Sub(t1))
		diff = append(diff, t2.Sub(t1)-t1.Sub(t0))
	}
	b.StopTimer()
	b.ReportMetric(medianMS(execD), "exec-true-ms")
	b.ReportMetric(medianMS(startD), "start-pid-ms")
	b.ReportMetric(medianMS(diff), "start-minus-exec-ms")
}

// MedianMS returns the median of d in milliseconds (0 for none).
func MedianMS(d []time.Duration) float64 { return medianMS(d) }

func medianMS(d []time.Duration) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[len(s)/2].Microseconds()) / 1000
}

// BenchPTYEcho measures a keystroke's echo round trip through a PTY: one
// byte written with WriteStdin to a shell in a terminal until its echo
// arrives at the output writer. It reports the median and the 99th
// percentile in milliseconds.
func BenchPTYEcho(b *testing.B, sb container.Sandbox) {
	ps, ok := sb.(container.ProcessStarter)
	if !ok {
		b.Fatalf("%T does not implement container.ProcessStarter", sb)
	}
	ctx := context.Background()
	echoes := make(chan struct{}, 1)
	rp, err := ps.StartProcess(ctx, container.ProcessSpec{
		Process: container.Process{Args: []string{"cat"}, Stdout: notifyWriter(echoes)},
		PTY:     &container.TermSize{Rows: 24, Cols: 80},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = rp.Kill(ctx)
		_, _ = rp.Wait(ctx)
	}()
	var rtt []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := rp.WriteStdin(ctx, []byte{'x'}); err != nil {
			b.Fatal(err)
		}
		select {
		case <-echoes:
		case <-time.After(10 * time.Second):
			b.Fatal("no echo in 10 s")
		}
		rtt = append(rtt, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(rtt)
	b.ReportMetric(medianMS(rtt), "echo-p50-ms")
	b.ReportMetric(float64(rtt[len(rtt)*99/100].Microseconds())/1000, "echo-p99-ms")
}

// notifyWriter signals ch (without blocking) on every write.
type notifyWriter chan struct{}

func (w notifyWriter) Write(p []byte) (int, error) {
	select {
	case w <- struct{}{}:
	default:
	}
	return len(p), nil
}
