// Package egress enforces a session's environment.NetworkPolicy on the
// host: an nftables table (family inet) that filters what each sandbox's
// veth forwards, masquerades what it may send out, and redirects its DNS
// to a filtering resolver that answers only names the policy allows and
// admits the addresses it answered into the session's sets. See
// docs/isolation.md ("Network") for the design and its limits.
package egress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"sync"
	"time"

	"github.com/google/nftables"

	"github.com/turnbox/turnbox/container/netns"
	"github.com/turnbox/turnbox/environment"
)

// DefaultTable is the nftables table New makes when Config.Table is
// empty.
const DefaultTable = "turnbox"

// ipForwardPath is the IPv4 forwarding switch.
const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// Config configures a Firewall.
type Config struct {
	// Upstream are the resolvers the DNS filter asks (default: the
	// nameservers of /etc/resolv.conf).
	Upstream []netip.AddrPort
	// Logger receives refusals (rate limited) and errors (default:
	// slog.Default()).
	Logger *slog.Logger
	// ResolverPort is the port the DNS filter listens on, on each
	// session's HostAddr (default 53). Every packet a sandbox sends to
	// port 53 of any address is redirected there.
	ResolverPort uint16
	// Table names the nftables table (default DefaultTable).
	Table string
	// InterfacePrefix is how every session's host-side veth is named
	// (default DefaultInterfacePrefix; netns.CheckIfacePrefix says what
	// is valid). Packets from an interface with this prefix that no
	// attached session owns are refused; other prefixes (other hosts')
	// are left alone.
	InterfacePrefix string

	// noPacketLog leaves the per-packet refusal log out (the tests'
	// measure of what it costs).
	noPacketLog bool
}

// DefaultInterfacePrefix is the name prefix of sessions' host-side veths
// (container/netns's default, tb-XXXX).
const DefaultInterfacePrefix = netns.DefaultIfacePrefix

// Stats are one session's counters since Attach.
type Stats struct {
	// BytesOut and BytesIn count what was forwarded from and to the
	// sandbox (DNS to the filter is not counted); PacketsOut and
	// PacketsIn the packets.
	BytesOut, BytesIn, PacketsOut, PacketsIn uint64
	// Refused counts refused packets and DNS names; RefusedBy splits it
	// by reason (the Reason* constants).
	Refused   uint64
	RefusedBy map[string]uint64
}

// ErrUnknownSession is returned for a session ID that is not attached.
var ErrUnknownSession = errors.New("egress: no such session")

// Firewall is the host's egress filter: one nftables table and one DNS
// filter per attached session.
//
// Lock order: Firewall.mu before resolver.mu (the answers record). The
// DNS handlers take mu to add addresses, never while holding resolver.mu.
// A session's refusalLogs.mu is taken alone (never with another lock).
type Firewall struct {
	cfg   Config
	log   *slog.Logger
	table *nftables.Table
	query *nftables.Conn // reads (counters); safe for concurrent use

	mu sync.Mutex // guards conn, sessions, next, closed
	// conn holds the batch being built; newBatch replaces it, so that
	// what an operation that failed half-way queued is never sent.
	conn        *nftables.Conn
	sessions    map[string]*session
	next        int
	closed      bool
	sessionsSet *nftables.Set
	forward     *forwardShare // this Firewall's share of ip_forward

	// nflog is the NFLOG group the refusing rules log to (nil: records
	// unavailable, only the summaries are logged); nflogDone is closed
	// when its reader returns.
	nflog     *nflog
	nflogDone chan struct{}
	stop      context.CancelFunc
	done      chan struct{}
}

