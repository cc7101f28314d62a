package remote_test

import (
	"errors"
	"testing"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
)

// TestLimitsOverTheWire: a session's limits travel in CreateSession's
// config and come back from GetSession; Capabilities reports the host's.
func TestLimitsOverTheWire(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	client := remote.NewClient(srv.URL)
	ctx := t.Context()
	own := &turnboxv1.Limits{MemoryBytes: 256 << 20, Cpus: 0.5, Pids: 64, DiskBytes: 8 << 20}
	if _, err := rpc(ctx, client.CreateSession, &turnboxv1.CreateSessionRequest{Config: &turnboxv1.SessionConfig{SessionId: "lim", Limits: own}}); err != nil {
		t.Fatal(err)
	}
	got, err := rpc(ctx, client.GetSession, &turnboxv1.GetSessionRequest{SessionId: "lim"})
	if err != nil {
		t.Fatal(err)
	}
	if l := got.GetSession().GetLimits(); l.GetMemoryBytes() != own.MemoryBytes || l.GetCpus() != own.Cpus || l.GetPids() != own.Pids || l.GetDiskBytes() != own.DiskBytes {
		t.Errorf("GetSession limits = %v, want %v", l, own)
	}
	caps, err := rpc(ctx, client.Capabilities, &turnboxv1.CapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if want := host.Capabilities().Limits; caps.GetCapabilities().GetLimits().GetMemoryBytes() != want.MemoryBytes || caps.GetCapabilities().GetLimitsEnforced() {
		t.Errorf("Capabilities limits = %v (enforced %v), want %+v, not enforced on none", caps.GetCapabilities().GetLimits(), caps.GetCapabilities().GetLimitsEnforced(), want)
	}
	_, err = rpc(ctx, client.CreateSession, &turnboxv1.CreateSessionRequest{Config: &turnboxv1.SessionConfig{SessionId: "neg", Limits: &turnboxv1.Limits{Pids: -1}}})
	if !errors.Is(err, environment.ErrInvalidArgument) {
		t.Errorf("CreateSession with negative pids = %v, want invalid argument", err)
	}
}
