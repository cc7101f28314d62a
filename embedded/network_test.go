package embedded_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/turnbox/turnbox/container/egress/egresstest"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// The host's network settings are checked at NewHost, and a session's
// mode against the ceiling and what the runtime can give, before
// anything is made.
func TestNetworkConfig(t *testing.T) {
	ctx := context.Background()
	egress := environment.NetworkPolicy{Mode: environment.NetworkEgress, Allow: []string{"pypi.org:443"}}
	for name, cfg := range map[string]embedded.Config{
		"unknown ceiling":          {NetworkCeiling: "bridge"},
		"default above ceiling":    {Network: egress, NetworkCeiling: environment.NetworkNone},
		"bad default rule":         {Network: environment.NetworkPolicy{Mode: environment.NetworkEgress, Allow: []string{"not a rule"}}},
		"rules under none":         {Network: environment.NetworkPolicy{Allow: []string{"pypi.org"}}},
		"upstream without port":    {NetworkUpstream: []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), 0)}},
		"subnet not a network":     {NetworkSubnet: netip.MustParsePrefix("100.96.0.1/16")},
		"subnet too small":         {NetworkSubnet: netip.MustParsePrefix("100.96.0.0/31")},
		"subnet not IPv4":          {NetworkSubnet: netip.MustParsePrefix("fd00::/64")},
		"default the none runtime": {Network: egress, ContainerRuntime: embedded.ContainerRuntimeNone},
	} {
		cfg.StateDir, cfg.Logger = t.TempDir(), quietLogger()
		if cfg.ContainerRuntime == "" {
			cfg.ContainerRuntime = embedded.ContainerRuntimeNone
		}
		h, err := embedded.NewHost(ctx, cfg)
		if err == nil {
			h.Close(ctx)
			t.Errorf("%s: NewHost accepted %+v", name, cfg)
		} else if !errors.Is(err, environment.ErrInvalidArgument) && !errors.Is(err, environment.ErrCapabilityNotSupported) {
			t.Errorf("%s: %v, want ErrInvalidArgument or ErrCapabilityNotSupported", name, err)
		}
	}
}

// A session asking more than the host's ceiling is refused naming the
// ceiling; the none runtime offers none only and refuses the rest as
// unsupported; refused creates leave no session.
func TestNetworkCeilingAndNoneRuntime(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, embedded.Config{NetworkCeiling: environment.NetworkEgress})
	if c := h.Capabilities().NetworkCeiling; c != environment.NetworkNone {
		t.Errorf("none runtime: Capabilities.NetworkCeiling %q, want none", c)
	}
	_, err := h.CreateSession(ctx, environment.SessionConfig{Network: environment.NetworkPolicy{Mode: environment.NetworkOpen}})
	if !errors.Is(err, environment.ErrInvalidArgument) || !strings.Contains(err.Error(), `ceiling "egress"`) {
		t.Errorf("open above an egress ceiling: %v, want ErrInvalidArgument naming the ceiling", err)
	}
	_, err = h.CreateSession(ctx, environment.SessionConfig{Network: environment.NetworkPolicy{Mode: environment.NetworkEgress}})
	if !errors.Is(err, environment.ErrCapabilityNotSupported) {
		t.Errorf("egress on the none runtime: %v, want ErrCapabilityNotSupported", err)
	}
	if n := len(h.Sessions()); n != 0 {
		t.Errorf("%d sessions after refused creates", n)
	}
	e, err := h.CreateSession(ctx, environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := h.Session(e.SessionID())
	if err != nil || info.Network.Mode != environment.NetworkNone {
		t.Errorf("default session: network %+v (%v), want mode none", info.Network, err)
	}
}

// netHostConfig is a host config on rt whose DNS filter asks the test
// internet's DNS server (egresstest.NewInternet, made here): nothing but
// addresses the test made is ever contacted.
func netHostConfig(t testing.TB, rt embedded.ContainerRuntime) embedded.Config {
	t.Helper()
	egresstest.NewInternet(t)
	return netConfig(t, rt)
}

// netConfig is netHostConfig without making the test internet: for a
// second host in a test that made it (one per machine at a time).
func netConfig(t testing.TB, rt embedded.ContainerRuntime) embedded.Config {
	t.Helper()
	cfg := matrixConfig(t, embedded.StorageBackendLocalDisk, rt)
	cfg.NetworkUpstream = []netip.AddrPort{netip.MustParseAddrPort(egresstest.InetDNS + ":53")}
	// On a host whose default is none pooled sandboxes have loopback
	// only: sessions with a network must not take them (checkNoneSession's
	// does; TestPoolNetwork has a networked pool).
	cfg.PoolSize = 1
	return cfg
}

