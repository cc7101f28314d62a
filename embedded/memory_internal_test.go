package embedded

import (
	"errors"
	"testing"

	"github.com/turnbox/turnbox/embedded/ledger"
	"github.com/turnbox/turnbox/environment"
)

// checkMemory refuses memory snapshots with a network, and a fork keeps
// its parent's choice.
func TestCheckMemory(t *testing.T) {
	h := &Host{caps: environment.Capabilities{MemorySnapshots: true}}
	c := &creation{h: h, cfg: environment.SessionConfig{SnapshotMemory: true, Network: environment.NetworkPolicy{Mode: environment.NetworkEgress}}}
	if err := c.checkMemory(nil); !errors.Is(err, environment.ErrInvalidArgument) {
		t.Fatalf("memory with network egress: %v", err)
	}
	c.cfg.Network.Mode = environment.NetworkNone
	if err := c.checkMemory(nil); err != nil {
		t.Fatalf("memory with network none: %v", err)
	}
	for _, fork := range []*creation{
		{h: h, parent: ledger.SnapshotRecord{Memory: true}},
		{h: h, cfg: environment.SessionConfig{FromSnapshot: "p@1"}},
	} {
		parent := &environment.SessionConfig{SnapshotMemory: !fork.parent.Memory}
		if err := fork.checkMemory(parent); err != nil || !fork.cfg.SnapshotMemory {
			t.Fatalf("fork %+v: SnapshotMemory %v, %v; want inherited", fork.parent, fork.cfg.SnapshotMemory, err)
		}
	}
	plain := &creation{h: h}
	if err := plain.checkMemory(&environment.SessionConfig{}); err != nil || plain.cfg.SnapshotMemory {
		t.Fatalf("fork of a files-only parent: %v, %v", plain.cfg.SnapshotMemory, err)
	}
}
