package egress

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/turnbox/turnbox/internal/testenv"
)

// The test topology: an "internet" namespace reached from the root
// namespace through a veth (198.51.100.0/24, TEST-NET-2, plus 10.99.0.2
// as a private-looking server), holding a DNS server, HTTP servers and a
// TCP echo; and sandboxes, each a namespace whose eth0 is the peer of a
// host-side veth named testPrefix+"...". Nothing outside this machine is
// ever addressed.
const (
	testPrefix = "tbe-" // not "tb-": other tests on the host own those
	inetHost   = "198.51.100.1"
	inetDNS    = "198.51.100.2" // also serves HTTP, echo
	inetOther  = "198.51.100.3" // same /24, answered for cdn names only
	inetEcho   = "198.51.100.4"
	inetPriv   = "10.99.0.2"
	// metadata is the cloud metadata address; the internet namespace
	// holds it too (routed there from the root namespace for the test's
	// life), so a firewall that failed to refuse it would be caught, and
	// would not reach a real one.
	metadata = "169.254.169.254"
)

// testNames are what the internet's DNS server answers.
var testNames = map[string]string{
	"pkg.example.":       inetDNS,
	"files.cdn.example.": inetOther,
	"other.example.":     inetOther,
	"private.example.":   inetPriv,
	"intranet.example.":  inetPriv,
	manyName:             "",
}

// manyName has manyCount addresses: an answer too big for a UDP reply.
const manyName, manyCount = "many.example.", 100

// inNS runs fn on a thread inside ns; the thread is discarded after, so
// no other goroutine ever runs in ns by accident. Sockets fn opens stay
// in ns and can be used from any goroutine.
func inNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// newNS makes an anonymous network namespace with lo up, closed at the
// end of the test.
func newNS(t testing.TB) netns.NsHandle {
	t.Helper()
	var ns netns.NsHandle
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		var err error
		ns, err = netns.New() // switches this (discarded) thread into it
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	h := nsHandle(t, ns)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return ns
}

// nsHandle is a netlink handle on ns.
func nsHandle(t testing.TB, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// randName is prefix and 6 random hex digits.
func randName(prefix string) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// vethTo makes a veth pair: hostName in the root namespace with
// hostAddrs, its peer in ns named eth0 with nsAddrs; both up. The pair
// is deleted at the end of the test.
func vethTo(t testing.TB, ns netns.NsHandle, hostName string, hostAddrs, nsAddrs []string) {
	t.Helper()
	peer := randName("tpe")
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName}, PeerName: peer}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("veth %s: %v", hostName, err)
	}
	t.Cleanup(func() { _ = netlink.LinkDel(veth) })
	p, err := netlink.LinkByName(peer)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetNsFd(p, int(ns)); err != nil {
		t.Fatal(err)
	}
	h := nsHandle(t, ns)
	inner, err := h.LinkByName(peer)
	if err != nil {
		t.Fatal(err)
	}
	must(t, h.LinkSetName(inner, "eth0"))
	addAddrs(t, h, inner, nsAddrs)
	must(t, h.LinkSetUp(inner))
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		t.Fatal(err)
	}
	root, err := netlink.NewHandle()
	must(t, err)
	defer root.Close()
	addAddrs(t, root, host, hostAddrs)
	must(t, netlink.LinkSetUp(host))
}

