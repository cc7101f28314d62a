package egress

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/environment"
)

// fastRefusal is how soon a refused connection must fail.
const fastRefusal = 100 * time.Millisecond

// refusedFast checks that a TCP connection from sb to addr fails at once
// (a reset or an ICMP error, not a timeout).
func refusedFast(t *testing.T, sb *sandbox, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	c, err := sb.dial(ctx, "tcp", addr)
	took := time.Since(start)
	if err == nil {
		c.Close()
		t.Fatalf("connect %s: connected, want refused", addr)
	}
	if took > fastRefusal {
		t.Fatalf("connect %s: %v after %v, want a refusal within %v", addr, err, took, fastRefusal)
	}
}

// echoes checks that a TCP echo at addr answers from sb.
func echoes(t *testing.T, sb *sandbox, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := sb.dial(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("connect %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %s: %q, %v", addr, buf, err)
	}
}

// fetch GETs url from sb and returns the body.
func fetch(t *testing.T, sb *sandbox, url string) string {
	t.Helper()
	resp, err := sb.httpClient().Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// nxdomainFast checks that res answers name with NXDOMAIN at once.
func nxdomainFast(t *testing.T, res *net.Resolver, name string) {
	t.Helper()
	start := time.Now()
	ips, err := res.LookupNetIP(context.Background(), "ip4", name)
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Fatalf("lookup %s: %v %v, want NXDOMAIN", name, ips, err)
	}
	if took := time.Since(start); took > fastRefusal {
		t.Fatalf("lookup %s: NXDOMAIN after %v", name, took)
	}
}

// lookup resolves name through res, which must answer want.
func lookup(t *testing.T, res *net.Resolver, name, want string) {
	t.Helper()
	ips, err := res.LookupNetIP(context.Background(), "ip4", name)
	if err != nil || len(ips) != 1 || ips[0].String() != want {
		t.Fatalf("lookup %s: %v %v, want %s", name, ips, err, want)
	}
}

// settled waits until link's IPv6 addresses are no longer tentative
// (duplicate address detection of the link-local ones takes a second),
// so that what is timed is the refusal, not neighbour discovery.
func settled(t *testing.T, h *netlink.Handle, link netlink.Link) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		addrs, err := h.AddrList(link, netlink.FAMILY_V6)
		must(t, err)
		tentative := false
		for _, a := range addrs {
			tentative = tentative || a.Flags&unix.IFA_F_TENTATIVE != 0
		}
		if !tentative {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: IPv6 addresses still tentative", link.Attrs().Name)
		}
	}
}

func attach(t *testing.T, f *Firewall, sbs ...*sandbox) {
	t.Helper()
	for _, sb := range sbs {
		if err := f.Attach(sb.sess); err != nil {
			t.Fatalf("Attach %s: %v", sb.sess.ID, err)
		}
	}
}

func policy(mode environment.NetworkMode, allow ...string) Session {
	return Session{Policy: environment.NetworkPolicy{Mode: mode, Allow: allow}}
}

// egressEnv is TestEgressPolicy's topology: sb under egress, other
// under open, a service of the host's on every address at hostPort.
type egressEnv struct {
	f         *Firewall
	logs      *logBuffer
	sb, other *sandbox
	hostPort  int
	filter    *net.Resolver // sb's resolver, asking its filter
}

