package netns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/internal/testenv"
)

// newManager returns a Manager on a fresh Dir, reaped at the test's end.
func newManager(t testing.TB) *Manager {
	t.Helper()
	testenv.RequireRoot(t)
	m, err := New(Config{Dir: filepath.Join(t.TempDir(), "netns")})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Reap(context.Background()); err != nil {
			t.Errorf("Reap: %v", err)
		}
		m.Close()
	})
	return m
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// inLink runs fn on a thread inside l's namespace.
func inLink(t *testing.T, l *Link, fn func() error) {
	t.Helper()
	h, err := netns.GetFromPath(l.NetNS)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := inNS(h, fn); err != nil {
		t.Fatal(err)
	}
}

func readSysctl(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestCreateDestroy(t *testing.T) {
	m := newManager(t)
	ctx := ctxT(t)
	l, err := m.Create(ctx, "sess-1")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if len(l.HostIface) > 15 || !strings.HasPrefix(l.HostIface, "tb-") || l.Prefix.Bits() != 30 ||
		!DefaultSubnet.Contains(l.HostAddr) || l.HostAddr != l.Prefix.Addr().Next() || l.SandboxAddr != l.HostAddr.Next() {
		t.Fatalf("link %+v", l)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(l.NetNS, &fs); err != nil || fs.Type != unix.NSFS_MAGIC {
		t.Fatalf("%s is not a namespace bind mount: %v %x", l.NetNS, err, fs.Type)
	}
	hl, err := netlink.LinkByName(l.HostIface)
	if err != nil {
		t.Fatalf("host side: %v", err)
	}
	addrs, _ := netlink.AddrList(hl, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != fmt.Sprintf("%s/30", l.HostAddr) {
		t.Errorf("host side addresses %v", addrs)
	}
	if got := readSysctl(t, "/proc/sys/net/ipv4/conf/"+l.HostIface+"/rp_filter"); got != "1" {
		t.Errorf("rp_filter %s", got)
	}
	if got := readSysctl(t, "/proc/sys/net/ipv4/conf/"+l.HostIface+"/proxy_arp"); got != "0" {
		t.Errorf("proxy_arp %s", got)
	}
	inLink(t, l, func() error {
		names := map[string]bool{}
		links, _ := netlink.LinkList()
		for _, x := range links {
			names[x.Attrs().Name] = x.Attrs().Flags&net.FlagUp != 0
		}
		if len(names) != 2 || !names["lo"] || !names["eth0"] {
			t.Errorf("interfaces inside (name: up) %v", names)
		}
		routes, _ := netlink.RouteList(nil, netlink.FAMILY_V4)
		def := false
		for _, r := range routes {
			def = def || (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.String() == l.HostAddr.String()
		}
		if !def {
			t.Errorf("no default route via %s: %v", l.HostAddr, routes)
		}
		if got := readSysctl(t, "/proc/sys/net/ipv6/conf/all/disable_ipv6"); got != "1" {
			t.Errorf("IPv6 on inside: disable_ipv6=%s", got)
		}
		return nil
	})
	if err := container.CheckNetNS(l.NetNS); err != nil {
		t.Errorf("CheckNetNS refuses a Link's namespace: %v", err)
	}
	if got := m.List(); len(got) != 1 || got[0] != *l {
		t.Errorf("List %v", got)
	}
	if _, err := m.Create(ctx, "sess-1"); !errors.Is(err, os.ErrExist) {
		t.Errorf("second Create: %v, want ErrExist", err)
	}
	if err := m.Destroy(ctx, "sess-1"); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if _, err := netlink.LinkByName(l.HostIface); err == nil {
		t.Errorf("host side %s still there", l.HostIface)
	}
	if _, err := os.Lstat(l.NetNS); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bind mount file: %v", err)
	}
	if err := m.Destroy(ctx, "sess-1"); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
	if got := m.List(); len(got) != 0 {
		t.Errorf("List after Destroy %v", got)
	}
}

// TestReachability: the sandbox side reaches a server on HostAddr, and
// the host reaches a server on SandboxAddr.
func TestReachability(t *testing.T) {
	m := newManager(t)
	l, err := m.Create(ctxT(t), "reach")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", net.JoinHostPort(l.HostAddr.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go echo(ln)
	var inner net.Listener
	inLink(t, l, func() error {
		if err := roundTrip(ln.Addr().String()); err != nil {
			t.Errorf("sandbox -> host side: %v", err)
		}
		var err error
		inner, err = net.Listen("tcp4", net.JoinHostPort(l.SandboxAddr.String(), "0"))
		return err
	})
	defer inner.Close()
	go echo(inner)
	if err := roundTrip(inner.Addr().String()); err != nil {
		t.Errorf("host -> sandbox: %v", err)
	}
}

func echo(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() { io.Copy(c, c); c.Close() }()
	}
}

func roundTrip(addr string) error {
	c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping\n" {
		return fmt.Errorf("echo %q: %v", b, err)
	}
	return nil
}

func TestConcurrentCreatesDistinct(t *testing.T) {
	m := newManager(t)
	other := newManager(t) // another Dir: stands for another process
	ctx := ctxT(t)
	const n = 12
	links := make([]*Link, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			mm := m
			if i%3 == 0 {
				mm = other
			}
			l, err := mm.Create(ctx, fmt.Sprintf("c%d", i))
			if err != nil {
				t.Errorf("Create %d: %v", i, err)
			}
			links[i] = l
		})
	}
	wg.Wait()
	prefixes, names := map[netip.Prefix]string{}, map[string]string{}
	for i, l := range links {
		if l == nil {
			continue
		}
		if p, dup := prefixes[l.Prefix]; dup {
			t.Errorf("c%d and %s share %s", i, p, l.Prefix)
		}
		if p, dup := names[l.HostIface]; dup {
			t.Errorf("c%d and %s share %s", i, p, l.HostIface)
		}
		prefixes[l.Prefix], names[l.HostIface] = l.ID, l.ID
	}
	if len(m.List())+len(other.List()) != n {
		t.Errorf("List: %d + %d", len(m.List()), len(other.List()))
	}
}