// New makes the table (replacing one an earlier process left under the
// same name), takes a share of IPv4 forwarding (turning it on if it is
// off; see RunDir), and starts logging refusals (see refusallog.go;
// without an NFLOG group only the summaries are logged). ctx bounds the
// summaries' life along with Close. Two Firewalls on one machine need
// different Tables and InterfacePrefixes (TableFor,
// netns.IfacePrefixFor).
func New(ctx context.Context, cfg Config) (*Firewall, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	query, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("egress: nftables: %w", err)
	}
	f := &Firewall{
		cfg: cfg, log: cfg.Logger, query: query, sessions: map[string]*session{},
		table: &nftables.Table{Name: cfg.Table, Family: nftables.TableFamilyINet},
	}
	if f.forward, err = acquireForwarding(); err != nil {
		return nil, err
	}
	if !cfg.noPacketLog {
		if f.nflog, err = openNFLOG(logGroupFor(cfg.Table)); err != nil {
			f.log.Warn("egress: refused packets will be counted and summarized, not logged one by one", "err", err)
		}
	}
	err = delTable(cfg.Table)
	if err == nil {
		err = f.install()
	}
	if err != nil {
		_ = delTable(cfg.Table)
		f.closeNFLOG()
		return nil, errors.Join(err, f.forward.release())
	}
	if f.nflog != nil {
		f.nflogDone = make(chan struct{})
		go f.readNFLOG(f.nflog, f.nflogDone)
	}
	ctx, f.stop = context.WithCancel(ctx)
	f.done = make(chan struct{})
	go f.summarizeRefusals(ctx)
	return f, nil
}

// nflogStopTimeout bounds how long Close waits for the NFLOG reader.
const nflogStopTimeout = 2 * time.Second

// closeNFLOG closes the NFLOG socket (which ends its reader) and waits,
// at most nflogStopTimeout, for the reader to return.
func (f *Firewall) closeNFLOG() {
	if f.nflog == nil {
		return
	}
	if err := f.nflog.conn.Close(); err != nil {
		f.log.Warn("egress: closing the nflog socket", "err", err)
	}
	if f.nflogDone == nil {
		return
	}
	select {
	case <-f.nflogDone:
	case <-time.After(nflogStopTimeout):
		f.log.Error("egress: nflog reader did not stop", "after", nflogStopTimeout)
	}
}

// withDefaults fills cfg's defaults and checks it: the error wraps
// environment.ErrInvalidArgument.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.InterfacePrefix == "" {
		cfg.InterfacePrefix = DefaultInterfacePrefix
	}
	if err := netns.CheckIfacePrefix(cfg.InterfacePrefix); err != nil {
		return cfg, fmt.Errorf("%w: egress: %w", environment.ErrInvalidArgument, err)
	}
	if !tablePattern.MatchString(cfg.Table) || cfg.Table == GuardTable {
		return cfg, fmt.Errorf("%w: egress: table name %q (want %s, not %s)", environment.ErrInvalidArgument, cfg.Table, tablePattern, GuardTable)
	}
	if cfg.ResolverPort == 0 {
		cfg.ResolverPort = 53
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if len(cfg.Upstream) == 0 {
		up, err := resolvConfServers("/etc/resolv.conf")
		if err != nil {
			return cfg, err
		}
		cfg.Upstream = up
	}
	return cfg, nil
}

// tablePattern is what a Config.Table must match.
var tablePattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)

// TableFor is the table of the host with tag (netns.HostTag of its
// state directory): "turnbox-" + tag. With netns.IfacePrefixFor(tag) as
// InterfacePrefix, hosts on one machine never touch each other's table
// or sessions.
func TableFor(tag string) string { return DefaultTable + "-" + tag }

// newBatch starts an empty batch in f.conn. Called with f.mu held (or
// before f is shared).
func (f *Firewall) newBatch() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("egress: nftables: %w", err)
	}
	f.conn = c
	return nil
}

// install adds the table, its sets and chains in one batch.
func (f *Firewall) install() error {
	if err := f.newBatch(); err != nil {
		return err
	}
	f.conn.AddTable(f.table)
	if err := f.addStaticSets(); err != nil {
		return fmt.Errorf("egress: %w", err)
	}
	f.addStaticChains()
	f.fillDispatch()
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("egress: install table %s: %w", f.cfg.Table, err)
	}
	return nil
}

