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

func medianMS(d []time.Duration) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[len(s)/2].Microseconds()) / 1000
}
