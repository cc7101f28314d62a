package egress

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"sync/atomic"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/environment"
)

// Session is one sandbox's network as the Firewall sees it: the
// host-side end of its veth, the two ends' addresses, and its policy.
type Session struct {
	// ID names the session in Stats, Detach and logs (letters, digits,
	// '-', '_', '.', at most 128 bytes).
	ID string
	// HostIface is the host-side veth (Config.InterfacePrefix + "..."),
	// in the root namespace.
	HostIface string
	// HostAddr is HostIface's IPv4 address (the sandbox's gateway and
	// DNS server); SandboxAddr is the sandbox's eth0 address.
	HostAddr, SandboxAddr netip.Addr
	// Policy is what the sandbox may reach.
	Policy environment.NetworkPolicy
}

var sessionIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// validate checks s; the error wraps environment.ErrInvalidArgument.
func (s Session) validate(prefix string) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: egress session %q: %s", environment.ErrInvalidArgument, s.ID, fmt.Sprintf(format, a...))
	}
	switch {
	case !sessionIDPattern.MatchString(s.ID):
		return bad("id must be 1-128 letters, digits, '.', '-' or '_'")
	case len(s.HostIface) <= len(prefix) || len(s.HostIface) >= unix.IFNAMSIZ || !strings.HasPrefix(s.HostIface, prefix):
		return bad("host interface %q must be named %s... (at most 15 bytes)", s.HostIface, prefix)
	case !s.HostAddr.Is4() || !s.SandboxAddr.Is4() || s.HostAddr == s.SandboxAddr:
		return bad("host and sandbox addresses must be two distinct IPv4 addresses")
	}
	return s.Policy.Validate()
}

// portGroup is the name rules sharing one port range, and the set of
// the addresses the DNS filter answered for them.
type portGroup struct {
	lo, hi uint16
	set    *nftables.Set
}

// policyState is a session's parsed policy and the sets it uses; it is
// replaced whole by Update.
type policyState struct {
	mode   environment.NetworkMode
	rules  []environment.NetworkRule
	groups []portGroup
}

// groupsFor returns the groups of the name rules matching name.
func (p *policyState) groupsFor(name string) []portGroup {
	var out []portGroup
	for _, r := range p.rules {
		if !r.MatchesName(name) {
			continue
		}
		for _, g := range p.groups {
			if g.lo == r.PortLo && g.hi == r.PortHi {
				out = append(out, g)
			}
		}
	}
	return out
}

// session is an attached session.
type session struct {
	cfg   Session                // as attached, never changed (its Policy is state's; its ID name's)
	name  atomic.Pointer[string] // the session's ID: cfg.ID until a Rename
	tag   string                 // "s<n>": the prefix of its nftables objects
	gen   int                    // bumped by each Update; names the groups' sets
	state atomic.Pointer[policyState]
	dns   *resolver
	logs  refusalLogs
}

// id returns the session's ID (Rename changes it; read without f.mu by
// the DNS filter's logs).
func (s *session) id() string { return *s.name.Load() }

// sessionState builds the policy state of s (set names from tag and
// gen); the sets are not yet in the batch.
func sessionState(f *Firewall, tag string, gen int, p environment.NetworkPolicy) (*policyState, error) {
	rules, err := p.Rules()
	if err != nil {
		return nil, err
	}
	st := &policyState{mode: p.Mode, rules: rules}
	if st.mode == "" {
		st.mode = environment.NetworkNone
	}
	for _, r := range rules {
		if r.Host == "" || st.hasGroup(r.PortLo, r.PortHi) {
			continue
		}
		st.groups = append(st.groups, portGroup{lo: r.PortLo, hi: r.PortHi, set: &nftables.Set{
			Table: f.table, Name: fmt.Sprintf("%s_g%d_%d", tag, gen, len(st.groups)),
			KeyType: nftables.TypeIPAddr, HasTimeout: true, Size: maxAnswered,
		}})
	}
	return st, nil
}