func TestNameCollision(t *testing.T) {
	m := newManager(t)
	taken := ifaceName(DefaultIfacePrefix, "clash", 0)
	d := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: taken}, PeerName: "tbtest-peer"}
	if err := netlink.LinkAdd(d); err != nil {
		t.Fatal(err)
	}
	defer netlink.LinkDel(d)
	l, err := m.Create(ctxT(t), "clash")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if l.HostIface == taken || l.HostIface != ifaceName(DefaultIfacePrefix, "clash", 1) {
		t.Errorf("host side %s (taken: %s)", l.HostIface, taken)
	}
	if err := m.Destroy(ctxT(t), "clash"); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(taken); err != nil {
		t.Errorf("Destroy removed the other interface: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	for name, cfg := range map[string]Config{
		"relative dir":    {Dir: "netns"},
		"ipv6 subnet":     {Dir: filepath.Join(dir, "a"), Subnet: netip.MustParsePrefix("fd00::/64")},
		"too small":       {Dir: filepath.Join(dir, "b"), Subnet: netip.MustParsePrefix("10.0.0.0/31")},
		"not masked":      {Dir: filepath.Join(dir, "c"), Subnet: netip.MustParsePrefix("10.0.0.1/24")},
		"symlinked dir":   {Dir: filepath.Join(dir, "link")},
		"world writable":  {Dir: filepath.Join(dir, "open")},
		"prefix not tb":   {Dir: filepath.Join(dir, "d"), IfacePrefix: "xy-"},
		"prefix too long": {Dir: filepath.Join(dir, "e"), IfacePrefix: "tb12345-"},
		"prefix no dash":  {Dir: filepath.Join(dir, "f"), IfacePrefix: "tbab"},
		"prefix 2 dashes": {Dir: filepath.Join(dir, "g"), IfacePrefix: "tb-a-"},
		"prefix upper":    {Dir: filepath.Join(dir, "h"), IfacePrefix: "tbAB-"},
	} {
		os.Symlink(t.TempDir(), filepath.Join(dir, "link"))
		os.Mkdir(filepath.Join(dir, "open"), 0o777)
		os.Chmod(filepath.Join(dir, "open"), 0o777)
		if _, err := New(cfg); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	m := newManager(t)
	for _, id := range []string{"", "../x", "a/b", ".hidden", strings.Repeat("x", 129)} {
		if _, err := m.Create(ctxT(t), id); !errors.Is(err, ErrInvalid) {
			t.Errorf("Create(%q): %v, want ErrInvalid", id, err)
		}
		if err := m.Destroy(ctxT(t), id); !errors.Is(err, ErrInvalid) {
			t.Errorf("Destroy(%q): %v, want ErrInvalid", id, err)
		}
	}
	if ents, _ := os.ReadDir(m.Dir()); len(ents) != 0 || len(m.List()) != 0 {
		t.Errorf("bad ids left %v", ents)
	}
}

// newManagerPrefix returns a Manager with IfacePrefix prefix on a fresh
// Dir, reaped at the test's end.
func newManagerPrefix(t *testing.T, prefix string) *Manager {
	t.Helper()
	testenv.RequireRoot(t)
	m, err := New(Config{Dir: filepath.Join(t.TempDir(), "netns"), IfacePrefix: prefix})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Reap(context.Background()); err != nil {
			t.Errorf("Reap: %v", err)
		}
		m.Close()
	})
	return m
}