// TestEgressPolicy runs the egress checks in order on one topology
// (later ones rely on what earlier ones resolved).
func TestEgressPolicy(t *testing.T) {
	requireNet(t)
	f, logs := newFirewall(t)
	newInternet(t)
	sb := newSandbox(t, 1, policy(environment.NetworkEgress, "pkg.example:80", "*.cdn.example", "198.51.100.4/32:7", "many.example:443"))
	other := newSandbox(t, 2, policy(environment.NetworkOpen))
	attach(t, f, sb, other)
	hostLn, err := net.Listen("tcp4", "0.0.0.0:0") // the host's own service, every address
	must(t, err)
	defer hostLn.Close()
	hostPort := hostLn.Addr().(*net.TCPAddr).Port
	listen(t, other.ns, "0.0.0.0:7777")
	filter := sb.resolver(sb.sess.HostAddr.String() + ":53")

	e := &egressEnv{f: f, logs: logs, sb: sb, other: other, hostPort: hostPort, filter: filter}
	for _, c := range []struct {
		name string
		fn   func(*testing.T, *egressEnv)
	}{
		{"AllowedName", egressAllowedName},
		{"OtherNameNXDOMAIN", egressOtherNameNXDOMAIN},
		{"LargeAnswer", egressLargeAnswer},
		{"WildcardNotApex", egressWildcardNotApex},
		{"NeighbourLiteral", egressNeighbourLiteral},
		{"PortNotAllowed", egressPortNotAllowed},
		{"Wildcard", egressWildcard},
		{"CIDRAndPort", egressCIDRAndPort},
		{"RawSocket", egressRawSocket},
		{"OtherResolver", egressOtherResolver},
		{"Host", egressHost},
		{"OtherSession", egressOtherSession},
		{"Metadata", egressMetadata},
		{"IPv6", egressIPv6},
		{"SpoofedSource", egressSpoofedSource},
		{"Stats", egressStats},
		{"Logged", egressLogged},
		{"Detach", egressDetach},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, e) })
	}
}

func egressAllowedName(t *testing.T, e *egressEnv) {
	sb := e.sb
	if body := fetch(t, sb, "http://pkg.example/"); !strings.Contains(body, inetDNS) {
		t.Fatalf("body %q", body)
	}
}

func egressOtherNameNXDOMAIN(t *testing.T, e *egressEnv) {
	filter := e.filter
	nxdomainFast(t, filter, "other.example")
}

func egressLargeAnswer(t *testing.T, e *egressEnv) {
	f, sb, filter := e.f, e.sb, e.filter
	// Too big for UDP: the filter truncates, the client asks again
	// over TCP, and every address is admitted.
	ips, err := filter.LookupNetIP(context.Background(), "ip4", "many.example")
	if err != nil || len(ips) != manyCount {
		t.Fatalf("lookup many.example: %d addresses, %v; want %d", len(ips), err, manyCount)
	}
	st, err := f.Stats(sb.sess.ID)
	must(t, err)
	if st.RefusedBy[ReasonDNS] != 1 { // other.example only
		t.Fatalf("refusals: %v", st.RefusedBy)
	}
}

func egressWildcardNotApex(t *testing.T, e *egressEnv) {
	filter := e.filter
	nxdomainFast(t, filter, "cdn.example")
}

func egressNeighbourLiteral(t *testing.T, e *egressEnv) {
	sb := e.sb
	refusedFast(t, sb, inetOther+":80")
}

func egressPortNotAllowed(t *testing.T, e *egressEnv) {
	sb := e.sb
	refusedFast(t, sb, inetDNS+":8080")
}

func egressWildcard(t *testing.T, e *egressEnv) {
	sb := e.sb
	fetch(t, sb, "http://files.cdn.example:8080/")
	fetch(t, sb, "http://"+inetOther+"/") // answered now
}

func egressCIDRAndPort(t *testing.T, e *egressEnv) {
	sb := e.sb
	echoes(t, sb, inetEcho+":7")
	refusedFast(t, sb, inetEcho+":80")
}

func egressRawSocket(t *testing.T, e *egressEnv) {
	sb := e.sb
	// Raw packets meet the same rules: an address admitted on every
	// port (files.cdn.example) answers a ping, one admitted for
	// port 80 only (pkg.example) is refused at once.
	if typ := ping(t, sb, inetOther); typ != ipv4.ICMPTypeEchoReply {
		t.Errorf("ping %s: %v, want an echo reply", inetOther, typ)
	}
	if typ := ping(t, sb, inetDNS); typ != ipv4.ICMPTypeDestinationUnreachable {
		t.Errorf("ping %s: %v, want destination unreachable", inetDNS, typ)
	}
}

