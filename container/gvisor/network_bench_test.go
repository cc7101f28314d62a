package gvisor_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/containertest"
	"github.com/turnbox/turnbox/container/gvisor"
	"github.com/turnbox/turnbox/container/netns"
)

// Run with:
//
//	go test -run '^$' -bench 'StartNetwork|NamespaceNetwork' -benchtime 20x ./container/gvisor

// BenchmarkStartNetwork measures a sandbox's start (up to its agent's
// first answer) with network none and in a namespace made beforehand
// (as a pool does), with gVisor's netstack and with host networking.
// The three are interleaved start by start so that they see the same
// load; the namespaced ones also report their median difference to the
// none start next to them.
func BenchmarkStartNetwork(b *testing.B) {
	modes := []string{"none", gvisor.NetstackInNamespace, gvisor.HostInNamespace}
	envs := map[string]*env{}
	for _, mode := range modes {
		envs[mode] = newEnv(b, gvisor.WithNamespaceNetwork(max(mode, gvisor.NetstackInNamespace)))
	}
	m, _ := containertest.NewLink(b, "bstart-warmup")
	d := map[string][]time.Duration{}
	for i := 0; b.Loop(); i++ {
		for j := range modes { // rotate which mode starts first
			mode := modes[(i+j)%len(modes)]
			d[mode] = append(d[mode], startOnce(b, envs[mode], m, mode, fmt.Sprintf("bstart-%d", i)))
		}
	}
	for _, mode := range modes {
		b.ReportMetric(containertest.MedianMS(d[mode]), mode+"-start-median-ms")
		if mode != "none" {
			diff := make([]time.Duration, len(d[mode]))
			for i := range diff {
				diff[i] = d[mode][i] - d["none"][i]
			}
			b.ReportMetric(containertest.MedianMS(diff), mode+"-minus-none-ms")
		}
	}
}

// startOnce starts and stops one sandbox of e, in a Link of m made
// beforehand unless mode is "none", and returns how long the start took.
func startOnce(b *testing.B, e *env, m *netns.Manager, mode, id string) time.Duration {
	ctx := context.Background()
	spec := e.spec(id)
	if mode != "none" {
		l, err := m.Create(ctx, id+"-"+mode)
		if err != nil {
			b.Fatal(err)
		}
		defer m.Destroy(ctx, l.ID)
		spec.Network, spec.NetNS = container.NetworkNamespace, l.NetNS
	}
	t0 := time.Now()
	sb, err := e.rt.StartSandbox(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	took := time.Since(t0)
	if err := sb.Stop(ctx); err != nil {
		b.Fatal(err)
	}
	return took
}

// netServer is a static program run inside the sandbox: on each
// connection, first byte 'e' echoes everything back, 's' discards
// everything and answers with the byte count.
const netServer = `package main

import (
	"io"
	"net"
	"os"
	"strconv"
)

func main() {
	ln, err := net.Listen("tcp4", os.Args[1])
	if err != nil {
		panic(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			b := make([]byte, 1)
			if _, err := io.ReadFull(c, b); err != nil {
				return
			}
			if b[0] == 'e' {
				io.Copy(c, c)
				return
			}
			n, _ := io.Copy(io.Discard, c)
			c.Write([]byte(strconv.FormatInt(n, 10) + "\n"))
		}()
	}
}
`

// BenchmarkNamespaceNetwork compares gVisor's netstack with host
// networking in a namespace: a one-byte TCP request/response round trip
// and a 100 MB transfer from the host to a server in the sandbox (the
// path exposed ports take).
func BenchmarkNamespaceNetwork(b *testing.B) {
	for _, mode := range []string{gvisor.NetstackInNamespace, gvisor.HostInNamespace} {
		b.Run(mode, func(b *testing.B) {
			e := newEnv(b, gvisor.WithNamespaceNetwork(mode))
			srv := filepath.Join(filepath.Dir(e.workspace), "ws", "netsrv")
			buildStatic(b, netServer, srv)
			_, l := containertest.NewLink(b, "bnet-"+mode)
			spec := e.spec("bnet-" + mode)
			spec.Network, spec.NetNS = container.NetworkNamespace, l.NetNS
			sb := e.start(b, spec)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go sb.Exec(ctx, container.Process{Args: []string{"/workspace/netsrv", "0.0.0.0:9000"}})
			ap := netip.AddrPortFrom(l.SandboxAddr, 9000)
			var rr []time.Duration
			var mbps []float64
			for b.Loop() {
				rr = append(rr, roundTrips(b, ap, 2000)...)
				mbps = append(mbps, bulk(b, ap, 100<<20))
			}
			b.ReportMetric(float64(containertest.MedianMS(rr))*1000, "rr-median-us")
			b.ReportMetric(medianF(mbps), "bulk-MB/s")
		})
	}
}

// buildStatic builds the Go program src into a static binary at out.
func buildStatic(b *testing.B, src, out string) {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", out, "main.go")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building the server: %v: %s", err, o)
	}
}

// roundTrips measures n one-byte request/response round trips.
func roundTrips(b *testing.B, ap netip.AddrPort, n int) []time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := containertest.DialRetry(ctx, ap)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	buf := []byte{'e'}
	if _, err := c.Write(buf); err != nil {
		b.Fatal(err)
	}
	d := make([]time.Duration, 0, n)
	for range n {
		t0 := time.Now()
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		d = append(d, time.Since(t0))
	}
	return d
}

// bulk sends size bytes and returns the rate in MB/s, once the server
// confirmed it received them all.
func bulk(b *testing.B, ap netip.AddrPort, size int64) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := containertest.DialRetry(ctx, ap)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	t0 := time.Now()
	if _, err := c.Write([]byte{'s'}); err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(c, zeros{}, size); err != nil {
		b.Fatal(err)
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	line, err := bufio.NewReader(c).ReadString('\n')
	if got, _ := strconv.ParseInt(strings.TrimSpace(line), 10, 64); err != nil || got != size {
		b.Fatalf("server got %q bytes: %v", line, err)
	}
	return float64(size) / (1 << 20) / time.Since(t0).Seconds()
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func medianF(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	s := slices.Clone(x)
	slices.Sort(s)
	return s[len(s)/2]
}
