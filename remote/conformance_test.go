package remote_test

import (
	"testing"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/environment/envtest"
	"github.com/turnbox/turnbox/remote"
	"github.com/turnbox/turnbox/remote/server"
)

// TestConformanceRemote runs the conformance suite against
// NativeSandboxEnvironment over a loopback ConnectRPC server (h2c, bearer
// token) on an embedded host with localdisk and runtime none. The test
// shares the host's filesystem, so the suite runs in full.
func TestConformanceRemote(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "", server.WithAuthTokens(testToken))
	client := remote.NewClient(srv.URL, remote.WithBearerToken(testToken))
	envtest.Run(t, func(t *testing.T) environment.Environment {
		return remote.NewNativeSandboxEnvironment(client, remote.DefaultConfig(), nil)
	})
}

// TestConformanceGRPC runs the suite against NativeSandboxEnvironment
// over the same kind of server spoken to with the gRPC protocol, without
// auth.
func TestConformanceGRPC(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "")
	client := remote.NewClient(srv.URL, remote.WithGRPC())
	envtest.Run(t, func(t *testing.T) environment.Environment {
		return remote.NewNativeSandboxEnvironment(client, remote.DefaultConfig(), nil)
	})
}
