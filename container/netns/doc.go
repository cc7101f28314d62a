// Package netns gives each sandbox a network namespace of its own, made
// and owned by the host: a namespace bind-mounted under the Manager's
// directory, a veth pair whose host side (Config.IfacePrefix, default
// "tb-", and a hash of the id) stays in the
// host's namespace and whose other side is the namespace's "eth0", and a
// /30 of the Manager's subnet (host .1, sandbox .2) with a default route
// through the host side. IPv6 is disabled in the namespace, so nothing
// the sandbox sends bypasses IPv4 policy; the host side has strict
// reverse-path filtering and no proxy ARP.
//
// This package is only the plumbing. It enables no forwarding and adds
// no NAT or firewall rule: with nothing more, a sandbox reaches the host
// side address of its own veth and nothing else beyond its /30 (the host
// does not forward). What a sandbox may reach is the egress package's
// job (container/egress).
//
// A runtime joins the namespace through container.Spec{Network:
// container.NetworkNamespace, NetNS: Link.NetNS}.
package netns
