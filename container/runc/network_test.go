package runc_test

import (
	"testing"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/containertest"
)

func TestNetworkNamespace(t *testing.T) {
	rt := newRuntime(t)
	_, l := containertest.NewLink(t, "runc-netns")
	sb, _ := start(t, rt, func(s *container.Spec) { s.Network, s.NetNS = container.NetworkNamespace, l.NetNS })
	containertest.CheckNetNSReach(t, sb, l.HostAddr, l.SandboxAddr)

	// A sandbox without the namespace reaches nothing, not even the
	// host side of that veth.
	none, _ := start(t, rt)
	containertest.CheckNoNetwork(t, none, l.HostAddr)
}
