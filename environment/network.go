package environment

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// NetworkMode is what a session's sandbox may reach beyond its own
// loopback.
type NetworkMode string

// Network modes, from the most closed.
const (
	// NetworkNone: loopback only (the default).
	NetworkNone NetworkMode = "none"
	// NetworkEgress: outgoing connections to what the policy's Allow
	// rules name only; everything else is refused at once (a reset, an
	// ICMP unreachable or a DNS NXDOMAIN, never a silent drop).
	NetworkEgress NetworkMode = "egress"
	// NetworkOpen: outgoing connections anywhere public; private,
	// loopback, link-local and shared ranges only where Allow names
	// them.
	NetworkOpen NetworkMode = "open"
)

// Rank orders the modes from the most closed (none: 0) to the most open
// (open: 2); an unknown mode ranks -1.
func (m NetworkMode) Rank() int {
	switch m {
	case NetworkNone, "":
		return 0
	case NetworkEgress:
		return 1
	case NetworkOpen:
		return 2
	}
	return -1
}

// Bounds of a network policy.
const (
	// MaxNetworkRules bounds NetworkPolicy.Allow.
	MaxNetworkRules = 256
	// MaxNetworkRuleLength bounds each rule.
	MaxNetworkRuleLength = 300
)

// NetworkPolicy is a session's network: its mode and, for egress (and
// private ranges under open), what it may reach. Whatever the policy, a
// sandbox never reaches the host itself or another session.
type NetworkPolicy struct {
	// Mode is the session's mode ("": the host's default).
	Mode NetworkMode `json:"mode,omitempty"`
	// Allow lists what the sandbox may connect to, each rule
	// "TARGET[:PORTS]": TARGET is a host name ("pypi.org", exact), a
	// wildcard ("*.pythonhosted.org": any name under it, not the name
	// itself), an IP address or a CIDR prefix ("10.1.0.0/16"; an IPv6
	// one in brackets when ports follow: "[2001:db8::/32]:443"); PORTS
	// is a port or a range ("443", "8000-8100"), every port when absent.
	Allow []string `json:"allow,omitempty"`
}

// NetworkRule is one parsed NetworkPolicy.Allow rule.
type NetworkRule struct {
	// Host is a lower-case host name without a trailing dot; with
	// Wildcard it is the suffix ("pythonhosted.org" for
	// "*.pythonhosted.org"). Empty for an address rule.
	Host     string
	Wildcard bool
	// Prefix is the address rule's prefix (a single address is a /32 or
	// /128); invalid for a name rule.
	Prefix netip.Prefix
	// PortLo and PortHi bound the allowed ports (1-65535 when the rule
	// names none).
	PortLo, PortHi uint16
}

// MatchesName reports whether host name (lower case, no trailing dot) is
// allowed by r, a name rule.
func (r NetworkRule) MatchesName(name string) bool {
	if r.Host == "" {
		return false
	}
	if r.Wildcard {
		return strings.HasSuffix(name, "."+r.Host)
	}
	return name == r.Host
}

// ParseNetworkRule parses one NetworkPolicy.Allow rule. The error wraps
// ErrInvalidArgument.
func ParseNetworkRule(s string) (NetworkRule, error) {
	bad := func(why string) (NetworkRule, error) {
		return NetworkRule{}, fmt.Errorf("%w: network rule %q: %s", ErrInvalidArgument, s, why)
	}
	if s == "" || len(s) > MaxNetworkRuleLength {
		return bad(fmt.Sprintf("empty or longer than %d bytes", MaxNetworkRuleLength))
	}
	target, ports := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 {
			return bad("an unclosed '['")
		}
		target, ports = s[1:end], strings.TrimPrefix(s[end+1:], ":")
		if rest := s[end+1:]; rest != "" && !strings.HasPrefix(rest, ":") {
			return bad("text after ']' that is not :PORTS")
		}
	} else if strings.Count(s, ":") == 1 {
		target, ports, _ = strings.Cut(s, ":")
	}
	r := NetworkRule{PortLo: 1, PortHi: 65535}
	if ports != "" || strings.HasSuffix(s, ":") {
		lo, hi, err := parsePorts(ports)
		if err != nil {
			return bad(err.Error())
		}
		r.PortLo, r.PortHi = lo, hi
	}
	if p, err := parsePrefix(target); err == nil {
		r.Prefix = p
		return r, nil
	}
	name := strings.ToLower(strings.TrimSuffix(target, "."))
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		r.Wildcard, name = true, rest
	}
	if err := checkHostName(name); err != nil {
		return bad(err.Error())
	}
	r.Host = name
	return r, nil
}

// parsePrefix parses an address or a CIDR prefix (masked).
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// parsePorts parses "443" or "8000-8100".
func parsePorts(s string) (uint16, uint16, error) {
	los, his, isRange := strings.Cut(s, "-")
	if !isRange {
		his = los
	}
	lo, err1 := strconv.ParseUint(los, 10, 16)
	hi, err2 := strconv.ParseUint(his, 10, 16)
	if err1 != nil || err2 != nil || lo == 0 || hi < lo {
		return 0, 0, fmt.Errorf("ports %q: want a port 1-65535 or a range LO-HI", s)
	}
	return uint16(lo), uint16(hi), nil
}

// checkHostName checks a lower-case DNS name: labels of letters, digits
// and '-' (and '_', which service names use), 1-63 bytes each, at most
// 253 in all, at least two labels.
func checkHostName(name string) error {
	if len(name) == 0 || len(name) > 253 {
		return fmt.Errorf("not a host name, an address or a CIDR prefix")
	}
	labels := strings.Split(name, ".")
	if len(labels) < 2 {
		return fmt.Errorf("a host name needs a domain (%q has one label)", name)
	}
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("not a host name, an address or a CIDR prefix")
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("not a host name, an address or a CIDR prefix")
			}
		}
	}
	return nil
}

// Rules parses every Allow rule of p.
func (p NetworkPolicy) Rules() ([]NetworkRule, error) {
	if len(p.Allow) > MaxNetworkRules {
		return nil, fmt.Errorf("%w: %d network rules, more than %d", ErrInvalidArgument, len(p.Allow), MaxNetworkRules)
	}
	out := make([]NetworkRule, 0, len(p.Allow))
	for _, s := range p.Allow {
		r, err := ParseNetworkRule(s)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Validate checks p's mode and rules. The error wraps ErrInvalidArgument.
func (p NetworkPolicy) Validate() error {
	if p.Mode.Rank() < 0 {
		return fmt.Errorf("%w: network mode %q (want none, egress or open)", ErrInvalidArgument, p.Mode)
	}
	if p.Mode.Rank() == 0 && len(p.Allow) > 0 {
		return fmt.Errorf("%w: network mode none allows nothing; allow rules need egress or open", ErrInvalidArgument)
	}
	_, err := p.Rules()
	return err
}
