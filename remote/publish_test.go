package remote_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
)

// Publications cross the wire: PublishPort, ListPorts and UnpublishPort
// through the Go client, the ports in GetSession, and each error with its
// sentinel.
func TestPublishPortOnTheWire(t *testing.T) {
	srv := startServer(t, newHost(t), "")
	c := remote.NewClient(srv.URL)
	ctx := context.Background()
	env := remote.NewNativeSandboxEnvironment(c, remote.DefaultConfig(), nil)
	if err := env.Create(ctx, environment.SessionConfig{}); err != nil {
		t.Fatal(err)
	}
	defer env.Destroy(ctx)
	if !env.Capabilities().Ports {
		t.Error("Capabilities.Ports over the wire = false")
	}
	if p, err := env.PublishPort(ctx, 8080, environment.PublishOptions{Public: true}); err != nil || p != (environment.PublishedPort{Port: 8080, Public: true}) {
		t.Fatalf("PublishPort = %+v, %v", p, err)
	}
	if _, err := env.PublishPort(ctx, 3000, environment.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []environment.PublishedPort{{Port: 3000}, {Port: 8080, Public: true}}
	if got, err := env.PublishedPorts(ctx); err != nil || !slices.Equal(got, want) {
		t.Fatalf("PublishedPorts = %v, %v; want %v", got, err, want)
	}
	resp, err := rpc(ctx, c.GetSession, &turnboxv1.GetSessionRequest{SessionId: env.SessionID()})
	if err != nil || len(resp.GetSession().GetPorts()) != 2 || resp.GetSession().GetNetwork().GetMode() != "none" {
		t.Errorf("GetSession: ports %v network %v, %v", resp.GetSession().GetPorts(), resp.GetSession().GetNetwork(), err)
	}
	if err := env.UnpublishPort(ctx, 3000); err != nil {
		t.Fatal(err)
	}
	if err := env.UnpublishPort(ctx, 3000); !errors.Is(err, environment.ErrPortNotPublished) {
		t.Errorf("second UnpublishPort = %v, want ErrPortNotPublished", err)
	}
	_, err = rpc(ctx, c.PublishPort, &turnboxv1.PublishPortRequest{SessionId: env.SessionID(), Port: 70000})
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument {
		t.Errorf("PublishPort of port 70000 = %v, want InvalidArgument", err)
	}
	_, err = rpc(ctx, c.ListPorts, &turnboxv1.ListPortsRequest{SessionId: "s-nosuch"})
	if !errors.As(err, &ce) || ce.Code() != connect.CodeNotFound {
		t.Errorf("ListPorts of an unknown session = %v, want NotFound", err)
	}
}
