package remote_test

import (
	"context"
	"errors"
	"testing"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
)

// A network policy crosses the wire: a malformed one is InvalidArgument,
// one the host cannot enforce is refused rather than ignored; the host's
// network ceiling comes back in Capabilities.
func TestNetworkPolicyOnTheWire(t *testing.T) {
	srv := startServer(t, newHost(t), "")
	c := remote.NewClient(srv.URL)
	ctx := context.Background()
	for _, tc := range []struct {
		policy *turnboxv1.NetworkPolicy
		code   connect.Code
		reason string
	}{
		{&turnboxv1.NetworkPolicy{Mode: "bridge"}, connect.CodeInvalidArgument, "INVALID_ARGUMENT"},
		{&turnboxv1.NetworkPolicy{Mode: "egress", Allow: []string{"not a rule"}}, connect.CodeInvalidArgument, "INVALID_ARGUMENT"},
		{&turnboxv1.NetworkPolicy{Mode: "egress", Allow: []string{"pypi.org:443"}}, connect.CodeUnimplemented, "CAPABILITY_NOT_SUPPORTED"},
	} {
		_, err := rpc(ctx, c.CreateSession, &turnboxv1.CreateSessionRequest{Config: &turnboxv1.SessionConfig{Network: tc.policy}})
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != tc.code || !hasReason(ce, tc.reason) {
			t.Errorf("create with %v: %v, want %v (%s)", tc.policy, err, tc.code, tc.reason)
		}
	}
	env := remote.NewNativeSandboxEnvironment(c, remote.DefaultConfig(), nil)
	if err := env.Create(ctx, environment.SessionConfig{Network: environment.NetworkPolicy{Mode: environment.NetworkNone}}); err != nil {
		t.Fatalf("mode none: %v", err)
	}
	// The host (runtime none) offers loopback only, and says so.
	if got := env.Capabilities().NetworkCeiling; got != environment.NetworkNone {
		t.Errorf("Capabilities.NetworkCeiling over the wire = %q, want none", got)
	}
	_ = env.Destroy(ctx)
}
