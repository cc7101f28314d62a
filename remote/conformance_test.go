package remote_test

import (
	"testing"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/environment/envtest"
	"github.com/turnbox/turnbox/remote"
)

// TestConformanceRemote runs the conformance suite against
// NativeSandboxEnvironment over a loopback ConnectRPC server (h2c, bearer
// token) on an embedded host with localdisk and runtime none. The test
// shares the host's filesystem, so the suite runs in full.
func TestConformanceRemote(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "", remote.WithAuthTokens(testToken))
	client := remote.NewClient(srv.URL, remote.WithBearerToken(testToken))
	envtest.Run(t, func(t *testing.T) environment.Environment {
		return remote.NewNativeSandboxEnvironment(client, remote.DefaultConfig(), nil)
	})
}

// TestConformanceLocal runs the suite against NativeSandboxEnvironment over
// the in-process adapter.
func TestConformanceLocal(t *testing.T) {
	host := newHost(t)
	svc := remote.NewLocalService(host)
	envtest.Run(t, func(t *testing.T) environment.Environment {
		return remote.NewNativeSandboxEnvironment(svc, remote.DefaultConfig(), nil)
	})
}