// sh runs cmd in e and returns its response and how long it took.
func sh(t *testing.T, e environment.Environment, cmd string) (*environment.ToolResponse, time.Duration) {
	t.Helper()
	start := time.Now()
	resp := call(t, e, environment.BashParams{Command: cmd})
	return resp, time.Since(start)
}

// wget is busybox wget of a URL, bounded by timeout (Debian's busybox
// 1.35 wget crashes with -T).
const wget = "timeout 5 wget -q -O - "

// fetchOK fetches url with busybox wget inside e and wants the test
// internet's answer.
func fetchOK(t *testing.T, e environment.Environment, url string) {
	t.Helper()
	resp, _ := sh(t, e, wget+url)
	if resp.ExitCode != 0 || !strings.Contains(resp.Content, "hello from") {
		t.Errorf("wget %s: exit %d: %s", url, resp.ExitCode, resp.Content)
	}
}

// refusedFast wants a wget of url inside e to fail well before its 5 s
// timeout with wget's own error (a refusal, an unreachable or a name
// error, not a drop), which it returns.
func refusedFast(t *testing.T, e environment.Environment, url string) string {
	t.Helper()
	resp, took := sh(t, e, wget+url)
	if resp.ExitCode != 1 || took > 3*time.Second || !strings.Contains(resp.Content, "wget: ") {
		t.Errorf("wget %s: exit %d after %s, want wget's error within 3s: %s", url, resp.ExitCode, took, resp.Content)
	}
	return resp.Content
}

