package e2b

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/container/agent/agenttest"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/internal/testenv"
	processpb "github.com/turnbox/turnbox/remote/gen/envd/process"
	"github.com/turnbox/turnbox/remote/gen/envd/process/processpbconnect"
)

// procEnv is an E2B server over a real host with one sandbox, served on
// loopback.
type procEnv struct {
	srv *Server
	url string
	id  string
}

// newProcEnv opens a host on runtime rt (localdisk), creates a sandbox
// and serves the E2B handler for it until the test ends.
func newProcEnv(t *testing.T, rt embedded.ContainerRuntime, opts ...Option) *procEnv {
	t.Helper()
	cfg := embedded.Config{StateDir: t.TempDir(), ContainerRuntime: rt, Logger: quietLog()}
	if rt == embedded.ContainerRuntimeGVisor {
		testenv.RequireRoot(t)
		testenv.RequireBinary(t, "runsc")
		cfg.AgentPath = agenttest.Build(t)
	}
	ctx := context.Background()
	host, err := embedded.NewHost(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := host.Close(cctx); err != nil {
			t.Errorf("closing host: %v", err)
		}
	})
	env, err := host.CreateSession(ctx, environment.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(host, append([]Option{WithAccessTokenSecret([]byte(strings.Repeat("s", 32))), WithLogger(quietLog())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler(http.NotFoundHandler()))
	t.Cleanup(ts.Close)
	return &procEnv{srv: srv, url: ts.URL, id: env.SessionID()}
}

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// headerTransport adds headers to every request.
type headerTransport struct{ h http.Header }

func (t headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range t.h {
		r.Header[k] = v
	}
	return http.DefaultTransport.RoundTrip(r)
}

// client is a process client of the sandbox, with the JSON codec unless
// binary; extra headers (key, value pairs) go with every call.
func (e *procEnv) client(binary bool, kv ...string) processpbconnect.ProcessClient {
	h := http.Header{}
	h.Set("E2b-Sandbox-Id", e.id)
	h.Set("X-Access-Token", e.srv.accessToken(e.id))
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	var opts []connect.ClientOption
	if !binary {
		opts = append(opts, connect.WithProtoJSON())
	}
	return processpbconnect.NewProcessClient(&http.Client{Transport: headerTransport{h}}, e.url, opts...)
}

// codecs runs fn with the JSON and the binary codec.
func codecs(t *testing.T, fn func(t *testing.T, binary bool)) {
	for _, binary := range []bool{false, true} {
		name := "json"
		if binary {
			name = "binary"
		}
		t.Run(name, func(t *testing.T) { fn(t, binary) })
	}
}

// events is what a followed process's stream carried.
type events struct {
	pid                 uint32
	stdout, stderr, pty string
	keepalives          int
	end                 *processpb.ProcessEvent_EndEvent
}

type eventMsg interface {
	GetEvent() *processpb.ProcessEvent
}

// next reads one event of a stream (nil at its end, with its error).
func next[T any](s *connect.ServerStreamForClient[T]) (*processpb.ProcessEvent, error) {
	if !s.Receive() {
		return nil, s.Err()
	}
	return any(s.Msg()).(eventMsg).GetEvent(), nil
}

// add records ev; it reports whether ev ends the stream.
func (ev *events) add(t *testing.T, e *processpb.ProcessEvent) bool {
	t.Helper()
	switch x := e.GetEvent().(type) {
	case *processpb.ProcessEvent_Start:
		if ev.pid != 0 {
			t.Fatalf("a second start event: %v", e)
		}
		ev.pid = x.Start.GetPid()
	case *processpb.ProcessEvent_Data:
		ev.stdout += string(x.Data.GetStdout())
		ev.stderr += string(x.Data.GetStderr())
		ev.pty += string(x.Data.GetPty())
	case *processpb.ProcessEvent_Keepalive:
		ev.keepalives++
	case *processpb.ProcessEvent_End:
		ev.end = x.End
		return true
	default:
		t.Fatalf("event of no known kind: %v", e)
	}
	return false
}

// collect reads a stream to its end: the start event first, the end last.
func collect[T any](t *testing.T, s *connect.ServerStreamForClient[T]) (*events, error) {
	t.Helper()
	return collectFrom(t, s, &events{})
}

// collectFrom reads the rest of a stream into ev (whose pid is set when
// the start event was read already).
func collectFrom[T any](t *testing.T, s *connect.ServerStreamForClient[T], ev *events) (*events, error) {
	t.Helper()
	for {
		e, err := next(s)
		if e == nil {
			return ev, err
		}
		if ev.pid == 0 && e.GetStart() == nil {
			t.Fatalf("first event is not start: %v", e)
		}
		if ev.add(t, e) {
			if s.Receive() {
				t.Fatalf("event after the end: %v", s.Msg())
			}
			return ev, s.Err()
		}
	}
}

// start starts cmd args... and returns the open stream, after its start
// event, with that event's pid.
func start(t *testing.T, ctx context.Context, c processpbconnect.ProcessClient, req *processpb.StartRequest) (*connect.ServerStreamForClient[processpb.StartResponse], uint32) {
	t.Helper()
	s, err := c.Start(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	e, err := next(s)
	if e.GetStart() == nil || e.GetStart().GetPid() == 0 {
		t.Fatalf("first event %v (%v), want start with a pid", e, err)
	}
	return s, e.GetStart().GetPid()
}

func shell(script string) *processpb.ProcessConfig {
	return &processpb.ProcessConfig{Cmd: "sh", Args: []string{"-c", script}}
}

func pidSel(pid uint32) *processpb.ProcessSelector {
	return &processpb.ProcessSelector{Selector: &processpb.ProcessSelector_Pid{Pid: pid}}
}

func wantCode(t *testing.T, err error, code connect.Code) {
	t.Helper()
	if connect.CodeOf(err) != code {
		t.Fatalf("error %v, want code %v", err, code)
	}
}

func TestProcessStartStreamsAndExits(t *testing.T) {
	e := newProcEnv(t, embedded.ContainerRuntimeNone)
	codecs(t, func(t *testing.T, binary bool) {
		c := e.client(binary)
		ctx := context.Background()
		s, err := c.Start(ctx, connect.NewRequest(&processpb.StartRequest{Process: shell("echo out; echo err >&2; exit 3")}))
		if err != nil {
			t.Fatal(err)
		}
		ev, err := collect(t, s)
		if err != nil {
			t.Fatal(err)
		}
		if ev.stdout != "out\n" || ev.stderr != "err\n" {
			t.Errorf("stdout %q stderr %q", ev.stdout, ev.stderr)
		}
		end := ev.end
		if end == nil || end.ExitCode != 3 || !end.Exited || end.Status != "exit status 3" || end.GetError() != "exit status 3" {
			t.Fatalf("end %v, want exit status 3 with that error", end)
		}

		s, err = c.Start(ctx, connect.NewRequest(&processpb.StartRequest{Process: &processpb.ProcessConfig{Cmd: "true"}}))
		if err != nil {
			t.Fatal(err)
		}
		if ev, err = collect(t, s); err != nil {
			t.Fatal(err)
		}
		if end := ev.end; end == nil || end.ExitCode != 0 || !end.Exited || end.Status != "exit status 0" || end.Error != nil {
			t.Fatalf("end %v, want exit status 0 without error", end)
		}
	})
}

func TestProcessStartBadRequests(t *testing.T) {
	e := newProcEnv(t, embedded.ContainerRuntimeNone)
	ctx := context.Background()
	for name, req := range map[string]*processpb.StartRequest{
		"no cmd":     {Process: &processpb.ProcessConfig{}},
		"no process": {},
		"pty too big": {Process: &processpb.ProcessConfig{Cmd: "true"},
			Pty: &processpb.PTY{Size: &processpb.PTY_Size{Rows: 70000, Cols: 80}}},
		"pty without size": {Process: &processpb.ProcessConfig{Cmd: "true"}, Pty: &processpb.PTY{}},
		"cwd outside":      {Process: &processpb.ProcessConfig{Cmd: "true", Cwd: ptr("/etc")}},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := e.client(false).Start(ctx, connect.NewRequest(req))
			if err == nil {
				_, err = collect(t, s)
			}
			wantCode(t, err, connect.CodeInvalidArgument)
		})
	}
	procs, err := e.client(false).List(ctx, connect.NewRequest(&processpb.ListRequest{}))
	if err != nil || len(procs.Msg.Processes) != 0 {
		t.Fatalf("after bad starts: %v, %v; want no process", procs, err)
	}
}

func ptr[T any](v T) *T { return &v }

// TestProcessBackground starts a process, disconnects, finds it in List
// by its tag, follows it again with Connect and drives its stdin to the
// end.
func TestProcessBackground(t *testing.T) {
	e := newProcEnv(t, embedded.ContainerRuntimeNone)
	codecs(t, func(t *testing.T, binary bool) {
		c := e.client(binary)
		tag := "bg-" + t.Name()
		sctx, disconnect := context.WithCancel(context.Background())
		first, pid := start(t, sctx, c, &processpb.StartRequest{Tag: &tag,
			Process: shell("echo ready; read line; echo got:$line; read x || echo eof")})
		if e, err := next(first); string(e.GetData().GetStdout()) != "ready\n" {
			t.Fatalf("event %v (%v), want ready on stdout", e, err)
		}
		disconnect()

		ctx := context.Background()
		list, err := c.List(ctx, connect.NewRequest(&processpb.ListRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		var found *processpb.ProcessInfo
		for _, p := range list.Msg.Processes {
			if p.Pid == pid {
				found = p
			}
		}
		if found == nil || found.GetTag() != tag || found.GetConfig().GetCmd() != "sh" || len(found.GetConfig().GetArgs()) != 2 {
			t.Fatalf("list %v: want pid %d tagged %q running sh", list.Msg.Processes, pid, tag)
		}

		s, err := c.Connect(ctx, connect.NewRequest(&processpb.ConnectRequest{
			Process: &processpb.ProcessSelector{Selector: &processpb.ProcessSelector_Tag{Tag: tag}}}))
		if err != nil {
			t.Fatal(err)
		}
		if ev, err := next(s); ev.GetStart().GetPid() != pid {
			t.Fatalf("connect's first event %v (%v), want start of %d", ev, err, pid)
		}
		if _, err := c.SendInput(ctx, connect.NewRequest(&processpb.SendInputRequest{Process: pidSel(pid),
			Input: &processpb.ProcessInput{Input: &processpb.ProcessInput_Stdin{Stdin: []byte("hello\n")}}})); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CloseStdin(ctx, connect.NewRequest(&processpb.CloseStdinRequest{Process: pidSel(pid)})); err != nil {
			t.Fatal(err)
		}
		ev, err := collectFrom(t, s, &events{pid: pid})
		if err != nil || ev.end == nil {
			t.Fatalf("stream ended without an end event: %v", err)
		}
		// Connect follows from the current offset: "ready" was produced
		// before it.
		if ev.stdout != "got:hello\neof\n" || ev.end.GetExitCode() != 0 {
			t.Fatalf("stdout %q end %v, want got:hello then eof, exit 0", ev.stdout, ev.end)
		}
		s2, err := c.Connect(ctx, connect.NewRequest(&processpb.ConnectRequest{Process: pidSel(pid)}))
		if err == nil {
			_, err = collect(t, s2)
		}
		wantCode(t, err, connect.CodeNotFound)
	})
}

func TestProcessStreamInput(t *testing.T) {
	e := newProcEnv(t, embedded.ContainerRuntimeNone)
	codecs(t, func(t *testing.T, binary bool) {
		c := e.client(binary)
		ctx := context.Background()
		s, pid := start(t, ctx, c, &processpb.StartRequest{Process: &processpb.ProcessConfig{Cmd: "cat"}})
		in := c.StreamInput(ctx)
		for _, m := range []*processpb.StreamInputRequest{
			{Event: &processpb.StreamInputRequest_Start{Start: &processpb.StreamInputRequest_StartEvent{Process: pidSel(pid)}}},
			{Event: &processpb.StreamInputRequest_Data{Data: &processpb.StreamInputRequest_DataEvent{
				Input: &processpb.ProcessInput{Input: &processpb.ProcessInput_Stdin{Stdin: []byte("abc")}}}}},
			{Event: &processpb.StreamInputRequest_Keepalive{Keepalive: &processpb.StreamInputRequest_KeepAlive{}}},
			{Event: &processpb.StreamInputRequest_Data{Data: &processpb.StreamInputRequest_DataEvent{
				Input: &processpb.ProcessInput{Input: &processpb.ProcessInput_Stdin{Stdin: []byte("def")}}}}},
		} {
			if err := in.Send(m); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := in.CloseAndReceive(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CloseStdin(ctx, connect.NewRequest(&processpb.CloseStdinRequest{Process: pidSel(pid)})); err != nil {
			t.Fatal(err)
		}
		ev, err := collectFrom(t, s, &events{pid: pid})
		if err == nil && ev.end == nil {
			err = errors.New("no end event")
		}
		if err != nil || ev.stdout != "abcdef" || ev.end.ExitCode != 0 {
			t.Fatalf("stdout %q, %v: want abcdef and exit 0", ev.stdout, err)
		}

		bad := c.StreamInput(ctx)
		_ = bad.Send(&processpb.StreamInputRequest{Event: &processpb.StreamInputRequest_Data{Data: &processpb.StreamInputRequest_DataEvent{
			Input: &processpb.ProcessInput{Input: &processpb.ProcessInput_Stdin{Stdin: []byte("x")}}}}})
		_, err = bad.CloseAndReceive()
		wantCode(t, err, connect.CodeInvalidArgument)
	})
}

func TestProcessSignal(t *testing.T) {
	e := newProcEnv(t, embedded.ContainerRuntimeNone)
	codecs(t, func(t *testing.T, binary bool) {
		c := e.client(binary)
		ctx := context.Background()
		s, pid := start(t, ctx, c, &processpb.StartRequest{Process: &processpb.ProcessConfig{Cmd: "sleep", Args: []string{"60"}}})
		_, err := c.SendSignal(ctx, connect.NewRequest(&processpb.SendSignalRequest{Process: pidSel(pid)}))
		wantCode(t, err, connect.CodeInvalidArgument)
		if _, err := c.SendSignal(ctx, connect.NewRequest(&processpb.SendSignalRequest{Process: pidSel(pid), Signal: processpb.Signal_SIGNAL_SIGKILL})); err != nil {
			t.Fatal(err)
		}
		ev, err := collectFrom(t, s, &events{pid: pid})
		if err != nil {
			t.Fatal(err)
		}
		end := ev.end
		if end == nil || end.ExitCode != -1 || end.Exited || end.Status != "signal: killed" || end.GetError() != "signal: killed" {
			t.Fatalf("end %v, want killed by a signal", end)
		}
		// The SDK's kill() reads NotFound as "already gone".
		_, err = c.SendSignal(ctx, connect.NewRequest(&processpb.SendSignalRequest{Process: pidSel(pid), Signal: processpb.Signal_SIGNAL_SIGTERM}))
		wantCode(t, err, connect.CodeNotFound)
	})
}

func TestProcessUnknown(t *testing.T) {
	e := newProcEnv(t, embedded.ContainerRuntimeNone)
	codecs(t, func(t *testing.T, binary bool) {
		c := e.client(binary)
		ctx := context.Background()
		s, err := c.Connect(ctx, connect.NewRequest(&processpb.ConnectRequest{Process: pidSel(1 << 30)}))
		if err == nil {
			_, err = collect(t, s)
		}
		wantCode(t, err, connect.CodeNotFound)
		stdin := &processpb.ProcessInput{Input: &processpb.ProcessInput_Stdin{Stdin: []byte("x")}}
		_, err = c.SendInput(ctx, connect.NewRequest(&processpb.SendInputRequest{Process: pidSel(1 << 30), Input: stdin}))
		wantCode(t, err, connect.CodeNotFound)
		tagSel := &processpb.ProcessSelector{Selector: &processpb.ProcessSelector_Tag{Tag: "nope"}}
		_, err = c.CloseStdin(ctx, connect.NewRequest(&processpb.CloseStdinRequest{Process: tagSel}))
		wantCode(t, err, connect.CodeNotFound)
		_, err = c.SendInput(ctx, connect.NewRequest(&processpb.SendInputRequest{Input: stdin}))
		wantCode(t, err, connect.CodeInvalidArgument)
		_, err = c.Update(ctx, connect.NewRequest(&processpb.UpdateRequest{Process: pidSel(1 << 30)}))
		wantCode(t, err, connect.CodeInvalidArgument)
	})
}

func TestProcessBadAccessToken(t *testing.T) {
	e := newProcEnv(t, embedded.ContainerRuntimeNone)
	codecs(t, func(t *testing.T, binary bool) {
		c := e.client(binary, "X-Access-Token", e.srv.accessToken(e.id+"x"))
		_, err := c.List(context.Background(), connect.NewRequest(&processpb.ListRequest{}))
		wantCode(t, err, connect.CodeUnauthenticated)
		s, err := c.Start(context.Background(), connect.NewRequest(&processpb.StartRequest{Process: &processpb.ProcessConfig{Cmd: "true"}}))
		if err == nil {
			_, err = collect(t, s)
		}
		wantCode(t, err, connect.CodeUnauthenticated)
	})
}

// TestProcessCallTimeoutKills: Start's Connect-Timeout-Ms bounds the
// process itself, not only the call.
func TestProcessCallTimeoutKills(t *testing.T) {
	e := newProcEnv(t, embedded.ContainerRuntimeNone)
	c := e.client(false)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	s, pid := start(t, ctx, c, &processpb.StartRequest{Process: &processpb.ProcessConfig{Cmd: "sleep", Args: []string{"60"}}})
	_, err := collectFrom(t, s, &events{pid: pid})
	if err == nil {
		t.Fatal("the stream outlived its timeout")
	}
	deadline := time.Now().Add(10 * time.Second)
	for running(t, c, pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still runs 10s after its call's timeout", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// running reports whether List has pid.
func running(t *testing.T, c processpbconnect.ProcessClient, pid uint32) bool {
	t.Helper()
	list, err := c.List(context.Background(), connect.NewRequest(&processpb.ListRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list.Msg.Processes {
		if p.Pid == pid {
			return true
		}
	}
	return false
}

func TestProcessKeepAlive(t *testing.T) {
	e := newProcEnv(t, embedded.ContainerRuntimeNone, WithKeepAliveInterval(time.Hour))
	s, err := e.client(true, keepAliveHeader, "1").Start(context.Background(), connect.NewRequest(&processpb.StartRequest{
		Process: shell("sleep 2.5; echo done")}))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := collect(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if ev.keepalives < 1 || ev.keepalives > 3 || ev.stdout != "done\n" {
		t.Fatalf("%d keepalives in 2.5 s at 1 s, output %q", ev.keepalives, ev.stdout)
	}
}

// TestProcessGVisorUserAndPTY runs in a real sandbox: processes run as
// the request's user, in its home, and a PTY takes input and resizes.
func TestProcessGVisorUserAndPTY(t *testing.T) {
	e := newProcEnv(t, embedded.ContainerRuntimeGVisor)
	ctx := context.Background()
	basic := func(u string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":")) }
	for _, c := range []struct{ auth, want string }{{"", "user /home/user\n"}, {basic("root"), "root /root\n"}} {
		s, err := e.client(false, "Authorization", c.auth).Start(ctx, connect.NewRequest(&processpb.StartRequest{Process: shell("echo $(id -un) $(pwd)")}))
		if err != nil {
			t.Fatal(err)
		}
		ev, err := collect(t, s)
		if err != nil || ev.stdout != c.want {
			t.Fatalf("auth %q: stdout %q (%v), want %q", c.auth, ev.stdout, err, c.want)
		}
	}
	s, err := e.client(false, "Authorization", basic("nobody-here")).Start(ctx, connect.NewRequest(&processpb.StartRequest{Process: shell("true")}))
	if err == nil {
		_, err = collect(t, s)
	}
	wantCode(t, err, connect.CodeInvalidArgument)

	c := e.client(true)
	s, pid := start(t, ctx, c, &processpb.StartRequest{Process: &processpb.ProcessConfig{Cmd: "/bin/sh"},
		Pty: &processpb.PTY{Size: &processpb.PTY_Size{Rows: 24, Cols: 80}}})
	input := func(text string) {
		t.Helper()
		if _, err := c.SendInput(ctx, connect.NewRequest(&processpb.SendInputRequest{Process: pidSel(pid),
			Input: &processpb.ProcessInput{Input: &processpb.ProcessInput_Pty{Pty: []byte(text)}}})); err != nil {
			t.Fatal(err)
		}
	}
	input("stty size\n")
	ev := &events{pid: pid}
	for !strings.Contains(ev.pty, "24 80") {
		e, err := next(s)
		if e == nil {
			t.Fatalf("stream ended (%v) before the first size; pty output %q", err, ev.pty)
		}
		ev.add(t, e)
	}
	if _, err := c.Update(ctx, connect.NewRequest(&processpb.UpdateRequest{Process: pidSel(pid),
		Pty: &processpb.PTY{Size: &processpb.PTY_Size{Rows: 30, Cols: 100}}})); err != nil {
		t.Fatal(err)
	}
	input("stty size; exit 4\n")
	ev.pty = ""
	if _, err := collectFrom(t, s, ev); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ev.pty, "30 100") || ev.end.GetExitCode() != 4 {
		t.Fatalf("pty output after resize %q, end %v: want 30 100 and exit 4", ev.pty, ev.end)
	}
}
