package netns_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container/containertest"
	"github.com/turnbox/turnbox/internal/testenv"
)

// BenchmarkCreateDestroy measures making a Link (namespace, veth pair,
// addresses, routes) and removing it, the cost a sandbox pool pays in
// its pre-started work. Run with:
//
//	go test -run '^$' -bench CreateDestroy -benchtime 200x ./container/netns
func BenchmarkCreateDestroy(b *testing.B) {
	testenv.RequireRoot(b)
	m, _ := containertest.NewLink(b, "bench-warmup")
	ctx := context.Background()
	var create, destroy []time.Duration
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("b%d", i)
		t0 := time.Now()
		if _, err := m.Create(ctx, id); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := m.Destroy(ctx, id); err != nil {
			b.Fatal(err)
		}
		create, destroy = append(create, t1.Sub(t0)), append(destroy, time.Since(t1))
	}
	b.ReportMetric(containertest.MedianMS(create), "create-median-ms")
	b.ReportMetric(containertest.MedianMS(destroy), "destroy-median-ms")
}