// TestSessionNetwork runs sessions of each mode on gVisor and runc
// against the test internet: egress reaches what it allows only, none
// has loopback only, open reaches public addresses but not private ones;
// the policy survives a host restart, and Destroy and Close leave
// nothing of the host's network behind.
func TestSessionNetwork(t *testing.T) {
	for _, rt := range []embedded.ContainerRuntime{embedded.ContainerRuntimeGVisor, embedded.ContainerRuntimeRunc} {
		t.Run(string(rt), func(t *testing.T) {
			cfg := netHostConfig(t, rt)
			h, err := embedded.NewHost(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if c := h.Capabilities().NetworkCeiling; c != environment.NetworkOpen {
				t.Errorf("Capabilities.NetworkCeiling %q, want open", c)
			}
			id := checkEgressSession(t, h)
			checkNoneSession(t, h)
			checkOpenSession(t, h, cfg.StateDir)
			checkNetworkMetrics(t, h)
			closeAndCheckClean(t, h, cfg.StateDir)

			h = openCheckedHost(t, cfg)
			info, err := h.Session(id)
			if err != nil || info.Network.Mode != environment.NetworkEgress || len(info.Network.Allow) != 1 {
				t.Fatalf("after a restart: network %+v (%v), want the egress policy", info.Network, err)
			}
			e := embeddedEnv(t, h, id)
			fetchOK(t, e, "http://pkg.example/")
			refusedFast(t, e, "http://other.example/")

			// Reopened with a ceiling below the session's mode, the host
			// refuses to start its sandbox rather than widen or narrow it.
			closeAndCheckClean(t, h, cfg.StateDir)
			cfg.NetworkCeiling = environment.NetworkNone
			h = openCheckedHost(t, cfg)
			req, _ := environment.NewToolRequest(callID(), environment.BashParams{Command: "true"})
			_, err = embeddedEnv(t, h, id).ExecuteTool(context.Background(), req, nil)
			if !errors.Is(err, environment.ErrCapabilityNotSupported) || !strings.Contains(err.Error(), "ceiling") {
				t.Errorf("a call on an egress session under ceiling none: %v, want ErrCapabilityNotSupported naming the ceiling", err)
			}
		})
	}
}

// embeddedEnv attaches an environment to session id of h.
func embeddedEnv(t *testing.T, h *embedded.Host, id string) environment.Environment {
	t.Helper()
	e := h.NewEnvironment()
	if err := e.AttachSession(id); err != nil {
		t.Fatal(err)
	}
	return e
}

// checkEgressSession: an egress session allowed pkg.example:80 fetches
// it, fails other names and the neighbour's address at once, and its
// counters show both. It returns the session's id.
func checkEgressSession(t *testing.T, h *embedded.Host) string {
	t.Helper()
	ctx := context.Background()
	e, err := h.CreateSession(ctx, environment.SessionConfig{Network: environment.NetworkPolicy{
		Mode: environment.NetworkEgress, Allow: []string{"pkg.example:80"}}})
	if err != nil {
		t.Fatal(err)
	}
	resp, _ := sh(t, e, "cat /etc/resolv.conf")
	if !strings.Contains(resp.Content, "nameserver 100.") {
		t.Errorf("resolv.conf does not name the DNS filter: %s", resp.Content)
	}
	fetchOK(t, e, "http://pkg.example/")
	if out := refusedFast(t, e, "http://other.example/"); !strings.Contains(out, "bad address") {
		t.Errorf("other.example: %s, want a name error", out)
	}
	refusedFast(t, e, "http://pkg.example:8080/")
	refusedFast(t, e, "http://"+egresstest.InetOther+"/")
	st, err := h.NetworkStats(e.SessionID())
	if err != nil || st.BytesIn == 0 || st.BytesOut == 0 || st.Refused == 0 {
		t.Errorf("NetworkStats: %+v (%v), want bytes both ways and refusals", st, err)
	}
	checkForkNetwork(t, h, e)
	return e.SessionID()
}

// checkForkNetwork: a fork of e keeps its policy unless its config
// names one.
func checkForkNetwork(t *testing.T, h *embedded.Host, e *embedded.Environment) {
	t.Helper()
	ctx := context.Background()
	snap, err := e.TurnComplete(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		asked, want environment.NetworkMode
	}{{"", environment.NetworkEgress}, {environment.NetworkNone, environment.NetworkNone}} {
		f, err := h.Fork(ctx, snap.ID, environment.SessionConfig{Network: environment.NetworkPolicy{Mode: c.asked}})
		if err != nil {
			t.Fatal(err)
		}
		info, err := h.Session(f.SessionID())
		if err != nil || info.Network.Mode != c.want {
			t.Errorf("fork asking %q: network %+v (%v), want mode %s", c.asked, info.Network, err, c.want)
		}
		if c.want == environment.NetworkEgress {
			fetchOK(t, f, "http://pkg.example/")
		}
		if err := f.Destroy(ctx); err != nil {
			t.Error(err)
		}
	}
}

// checkNoneSession: a session of the host's default (none) has loopback
// only and no counters.
func checkNoneSession(t *testing.T, h *embedded.Host) {
	t.Helper()
	ctx := context.Background()
	e, err := h.CreateSession(ctx, environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Destroy(ctx)
	resp, _ := sh(t, e, "cat /proc/net/dev")
	if !strings.Contains(resp.Content, "lo:") || strings.Contains(resp.Content, "eth") {
		t.Errorf("mode none: interfaces %q, want lo only", resp.Content)
	}
	resp, _ = sh(t, e, wget+"http://"+egresstest.InetDNS+"/")
	if resp.ExitCode != 1 {
		t.Errorf("mode none reached the internet: %s", resp.Content)
	}
	if _, err := h.NetworkStats(e.SessionID()); err == nil {
		t.Error("NetworkStats of a none session: no error")
	}
}

// checkOpenSession: an open session reaches the internet's public
// addresses, not its private one; Destroy removes its namespace.
func checkOpenSession(t *testing.T, h *embedded.Host, stateDir string) {
	t.Helper()
	ctx := context.Background()
	e, err := h.CreateSession(ctx, environment.SessionConfig{Network: environment.NetworkPolicy{Mode: environment.NetworkOpen}})
	if err != nil {
		t.Fatal(err)
	}
	fetchOK(t, e, "http://"+egresstest.InetDNS+"/")
	fetchOK(t, e, "http://other.example:8080/")
	refusedFast(t, e, "http://"+egresstest.InetPriv+"/")
	id := e.SessionID()
	if err := e.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h.NetworkStats(id); err == nil {
		t.Error("NetworkStats of a destroyed session: no error")
	}
	bind := filepath.Join(stateDir, "netns", id)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Lstat(bind); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%s still exists 5s after Destroy", bind)
			break
		}
	}
}

// checkNetworkMetrics: the host's totals count what its sessions moved.
func checkNetworkMetrics(t *testing.T, h *embedded.Host) {
	t.Helper()
	mfs, err := h.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()] += m.GetCounter().GetValue()
		}
	}
	for _, name := range []string{"turnbox_network_sent_bytes_total", "turnbox_network_received_bytes_total", "turnbox_network_refused_total"} {
		if got[name] == 0 {
			t.Errorf("metric %s is 0", name)
		}
	}
}

// closeAndCheckClean closes h and wants no firewall table, veth or
// namespace of the host's left.
func closeAndCheckClean(t *testing.T, h *embedded.Host, stateDir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	sum := sha256.Sum256([]byte(stateDir))
	table := "turnbox-" + hex.EncodeToString(sum[:2])
	conn, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ListTableOfFamily(table, nftables.TableFamilyINet); err == nil {
		t.Errorf("table %s left after Close", table)
	}
	dir := filepath.Join(stateDir, "netns")
	sum = sha256.Sum256([]byte(dir))
	alias := "turnbox-netns:" + hex.EncodeToString(sum[:4]) + ":"
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Alias, alias) {
			t.Errorf("veth %s (%s) left after Close", l.Attrs().Name, l.Attrs().Alias)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		t.Errorf("%d namespaces left in %s after Close", len(ents), dir)
	}
}
