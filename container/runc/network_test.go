package runc_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/containertest"
	"github.com/turnbox/turnbox/container/netns"
)

// newLink makes a network namespace with a veth pair for one sandbox,
// removed at the test's end.
func newLink(t *testing.T, id string) *netns.Link {
	t.Helper()
	m, err := netns.New(netns.Config{Dir: filepath.Join(t.TempDir(), "netns")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Reap(context.Background()); err != nil {
			t.Errorf("netns Reap: %v", err)
		}
		m.Close()
	})
	l, err := m.Create(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestNetworkNamespace(t *testing.T) {
	rt := newRuntime(t)
	l := newLink(t, "runc-netns")
	sb, _ := start(t, rt, func(s *container.Spec) { s.Network, s.NetNS = container.NetworkNamespace, l.NetNS })
	containertest.CheckNetNSReach(t, sb, l.HostAddr, l.SandboxAddr)

	// A sandbox without the namespace reaches nothing, not even the
	// host side of that veth.
	none, _ := start(t, rt)
	containertest.CheckNoNetwork(t, none, l.HostAddr)
}
