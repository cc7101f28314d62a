package environment_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/environment"
)

func TestParseNetworkRule(t *testing.T) {
	for _, c := range []struct {
		in   string
		want environment.NetworkRule
	}{
		{"pypi.org", environment.NetworkRule{Host: "pypi.org", PortLo: 1, PortHi: 65535}},
		{"PyPI.org.:443", environment.NetworkRule{Host: "pypi.org", PortLo: 443, PortHi: 443}},
		{"*.pythonhosted.org", environment.NetworkRule{Host: "pythonhosted.org", Wildcard: true, PortLo: 1, PortHi: 65535}},
		{"10.1.2.3", environment.NetworkRule{Prefix: netip.MustParsePrefix("10.1.2.3/32"), PortLo: 1, PortHi: 65535}},
		{"10.1.2.3/16:5432", environment.NetworkRule{Prefix: netip.MustParsePrefix("10.1.0.0/16"), PortLo: 5432, PortHi: 5432}},
		{"2001:db8::1", environment.NetworkRule{Prefix: netip.MustParsePrefix("2001:db8::1/128"), PortLo: 1, PortHi: 65535}},
		{"[2001:db8::/32]:8000-8100", environment.NetworkRule{Prefix: netip.MustParsePrefix("2001:db8::/32"), PortLo: 8000, PortHi: 8100}},
		{"_svc.example.com", environment.NetworkRule{Host: "_svc.example.com", PortLo: 1, PortHi: 65535}},
	} {
		got, err := environment.ParseNetworkRule(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseNetworkRule(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "localhost", "a..b", "-a.com", "a.com:0", "a.com:70000", "a.com:9-8", "a.com:", "[::1", "[::1]x",
		"*.com.*", "a b.com", "a.com:80:90", "http://a.com", strings.Repeat("a", 301), "x." + strings.Repeat("a", 64) + ".com"} {
		if _, err := environment.ParseNetworkRule(in); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("ParseNetworkRule(%q): %v, want ErrInvalidArgument", in, err)
		}
	}
	r, _ := environment.ParseNetworkRule("*.example.com")
	if !r.MatchesName("a.example.com") || !r.MatchesName("b.a.example.com") || r.MatchesName("example.com") || r.MatchesName("badexample.com") {
		t.Error("wildcard matching")
	}
}

func TestNetworkPolicyValidate(t *testing.T) {
	for _, p := range []environment.NetworkPolicy{{}, {Mode: "none"}, {Mode: "egress", Allow: []string{"pypi.org:443"}}, {Mode: "open"}} {
		if err := p.Validate(); err != nil {
			t.Errorf("%+v: %v", p, err)
		}
	}
	many := make([]string, environment.MaxNetworkRules+1)
	for i := range many {
		many[i] = "a.com"
	}
	for _, p := range []environment.NetworkPolicy{{Mode: "bridge"}, {Mode: "none", Allow: []string{"a.com"}}, {Mode: "egress", Allow: []string{"bad rule"}}, {Mode: "egress", Allow: many}} {
		if err := p.Validate(); !errors.Is(err, environment.ErrInvalidArgument) {
			t.Errorf("%+v: %v, want ErrInvalidArgument", p.Mode, err)
		}
	}
	if err := (environment.SessionConfig{Network: environment.NetworkPolicy{Mode: "x"}}).Validate(); err == nil {
		t.Error("SessionConfig.Validate accepts a bad network mode")
	}
}
