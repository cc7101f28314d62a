package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/egress"
	"github.com/turnbox/turnbox/container/netns"
	"github.com/turnbox/turnbox/environment"
)

// Sessions' networks (docs/isolation.md, "Network"): a session whose mode
// is egress or open gets a network namespace and veth (container/netns)
// when its sandbox starts, filtered by the host's egress firewall
// (container/egress). A none session gets neither: its sandbox has
// loopback only, as before.

// netDestroyTimeout bounds the background teardown of a destroyed
// session's namespace.
const netDestroyTimeout = 30 * time.Second

// hostNetwork gives sessions their networks. A nil *hostNetwork (the none
// runtime, or a host that cannot make namespaces) offers mode none only.
//
// Lock order: hostNetwork.mu, then the Firewall's and Manager's own.
type hostNetwork struct {
	mgr     *netns.Manager
	fwCfg   egress.Config
	gvisor  bool                    // sandboxes run netstack: Reset a namespace before reuse
	ceil    environment.NetworkMode // Config.NetworkCeiling
	log     *slog.Logger
	pending sync.WaitGroup // background teardowns

	mu      sync.Mutex // guards closed, fw, links, retired
	closed  bool
	fw      *egress.Firewall      // made on first use
	links   map[string]netns.Link // attached sessions; Link.ID (the manager's key) may be a pool's name
	retired egress.Stats          // counters of sessions detached
}

// openHostNetwork makes the host's namespace manager and removes what an
// earlier process on this state directory left (its namespaces, veths
// and firewall table). Only gvisor and runc sandboxes can join a
// namespace; for other runtimes it returns nil (mode none only).
func openHostNetwork(ctx context.Context, cfg *Config, kind string) (*hostNetwork, error) {
	if kind != string(ContainerRuntimeGVisor) && kind != string(ContainerRuntimeRunc) {
		return nil, nil
	}
	// Each host has its own firewall table and veth prefix, from its
	// state directory, so that several hosts on one machine keep apart.
	tag := netns.HostTag(cfg.StateDir)
	table, prefix := egress.TableFor(tag), netns.IfacePrefixFor(tag)
	mgr, err := netns.New(netns.Config{Dir: filepath.Join(cfg.StateDir, "netns"), Subnet: cfg.NetworkSubnet, IfacePrefix: prefix, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("embedded: network namespaces: %w", err)
	}
	if err := mgr.Reap(ctx); err != nil {
		cfg.Logger.Error("reaping network namespaces of an earlier process", "err", err)
	}
	if err := egress.Reap(table); err != nil {
		cfg.Logger.Error("reaping the firewall table of an earlier process", "table", table, "err", err)
	}
	return &hostNetwork{
		mgr: mgr, gvisor: kind == string(ContainerRuntimeGVisor), ceil: cfg.NetworkCeiling, log: cfg.Logger,
		fwCfg: egress.Config{Table: table, InterfacePrefix: prefix, Upstream: cfg.NetworkUpstream, Logger: cfg.Logger},
		links: map[string]netns.Link{},
	}, nil
}

// ceiling is the most open mode this host offers: the configured
// ceiling, none without namespaces.
func (n *hostNetwork) ceiling(configured environment.NetworkMode) environment.NetworkMode {
	if n == nil {
		return environment.NetworkNone
	}
	return configured
}

// allows checks that session id's recorded mode is still within what the
// host offers: a host reopened with a lower ceiling (or without
// namespaces) refuses to start the session's sandbox rather than give it
// more, or less, than its policy says.
func (n *hostNetwork) allows(id string, mode environment.NetworkMode) error {
	switch {
	case n == nil:
		return fmt.Errorf("%w: session %s has network mode %q, but this host gives sessions loopback only now", environment.ErrCapabilityNotSupported, id, mode)
	case mode.Rank() > n.ceil.Rank():
		return fmt.Errorf("%w: session %s has network mode %q, above this host's ceiling %q (lowered since the session was created)", environment.ErrCapabilityNotSupported, id, mode, n.ceil)
	}
	return nil
}

// firewall returns the host's firewall, making it on first use. Called
// with n.mu held. Its error wraps ErrCapabilityNotSupported.
func (n *hostNetwork) firewall() (*egress.Firewall, error) {
	if n.fw != nil {
		return n.fw, nil
	}
	fw, err := egress.New(context.Background(), n.fwCfg)
	if err != nil {
		return nil, fmt.Errorf("%w: this host cannot filter sessions' networks: %w", environment.ErrCapabilityNotSupported, err)
	}
	n.fw = fw
	return fw, nil
}

// attach gives session id its namespace, filtered by policy, and returns
// its link: the one it has (reset for gVisor, whose last sandbox took its
// configuration; its manager key may be a pool's name) or a new one.
func (n *hostNetwork) attach(ctx context.Context, id string, policy environment.NetworkPolicy) (netns.Link, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return netns.Link{}, fmt.Errorf("embedded: network of %s: %w", id, environment.ErrClosed)
	}
	if l, ok := n.links[id]; ok {
		if n.gvisor {
			if err := n.mgr.Reset(ctx, l.ID); err != nil {
				return netns.Link{}, fmt.Errorf("embedded: resetting the network of %s: %w", id, err)
			}
		}
		return l, nil
	}
	if _, err := n.firewall(); err != nil {
		return netns.Link{}, err
	}
	l, err := n.mgr.Create(ctx, id)
	if err != nil {
		return netns.Link{}, fmt.Errorf("embedded: network of %s: %w", id, err)
	}
	if err := n.bind(ctx, id, *l, policy); err != nil {
		return netns.Link{}, err
	}
	return *l, nil
}

