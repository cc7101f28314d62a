package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// maxNameTries bounds the host side names tried for one id when another
// interface already has the name.
const maxNameTries = 8

// Create makes sandbox id's Link: a new network namespace bind-mounted
// at Dir/id, a veth pair between it and the host's namespace, a /30 of
// the subnet free on this host, loopback up, IPv6 off inside, and a
// default route through the host side. On error nothing is left.
func (m *Manager) Create(ctx context.Context, id string) (_ *Link, retErr error) {
	if err := m.reserve(id); err != nil {
		return nil, err
	}
	l := &Link{ID: id, NetNS: filepath.Join(m.dir, id)}
	bound := false
	defer func() {
		if retErr != nil && bound { // never remove a bind mount someone else made
			if err := m.teardown(context.WithoutCancel(ctx), id, l.HostIface); err != nil {
				m.log.Warn("netns: cleaning up a failed create", "id", id, "err", err)
			}
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if retErr == nil {
			m.links[id] = l
		} else {
			delete(m.links, id)
		}
	}()
	inner, nsh, err := m.newNamespace(ctx, id, &bound)
	if err != nil {
		return nil, fmt.Errorf("netns: %s: %w", id, err)
	}
	defer inner.Close()
	defer nsh.Close()
	host, err := handleIn(ctx, m.host)
	if err != nil {
		return nil, err
	}
	defer host.Close()
	hostLink, err := m.addVeth(host, id, nsh)
	if err != nil {
		return nil, fmt.Errorf("netns: %s: %w", id, err)
	}
	l.HostIface = hostLink.Attrs().Name
	if l.Prefix, err = m.assignPrefix(ctx, host, hostLink); err != nil {
		return nil, fmt.Errorf("netns: %s: %w", id, err)
	}
	l.HostAddr = l.Prefix.Addr().Next()
	l.SandboxAddr = l.HostAddr.Next()
	if err := m.upHost(host, hostLink); err != nil {
		return nil, fmt.Errorf("netns: %s: %w", id, err)
	}
	if err := upInside(inner, l); err != nil {
		return nil, fmt.Errorf("netns: %s: %w", id, err)
	}
	m.log.Debug("netns: created", "id", id, "iface", l.HostIface, "prefix", l.Prefix)
	return l, nil
}

// newNamespace makes a network namespace, bind-mounts it at Dir/id
// (setting *bound once the file is ours), turns IPv6 off in it, and
// returns a netlink handle inside it and a handle of the namespace.
func (m *Manager) newNamespace(ctx context.Context, id string, bound *bool) (*netlink.Handle, netns.NsHandle, error) {
	to, err := timeout(ctx)
	if err != nil {
		return nil, netns.None(), err
	}
	var (
		h   *netlink.Handle
		nsh netns.NsHandle
	)
	unshare := func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
		}
		return nil
	}
	err = onLockedThread(unshare, func() error {
		fd, err := unix.Openat(m.dirFD, id, unix.O_CREAT|unix.O_EXCL|unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o400)
		if err != nil {
			return fmt.Errorf("bind mount file: %w", err)
		}
		unix.Close(fd)
		*bound = true
		if err := unix.Mount("/proc/thread-self/ns/net", filepath.Join(m.dir, id), "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mounting the namespace: %w", err)
		}
		// Before any interface exists, so eth0 is made with IPv6 off.
		for _, p := range []string{"/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv6/conf/default/disable_ipv6"} {
			if err := writeSysctl(p, "1"); err != nil {
				return err
			}
		}
		if nsh, err = netns.Get(); err != nil {
			return err
		}
		if h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			nsh.Close()
			return fmt.Errorf("netlink: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, netns.None(), err
	}
	if err := h.SetSocketTimeout(to); err != nil {
		h.Close()
		nsh.Close()
		return nil, netns.None(), fmt.Errorf("netlink: %w", err)
	}
	return h, nsh, nil
}

// writeSysctl writes a /proc/sys file; a missing one under ipv6 (IPv6
// compiled out or disabled at boot) is not an error.
func writeSysctl(path, value string) error {
	err := os.WriteFile(path, []byte(value), 0)
	if errors.Is(err, os.ErrNotExist) && filepath.Base(filepath.Dir(filepath.Dir(filepath.Dir(path)))) == "ipv6" {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sysctl %s: %w", path, err)
	}
	return nil
}

// addVeth makes the veth pair: the host side, tagged with an alias naming
// this Manager's Dir and id (how Destroy and Reap of a later process find
// it), in the host's namespace; the other side
// made directly inside nsh as SandboxIface.
func (m *Manager) addVeth(host *netlink.Handle, id string, nsh netns.NsHandle) (netlink.Link, error) {
	for salt := range maxNameTries {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = ifaceName(m.prefix, id, salt)
		veth := &netlink.Veth{LinkAttrs: attrs, PeerName: SandboxIface, PeerNamespace: netlink.NsFd(int(nsh))}
		err := host.LinkAdd(veth)
		if errors.Is(err, unix.EEXIST) {
			m.log.Debug("netns: interface name taken", "id", id, "name", attrs.Name)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("adding veth %s: %w", attrs.Name, err)
		}
		l, err := host.LinkByName(attrs.Name)
		if err != nil {
			return nil, fmt.Errorf("veth %s: %w", attrs.Name, err)
		}
		// The kernel ignores an alias given at creation. Until it is
		// set, the veth is found by nothing but its name; if this
		// process dies meanwhile, Reap's unmount of Dir/id ends the
		// namespace, and the pair with it.
		if err := host.LinkSetAlias(l, m.alias+id); err != nil {
			return nil, fmt.Errorf("veth %s alias: %w", attrs.Name, err)
		}
		return l, nil
	}
	return nil, fmt.Errorf("no free interface name for %q after %d tries", id, maxNameTries)
}