func egressOtherResolver(t *testing.T, e *egressEnv) {
	sb := e.sb
	for _, proto := range []string{"udp", "tcp"} {
		direct := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return sb.dial(ctx, proto, inetDNS+":53")
		}}
		nxdomainFast(t, direct, "other.example") // the upstream would answer it
		lookup(t, direct, "pkg.example", inetDNS)
	}
}

func egressHost(t *testing.T, e *egressEnv) {
	sb, other, hostPort := e.sb, e.other, e.hostPort
	for _, a := range []string{sb.sess.HostAddr.String(), inetHost, other.sess.HostAddr.String()} {
		refusedFast(t, sb, net.JoinHostPort(a, strconv.Itoa(hostPort)))
	}
}

func egressOtherSession(t *testing.T, e *egressEnv) {
	sb, other := e.sb, e.other
	refusedFast(t, sb, other.sess.SandboxAddr.String()+":7777")
	refusedFast(t, other, sb.sess.SandboxAddr.String()+":7777")
}

func egressMetadata(t *testing.T, e *egressEnv) {
	sb, other := e.sb, e.other
	refusedFast(t, sb, metadata+":80")
	refusedFast(t, other, metadata+":80")
}

func egressIPv6(t *testing.T, e *egressEnv) {
	sb, hostPort := e.sb, e.hostPort
	host, err := netlink.LinkByName(sb.sess.HostIface)
	must(t, err)
	root, err := netlink.NewHandle()
	must(t, err)
	defer root.Close()
	addAddrs(t, root, host, []string{"2001:db8:1::1/64"})
	h := nsHandle(t, sb.ns)
	eth0, err := h.LinkByName("eth0")
	must(t, err)
	addAddrs(t, h, eth0, []string{"2001:db8:1::2/64"})
	route(t, h, "default", "2001:db8:1::1")
	settled(t, root, host)
	settled(t, h, eth0)
	refusedFast(t, sb, net.JoinHostPort("2001:db8:1::1", strconv.Itoa(hostPort)))
	refusedFast(t, sb, "[2001:db8:2::5]:80")
}

func egressSpoofedSource(t *testing.T, e *egressEnv) {
	f, sb, other := e.f, e.sb, e.other
	// The sandbox takes the other session's address as its own and
	// sends from it: dropped (replies would go to the other sandbox).
	h := nsHandle(t, sb.ns)
	eth0, err := h.LinkByName("eth0")
	must(t, err)
	spoofed := other.sess.SandboxAddr.String()
	addAddrs(t, h, eth0, []string{spoofed + "/32"})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = inNS(sb.ns, func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(spoofed)}}
		c, err := d.DialContext(ctx, "tcp4", inetEcho+":7")
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Fatal("connected from a spoofed source address")
	}
	if st, _ := f.Stats(sb.sess.ID); st.RefusedBy[ReasonSpoof] == 0 {
		t.Fatalf("spoofed packets not dropped as such: %+v", st.RefusedBy)
	}
}

func egressStats(t *testing.T, e *egressEnv) {
	f, sb := e.f, e.sb
	st, err := f.Stats(sb.sess.ID)
	must(t, err)
	if st.BytesOut == 0 || st.BytesIn == 0 || st.PacketsOut == 0 {
		t.Errorf("no traffic counted: %+v", st)
	}
	for _, r := range []string{ReasonPolicy, ReasonHost, ReasonSession, ReasonReserved, ReasonIPv6, ReasonSpoof, ReasonDNS} {
		if st.RefusedBy[r] == 0 {
			t.Errorf("refusals for %s not counted: %+v", r, st.RefusedBy)
		}
	}
	if _, err := f.Stats("nope"); !errors.Is(err, ErrUnknownSession) {
		t.Errorf("Stats(unknown): %v", err)
	}
}