// waitingPolicy is a pooled sandbox's while it waits: everything
// refused, every name answered NXDOMAIN.
var waitingPolicy = environment.NetworkPolicy{Mode: environment.NetworkNone}

// prepare makes a pooled sandbox's namespace, keyed by name, and attaches
// its veth to the firewall under name with waitingPolicy, so that the
// nftables objects and DNS filter are made ahead and a claim only
// renames and updates them (adopt). The work runs outside n.mu (a
// claim's adopt does not wait for a refill); close waits for it.
func (n *hostNetwork) prepare(ctx context.Context, name string) (netns.Link, error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return netns.Link{}, fmt.Errorf("embedded: network of pooled sandbox %s: %w", name, environment.ErrClosed)
	}
	fw, err := n.firewall()
	if err != nil {
		n.mu.Unlock()
		return netns.Link{}, err
	}
	n.pending.Add(1) // under mu: close sets closed before it waits
	n.mu.Unlock()
	defer n.pending.Done()
	l, err := n.mgr.Create(ctx, name)
	if err != nil {
		return netns.Link{}, fmt.Errorf("embedded: network of pooled sandbox %s: %w", name, err)
	}
	err = fw.Attach(egress.Session{ID: name, HostIface: l.HostIface, HostAddr: l.HostAddr, SandboxAddr: l.SandboxAddr, Policy: waitingPolicy})
	if err != nil {
		n.destroyLink(ctx, name)
		return netns.Link{}, fmt.Errorf("embedded: network of pooled sandbox %s: %w", name, err)
	}
	return *l, nil
}

// adopt makes l, a pooled sandbox's link (prepare), session id's network:
// its firewall session renamed id and given policy. On failure l is
// detached and destroyed.
func (n *hostNetwork) adopt(ctx context.Context, id string, l netns.Link, policy environment.NetworkPolicy) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return fmt.Errorf("embedded: network of %s: %w", id, environment.ErrClosed) // close destroys l
	}
	err := n.fw.Rename(l.ID, id)
	if err == nil {
		n.links[id] = l
		err = n.fw.Update(egress.Session{ID: id, Policy: policy})
		if err != nil {
			n.detach(id)
		}
	}
	if err != nil {
		n.dropLocked(ctx, l)
		return fmt.Errorf("embedded: network of %s: %w", id, err)
	}
	return nil
}

