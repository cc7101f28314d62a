package remote_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/turnbox/turnbox/container/agent/agenttest"
	"github.com/turnbox/turnbox/container/runc"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/internal/testenv"
	"github.com/turnbox/turnbox/remote"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/server"
)

// Published ports of real sandboxes (gvisor, runc): their servers listen
// on the sandbox's own loopback, which only the agent's tunnel reaches.

func TestMain(m *testing.M) {
	runc.Init() // libcontainer re-executes this binary as each container's init
	os.Exit(m.Run())
}

// sandboxHost opens a host of runtime rt (root; runsc for gvisor).
func sandboxHost(tb testing.TB, rt embedded.ContainerRuntime) *embedded.Host {
	tb.Helper()
	testenv.RequireRoot(tb)
	if rt == embedded.ContainerRuntimeGVisor {
		testenv.RequireBinary(tb, "runsc")
	}
	host, err := embedded.NewHost(context.Background(), embedded.Config{
		StateDir: tb.TempDir(), ContainerRuntime: rt, AgentPath: agenttest.Build(tb), Logger: quietLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { closeHost(tb, host) })
	return host
}

// sandboxShell runs cmd in env and fails the test unless it exits 0.
func sandboxShell(tb testing.TB, env *embedded.Environment, cmd string) string {
	tb.Helper()
	req, err := environment.NewToolRequest("", environment.BashParams{Command: cmd})
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := env.ExecuteTool(context.Background(), req, nil)
	if err != nil || resp.ExitCode != 0 {
		tb.Fatalf("%s: %v %+v", cmd, err, resp)
	}
	return resp.Content
}

// startHTTPD serves the directory /tmp/www of env's sandbox with busybox
// httpd on port (bound to the sandbox's loopback), its index holding
// body, and waits until it answers inside.
func startHTTPD(tb testing.TB, env *embedded.Environment, port int, bind, body string) {
	tb.Helper()
	sandboxShell(tb, env, fmt.Sprintf("mkdir -p /tmp/www && printf %%s '%s' > /tmp/www/index.html", body))
	_, err := env.StartProcess(context.Background(), environment.ProcessConfig{
		Args: []string{"busybox", "httpd", "-f", "-p", fmt.Sprintf("%s:%d", bind, port), "-h", "/tmp/www"}})
	if err != nil {
		tb.Fatal(err)
	}
	sandboxShell(tb, env, fmt.Sprintf("for i in $(seq 100); do wget -q -O /dev/null http://127.0.0.1:%d/ && exit 0; sleep 0.1; done; exit 1", port))
}

// TestPublishedPortSandboxes: on gvisor and runc, a server on the
// sandbox's loopback is published and fetched through the server by
// path (HTTP) and as plain TCP (an echo server), with the token.
func TestPublishedPortSandboxes(t *testing.T) {
	for _, rt := range []embedded.ContainerRuntime{embedded.ContainerRuntimeGVisor, embedded.ContainerRuntimeRunc} {
		t.Run(string(rt), func(t *testing.T) {
			host := sandboxHost(t, rt)
			srv := startServer(t, host, "", server.WithAuthTokens(testToken))
			env := portSession(t, host)
			startHTTPD(t, env, 8080, "127.0.0.1", "hello from "+string(rt))
			publish(t, env, 8080, false)
			ans := portGet(t, fmt.Sprintf("%s/ports/%s/8080/", srv.URL, env.SessionID()), "", testToken, nil)
			if ans.status != http.StatusOK || string(ans.body) != "hello from "+string(rt) {
				t.Fatalf("GET through the server: %d %q", ans.status, ans.body)
			}

			_, err := env.StartProcess(context.Background(), environment.ProcessConfig{
				Args: []string{"busybox", "nc", "-ll", "-p", "9000", "-e", "busybox", "cat"}})
			if err != nil {
				t.Fatal(err)
			}
			publish(t, env, 9000, false)
			conn := dialUntilUp(t, srv.URL, env.SessionID(), 9000)
			defer conn.Close()
			if _, err := io.WriteString(conn, "ping over tcp"); err != nil {
				t.Fatal(err)
			}
			_ = conn.(interface{ CloseWrite() error }).CloseWrite()
			_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			got, err := io.ReadAll(conn)
			if err != nil || string(got) != "ping over tcp" {
				t.Fatalf("TCP form echoed %q, %v", got, err)
			}
		})
	}
}

// dialUntilUp dials the TCP form of port until something listens.
func dialUntilUp(tb testing.TB, url, session string, port int) net.Conn {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := remote.DialPort(context.Background(), url, testToken, session, port)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) || !strings.Contains(err.Error(), "refused") {
			tb.Fatalf("DialPort: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// buildPortServer compiles testdata/portserver statically into the
// workspace of env's session (path: its host path) and returns its path
// inside the sandbox.
func buildPortServer(tb testing.TB, host *embedded.Host, env *embedded.Environment) string {
	tb.Helper()
	info, err := host.Session(env.SessionID())
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(info.Path, "portserver"), "./testdata/portserver")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("building portserver: %v\n%s", err, out)
	}
	return "/workspace/portserver"
}

// BenchmarkPublishedPortSandbox: on gVisor, HTTP GETs of a small answer
// from a Go server in a session with a network (egress, allowing
// nothing), on kept-alive connections, side by side: direct to the
// sandbox's address on its veth, through `turnbox serve`'s forwarder
// (the agent's tunnel behind it), and through the tunnel alone
// (DialPort, no server).
func BenchmarkPublishedPortSandbox(b *testing.B) {
	host := sandboxHost(b, embedded.ContainerRuntimeGVisor)
	srv := startServer(b, host, "", server.WithAuthTokens(testToken))
	env, err := host.CreateSession(context.Background(), environment.SessionConfig{
		Network: environment.NetworkPolicy{Mode: environment.NetworkEgress}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = env.Destroy(context.Background()) })
	bin := buildPortServer(b, host, env)
	if _, err := env.StartProcess(context.Background(), environment.ProcessConfig{Args: []string{bin, "0.0.0.0:8080"}}); err != nil {
		b.Fatal(err)
	}
	sandboxShell(b, env, "for i in $(seq 100); do wget -q -O /dev/null http://127.0.0.1:8080/ && exit 0; sleep 0.1; done; exit 1")
	publish(b, env, 8080, false)
	addr := strings.TrimSpace(sandboxShell(b, env, "busybox ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1"))
	targets := []struct {
		name string
		c    *http.Client
		url  string
	}{
		{"direct", &http.Client{Transport: &http.Transport{}}, "http://" + addr + ":8080/"},
		{"forwarded", &http.Client{Transport: &http.Transport{}}, fmt.Sprintf("%s/ports/%s/8080/", srv.URL, env.SessionID())},
		{"tunnel", &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return env.DialPort(ctx, 8080)
		}}}, "http://sandbox.invalid/"},
	}
	b.Run("paired", func(b *testing.B) {
		ts := make([][]float64, len(targets))
		for i := 0; b.Loop(); i++ {
			for j := range targets {
				k := (i + j) % len(targets) // rotate which goes first
				ts[k] = append(ts[k], timedGet(b, targets[k].c, targets[k].url, "small"))
			}
		}
		for k, t := range targets {
			b.ReportMetric(median(ts[k])/1e6, t.name+"-p50-ms")
		}
		diff := make([]float64, len(ts[0]))
		for i := range diff {
			diff[i] = ts[1][i] - ts[0][i]
		}
		b.ReportMetric(median(diff)/1e6, "forwarded-minus-direct-ms")
	})
}

