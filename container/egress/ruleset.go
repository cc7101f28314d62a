package egress

import (
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Names of the table's shared chains and sets. Per-session objects are
// named after the session's tag (s1_fwd, s1_out, ...), never after its
// ID, so a session ID never reaches the ruleset.
const (
	chainRefuse       = "refuse"
	chainPreDispatch  = "pre_dispatch"
	chainInDispatch   = "in_dispatch"
	chainFwdDispatch  = "fwd_dispatch"
	chainBackDispatch = "back_dispatch"
	setSessions       = "sessions4"
	setReserved       = "reserved4"
	setPrivate        = "private4"
)

// Refusal reasons: the counters' and the logs' names for what refused a
// packet.
const (
	ReasonSpoof    = "spoofed-source" // source address not the session's
	ReasonIPv6     = "ipv6"           // IPv6 is refused entirely
	ReasonHost     = "host"           // the host's own addresses
	ReasonSession  = "other-session"  // another session's sandbox
	ReasonReserved = "reserved"       // link-local, metadata, multicast, broadcast
	ReasonPrivate  = "private-range"  // private ranges under open
	ReasonPolicy   = "not-allowed"    // no allow rule names it
	ReasonDNS      = "dns-name"       // a name no rule allows (NXDOMAIN)
)

// packetReasons are the reasons counted by the kernel (ReasonDNS is
// counted by the DNS filter).
var packetReasons = []string{ReasonSpoof, ReasonIPv6, ReasonHost, ReasonSession, ReasonReserved, ReasonPrivate, ReasonPolicy}

// reservedRanges are refused in every mode, whatever the rules say.
var reservedRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("255.255.255.255/32"),
}

// privateRanges are refused under open unless an allow rule names them
// (the reserved ranges are refused before these are looked at).
var privateRanges = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
}

// baseChain adds a base chain hooked at hook with priority prio.
func (f *Firewall) baseChain(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return f.conn.AddChain(&nftables.Chain{Name: name, Table: f.table, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept})
}

// chain adds a regular chain.
func (f *Firewall) chain(name string) *nftables.Chain {
	return f.conn.AddChain(&nftables.Chain{Name: name, Table: f.table})
}

// rule appends a rule to chain.
func (f *Firewall) rule(chain string, exprs ...[]expr.Any) {
	f.conn.AddRule(&nftables.Rule{Table: f.table, Chain: &nftables.Chain{Name: chain, Table: f.table}, Exprs: join(exprs...)})
}

// sessionIfaces matches (or, with !is, excludes) the sessions' input
// (in) or output interfaces, by Config.InterfacePrefix.
func (f *Firewall) sessionIfaces(in, is bool) []expr.Any {
	return ifnameHasPrefix(f.cfg.InterfacePrefix, in, is)
}

// one wraps a single expression as a match list.
func one(e expr.Any) []expr.Any { return []expr.Any{e} }

// addStaticSets adds the table's shared sets to the batch.
func (f *Firewall) addStaticSets() error {
	f.sessionsSet = &nftables.Set{Table: f.table, Name: setSessions, KeyType: nftables.TypeIPAddr}
	if err := f.conn.AddSet(f.sessionsSet, nil); err != nil {
		return err
	}
	for _, s := range []struct {
		name string
		p    []netip.Prefix
	}{{setReserved, reservedRanges}, {setPrivate, privateRanges}} {
		set := &nftables.Set{Table: f.table, Name: s.name, KeyType: nftables.TypeIPAddr, Interval: true, Constant: true}
		if err := f.conn.AddSet(set, intervalElements(s.p)); err != nil {
			return err
		}
	}
	return nil
}

// addStaticChains adds the base chains, the dispatch chains (filled by
// fillDispatch) and the refuse chain to the batch.
func (f *Firewall) addStaticChains() {
	f.chain(chainRefuse)
	f.rule(chainRefuse, l4proto(unix.IPPROTO_TCP), one(&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}))
	f.rule(chainRefuse, one(&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}))
	for _, c := range []string{chainPreDispatch, chainInDispatch, chainFwdDispatch, chainBackDispatch} {
		f.chain(c)
	}
	f.baseChain("pre", nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityMangle)
	f.rule("pre", f.sessionIfaces(true, true), one(verdict(expr.VerdictJump, chainPreDispatch)))

	f.baseChain("dns_redirect", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest)
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		f.rule("dns_redirect", f.sessionIfaces(true, true), nfproto(unix.NFPROTO_IPV4), l4proto(proto), dport(53, 53),
			one(&expr.Immediate{Register: 1, Data: be16(f.cfg.ResolverPort)}),
			one(&expr.Redir{RegisterProtoMin: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED}))
	}

	f.baseChain("input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter)
	f.rule("input", f.sessionIfaces(true, true), one(verdict(expr.VerdictJump, chainInDispatch)))

	f.baseChain("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	f.rule("forward", f.sessionIfaces(true, true), one(verdict(expr.VerdictJump, chainFwdDispatch)))
	f.rule("forward", f.sessionIfaces(false, true), one(verdict(expr.VerdictJump, chainBackDispatch)))

	f.baseChain("masquerade", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	f.rule("masquerade", nfproto(unix.NFPROTO_IPV4), one(ip4Field(true)),
		one(&expr.Lookup{SourceRegister: 1, SetName: f.sessionsSet.Name, SetID: f.sessionsSet.ID}),
		f.sessionIfaces(false, false), one(&expr.Masq{}))
}

// fillDispatch rewrites the dispatch chains from the attached sessions:
// each sends a session's packets, by interface, to that session's
// chains; an interface with the Firewall's prefix that no session owns
// is refused (fail closed).
// Called with f.mu held.
func (f *Firewall) fillDispatch() {
	for _, c := range []string{chainPreDispatch, chainInDispatch, chainFwdDispatch, chainBackDispatch} {
		f.conn.FlushChain(&nftables.Chain{Name: c, Table: f.table})
	}
	for _, s := range f.sessions {
		iface, tag := s.cfg.HostIface, s.tag
		f.rule(chainPreDispatch, ifname(true, iface), one(verdict(expr.VerdictGoto, tag+"_pre")))
		f.rule(chainInDispatch, ifname(true, iface), one(verdict(expr.VerdictGoto, tag+"_local")))
		f.rule(chainFwdDispatch, ifname(true, iface), one(verdict(expr.VerdictGoto, tag+"_fwd")))
		f.rule(chainBackDispatch, ifname(false, iface), one(verdict(expr.VerdictGoto, tag+"_back")))
	}
	f.rule(chainPreDispatch, one(verdict(expr.VerdictGoto, chainRefuse)))
	f.rule(chainInDispatch, one(verdict(expr.VerdictGoto, chainRefuse)))
	f.rule(chainFwdDispatch, one(verdict(expr.VerdictGoto, chainRefuse)))
	f.rule(chainBackDispatch, one(verdict(expr.VerdictDrop, "")))
}