// drop detaches and destroys a pooled sandbox's link that no session
// took (its firewall session still has the pool's name).
func (n *hostNetwork) drop(ctx context.Context, l netns.Link) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed {
		n.dropLocked(ctx, l)
	}
}

// dropLocked is drop with n.mu held.
func (n *hostNetwork) dropLocked(ctx context.Context, l netns.Link) {
	if err := n.fw.Detach(l.ID); err != nil && !errors.Is(err, egress.ErrUnknownSession) {
		n.log.Error("detaching a pooled sandbox from the firewall", "link", l.ID, "err", err)
	}
	n.destroyLink(ctx, l.ID)
}

// bind attaches link l to the firewall as session id's, filtered by
// policy, and records it; on failure it destroys l. Called with n.mu
// held and the firewall made.
func (n *hostNetwork) bind(ctx context.Context, id string, l netns.Link, policy environment.NetworkPolicy) error {
	err := n.fw.Attach(egress.Session{ID: id, HostIface: l.HostIface, HostAddr: l.HostAddr, SandboxAddr: l.SandboxAddr, Policy: policy})
	if err != nil {
		n.destroyLink(ctx, l.ID)
		return fmt.Errorf("embedded: network of %s: %w", id, err)
	}
	n.links[id] = l
	return nil
}

// detach stops filtering session id (its veth is then refused whole),
// keeps its counters in the host's totals and returns its link. Called
// with n.mu held.
func (n *hostNetwork) detach(id string) (netns.Link, bool) {
	l, ok := n.links[id]
	if !ok {
		return l, false
	}
	delete(n.links, id)
	if st, err := n.fw.Stats(id); err == nil {
		addStats(&n.retired, st)
	}
	if err := n.fw.Detach(id); err != nil {
		n.log.Error("detaching a session from the firewall", "session", id, "err", err)
	}
	return l, true
}

// release removes session id's network: detached now, its namespace and
// veth (keyed by the link's ID, a pool's name for a pooled sandbox's)
// destroyed in the background (Close waits for it; a crash leaves them
// to the next host's Reap).
func (n *hostNetwork) release(id string) {
	if n == nil {
		return
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return // close removes every link
	}
	l, had := n.detach(id)
	if had {
		n.pending.Add(1) // under mu: close sets closed before it waits
	}
	n.mu.Unlock()
	if !had {
		return
	}
	go func() {
		defer n.pending.Done()
		ctx, cancel := context.WithTimeout(context.Background(), netDestroyTimeout)
		defer cancel()
		n.destroyLink(ctx, l.ID)
	}()
}

// destroyLink destroys the namespace and veth the manager keeps under
// key (a session's id, or a pooled sandbox's name), logging failure.
func (n *hostNetwork) destroyLink(ctx context.Context, key string) {
	if err := n.mgr.Destroy(ctx, key); err != nil && !errors.Is(err, os.ErrNotExist) {
		n.log.Error("destroying a network namespace", "link", key, "err", err)
	}
}

// stats returns session id's counters.
func (n *hostNetwork) stats(id string) (egress.Stats, error) {
	if n == nil {
		return egress.Stats{}, fmt.Errorf("embedded: session %s has no network: %w", id, egress.ErrUnknownSession)
	}
	n.mu.Lock()
	_, ok := n.links[id]
	fw := n.fw
	n.mu.Unlock()
	if !ok {
		return egress.Stats{}, fmt.Errorf("embedded: session %s has no network (mode none, or no sandbox started yet): %w", id, egress.ErrUnknownSession)
	}
	return fw.Stats(id)
}

