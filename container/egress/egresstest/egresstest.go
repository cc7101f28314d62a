// Package egresstest builds the network the egress tests (and the
// embedded host's network tests) run against: an "internet" network
// namespace reached from the root namespace through a veth, with TEST-NET-2
// addresses (198.51.100.0/24) and one private-looking one, holding a DNS
// server, HTTP servers and a TCP echo. Nothing outside this machine is
// ever addressed. Its functions need root; they fail the test on error
// and undo what they made at its end.
package egresstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The test topology: an "internet" namespace reached from the root
// namespace through a veth (198.51.100.0/24, TEST-NET-2, plus 10.99.0.2
// as a private-looking server), holding a DNS server, HTTP servers and a
// TCP echo; and sandboxes, each a namespace whose eth0 is the peer of a
// host-side veth named TestPrefix+"...". Nothing outside this machine is
// ever addressed.
const (
	TestPrefix = "tbe-" // not "tb-": other tests on the host own those
	InetHost   = "198.51.100.1"
	InetDNS    = "198.51.100.2" // also serves HTTP, echo
	InetOther  = "198.51.100.3" // same /24, answered for cdn names only
	InetEcho   = "198.51.100.4"
	InetPriv   = "10.99.0.2"
	// Metadata is the cloud Metadata address; the internet namespace
	// holds it too (routed there from the root namespace for the test's
	// life), so a firewall that failed to refuse it would be caught, and
	// would not reach a real one.
	Metadata = "169.254.169.254"
)

// Names are what the internet's DNS server answers.
var Names = map[string]string{
	"pkg.example.":       InetDNS,
	"files.cdn.example.": InetOther,
	"other.example.":     InetOther,
	"private.example.":   InetPriv,
	"intranet.example.":  InetPriv,
	ManyName:             "",
}

// ManyName has ManyCount addresses: an answer too big for a UDP reply.
const ManyName, ManyCount = "many.example.", 100

// InNS runs fn on a thread inside ns; the thread is discarded after, so
// no other goroutine ever runs in ns by accident. Sockets fn opens stay
// in ns and can be used from any goroutine.
func InNS(ns netns.NsHandle, fn func() error) error {
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

// NewNS makes an anonymous network namespace with lo up, closed at the
// end of the test.
func NewNS(t testing.TB) netns.NsHandle {
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
	h := NSHandle(t, ns)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return ns
}

// NSHandle is a netlink handle on ns.
func NSHandle(t testing.TB, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// RandName is prefix and 6 random hex digits.
func RandName(prefix string) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// VethTo makes a veth pair: hostName in the root namespace with
// hostAddrs, its peer in ns named eth0 with nsAddrs; both up. The pair
// is deleted at the end of the test.
func VethTo(t testing.TB, ns netns.NsHandle, hostName string, hostAddrs, nsAddrs []string) {
	t.Helper()
	peer := RandName("tpe")
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
	h := NSHandle(t, ns)
	inner, err := h.LinkByName(peer)
	if err != nil {
		t.Fatal(err)
	}
	Must(t, h.LinkSetName(inner, "eth0"))
	AddAddrs(t, h, inner, nsAddrs)
	Must(t, h.LinkSetUp(inner))
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		t.Fatal(err)
	}
	root, err := netlink.NewHandle()
	Must(t, err)
	defer root.Close()
	AddAddrs(t, root, host, hostAddrs)
	Must(t, netlink.LinkSetUp(host))
}

// AddAddrs adds CIDR addresses to link (IPv6 ones without DAD).
func AddAddrs(t testing.TB, h *netlink.Handle, link netlink.Link, addrs []string) {
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

// Must fails the test on a non-nil err.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Route adds dst via gw in h's namespace.
func Route(t testing.TB, h *netlink.Handle, dst, gw string) {
	t.Helper()
	r := &netlink.Route{Gw: net.ParseIP(gw)}
	if dst != "default" {
		_, n, err := net.ParseCIDR(dst)
		Must(t, err)
		r.Dst = n
	}
	if err := h.RouteAdd(r); err != nil {
		t.Fatalf("route %s via %s: %v", dst, gw, err)
	}
}

// Internet is the test's internet namespace.
type Internet struct {
	// NS is the internet namespace.
	NS netns.NsHandle
}

// NewInternet builds the internet namespace and its servers: DNS on
// InetDNS:53 (UDP and TCP), HTTP on :80 and :8080 of every address (the
// body names the address asked for; /big?n=N sends N bytes), TCP echo on
// :7.
//
// The internet's addresses and routes are fixed, so one exists at a time
// on the machine: NewInternet waits (up to lockWait) for the internet of
// any other test process (the egress and embedded suites run at once in
// CI) to be torn down.
func NewInternet(t testing.TB) *Internet {
	t.Helper()
	lockMachine(t)
	ns := NewNS(t)
	veth := RandName("tbi")
	VethTo(t, ns, veth, []string{InetHost + "/24"},
		[]string{InetDNS + "/24", InetOther + "/24", InetEcho + "/24", InetPriv + "/32", Metadata + "/32"})
	h := NSHandle(t, ns)
	Route(t, h, "default", InetHost)
	link, err := netlink.LinkByName(veth)
	Must(t, err)
	for _, a := range []string{InetPriv, Metadata} {
		_, dst, _ := net.ParseCIDR(a + "/32")
		Must(t, netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Gw: net.ParseIP(InetDNS)}))
	}
	in := &Internet{NS: ns}
	in.serveDNS(t)
	for _, port := range []string{"80", "8080"} {
		in.serveHTTP(t, "0.0.0.0:"+port)
	}
	in.serveEcho(t, "0.0.0.0:7")
	return in
}

// Listen opens a TCP listener on addr inside ns, closed at the end.
func Listen(t testing.TB, ns netns.NsHandle, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	Must(t, InNS(ns, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }))
	t.Cleanup(func() { ln.Close() })
	return ln
}

func (in *Internet) serveDNS(t testing.TB) {
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg).SetReply(q)
		name := strings.ToLower(q.Question[0].Name)
		a, ok := Names[name]
		switch {
		case !ok:
			m.Rcode = dns.RcodeNameError
		case name == ManyName && q.Question[0].Qtype == dns.TypeA:
			for i := range ManyCount {
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
	Must(t, InNS(in.NS, func() (err error) { pc, err = net.ListenPacket("udp4", InetDNS+":53"); return err }))
	ln := Listen(t, in.NS, InetDNS+":53")
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
		go func() { _ = srv.ActivateAndServe() }()
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
}

func (in *Internet) serveHTTP(t testing.TB, addr string) {
	ln := Listen(t, in.NS, addr)
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

func (in *Internet) serveEcho(t testing.TB, addr string) {
	ln := Listen(t, in.NS, addr)
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

// lockPath is the lock file that serializes test internets across
// processes; lockWait bounds the wait for it.
const (
	lockPath = "/run/lock/turnbox-egresstest.lock"
	lockWait = 5 * time.Minute
)

// lockMachine takes the machine-wide internet lock until t ends (its
// clean-up, registered first, runs after the internet's teardown).
func lockMachine(t testing.TB) {
	t.Helper()
	Must(t, os.MkdirAll(filepath.Dir(lockPath), 0o755))
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	Must(t, err)
	deadline := time.Now().Add(lockWait)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if err != syscall.EWOULDBLOCK || time.Now().After(deadline) {
			f.Close()
			t.Fatalf("egresstest: the machine's test internet lock %s: %v", lockPath, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() { f.Close() })
}
