package egress

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"testing"
	"time"

	"github.com/turnbox/turnbox/environment"
)

// BenchmarkEgressPath compares, side by side, the host (root namespace)
// and a sandbox behind the firewall (egress, the server allowed by
// name) downloading 100 MB over HTTP from the internet namespace, and
// the first-byte latency of a fresh connection. It reports medians over
// rounds that alternate host and sandbox:
//
//	go test -run '^$' -bench BenchmarkEgressPath -benchtime 1x ./container/egress/
func BenchmarkEgressPath(b *testing.B) {
	requireNet(b)
	f, _ := newFirewall(b)
	newInternet(b)
	sb := newSandbox(b, 5, policy(environment.NetworkEgress, "pkg.example:80"))
	if err := f.Attach(sb.sess); err != nil {
		b.Fatal(err)
	}
	hostDial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	sbDial := func(ctx context.Context, network, addr string) (net.Conn, error) { return sb.dial(ctx, network, addr) }
	// The sandbox resolves the name through the filter once (that
	// admits the address); both then use the address.
	ips, err := sb.resolver(sb.sess.HostAddr.String()+":53").LookupNetIP(context.Background(), "ip4", "pkg.example")
	if err != nil {
		b.Fatal(err)
	}
	base := "http://" + ips[0].String()
	const size = 100 << 20
	const rounds = 7
	var hostRate, sbRate, hostFirst, sbFirst []float64
	for i := 0; i < b.N*rounds; i++ {
		hostRate = append(hostRate, download(b, hostDial, fmt.Sprintf("%s/big?n=%d", base, size), size))
		sbRate = append(sbRate, download(b, sbDial, fmt.Sprintf("%s/big?n=%d", base, size), size))
		hostFirst = append(hostFirst, firstByte(b, hostDial, base+"/"))
		sbFirst = append(sbFirst, firstByte(b, sbDial, base+"/"))
	}
	hr, sr, hf, sf := median(hostRate), median(sbRate), median(hostFirst), median(sbFirst)
	b.ReportMetric(hr, "host-MB/s")
	b.ReportMetric(sr, "sandbox-MB/s")
	b.ReportMetric(sr/hr, "throughput-ratio")
	b.ReportMetric(hf, "host-first-byte-µs")
	b.ReportMetric(sf, "sandbox-first-byte-µs")
	b.ReportMetric(sf-hf, "first-byte-delta-µs")
	b.Logf("100 MB download, median of %d: host %.0f MB/s, sandbox %.0f MB/s (ratio %.2f, target >= 0.5); "+
		"first byte: host %.0f µs, sandbox %.0f µs (delta %.0f µs, target <= 2000)", len(hostRate), hr, sr, sr/hr, hf, sf, sf-hf)
}

// download fetches url (n bytes) over a new connection and returns MB/s.
func download(b *testing.B, dial func(context.Context, string, string) (net.Conn, error), url string, n int64) float64 {
	b.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true, DisableCompression: true}}
	start := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.Copy(io.Discard, resp.Body)
	if err != nil || got != n {
		b.Fatalf("GET %s: %d bytes, %v", url, got, err)
	}
	return float64(n) / 1e6 / time.Since(start).Seconds()
}

// firstByte returns the µs from the start of a request on a new
// connection to its first response byte.
func firstByte(b *testing.B, dial func(context.Context, string, string) (net.Conn, error), url string) float64 {
	b.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
	var first time.Time
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotFirstResponseByte: func() { first = time.Now() }})
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return float64(first.Sub(start).Microseconds())
}

// median of xs (sorted in place).
func median(xs []float64) float64 {
	slices.Sort(xs)
	return xs[len(xs)/2]
}