// totals returns the counters of every session since the host started.
func (n *hostNetwork) totals() egress.Stats {
	if n == nil {
		return egress.Stats{}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	t := n.retired
	for id := range n.links {
		if st, err := n.fw.Stats(id); err == nil {
			addStats(&t, st)
		}
	}
	return t
}

// networkCollectors are the host-wide network counters of every session
// since the host opened (Host.NetworkStats has one session's).
func networkCollectors(h *Host) []prometheus.Collector {
	counter := func(name, help string, v func(egress.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 {
			return float64(v(h.net.totals()))
		})
	}
	return []prometheus.Collector{
		counter("turnbox_network_sent_bytes_total", "Bytes sessions' sandboxes sent out through the egress firewall.",
			func(s egress.Stats) uint64 { return s.BytesOut }),
		counter("turnbox_network_received_bytes_total", "Bytes forwarded to sessions' sandboxes through the egress firewall.",
			func(s egress.Stats) uint64 { return s.BytesIn }),
		counter("turnbox_network_refused_total", "Connections (packets) and DNS names the egress firewall refused to sessions' sandboxes.",
			func(s egress.Stats) uint64 { return s.Refused }),
	}
}

// addStats adds st's totals to t.
func addStats(t *egress.Stats, st egress.Stats) {
	t.BytesIn += st.BytesIn
	t.BytesOut += st.BytesOut
	t.PacketsIn += st.PacketsIn
	t.PacketsOut += st.PacketsOut
	t.Refused += st.Refused
}

// close detaches and destroys every session's network, closes the
// firewall (removing its table, restoring ip_forward) and the manager.
func (n *hostNetwork) close(ctx context.Context) error {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	n.pending.Wait()
	n.mu.Lock()
	defer n.mu.Unlock()
	for id := range n.links {
		n.detach(id)
	}
	// Every link the manager has: sessions' and pooled sandboxes'.
	for _, l := range n.mgr.List() {
		n.destroyLink(ctx, l.ID)
	}
	var errs []error
	if n.fw != nil {
		errs = append(errs, n.fw.Close())
		n.fw = nil
	}
	errs = append(errs, n.mgr.Close())
	return errors.Join(errs...)
}

// effectiveNetwork is the policy a new session gets: its config's, else
// its parent's (a fork), else the host's default; refused above the
// host's ceiling (ErrInvalidArgument) or where the host offers no network
// (ErrCapabilityNotSupported).
func (h *Host) effectiveNetwork(asked environment.NetworkPolicy, parent *environment.NetworkPolicy) (environment.NetworkPolicy, error) {
	p := asked
	switch {
	case p.Mode != "":
	case parent != nil:
		p = *parent
	default:
		p = h.cfg.Network
	}
	if p.Mode == "" {
		p.Mode = environment.NetworkNone
	}
	if err := p.Validate(); err != nil {
		return p, err
	}
	if p.Mode.Rank() > h.cfg.NetworkCeiling.Rank() {
		return p, fmt.Errorf("%w: network mode %q is above this host's ceiling %q", environment.ErrInvalidArgument, p.Mode, h.cfg.NetworkCeiling)
	}
	if p.Mode.Rank() > 0 && h.net == nil {
		return p, fmt.Errorf("%w: network mode %q: this host gives sessions loopback only (the %s runtime, or no network namespaces here)", environment.ErrCapabilityNotSupported, p.Mode, h.runtime.Kind())
	}
	return p, nil
}

// setupNetwork gives the sandbox about to start in spec the session's
// network, if its mode is not none: its namespace, and a resolv.conf in
// its root naming the DNS filter (written through the file API, which
// never follows the sandbox's links out of its root).
func (s *session) setupNetwork(ctx context.Context, spec *container.Spec) error {
	if s.cfg.Network.Mode.Rank() == 0 {
		return nil
	}
	if err := s.deps.net.allows(s.id, s.cfg.Network.Mode); err != nil {
		return err
	}
	l, err := s.deps.net.attach(ctx, s.id, s.cfg.Network)
	if err != nil {
		return err
	}
	spec.Network, spec.NetNS = container.NetworkNamespace, l.NetNS
	return s.resolvConf(ctx, l)
}

// adoptNetwork makes l, the namespace a pooled sandbox runs in, the
// session's network: attached to the firewall with the session's id and
// policy before the session is handed out. The pool wrote the root's
// resolv.conf for l before the sandbox started; a fork's root is its
// parent's snapshot, whose resolv.conf names the parent's filter, so
// rewrite says to write it again.
func (s *session) adoptNetwork(ctx context.Context, l netns.Link, rewrite bool) error {
	if err := s.deps.net.adopt(ctx, s.id, l, s.network()); err != nil {
		return err
	}
	if !rewrite {
		return nil
	}
	return s.resolvConf(ctx, l)
}

// resolvConf writes the root's /etc/resolv.conf for link l, if the
// session has a root tree of its own.
func (s *session) resolvConf(ctx context.Context, l netns.Link) error {
	if !s.ownRoot() {
		s.deps.log.Warn("session has no root tree of its own: /etc/resolv.conf not written", "session", s.id)
		return nil
	}
	return writeResolvConf(ctx, s.workspace(), s.id, l.HostAddr.String())
}

// writeResolvConf makes the root tree of w (the sandbox of owner, a
// session or a pooled sandbox) name server only in /etc/resolv.conf,
// through the upload path's writeBeneath: resolved beneath the root
// (openat2), never following the sandbox's links out of it, and
// replacing whatever /etc/resolv.conf was (a link included) by rename.
// Unlike Upload it is not admitted as a call (the session may be
// creating or rolling back) and counts against no quota of the host's.
func writeResolvConf(ctx context.Context, w workspace, owner, server string) error {
	root, err := w.openTree()
	if err != nil {
		return fmt.Errorf("embedded: writing /etc/resolv.conf of %s: %w", owner, err)
	}
	defer unix.Close(root)
	conf := "# written by turnbox at each sandbox start: the host's DNS filter\nnameserver " + server + "\n"
	_, err = writeBeneath(ctx, root, "etc/resolv.conf", "/etc/resolv.conf", strings.NewReader(conf), environment.UploadOptions{}, -1)
	if err != nil {
		return fmt.Errorf("embedded: writing /etc/resolv.conf of %s: %w", owner, err)
	}
	return nil
}

// network is the session's effective policy (a copy). Called with s.mu
// held or not: cfg never changes.
func (s *session) network() environment.NetworkPolicy {
	p := s.cfg.Network
	if p.Mode == "" {
		p.Mode = environment.NetworkNone
	}
	p.Allow = slices.Clone(p.Allow)
	return p
}

// checkNetworkConfig validates Config's network fields and fills in
// their defaults.
func (c *Config) checkNetworkConfig() error {
	if c.NetworkCeiling == "" {
		c.NetworkCeiling = environment.NetworkOpen
	}
	if c.NetworkCeiling.Rank() < 0 {
		return fmt.Errorf("%w: embedded: Config.NetworkCeiling %q (want none, egress or open)", environment.ErrInvalidArgument, c.NetworkCeiling)
	}
	if err := c.Network.Validate(); err != nil {
		return fmt.Errorf("embedded: Config.Network: %w", err)
	}
	if c.Network.Mode.Rank() > c.NetworkCeiling.Rank() {
		return fmt.Errorf("%w: embedded: Config.Network mode %q is above Config.NetworkCeiling %q", environment.ErrInvalidArgument, c.Network.Mode, c.NetworkCeiling)
	}
	for _, u := range c.NetworkUpstream {
		if !u.IsValid() || u.Port() == 0 {
			return fmt.Errorf("%w: embedded: Config.NetworkUpstream %q is not ADDRESS:PORT", environment.ErrInvalidArgument, u)
		}
	}
	if !c.NetworkSubnet.IsValid() {
		c.NetworkSubnet = netns.DefaultSubnet
	}
	if s := c.NetworkSubnet; !s.Addr().Is4() || s.Bits() > 30 || s.Masked() != s {
		return fmt.Errorf("%w: embedded: Config.NetworkSubnet %s is not an IPv4 network prefix of /30 or shorter", environment.ErrInvalidArgument, s)
	}
	return nil
}

// NetworkStats returns the network counters of session id since its
// sandbox last got its network (bytes and packets in and out, refused
// connections and names). It fails with egress.ErrUnknownSession for a session
// without a network (mode none, or no sandbox started since the host
// opened).
func (h *Host) NetworkStats(id string) (egress.Stats, error) {
	if _, err := h.lookup(id); err != nil {
		return egress.Stats{}, err
	}
	return h.net.stats(id)
}
