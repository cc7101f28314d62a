package gvisor_test

import (
	"testing"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/containertest"
	"github.com/turnbox/turnbox/container/gvisor"
)

func TestNetworkNamespace(t *testing.T) {
	for _, mode := range []string{gvisor.NetstackInNamespace, gvisor.HostInNamespace} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, gvisor.WithNamespaceNetwork(mode))
			m, l := containertest.NewLink(t, "gv-"+mode)
			spec := e.spec("netns-" + mode)
			spec.Network, spec.NetNS = container.NetworkNamespace, l.NetNS
			sb := e.start(t, spec)
			containertest.CheckNetNSReach(t, sb, l.HostAddr, l.SandboxAddr)

			// The netstack took the namespace's addresses: after Reset
			// the next sandbox in the same Link has them again.
			if err := sb.Stop(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if err := m.Reset(ctxT(t), l.ID); err != nil {
				t.Fatal(err)
			}
			spec.ID += "-again"
			containertest.CheckNetNSReach(t, e.start(t, spec), l.HostAddr, l.SandboxAddr)

			// A sandbox without the namespace reaches nothing, not
			// even the host side of that veth.
			e2 := newEnv(t)
			containertest.CheckNoNetwork(t, e2.start(t, e2.spec("nonet-"+mode)), l.HostAddr)
		})
	}
}