// TestMemoryOnTheWire (gvisor): a session created with SnapshotMemory
// through the Go client takes memory snapshots, and HibernateSession then
// ResumeSession bring back a process that ran before.
func TestMemoryOnTheWire(t *testing.T) {
	host := sandboxHost(t, embedded.ContainerRuntimeGVisor)
	srv := startServer(t, host, "")
	ctx := context.Background()
	env := remote.NewNativeSandboxEnvironment(remote.NewClient(srv.URL), remote.DefaultConfig(), nil)
	if !env.Capabilities().MemorySnapshots {
		t.Fatal("Capabilities.MemorySnapshots over the wire = false on gvisor")
	}
	if err := env.Create(ctx, environment.SessionConfig{SnapshotMemory: true}); err != nil {
		t.Fatal(err)
	}
	defer env.Destroy(ctx)
	if _, err := env.StartProcess(ctx, environment.ProcessConfig{Args: []string{"busybox", "sleep", "3600"}}); err != nil {
		t.Fatal(err)
	}
	snap, err := env.TurnComplete(ctx, "")
	if err != nil || !snap.Memory || snap.MemoryBytes <= 0 {
		t.Fatalf("TurnComplete = %+v, %v; want a memory snapshot", snap, err)
	}
	if err := env.Hibernate(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := remote.NewClient(srv.URL).GetSession(ctx, connect.NewRequest(&turnboxv1.GetSessionRequest{SessionId: env.SessionID()}))
	if err != nil || !resp.Msg.GetSession().GetHibernated() || !resp.Msg.GetSession().GetSnapshotMemory() {
		t.Fatalf("GetSession after Hibernate: %v, %v; want hibernated with snapshot_memory", resp.Msg.GetSession(), err)
	}
	if err := env.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	req, _ := environment.NewToolRequest("", environment.BashParams{Command: "ps | grep -v grep | grep -q 'sleep 3600'"})
	out, err := env.ExecuteTool(ctx, req, nil)
	if err != nil || out.ExitCode != 0 {
		t.Fatalf("the process started before Hibernate is gone after Resume: %+v, %v", out, err)
	}
}