// Reap removes a table an earlier Firewall left (a crashed process):
// every sandbox behind it loses its network at once. If turnbox had
// turned IPv4 forwarding on and no live Firewall (of any process) needs
// it any more, Reap turns it off again. A missing table is not an
// error. Reap must not name the table of a live Firewall.
func Reap(table string) error {
	if err := delTable(table); err != nil {
		return err
	}
	return withForwardMutex(restoreIfUnused)
}

// Close detaches every session, removes the table and drops the
// Firewall's share of IPv4 forwarding (turning it off again if turnbox
// turned it on and no other Firewall needs it).
func (f *Firewall) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	for _, s := range f.sessions {
		s.dns.close()
	}
	f.sessions = map[string]*session{}
	f.mu.Unlock()
	f.stop()
	<-f.done
	f.closeNFLOG()
	return errors.Join(delTable(f.cfg.Table), f.forward.release())
}

// Attach starts filtering s's traffic and serving its DNS. The error
// wraps environment.ErrInvalidArgument for a bad s (nothing changes) or
// environment.ErrAlreadyExists for an attached ID or interface.
func (f *Firewall) Attach(s Session) error {
	if err := s.validate(f.cfg.InterfacePrefix); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("egress: firewall closed")
	}
	for _, o := range f.sessions {
		if o.id() == s.ID || o.cfg.HostIface == s.HostIface || o.cfg.SandboxAddr == s.SandboxAddr {
			return fmt.Errorf("%w: egress session %q: id, interface or address already attached", environment.ErrAlreadyExists, s.ID)
		}
	}
	if err := f.newBatch(); err != nil {
		return err
	}
	f.next++
	sess := &session{cfg: s, tag: fmt.Sprintf("s%d", f.next)}
	sess.name.Store(&s.ID)
	st, err := sessionState(f, sess.tag, 0, s.Policy)
	if err != nil {
		return err
	}
	sess.state.Store(st)
	sess.dns, err = startResolver(f, sess)
	if err != nil {
		return err
	}
	f.addSessionObjects(sess)
	if err := f.addPolicy(sess.tag, st); err != nil {
		sess.dns.close()
		return err
	}
	if err := f.conn.SetAddElements(f.sessionsSet, []nftables.SetElement{{Key: s.SandboxAddr.AsSlice()}}); err != nil {
		sess.dns.close()
		return fmt.Errorf("egress: %w", err)
	}
	f.sessions[s.ID] = sess
	f.fillDispatch()
	if err := f.conn.Flush(); err != nil {
		delete(f.sessions, s.ID)
		sess.dns.close()
		return fmt.Errorf("egress: attach %q: %w", s.ID, err)
	}
	return nil
}

// Update replaces an attached session's policy (only Policy of s is
// read beyond its ID). Addresses the DNS filter answered before stay
// admitted where the new policy still allows their names; connections
// already established are kept.
func (f *Firewall) Update(s Session) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	sess, ok := f.sessions[s.ID]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownSession, s.ID)
	}
	next := sess.cfg
	next.Policy = s.Policy
	if err := next.validate(f.cfg.InterfacePrefix); err != nil {
		return err
	}
	st, err := sessionState(f, sess.tag, sess.gen+1, s.Policy)
	if err != nil {
		return err
	}
	old := sess.state.Load()
	if err := f.newBatch(); err != nil {
		return err
	}
	f.conn.FlushChain(&nftables.Chain{Name: sess.tag + "_policy", Table: f.table})
	if err := f.addPolicy(sess.tag, st); err != nil {
		return err
	}
	for _, g := range old.groups {
		f.conn.DelSet(g.set)
	}
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("egress: update %q: %w", s.ID, err)
	}
	sess.gen++
	sess.state.Store(st)
	sess.dns.readmit(st)
	return nil
}

