package egress

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/turnbox/turnbox/container/egress/egresstest"
	"github.com/turnbox/turnbox/internal/testenv"
)

// The test topology is egresstest's (see there); these are its names in
// this package's tests.
const (
	testPrefix = egresstest.TestPrefix
	inetHost   = egresstest.InetHost
	inetDNS    = egresstest.InetDNS
	inetOther  = egresstest.InetOther
	inetEcho   = egresstest.InetEcho
	inetPriv   = egresstest.InetPriv
	metadata   = egresstest.Metadata
	manyName   = egresstest.ManyName
	manyCount  = egresstest.ManyCount
)

var (
	inNS        = egresstest.InNS
	newNS       = egresstest.NewNS
	nsHandle    = egresstest.NSHandle
	randName    = egresstest.RandName
	vethTo      = egresstest.VethTo
	addAddrs    = egresstest.AddAddrs
	must        = egresstest.Must
	route       = egresstest.Route
	listen      = egresstest.Listen
	newInternet = egresstest.NewInternet
)

// sandbox is a test sandbox: its namespace and its Session.
type sandbox struct {
	ns   netns.NsHandle
	sess Session
}

// newSandbox builds sandbox number n (1-60): a namespace whose eth0 is
// 100.96.250.(4n+2)/30, gateway 100.96.250.(4n+1) on the host-side veth.
func newSandbox(t testing.TB, n int, policy Session) *sandbox {
	t.Helper()
	return newSandboxPrefix(t, n, testPrefix, policy)
}

// newSandboxPrefix is newSandbox with a host-side veth named prefix+"...".
func newSandboxPrefix(t testing.TB, n int, prefix string, policy Session) *sandbox {
	t.Helper()
	ns := newNS(t)
	host := netip.AddrFrom4([4]byte{100, 96, 250, byte(4*n + 1)})
	sb := netip.AddrFrom4([4]byte{100, 96, 250, byte(4*n + 2)})
	iface := randName(prefix)
	vethTo(t, ns, iface, []string{host.String() + "/30"}, []string{sb.String() + "/30"})
	route(t, nsHandle(t, ns), "default", host.String())
	s := policy
	s.HostIface, s.HostAddr, s.SandboxAddr = iface, host, sb
	if s.ID == "" {
		s.ID = fmt.Sprintf("sb%d", n)
	}
	return &sandbox{ns: ns, sess: s}
}

// dial connects from inside the sandbox.
func (s *sandbox) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNS(s.ns, func() (err error) {
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// resolver is a Go resolver inside the sandbox that sends every question
// to server (the sandbox's resolv.conf is the host's: ignore it).
func (s *sandbox) resolver(server string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return s.dial(ctx, network, server)
	}}
}

// httpClient fetches from inside the sandbox, resolving through the
// filter (the sandbox's gateway).
func (s *sandbox) httpClient() *http.Client {
	res := s.resolver(netip.AddrPortFrom(s.sess.HostAddr, 53).String())
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if _, err := netip.ParseAddr(host); err != nil {
			ips, err := res.LookupNetIP(ctx, "ip4", host)
			if err != nil {
				return nil, err
			}
			host = ips[0].String()
		}
		return s.dial(ctx, "tcp4", net.JoinHostPort(host, port))
	}}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// requireNet skips unless the test can build namespaces and nftables.
func requireNet(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
}

// newFirewall makes a Firewall on a table of the test's own, closed at
// the end.
func newFirewall(t testing.TB) (*Firewall, *logBuffer) {
	t.Helper()
	return newFirewallPrefix(t, testPrefix)
}

// newFirewallPrefix is newFirewall for interfaces named prefix+"...".
func newFirewallPrefix(t testing.TB, prefix string) (*Firewall, *logBuffer) {
	t.Helper()
	return newFirewallConfig(t, prefix, nil)
}

// newFirewallConfig is newFirewallPrefix with edit applied to the
// Config (if not nil).
func newFirewallConfig(t testing.TB, prefix string, edit func(*Config)) (*Firewall, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	cfg := Config{
		Logger:          slog.New(slog.NewTextHandler(logs, nil)),
		Upstream:        []netip.AddrPort{netip.MustParseAddrPort(inetDNS + ":53")},
		Table:           randName("tbtest"),
		InterfacePrefix: prefix,
	}
	if edit != nil {
		edit(&cfg)
	}
	f, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return f, logs
}

// logBuffer collects log output safely across goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
