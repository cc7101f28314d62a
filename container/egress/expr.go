package egress

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// This file holds the nftables expression helpers the ruleset is built
// from. Each returns the expressions of one match; a rule is matches
// followed by a verdict.

// ifname matches the input (in) or output interface name exactly.
func ifname(in bool, name string) []expr.Any {
	key := expr.MetaKeyOIFNAME
	if in {
		key = expr.MetaKeyIIFNAME
	}
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}
}

// ifnameHasPrefix matches (or, with !is, excludes) every interface whose
// name starts with prefix: nft's iifname "tb-*".
func ifnameHasPrefix(prefix string, in, is bool) []expr.Any {
	key := expr.MetaKeyOIFNAME
	if in {
		key = expr.MetaKeyIIFNAME
	}
	op := expr.CmpOpEq
	if !is {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: []byte(prefix)},
	}
}

// nfproto matches the layer 3 family (unix.NFPROTO_IPV4 or _IPV6).
func nfproto(family byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
	}
}

// l4proto matches the transport protocol (unix.IPPROTO_TCP, ...).
func l4proto(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// ip4Field loads the IPv4 source (src) or destination address into
// register 1; only valid after nfproto(NFPROTO_IPV4).
func ip4Field(src bool) *expr.Payload {
	off := uint32(16)
	if src {
		off = 12
	}
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4}
}

// ip4Is matches the IPv4 source or destination address equal (or, with
// !eq, unequal) to a.
func ip4Is(src bool, a netip.Addr, eq bool) []expr.Any {
	op := expr.CmpOpEq
	if !eq {
		op = expr.CmpOpNeq
	}
	b := a.As4()
	return []expr.Any{ip4Field(src), &expr.Cmp{Op: op, Register: 1, Data: b[:]}}
}

// ip4InPrefix matches the IPv4 destination address inside p.
func ip4InPrefix(p netip.Prefix) []expr.Any {
	mask := make([]byte, 4)
	binary.BigEndian.PutUint32(mask, ^uint32(0)<<(32-p.Bits()))
	if p.Bits() == 0 {
		mask = []byte{0, 0, 0, 0}
	}
	net := p.Masked().Addr().As4()
	return []expr.Any{
		ip4Field(false),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: net[:]},
	}
}

// ip4InSet matches the IPv4 destination address in the named set.
func ip4InSet(set *nftables.Set) []expr.Any {
	return []expr.Any{ip4Field(false), &expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID}}
}

// dport matches the transport destination port in [lo, hi]; only valid
// after l4proto(TCP or UDP).
func dport(lo, hi uint16) []expr.Any {
	load := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
	if lo == hi {
		return []expr.Any{load, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(lo)}}
	}
	return []expr.Any{load, &expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: be16(lo), ToData: be16(hi)}}
}

// be16 is v in network byte order.
func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// ctState matches a connection in any of the states (expr.CtStateBit*).
func ctState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, bits), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

// established matches packets of known connections and their related
// ICMP errors.
func established() []expr.Any {
	return ctState(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED)
}

// countTo adds the packet to the named counter object.
func countTo(name string) expr.Any {
	return &expr.Objref{Type: int(nftables.ObjTypeCounter), Name: name}
}

// verdict is a terminal verdict (accept, drop) or, with a chain, a jump
// or goto.
func verdict(kind expr.VerdictKind, chain string) expr.Any {
	return &expr.Verdict{Kind: kind, Chain: chain}
}

// join concatenates expression lists into one rule body.
func join(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// intervalElements turns prefixes into the elements of an interval set
// of IPv4 addresses (each range as a start and an exclusive end).
func intervalElements(prefixes []netip.Prefix) []nftables.SetElement {
	var out []nftables.SetElement
	for _, p := range prefixes {
		start := p.Masked().Addr().As4()
		n := binary.BigEndian.Uint32(start[:])
		size := uint64(1) << (32 - p.Bits())
		out = append(out, nftables.SetElement{Key: start[:]})
		if end := uint64(n) + size; end <= 0xffffffff {
			out = append(out, nftables.SetElement{Key: binary.BigEndian.AppendUint32(nil, uint32(end)), IntervalEnd: true})
		}
	}
	return out
}