func egressLogged(t *testing.T, e *egressEnv) {
	logs := e.logs
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(logs.String(), "reason="+ReasonPolicy) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	for _, want := range []string{"reason=" + ReasonPolicy, "name=other.example", "session=sb1"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

func egressDetach(t *testing.T, e *egressEnv) {
	f, sb := e.f, e.sb
	must(t, f.Detach(sb.sess.ID))
	refusedFast(t, sb, inetEcho+":7") // an interface no session owns is refused
	if err := f.Detach(sb.sess.ID); !errors.Is(err, ErrUnknownSession) {
		t.Errorf("second Detach: %v", err)
	}
}

func TestOpenPolicy(t *testing.T) {
	requireNet(t)
	f, _ := newFirewall(t)
	newInternet(t)
	sb := newSandbox(t, 3, policy(environment.NetworkOpen))
	attach(t, f, sb)
	filter := sb.resolver(sb.sess.HostAddr.String() + ":53")

	fetch(t, sb, "http://"+inetOther+"/")
	fetch(t, sb, "http://other.example:8080/") // every name is answered
	lookup(t, filter, "private.example", inetPriv)
	refusedFast(t, sb, inetPriv+":80")
	refusedFast(t, sb, metadata+":80")

	update := func(allow ...string) {
		t.Helper()
		s := sb.sess
		s.Policy.Allow = allow
		must(t, f.Update(s))
	}
	update("10.99.0.2/32:80", "169.254.169.254")
	fetch(t, sb, "http://"+inetPriv+"/")
	refusedFast(t, sb, inetPriv+":8080")
	refusedFast(t, sb, metadata+":80") // reserved: whatever the rules say

	// private.example was answered above: an update naming it admits
	// that address again at once.
	update("private.example")
	fetch(t, sb, "http://"+inetPriv+":8080/")
	update("intranet.example")
	refusedFast(t, sb, inetPriv+":80") // not answered for that name yet
	fetch(t, sb, "http://intranet.example:8080/")
	update("intranet.example", "pkg.example") // answered addresses survive an update
	fetch(t, sb, "http://"+inetPriv+":8080/")
	update()
	refusedFast(t, sb, inetPriv+":8080")
}

func TestNonePolicy(t *testing.T) {
	requireNet(t)
	f, _ := newFirewall(t)
	newInternet(t)
	sb := newSandbox(t, 4, policy(environment.NetworkNone))
	attach(t, f, sb)
	nxdomainFast(t, sb.resolver(sb.sess.HostAddr.String()+":53"), "pkg.example")
	refusedFast(t, sb, inetDNS+":80")
	refusedFast(t, sb, sb.sess.HostAddr.String()+":22")

	// The host may still connect into the sandbox (exposed ports).
	ln := listen(t, sb.ns, "0.0.0.0:7070")
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = io.Copy(c, c)
			c.Close()
		}
	}()
	c, err := net.DialTimeout("tcp4", sb.sess.SandboxAddr.String()+":7070", 2*time.Second)
	must(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	_, err = c.Write([]byte("hi"))
	must(t, err)
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("host to sandbox: %v", err)
	}
}

func TestInvalidSession(t *testing.T) {
	requireNet(t)
	f, _ := newFirewall(t)
	good := Session{ID: "ok", HostIface: testPrefix + "x1", HostAddr: netip.MustParseAddr("100.96.250.241"),
		SandboxAddr: netip.MustParseAddr("100.96.250.242"), Policy: environment.NetworkPolicy{Mode: environment.NetworkEgress}}
	before := countChains(t, f)
	for name, mut := range map[string]func(*Session){
		"id":    func(s *Session) { s.ID = "../x" },
		"iface": func(s *Session) { s.HostIface = "eth0" },
		"long":  func(s *Session) { s.HostIface = testPrefix + "0123456789ab" },
		"ipv6":  func(s *Session) { s.SandboxAddr = netip.MustParseAddr("fd00::2") },
		"same":  func(s *Session) { s.SandboxAddr = s.HostAddr },
		"mode":  func(s *Session) { s.Policy.Mode = "wide" },
		"rule":  func(s *Session) { s.Policy.Allow = []string{"bad host!"} },
		"noneAll": func(s *Session) {
			s.Policy = environment.NetworkPolicy{Mode: environment.NetworkNone, Allow: []string{"a.example"}}
		},
	} {
		s := good
		mut(&s)
		if err := f.Attach(s); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("%s: Attach = %v, want ErrInvalidArgument", name, err)
		}
	}
	if after := countChains(t, f); after != before {
		t.Fatalf("rejected sessions changed the table: %d chains, was %d", after, before)
	}
	must(t, f.Attach(good))
	dup := good
	dup.ID = "other"
	if err := f.Attach(dup); !errors.Is(err, environment.ErrAlreadyExists) {
		t.Errorf("duplicate interface: %v", err)
	}
	bad := good
	bad.Policy.Allow = []string{"bad host!"}
	if err := f.Update(bad); !errors.Is(err, environment.ErrInvalidArgument) {
		t.Errorf("Update with a bad rule: %v", err)
	}
	if err := f.Update(Session{ID: "nope"}); !errors.Is(err, ErrUnknownSession) {
		t.Errorf("Update unknown: %v", err)
	}
}