// Rename changes an attached session's ID from old to new: Stats,
// Update, Detach and the logs then name it new. Its filtering, DNS
// filter and counters are unchanged (a veth attached ahead of time under
// one name is handed to the session that takes it, then Updated to that
// session's policy). The error wraps ErrUnknownSession for an old not
// attached, environment.ErrAlreadyExists for a new attached and
// environment.ErrInvalidArgument for a bad new; nothing changes then.
func (f *Firewall) Rename(old, new string) error {
	if !sessionIDPattern.MatchString(new) {
		return fmt.Errorf("%w: egress session %q: id must be 1-128 letters, digits, '.', '-' or '_'", environment.ErrInvalidArgument, new)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	sess, ok := f.sessions[old]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownSession, old)
	}
	if _, ok := f.sessions[new]; ok {
		return fmt.Errorf("%w: egress session %q is attached", environment.ErrAlreadyExists, new)
	}
	delete(f.sessions, old)
	f.sessions[new] = sess
	sess.name.Store(&new)
	return nil
}

// Detach stops filtering the session and its DNS: its interface is then
// refused entirely (as any interface with the Firewall's prefix that no
// session owns).
func (f *Firewall) Detach(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	sess, ok := f.sessions[id]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownSession, id)
	}
	if err := f.newBatch(); err != nil {
		return err
	}
	delete(f.sessions, id)
	sess.dns.close()
	f.fillDispatch()
	f.delSessionObjects(sess)
	if err := f.conn.SetDeleteElements(f.sessionsSet, []nftables.SetElement{{Key: sess.cfg.SandboxAddr.AsSlice()}}); err != nil {
		return fmt.Errorf("egress: %w", err)
	}
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("egress: detach %q: %w", id, err)
	}
	return nil
}

// Stats returns the session's counters.
func (f *Firewall) Stats(id string) (Stats, error) {
	f.mu.Lock()
	sess, ok := f.sessions[id]
	f.mu.Unlock()
	if !ok {
		return Stats{}, fmt.Errorf("%w: %q", ErrUnknownSession, id)
	}
	all, err := f.counters()
	if err != nil {
		return Stats{}, err
	}
	return sess.stats(all), nil
}

// counters reads every counter of the table, by name.
func (f *Firewall) counters() (map[string]*nftables.CounterObj, error) {
	objs, err := f.query.GetObjects(f.table)
	if err != nil {
		return nil, fmt.Errorf("egress: read counters: %w", err)
	}
	out := make(map[string]*nftables.CounterObj, len(objs))
	for _, o := range objs {
		if c, ok := o.(*nftables.CounterObj); ok {
			out[c.Name] = c
		}
	}
	return out, nil
}

// stats picks s's counters out of all.
func (s *session) stats(all map[string]*nftables.CounterObj) Stats {
	st := Stats{RefusedBy: map[string]uint64{}}
	if c := all[s.tag+"_out"]; c != nil {
		st.BytesOut, st.PacketsOut = c.Bytes, c.Packets
	}
	if c := all[s.tag+"_in"]; c != nil {
		st.BytesIn, st.PacketsIn = c.Bytes, c.Packets
	}
	for r, n := range s.refusalCounts(all) {
		if n > 0 {
			st.RefusedBy[r] = n
			st.Refused += n
		}
	}
	return st
}

// summarizeRefusals logs, once per logEvery, each session's refusals
// that got no line of their own (refusalLogs.summarize).
func (f *Firewall) summarizeRefusals(ctx context.Context) {
	defer close(f.done)
	t := time.NewTicker(logEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.mu.Lock()
		sessions := make([]*session, 0, len(f.sessions))
		for _, s := range f.sessions {
			sessions = append(sessions, s)
		}
		f.mu.Unlock()
		if len(sessions) == 0 {
			continue
		}
		all, err := f.counters()
		if err != nil {
			f.log.Warn("egress: reading counters", "err", err)
			continue
		}
		for _, s := range sessions {
			s.logs.summarize(f.log, s.id(), s.refusalCounts(all))
		}
	}
}

// refusalCounts are s's refusal counts by reason (the kernel's and the
// DNS filter's).
func (s *session) refusalCounts(all map[string]*nftables.CounterObj) map[string]uint64 {
	out := map[string]uint64{ReasonDNS: s.dns.refused.Load()}
	for _, r := range packetReasons {
		if c := all[s.tag+"_r_"+r]; c != nil {
			out[r] = c.Packets
		}
	}
	return out
}
