package remote_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
	"github.com/turnbox/turnbox/remote/server"
)

// TestStartAndFollow: one stream starts the process, carries its pid
// first, its output, keepalives over a quiet stretch, and its exit.
func TestStartAndFollow(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "", server.WithAuthTokens(testToken), server.WithKeepAliveInterval(50*time.Millisecond))
	client := remote.NewClient(srv.URL, remote.WithBearerToken(testToken))
	env := remote.NewNativeSandboxEnvironment(client, remote.DefaultConfig(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := env.Create(ctx, environment.SessionConfig{}); err != nil {
		t.Fatal(err)
	}
	defer env.Destroy(context.Background())

	var pid int
	var out strings.Builder
	var exit *environment.ProcessExit
	err := env.StartAndFollow(ctx, environment.ProcessConfig{Command: "echo a; sleep 0.3; echo b; exit 7"},
		func(info environment.ProcessInfo) { pid = info.PID },
		func(ev environment.ProcessEvent) error {
			if pid == 0 {
				t.Error("an event came before the pid")
			}
			out.Write(ev.Data)
			exit = ev.Exit
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if pid <= 0 || out.String() != "a\nb\n" || exit == nil || exit.Code != 7 {
		t.Fatalf("pid %d output %q exit %+v", pid, out.String(), exit)
	}

	// The raw stream shows keepalives on the quiet stretch.
	pc := client.(remote.ProcessServiceProvider).ProcessService()
	st, err := pc.AttachProcess(ctx, connect.NewRequest(&turnboxv1.AttachProcessRequest{SessionId: env.SessionID(), Pid: int32(startSleeper(t, env))}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for st.Receive() {
		if st.Msg().GetEvent().GetKeepalive() != nil {
			return
		}
	}
	t.Fatalf("no keepalive on a quiet attach stream: %v", st.Err())
}

func startSleeper(t *testing.T, env *remote.NativeSandboxEnvironment) int {
	t.Helper()
	info, err := env.StartProcess(context.Background(), environment.ProcessConfig{Args: []string{"sleep", "30"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.SignalProcess(context.Background(), info.PID, 9) })
	return info.PID
}

// TestProcessServiceAuthAndClient: ProcessService needs the token like
// SandboxService; a client without ProcessService reports no Processes
// and its process calls fail with ErrCapabilityNotSupported.
func TestProcessServiceAuthAndClient(t *testing.T) {
	host := newHost(t)
	srv := startServer(t, host, "", server.WithAuthTokens(testToken))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	anon := turnboxv1connect.NewProcessServiceClient(http.DefaultClient, srv.URL)
	_, err := anon.ListProcesses(ctx, connect.NewRequest(&turnboxv1.ListProcessesRequest{SessionId: "x"}))
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("ListProcesses without a token: %v, want Unauthenticated", err)
	}
	good := remote.NewNativeSandboxEnvironment(remote.NewClient(srv.URL, remote.WithBearerToken(testToken)), remote.DefaultConfig(), nil)
	if !good.Capabilities().Processes {
		t.Fatal("NewClient's environment reports no Processes")
	}
	open := startServer(t, host, "") // no auth: a hand-made client works
	plain := turnboxv1connect.NewSandboxServiceClient(http.DefaultClient, open.URL)
	env := remote.NewNativeSandboxEnvironment(plain, remote.DefaultConfig(), nil)
	if err := env.Create(ctx, environment.SessionConfig{}); err != nil {
		t.Fatal(err)
	}
	defer env.Destroy(context.Background())
	if env.Capabilities().Processes {
		t.Error("a client without ProcessService reports Processes")
	}
	_, err = env.StartProcess(ctx, environment.ProcessConfig{Args: []string{"true"}})
	if !errors.Is(err, environment.ErrCapabilityNotSupported) {
		t.Fatalf("StartProcess without ProcessService: %v", err)
	}
}