// TestTwoHostsPrefixes: two Managers (two hosts) with their own
// prefixes name their veths apart, and each one's Reap and Destroy
// leave the other's veths, and any veth of another prefix, alone.
func TestTwoHostsPrefixes(t *testing.T) {
	pa, pb := IfacePrefixFor(HostTag("/state/a")), IfacePrefixFor(HostTag("/state/b"))
	if pa == pb || len(pa) != 7 || CheckIfacePrefix(pa) != nil {
		t.Fatalf("prefixes %q %q", pa, pb)
	}
	a, b := newManagerPrefix(t, pa), newManagerPrefix(t, pb)
	la, err := a.Create(ctxT(t), "same-id")
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.Create(ctxT(t), "same-id")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		l *Link
		p string
	}{{la, pa}, {lb, pb}} {
		if len(c.l.HostIface) != 15 || !strings.HasPrefix(c.l.HostIface, c.p) {
			t.Errorf("host side %q, want 15 bytes starting %q", c.l.HostIface, c.p)
		}
	}
	// A veth with a's alias but another prefix is not a's.
	foreign := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "tbzz-foreign"}, PeerName: "tbzz-fpeer"}
	if err := netlink.LinkAdd(foreign); err != nil {
		t.Fatal(err)
	}
	defer netlink.LinkDel(foreign)
	if err := netlink.LinkSetAlias(foreign, a.alias+"foreign"); err != nil {
		t.Fatal(err)
	}
	if err := a.Destroy(ctxT(t), "foreign"); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if err := a.Reap(ctxT(t)); err != nil {
		t.Fatalf("Reap: %v", err)
	}
	if _, err := netlink.LinkByName(la.HostIface); err == nil {
		t.Errorf("a's veth %s survived a's Reap", la.HostIface)
	}
	for _, name := range []string{lb.HostIface, "tbzz-foreign"} {
		if _, err := netlink.LinkByName(name); err != nil {
			t.Errorf("a's Reap removed %s: %v", name, err)
		}
	}
	if err := b.Destroy(ctxT(t), "same-id"); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(lb.HostIface); err == nil {
		t.Errorf("b's veth %s survived b's Destroy", lb.HostIface)
	}
}

// helperEnv makes the test binary a process that creates a Link under
// the Dir named in it, reports it on stdout and waits to be killed.
const helperEnv = "TURNBOX_NETNS_HELPER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		mgr, err := New(Config{Dir: dir})
		if err == nil {
			var l *Link
			if l, err = mgr.Create(context.Background(), "leftover"); err == nil {
				json.NewEncoder(os.Stdout).Encode(l)
				time.Sleep(time.Hour)
			}
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func TestReapLeftoverOfKilledProcess(t *testing.T) {
	m := newManager(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+m.Dir())
	cmd.Stderr = os.Stderr
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var l Link
	err := json.NewDecoder(out).Decode(&l)
	cmd.Process.Kill()
	cmd.Wait()
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	if _, err := netlink.LinkByName(l.HostIface); err != nil {
		t.Fatalf("the killed process's veth is not there: %v", err)
	}
	// A Create in this process does not take the leftover's /30.
	mine, err := m.Create(ctxT(t), "mine")
	if err != nil || mine.Prefix == l.Prefix {
		t.Fatalf("Create beside a leftover: %v %+v", err, mine)
	}
	if err := m.Reap(ctxT(t)); err != nil {
		t.Fatalf("Reap: %v", err)
	}
	for _, x := range []*Link{&l, mine} {
		if _, err := netlink.LinkByName(x.HostIface); err == nil {
			t.Errorf("veth %s survived Reap", x.HostIface)
		}
		if _, err := os.Lstat(x.NetNS); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived Reap: %v", x.NetNS, err)
		}
	}
	if _, err := m.Create(ctxT(t), "leftover"); err != nil {
		t.Errorf("Create of the reaped id: %v", err)
	}
}

func TestReset(t *testing.T) {
	m := newManager(t)
	l, err := m.Create(ctxT(t), "reset")
	if err != nil {
		t.Fatal(err)
	}
	state := func() (addrs, routes int) {
		inLink(t, l, func() error {
			eth, err := netlink.LinkByName(SandboxIface)
			if err != nil {
				return err
			}
			a, _ := netlink.AddrList(eth, netlink.FAMILY_V4)
			r, _ := netlink.RouteList(eth, netlink.FAMILY_V4)
			addrs, routes = len(a), len(r)
			for _, x := range a { // what gVisor's netstack does
				netlink.AddrDel(eth, &x)
			}
			return nil
		})
		return addrs, routes
	}
	if a, r := state(); a != 1 || r != 2 {
		t.Fatalf("after Create: %d addresses, %d routes", a, r)
	}
	if a, r := state(); a != 0 || r != 0 {
		t.Fatalf("after removing: %d addresses, %d routes", a, r)
	}
	for range 2 {
		if err := m.Reset(ctxT(t), "reset"); err != nil {
			t.Fatalf("Reset: %v", err)
		}
	}
	if a, r := state(); a != 1 || r != 2 {
		t.Errorf("after Reset: %d addresses, %d routes", a, r)
	}
	if err := m.Reset(ctxT(t), "absent"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Reset of no link: %v", err)
	}
}