// countChains counts the chains of f's table.
func countChains(t *testing.T, f *Firewall) int {
	t.Helper()
	chains, err := f.query.ListChainsOfTableFamily(nftables.TableFamilyINet)
	must(t, err)
	n := 0
	for _, c := range chains {
		if c.Table.Name == f.cfg.Table {
			n++
		}
	}
	return n
}

// tableExists reports whether an inet table of that name exists.
func tableExists(t *testing.T, name string) bool {
	t.Helper()
	c, err := nftables.New()
	must(t, err)
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	must(t, err)
	for _, tb := range tables {
		if tb.Name == name {
			return true
		}
	}
	return false
}

// ping sends one ICMP echo from a raw socket in sb to addr and returns
// the type of what came back (nil: nothing within a second).
func ping(t *testing.T, sb *sandbox, addr string) icmp.Type {
	t.Helper()
	var c *icmp.PacketConn
	must(t, inNS(sb.ns, func() (err error) { c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0"); return err }))
	defer c.Close()
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 7, Seq: 1, Data: []byte("turnbox")}}
	b, err := msg.Marshal(nil)
	must(t, err)
	dst := &net.IPAddr{IP: net.ParseIP(addr)}
	_, err = c.WriteTo(b, dst)
	must(t, err)
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return nil
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type == ipv4.ICMPTypeEcho {
			continue
		}
		if m.Type == ipv4.ICMPTypeEchoReply && from.String() != addr {
			continue
		}
		return m.Type
	}
}

// Rename hands an attached veth to another ID (a pooled sandbox's,
// attached ahead under its pool name with policy none, to the session
// that takes it): Stats, Update and Detach then answer to the new ID
// only, and its filtering follows the Update. Bad renames change
// nothing.
func TestRename(t *testing.T) {
	requireNet(t)
	f, _ := newFirewall(t)
	newInternet(t)
	waiting := policy(environment.NetworkNone)
	waiting.ID = "pool-5"
	sb := newSandbox(t, 5, waiting)
	attach(t, f, sb)
	refusedFast(t, sb, inetEcho+":7")
	for _, c := range []struct {
		old, new string
		want     error
	}{
		{"pool-x", "sb5", ErrUnknownSession},
		{"pool-5", "pool-5", environment.ErrAlreadyExists},
		{"pool-5", "bad name", environment.ErrInvalidArgument},
	} {
		if err := f.Rename(c.old, c.new); !errors.Is(err, c.want) {
			t.Errorf("Rename(%q, %q): %v, want %v", c.old, c.new, err, c.want)
		}
	}
	must(t, f.Rename("pool-5", "sb5"))
	open := policy(environment.NetworkOpen)
	open.ID = "sb5"
	must(t, f.Update(open))
	echoes(t, sb, inetEcho+":7")
	if st, err := f.Stats("sb5"); err != nil || st.BytesOut == 0 || st.Refused == 0 {
		t.Errorf("Stats after Rename: %+v, %v; want the bytes and the refusal before it", st, err)
	}
	if _, err := f.Stats("pool-5"); !errors.Is(err, ErrUnknownSession) {
		t.Errorf("Stats of the old ID: %v, want ErrUnknownSession", err)
	}
	must(t, f.Detach("sb5"))
	refusedFast(t, sb, inetEcho+":7")
}