// assignPrefix picks a /30 of the subnet that no address of the host's
// namespace is in and no Link of this Manager has, and gives its .1 to
// the host side, under mu and the flock on the host's namespace (see
// flock) so that concurrent creates here and in other processes never
// pick the same one.
func (m *Manager) assignPrefix(ctx context.Context, host *netlink.Handle, hostLink netlink.Link) (netip.Prefix, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.flock(ctx); err != nil {
		return netip.Prefix{}, err
	}
	defer unix.Flock(int(m.host), unix.LOCK_UN)
	addrs, err := host.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("listing addresses: %w", err)
	}
	used := map[netip.Prefix]bool{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && m.subnet.Contains(ip) {
			used[netip.PrefixFrom(ip, 30).Masked()] = true
		}
	}
	for _, l := range m.links {
		if l != nil {
			used[l.Prefix] = true
		}
	}
	p, ok := freePrefix(m.subnet, used)
	if !ok {
		return netip.Prefix{}, fmt.Errorf("%w: all /30s of %s are in use", ErrExhausted, m.subnet)
	}
	addr := &netlink.Addr{IPNet: ipNet(p.Addr().Next(), 30)}
	if err := host.AddrAdd(hostLink, addr); err != nil {
		return netip.Prefix{}, fmt.Errorf("adding %s: %w", addr.IPNet, err)
	}
	return p, nil
}

// flock takes the exclusive flock on the host's network namespace file,
// waiting no longer than ctx. Every Manager opens that file itself, and
// the nsfs inode is the same for all processes in the namespace, so the
// lock serialises exactly the Managers whose addresses could collide,
// whatever their Dir.
func (m *Manager) flock(ctx context.Context) error {
	for delay := 100 * time.Microsecond; ; delay = min(2*delay, 10*time.Millisecond) {
		err := unix.Flock(int(m.host), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("locking the host's network namespace: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("locking the host's network namespace: %w", ctx.Err())
		case <-time.After(delay):
		}
	}
}

// freePrefix returns the first /30 of subnet not in used.
func freePrefix(subnet netip.Prefix, used map[netip.Prefix]bool) (netip.Prefix, bool) {
	for a := subnet.Addr(); subnet.Contains(a); {
		p := netip.PrefixFrom(a, 30)
		if !used[p] {
			return p, true
		}
		for range 4 {
			a = a.Next()
		}
	}
	return netip.Prefix{}, false
}

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}
}

// upHost sets the host side's sysctls (strict reverse-path filter, no
// proxy ARP, no IPv6) and brings it up.
func (m *Manager) upHost(host *netlink.Handle, hostLink netlink.Link) error {
	name := hostLink.Attrs().Name
	err := inNS(m.host, func() error {
		for k, v := range map[string]string{
			"/proc/sys/net/ipv4/conf/" + name + "/rp_filter":    "1",
			"/proc/sys/net/ipv4/conf/" + name + "/proxy_arp":    "0",
			"/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6": "1",
		} {
			if err := writeSysctl(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := host.LinkSetUp(hostLink); err != nil {
		return fmt.Errorf("bringing %s up: %w", name, err)
	}
	return nil
}

// upInside brings loopback and eth0 up inside the namespace, with l's
// sandbox address and a default route through the host side.
func upInside(h *netlink.Handle, l *Link) error {
	return configureInside(h, l, h.AddrAdd, h.RouteAdd)
}

// configureInside brings loopback and eth0 up, giving eth0 l's sandbox
// address with addAddr and the default route with addRoute (the Add or
// Replace calls of h).
func configureInside(h *netlink.Handle, l *Link, addAddr func(netlink.Link, *netlink.Addr) error, addRoute func(*netlink.Route) error) error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	eth, err := h.LinkByName(SandboxIface)
	if err != nil {
		return fmt.Errorf("%s: %w", SandboxIface, err)
	}
	if err := addAddr(eth, &netlink.Addr{IPNet: ipNet(l.SandboxAddr, 30)}); err != nil {
		return fmt.Errorf("%s address: %w", SandboxIface, err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return fmt.Errorf("%s up: %w", SandboxIface, err)
	}
	route := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: l.HostAddr.AsSlice()}
	if err := addRoute(route); err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	return nil
}

// Reset gives sandbox id's namespace back the configuration Create made
// (loopback and eth0 up, eth0's address, the default route), replacing
// whatever is there. gVisor's netstack (runsc --network=sandbox) takes
// the namespace's addresses and routes off eth0 when a sandbox starts in
// it and does not give them back: call Reset before starting another
// sandbox in the same Link.
func (m *Manager) Reset(ctx context.Context, id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%w: id %q (want %s)", ErrInvalid, id, idPattern)
	}
	m.mu.Lock()
	l := m.links[id]
	m.mu.Unlock()
	if l == nil {
		return fmt.Errorf("netns: %s: no such link: %w", id, os.ErrNotExist)
	}
	fd, err := unix.Openat(m.dirFD, id, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netns: %s: %w", id, err)
	}
	nsh := netns.NsHandle(fd)
	defer nsh.Close()
	h, err := handleIn(ctx, nsh)
	if err != nil {
		return fmt.Errorf("netns: %s: %w", id, err)
	}
	defer h.Close()
	if err := configureInside(h, l, h.AddrReplace, h.RouteReplace); err != nil {
		return fmt.Errorf("netns: %s: %w", id, err)
	}
	return nil
}