// hasGroup reports whether st has a group for ports lo-hi.
func (p *policyState) hasGroup(lo, hi uint16) bool {
	for _, g := range p.groups {
		if g.lo == lo && g.hi == hi {
			return true
		}
	}
	return false
}

// refuseRule appends to chain a rule refusing what match matches, for
// reason: it goes to the session's refusal chain for reason.
func (f *Firewall) refuseRule(chain, tag, reason string, match ...[]expr.Any) {
	f.rule(chain, join(match...), one(verdict(expr.VerdictGoto, refusalChain(tag, reason))))
}

// refusalChain names tag's chain refusing packets for reason.
func refusalChain(tag, reason string) string { return tag + "_x_" + reason }

// sessionChains are the suffixes of a session's chains (after its tag),
// the refusal chains last: the others jump to them.
func sessionChains() []string {
	return append([]string{"_pre", "_local", "_fwd", "_back", "_policy"}, prefixAll("_x_", packetReasons)...)
}

// addRefusalChains fills tag's refusal chains: each counts the packet,
// sends a record of it to the Firewall's NFLOG group (at most
// kernelLogRate a second; never delaying the packet) and refuses it
// (spoofed sources are dropped: a reply would go to the address's
// owner).
func (f *Firewall) addRefusalChains(tag string) {
	for _, reason := range packetReasons {
		chain := refusalChain(tag, reason)
		f.rule(chain, one(countTo(tag+"_r_"+reason)))
		if f.nflog != nil {
			f.rule(chain, logExprs(f.nflog.group, tag, reason))
		}
		if reason == ReasonSpoof {
			f.rule(chain, one(verdict(expr.VerdictDrop, "")))
		} else {
			f.rule(chain, one(verdict(expr.VerdictGoto, chainRefuse)))
		}
	}
}

// addSessionObjects adds s's counters and fixed chains to the batch.
func (f *Firewall) addSessionObjects(s *session) {
	tag, c := s.tag, s.cfg
	for _, name := range append([]string{"out", "in"}, prefixAll("r_", packetReasons)...) {
		f.conn.AddObj(&nftables.CounterObj{Table: f.table, Name: tag + "_" + name})
	}
	for _, ch := range sessionChains() {
		f.chain(tag + ch)
	}
	f.addRefusalChains(tag)
	pre, local, fwd, back := tag+"_pre", tag+"_local", tag+"_fwd", tag+"_back"
	// IPv6 is refused, but neighbour discovery answered, so that the
	// refusal (a reset or an ICMPv6 error) reaches the sandbox at once.
	f.neighbourDiscovery(pre, expr.VerdictReturn)
	// What any IPv6 stack sends on its own (router solicitations, MLD
	// reports) is dropped without counting: not the agent's doing.
	f.icmpv6Types(pre, expr.VerdictDrop, 133, 143)
	f.refuseRule(pre, tag, ReasonIPv6, nfproto(unix.NFPROTO_IPV6))
	f.refuseRule(pre, tag, ReasonSpoof, nfproto(unix.NFPROTO_IPV4), ip4Is(true, c.SandboxAddr, false))

	f.rule(local, established(), one(verdict(expr.VerdictAccept, "")))
	f.neighbourDiscovery(local, expr.VerdictAccept)
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		f.rule(local, nfproto(unix.NFPROTO_IPV4), ip4Is(false, c.HostAddr, true), l4proto(proto),
			dport(f.cfg.ResolverPort, f.cfg.ResolverPort), one(verdict(expr.VerdictAccept, "")))
	}
	f.refuseRule(local, tag, ReasonHost)

	f.rule(fwd, one(countTo(tag+"_out")))
	f.rule(fwd, established(), one(verdict(expr.VerdictAccept, "")))
	f.refuseRule(fwd, tag, ReasonHost, one(&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true}),
		one(&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryNative32(unix.RTN_LOCAL)}))
	f.refuseRule(fwd, tag, ReasonSession, nfproto(unix.NFPROTO_IPV4), ip4InSet(f.sessionsSet))
	f.refuseRule(fwd, tag, ReasonReserved, nfproto(unix.NFPROTO_IPV4), ip4InSet(&nftables.Set{Name: setReserved}))
	f.rule(fwd, one(verdict(expr.VerdictGoto, tag+"_policy")))

	f.rule(back, one(countTo(tag+"_in")))
	f.rule(back, established(), one(verdict(expr.VerdictAccept, "")))
	f.rule(back, one(verdict(expr.VerdictDrop, "")))
}

