package remote_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"

	"github.com/turnbox/turnbox/remote/server"
)

// BenchmarkPublishedPort: a GET of a small answer from an HTTP server in
// a session (keep-alive, HTTP/1.1), sent directly to the sandbox's port
// (a connection from the host's DialPort, what any runtime offers) and
// through `turnbox serve`'s forwarder (/ports/<id>/<port>/, token auth);
// p50-ns is each one's median, and "paired" alternates the two and
// reports the median of their difference (overhead-ns), the number the
// 2 ms target is about.
func BenchmarkPublishedPort(b *testing.B) {
	host := newHost(b)
	srv := startServer(b, host, "", server.WithAuthTokens(testToken))
	env := portSession(b, host)
	port := startPortServer(b, env, "http")
	publish(b, env, port, false)
	direct := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return env.DialPort(ctx, port) },
	}}
	viaServe := &http.Client{Transport: &http.Transport{}}
	directURL := "http://sandbox.invalid/small"
	fwdURL := fmt.Sprintf("%s/ports/%s/%d/small", srv.URL, env.SessionID(), port)
	for _, tg := range []struct {
		name string
		c    *http.Client
		url  string
	}{{"direct", direct, directURL}, {"forwarded", viaServe, fwdURL}} {
		b.Run(tg.name, func(b *testing.B) {
			var ts []float64
			for b.Loop() {
				ts = append(ts, timedGet(b, tg.c, tg.url, ""))
			}
			b.ReportMetric(median(ts), "p50-ns")
		})
	}
	b.Run("paired", func(b *testing.B) {
		var diff []float64
		for i := 0; b.Loop(); i++ {
			var d, f float64
			if i%2 == 0 { // alternate which goes first
				d, f = timedGet(b, direct, directURL, ""), timedGet(b, viaServe, fwdURL, "")
			} else {
				f, d = timedGet(b, viaServe, fwdURL, ""), timedGet(b, direct, directURL, "")
			}
			diff = append(diff, f-d)
		}
		b.ReportMetric(median(diff), "overhead-ns")
	})
}