// addAddrs adds CIDR addresses to link (IPv6 ones without DAD).
func addAddrs(t testing.TB, h *netlink.Handle, link netlink.Link, addrs []string) {
	t.Helper()
	for _, a := range addrs {
		addr, err := netlink.ParseAddr(a)
		if err != nil {
			t.Fatal(err)
		}
		if addr.IP.To4() == nil {
			addr.Flags = 0x02 // IFA_F_NODAD
		}
		if err := h.AddrAdd(link, addr); err != nil {
			t.Fatalf("addr %s: %v", a, err)
		}
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// route adds dst via gw in h's namespace.
func route(t testing.TB, h *netlink.Handle, dst, gw string) {
	t.Helper()
	r := &netlink.Route{Gw: net.ParseIP(gw)}
	if dst != "default" {
		_, n, err := net.ParseCIDR(dst)
		must(t, err)
		r.Dst = n
	}
	if err := h.RouteAdd(r); err != nil {
		t.Fatalf("route %s via %s: %v", dst, gw, err)
	}
}

// internet is the test's internet namespace.
type internet struct {
	ns netns.NsHandle
}

// newInternet builds the internet namespace and its servers: DNS on
// inetDNS:53 (UDP and TCP), HTTP on :80 and :8080 of every address (the
// body names the address asked for; /big?n=N sends N bytes), TCP echo on
// :7.
func newInternet(t testing.TB) *internet {
	t.Helper()
	ns := newNS(t)
	veth := randName("tbi")
	vethTo(t, ns, veth, []string{inetHost + "/24"},
		[]string{inetDNS + "/24", inetOther + "/24", inetEcho + "/24", inetPriv + "/32", metadata + "/32"})
	h := nsHandle(t, ns)
	route(t, h, "default", inetHost)
	link, err := netlink.LinkByName(veth)
	must(t, err)
	for _, a := range []string{inetPriv, metadata} {
		_, dst, _ := net.ParseCIDR(a + "/32")
		must(t, netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Gw: net.ParseIP(inetDNS)}))
	}
	in := &internet{ns: ns}
	in.serveDNS(t)
	for _, port := range []string{"80", "8080"} {
		in.serveHTTP(t, "0.0.0.0:"+port)
	}
	in.serveEcho(t, "0.0.0.0:7")
	return in
}

// listen opens a TCP listener on addr inside ns, closed at the end.
func listen(t testing.TB, ns netns.NsHandle, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	must(t, inNS(ns, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }))
	t.Cleanup(func() { ln.Close() })
	return ln
}

func (in *internet) serveDNS(t testing.TB) {
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg).SetReply(q)
		name := strings.ToLower(q.Question[0].Name)
		a, ok := testNames[name]
		switch {
		case !ok:
			m.Rcode = dns.RcodeNameError
		case name == manyName && q.Question[0].Qtype == dns.TypeA:
			for i := range manyCount {
				rr, _ := dns.NewRR(fmt.Sprintf("%s 60 IN A 198.51.100.%d", name, 100+i))
				m.Answer = append(m.Answer, rr)
			}
		case q.Question[0].Qtype == dns.TypeA:
			rr, _ := dns.NewRR(fmt.Sprintf("%s 60 IN A %s", name, a))
			m.Answer = append(m.Answer, rr)
		case q.Question[0].Qtype == dns.TypeAAAA:
			rr, _ := dns.NewRR(fmt.Sprintf("%s 60 IN AAAA 2001:db8::5", name))
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	})
	var pc net.PacketConn
	must(t, inNS(in.ns, func() (err error) { pc, err = net.ListenPacket("udp4", inetDNS+":53"); return err }))
	ln := listen(t, in.ns, inetDNS+":53")
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
		go func() { _ = srv.ActivateAndServe() }()
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
}

func (in *internet) serveHTTP(t testing.TB, addr string) {
	ln := listen(t, in.ns, addr)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			var n int64
			fmt.Sscan(r.URL.Query().Get("n"), &n)
			w.Header().Set("Content-Length", fmt.Sprint(n))
			buf := make([]byte, 256<<10)
			for n > 0 {
				k, err := w.Write(buf[:min(int64(len(buf)), n)])
				if err != nil {
					return
				}
				n -= int64(k)
			}
			return
		}
		fmt.Fprintf(w, "hello from %s", r.Context().Value(http.LocalAddrContextKey))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
}

func (in *internet) serveEcho(t testing.TB, addr string) {
	ln := listen(t, in.ns, addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
}

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
	logs := &logBuffer{}
	f, err := New(context.Background(), Config{
		Logger:          slog.New(slog.NewTextHandler(logs, nil)),
		Upstream:        []netip.AddrPort{netip.MustParseAddrPort(inetDNS + ":53")},
		Table:           randName("tbtest"),
		InterfacePrefix: prefix,
	})
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