// neighbourDiscovery appends rules giving ICMPv6 neighbour
// solicitations and advertisements verdict v in chain.
func (f *Firewall) neighbourDiscovery(chain string, v expr.VerdictKind) {
	f.icmpv6Types(chain, v, 135, 136)
}

// icmpv6Types appends rules giving ICMPv6 messages of the types verdict
// v in chain.
func (f *Firewall) icmpv6Types(chain string, v expr.VerdictKind, types ...byte) {
	for _, typ := range types {
		f.rule(chain, nfproto(unix.NFPROTO_IPV6), l4proto(unix.IPPROTO_ICMPV6),
			one(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1}),
			one(&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{typ}}), one(verdict(v, "")))
	}
}

// addPolicy adds st's sets and fills the session's policy chain (which
// must be empty) in the batch.
func (f *Firewall) addPolicy(tag string, st *policyState) error {
	for _, g := range st.groups {
		if err := f.conn.AddSet(g.set, nil); err != nil {
			return fmt.Errorf("egress: set %s: %w", g.set.Name, err)
		}
	}
	chain := tag + "_policy"
	if st.mode == environment.NetworkNone {
		f.refuseRule(chain, tag, ReasonPolicy)
		return nil
	}
	for _, r := range st.rules {
		if r.Host == "" && r.Prefix.Addr().Is4() {
			f.allowRule(chain, r.PortLo, r.PortHi, ip4InPrefix(r.Prefix))
		}
	}
	for _, g := range st.groups {
		f.allowRule(chain, g.lo, g.hi, ip4InSet(g.set))
	}
	if st.mode == environment.NetworkEgress {
		f.refuseRule(chain, tag, ReasonPolicy)
		return nil
	}
	f.refuseRule(chain, tag, ReasonPrivate, nfproto(unix.NFPROTO_IPV4), ip4InSet(&nftables.Set{Name: setPrivate}))
	f.rule(chain, nfproto(unix.NFPROTO_IPV4), one(verdict(expr.VerdictAccept, "")))
	f.refuseRule(chain, tag, ReasonIPv6)
	return nil
}

// allowRule accepts IPv4 packets matching match on ports lo-hi (any
// protocol when the range is every port, else TCP and UDP).
func (f *Firewall) allowRule(chain string, lo, hi uint16, match []expr.Any) {
	if lo <= 1 && hi == 65535 {
		f.rule(chain, nfproto(unix.NFPROTO_IPV4), match, one(verdict(expr.VerdictAccept, "")))
		return
	}
	for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
		f.rule(chain, nfproto(unix.NFPROTO_IPV4), match, l4proto(proto), dport(lo, hi), one(verdict(expr.VerdictAccept, "")))
	}
}

// delSessionObjects deletes s's chains, sets and counters in the batch
// (the dispatch chains must no longer name them).
func (f *Firewall) delSessionObjects(s *session) {
	for _, ch := range sessionChains() {
		c := &nftables.Chain{Name: s.tag + ch, Table: f.table}
		f.conn.FlushChain(c)
		f.conn.DelChain(c)
	}
	for _, g := range s.state.Load().groups {
		f.conn.DelSet(g.set)
	}
	for _, name := range append([]string{"out", "in"}, prefixAll("r_", packetReasons)...) {
		f.conn.DeleteObject(&nftables.CounterObj{Table: f.table, Name: s.tag + "_" + name})
	}
}

// prefixAll returns each of names with prefix before it.
func prefixAll(prefix string, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = prefix + n
	}
	return out
}

// binaryNative32 is v in host byte order (fib's result register).
func binaryNative32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
