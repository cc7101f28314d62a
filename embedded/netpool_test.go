package embedded_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/turnbox/turnbox/container/egress/egresstest"
	tbnetns "github.com/turnbox/turnbox/container/netns"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// TestPoolNetwork: on a host whose default mode is egress, pooled
// sandboxes wait in namespaces of their own, refused everything by the
// firewall; a create and a fork take one and get their own policy
// (reaching what it allows only, also after a restart of the sandbox),
// a none session misses the pool and has loopback only, and Destroy and
// Close leave no namespace behind.
func TestPoolNetwork(t *testing.T) {
	for _, rt := range []embedded.ContainerRuntime{embedded.ContainerRuntimeGVisor, embedded.ContainerRuntimeRunc} {
		t.Run(string(rt), func(t *testing.T) {
			ctx := context.Background()
			cfg := netHostConfig(t, rt)
			cfg.Network = environment.NetworkPolicy{Mode: environment.NetworkEgress, Allow: []string{"pkg.example:80"}}
			h, err := embedded.NewHost(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			waitPoolFull(t, h)
			if rt == embedded.ContainerRuntimeRunc {
				// gVisor's netstack took the namespace's addresses: only
				// runc's namespace can be dialled from the host's kernel.
				checkPooledRefused(t, cfg.StateDir)
			}
			e, err := h.CreateSession(ctx, environment.SessionConfig{})
			if err != nil {
				t.Fatal(err)
			}
			wantPoolClaims(t, h, 1, 0)
			checkAllowsPkgOnly(t, h, e)
			if err := h.RestartSession(ctx, e.SessionID()); err != nil {
				t.Fatal(err)
			}
			fetchOK(t, e, "http://pkg.example/") // the pool's link, reset for gVisor
			checkPooledForks(t, h, e)
			checkNoneMissesPool(t, h)
			if err := e.Destroy(ctx); err != nil {
				t.Fatal(err)
			}
			waitOnlyPoolNamespaces(t, h, cfg.StateDir)
			closeAndCheckClean(t, h, cfg.StateDir)
		})
	}
}

// waitPoolFull waits until h's pool of one is full.
func waitPoolFull(t *testing.T, h *embedded.Host) {
	t.Helper()
	waitUntil(t, "the pool to fill", 2*time.Minute, func() bool { return h.PoolReady() == 1 })
}

// wantPoolClaims wants h's pool claims to be hits and misses.
func wantPoolClaims(t *testing.T, h *embedded.Host, hits, misses float64) {
	t.Helper()
	if got := poolClaims(t, h, "hit"); got != hits {
		t.Errorf("pool hits = %v, want %v", got, hits)
	}
	if got := poolClaims(t, h, "miss"); got != misses {
		t.Errorf("pool misses = %v, want %v", got, misses)
	}
}

// poolNamespaces lists the pool's namespaces under stateDir.
func poolNamespaces(t testing.TB, stateDir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(stateDir, "netns"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// checkPooledRefused: the waiting pooled sandbox's namespace (the only
// one) reaches neither the test internet nor the host's side of its
// veth (it waits under policy none).
func checkPooledRefused(t *testing.T, stateDir string) {
	t.Helper()
	names := poolNamespaces(t, stateDir)
	if len(names) != 1 || !strings.HasPrefix(names[0], "pool-") {
		t.Fatalf("namespaces with a full pool and no session: %v, want one pool-*", names)
	}
	ns, err := netns.GetFromPath(filepath.Join(stateDir, "netns", names[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	host := egresstest.InetHost + ":22" // any address of the host's
	for _, addr := range []string{egresstest.InetEcho + ":7", egresstest.InetDNS + ":80", host} {
		start := time.Now()
		err := egresstest.InNS(ns, func() error {
			c, err := (&net.Dialer{Timeout: 3 * time.Second}).Dial("tcp", addr)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil || time.Since(start) > time.Second {
			t.Errorf("from a waiting pooled sandbox, connect %s: %v after %v, want refused at once", addr, err, time.Since(start))
		}
	}
}

// checkAllowsPkgOnly: e's resolv.conf names the DNS filter, it fetches
// pkg.example and is refused other.example, and its counters show both.
func checkAllowsPkgOnly(t *testing.T, h *embedded.Host, e *embedded.Environment) {
	t.Helper()
	resp, _ := sh(t, e, "cat /etc/resolv.conf")
	if !strings.Contains(resp.Content, "nameserver 100.") {
		t.Errorf("resolv.conf does not name the DNS filter: %s", resp.Content)
	}
	fetchOK(t, e, "http://pkg.example/")
	refusedFast(t, e, "http://other.example:8080/")
	st, err := h.NetworkStats(e.SessionID())
	if err != nil || st.BytesIn == 0 || st.Refused == 0 {
		t.Errorf("NetworkStats: %+v (%v), want bytes in and refusals", st, err)
	}
}

// checkPooledForks: a fork of e takes the pool's sandbox and keeps e's
// policy; a fork naming its own policy takes the next one and gets that
// policy, not e's.
func checkPooledForks(t *testing.T, h *embedded.Host, e *embedded.Environment) {
	t.Helper()
	ctx := context.Background()
	snap, err := e.TurnComplete(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	waitPoolFull(t, h)
	f, err := h.Fork(ctx, snap.ID, environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	wantPoolClaims(t, h, 2, 0)
	checkAllowsPkgOnly(t, h, f)
	waitPoolFull(t, h)
	own := environment.NetworkPolicy{Mode: environment.NetworkEgress, Allow: []string{"other.example:8080"}}
	g, err := h.Fork(ctx, snap.ID, environment.SessionConfig{Network: own})
	if err != nil {
		t.Fatal(err)
	}
	wantPoolClaims(t, h, 3, 0)
	fetchOK(t, g, "http://other.example:8080/")
	refusedFast(t, g, "http://pkg.example/")
	for _, x := range []environment.Environment{f, g} {
		if err := x.Destroy(ctx); err != nil {
			t.Error(err)
		}
	}
}

// checkNoneMissesPool: a none session on an egress host misses the
// (full) pool and has loopback only.
func checkNoneMissesPool(t *testing.T, h *embedded.Host) {
	t.Helper()
	waitPoolFull(t, h)
	hits := poolClaims(t, h, "hit")
	misses := poolClaims(t, h, "miss")
	t.Run("none", func(t *testing.T) {
		ctx := context.Background()
		e, err := h.CreateSession(ctx, environment.SessionConfig{Network: environment.NetworkPolicy{Mode: environment.NetworkNone}})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Destroy(ctx)
		wantPoolClaims(t, h, hits, misses+1)
		if h.PoolReady() != 1 {
			t.Errorf("a none session took the networked pool's sandbox")
		}
		resp, _ := sh(t, e, "cat /proc/net/dev")
		if !strings.Contains(resp.Content, "lo:") || strings.Contains(resp.Content, "eth") {
			t.Errorf("mode none: interfaces %q, want lo only", resp.Content)
		}
	})
}

// waitOnlyPoolNamespaces waits until the only namespace left under
// stateDir is the waiting pooled sandbox's: destroyed sessions' (named
// by the pool) are gone.
func waitOnlyPoolNamespaces(t *testing.T, h *embedded.Host, stateDir string) {
	t.Helper()
	waitPoolFull(t, h)
	var names []string
	waitUntil(t, "destroyed sessions' namespaces to go", 10*time.Second, func() bool {
		names = poolNamespaces(t, stateDir)
		return len(names) == 1
	})
	if !strings.HasPrefix(names[0], "pool-") {
		t.Errorf("namespaces left: %v, want the waiting pooled sandbox's only", names)
	}
}

// A crash leaves pooled sandboxes' namespaces (pool-*) in the host's
// netns directory; the next NewHost's reap removes them with its
// sessions'.
func TestPoolNetworkReaped(t *testing.T) {
	ctx := context.Background()
	cfg := matrixConfig(t, embedded.StorageBackendLocalDisk, embedded.ContainerRuntimeRunc)
	dir := filepath.Join(cfg.StateDir, "netns")
	mgr, err := tbnetns.New(tbnetns.Config{Dir: dir, IfacePrefix: tbnetns.IfacePrefixFor(tbnetns.HostTag(cfg.StateDir)), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	l, err := mgr.Create(ctx, "pool-0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Close(); err != nil { // the link stays, as after a crash
		t.Fatal(err)
	}
	openCheckedHost(t, cfg)
	if names := poolNamespaces(t, cfg.StateDir); slices.Contains(names, l.ID) {
		t.Errorf("pool namespace %s left after NewHost: %v", l.ID, names)
	}
	if _, err := net.InterfaceByName(l.HostIface); err == nil {
		t.Errorf("pool veth %s left after NewHost", l.HostIface)
	}
}
