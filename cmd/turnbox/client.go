package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
)

// Where session commands go: in process on the state directory (the
// default), or with --server (or $TURNBOX_SERVER) to a turnbox server,
// through the Go client. Through a server the CLI never starts or stops
// a sandbox itself; the server's host keeps them.

// target holds the flags that choose between the two.
type target struct {
	server    string
	token     string
	tokenFile string
}

// addFlags adds --server, --token and --token-file to cmd and its
// subcommands.
func (t *target) addFlags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&t.server, "server", "", "turnbox server URL, e.g. http://127.0.0.1:7420 (default $TURNBOX_SERVER; unset: in process on the state directory)")
	f.StringVar(&t.token, "token", "", "bearer token for --server (default $TURNBOX_TOKEN)")
	f.StringVar(&t.tokenFile, "token-file", "", "file holding the bearer token for --server (first line)")
}

// url is the server's URL, "" for local mode.
func (t *target) url() string {
	if t.server != "" {
		return t.server
	}
	return os.Getenv("TURNBOX_SERVER")
}

// bearer is the token: --token, else --token-file's first line, else
// $TURNBOX_TOKEN.
func (t *target) bearer() (string, error) {
	switch {
	case t.token != "":
		return t.token, nil
	case t.tokenFile != "":
		b, err := os.ReadFile(t.tokenFile)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		tok, _, _ := strings.Cut(string(b), "\n")
		if tok = strings.TrimSpace(tok); tok == "" {
			return "", fmt.Errorf("--token-file %s: %w: the file is empty", t.tokenFile, environment.ErrInvalidArgument)
		}
		return tok, nil
	}
	return os.Getenv("TURNBOX_TOKEN"), nil
}

// cli is what the session commands share: the global flags and the target.
type cli struct {
	g *globals
	t *target
}

// sessionEnv is one session's API as both modes provide it.
type sessionEnv interface {
	environment.Environment
	environment.ProcessRunner
	environment.FileSystem
	environment.SnapshotLister
	environment.PortPublisher
}

// sessionView is a session as the CLI prints it; its JSON is the
// documented shape of `session info --json` and `session ls --json`.
type sessionView struct {
	ID             string                   `json:"id"`
	State          environment.SessionState `json:"state"`
	CreatedAt      time.Time                `json:"created_at"`
	LastTurn       int                      `json:"last_turn"`
	ParentSession  string                   `json:"parent_session,omitempty"`
	ParentSnapshot string                   `json:"parent_snapshot,omitempty"`
	Image          string                   `json:"image,omitempty"`
	Labels         map[string]string        `json:"labels,omitempty"`
	Limits         environment.Limits       `json:"limits"`
	// WorkDir and User: embedded.SessionInfo's (the image's WORKDIR and
	// USER the session's commands default to); the remote API does not
	// carry them yet.
	WorkDir string `json:"work_dir,omitempty"`
	User    string `json:"user,omitempty"`
	// Network is the session's effective network policy; NetworkStats
	// its counters (absent without a network).
	Network      *environment.NetworkPolicy `json:"network,omitempty"`
	NetworkStats *networkStatsView          `json:"network_stats,omitempty"`
	// Ports are the ports it publishes.
	Ports []environment.PublishedPort `json:"ports,omitempty"`
	// SnapshotMemory: its snapshots hold its processes; Hibernated: it
	// is paused to disk.
	SnapshotMemory bool `json:"snapshot_memory,omitempty"`
	Hibernated     bool `json:"hibernated,omitempty"`
}

// networkStatsView is a session's network counters as the CLI prints
// them.
type networkStatsView struct {
	BytesIn    uint64 `json:"bytes_in"`
	BytesOut   uint64 `json:"bytes_out"`
	PacketsIn  uint64 `json:"packets_in"`
	PacketsOut uint64 `json:"packets_out"`
	Refused    uint64 `json:"refused"`
}

// sessions is the session store a command works on.
type sessions interface {
	// create makes a session (a fork when cfg.FromSnapshot is set) and
	// returns its id.
	create(ctx context.Context, cfg environment.SessionConfig) (string, error)
	// attach binds to session id.
	attach(ctx context.Context, id string) (sessionEnv, error)
	list(ctx context.Context) ([]sessionView, error)
	get(ctx context.Context, id string) (sessionView, error)
	// close releases what opening took (the local host).
	close()
}

// open returns the session store the flags name: the server, or the
// local host on the state directory.
func (c *cli) open(ctx context.Context) (sessions, error) {
	if u := c.t.url(); u != "" {
		tok, err := c.t.bearer()
		if err != nil {
			return nil, err
		}
		// A CLI call is one-shot: it opens one connection and makes a
		// call or two. HTTP/1.1 (h2 over TLS where ALPN offers it) sets
		// up faster than h2c with prior knowledge (about 0.5 ms less per
		// call in BenchmarkSessionExec), and server streams work on it.
		hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		return &remoteSessions{client: remote.NewClient(u, remote.WithBearerToken(tok), remote.WithHTTPClient(hc)), hc: hc, logger: c.g.logger}, nil
	}
	h, err := c.g.openHost(ctx)
	if err != nil {
		return nil, explainLocked(err)
	}
	return localSessions{h}, nil
}

// session opens the store and binds to session id; done releases both.
func (c *cli) session(ctx context.Context, id string) (sessionEnv, func(), error) {
	s, err := c.open(ctx)
	if err != nil {
		return nil, nil, err
	}
	e, err := s.attach(ctx, id)
	if err != nil {
		s.close()
		return nil, nil, err
	}
	return e, s.close, nil
}

// explainLocked adds to a ledger-locked error that a server probably
// holds the state directory and how to reach it instead.
func explainLocked(err error) error {
	if !errors.Is(err, berrors.ErrTimeout) {
		return err
	}
	return fmt.Errorf("%w\nA turnbox server (turnbox serve) probably holds this state directory: run the command through it "+
		"with --server URL or $TURNBOX_SERVER (serve listens on http://127.0.0.1:7420 unless given --listen)", err)
}

// localSessions works in process on an embedded host.
type localSessions struct{ h *embedded.Host }

func (l localSessions) create(ctx context.Context, cfg environment.SessionConfig) (string, error) {
	e, err := l.h.CreateSession(ctx, cfg)
	if err != nil {
		return "", err
	}
	return e.SessionID(), nil
}

func (l localSessions) attach(_ context.Context, id string) (sessionEnv, error) {
	e := l.h.NewEnvironment()
	if err := e.AttachSession(id); err != nil {
		return nil, err
	}
	return e, nil
}

func (l localSessions) list(context.Context) ([]sessionView, error) {
	var out []sessionView
	for _, s := range l.h.Sessions() {
		out = append(out, l.view(s))
	}
	return out, nil
}

func (l localSessions) get(_ context.Context, id string) (sessionView, error) {
	s, err := l.h.Session(id)
	if err != nil {
		return sessionView{}, err
	}
	return l.view(s), nil
}

func (l localSessions) close() { closeHost(l.h) }

func (l localSessions) view(s embedded.SessionInfo) sessionView {
	v := sessionView{ID: s.ID, State: s.State, CreatedAt: s.CreatedAt, LastTurn: s.LastTurn, ParentSession: s.ParentSession,
		ParentSnapshot: s.ParentSnapshot, Image: s.Image, Labels: s.Labels, Limits: s.Limits, WorkDir: s.WorkDir, User: s.User,
		Network: &s.Network, Ports: s.Ports, SnapshotMemory: s.SnapshotMemory, Hibernated: s.Hibernated}
	if st, err := l.h.NetworkStats(s.ID); err == nil {
		v.NetworkStats = &networkStatsView{BytesIn: st.BytesIn, BytesOut: st.BytesOut, PacketsIn: st.PacketsIn, PacketsOut: st.PacketsOut, Refused: st.Refused}
	}
	return v
}

// remoteSessions works through a turnbox server.
type remoteSessions struct {
	client turnboxv1connect.SandboxServiceClient
	hc     *http.Client
	logger *slog.Logger
}

func (r *remoteSessions) env() *remote.NativeSandboxEnvironment {
	return remote.NewNativeSandboxEnvironment(r.client, remote.DefaultConfig(), r.logger)
}

func (r *remoteSessions) create(ctx context.Context, cfg environment.SessionConfig) (string, error) {
	e := r.env()
	if err := e.Create(ctx, cfg); err != nil {
		return "", err
	}
	return e.SessionID(), nil
}

func (r *remoteSessions) attach(_ context.Context, id string) (sessionEnv, error) {
	e := r.env()
	if err := e.AttachSession(id); err != nil {
		return nil, err
	}
	return e, nil
}

func (r *remoteSessions) list(ctx context.Context) ([]sessionView, error) {
	resp, err := r.client.ListSessions(ctx, connect.NewRequest(&turnboxv1.ListSessionsRequest{}))
	if err != nil {
		return nil, remoteErr(err)
	}
	var out []sessionView
	for _, s := range resp.Msg.GetSessions() {
		out = append(out, remoteView(s))
	}
	return out, nil
}

func (r *remoteSessions) get(ctx context.Context, id string) (sessionView, error) {
	if err := environment.ValidateID(id); err != nil {
		return sessionView{}, err
	}
	resp, err := r.client.GetSession(ctx, connect.NewRequest(&turnboxv1.GetSessionRequest{SessionId: id}))
	if err != nil {
		return sessionView{}, remoteErr(err)
	}
	return remoteView(resp.Msg.GetSession()), nil
}

func (r *remoteSessions) close() { r.hc.CloseIdleConnections() }

// remoteErr maps a raw RPC error (the calls NativeSandboxEnvironment does
// not make) to the environment sentinels the CLI reports.
func remoteErr(err error) error {
	switch connect.CodeOf(err) {
	case connect.CodeNotFound:
		return fmt.Errorf("%w: %v", environment.ErrSessionNotFound, err)
	case connect.CodeInvalidArgument:
		return fmt.Errorf("%w: %v", environment.ErrInvalidArgument, err)
	}
	return err
}

func remoteView(s *turnboxv1.Session) sessionView {
	l := s.GetLimits()
	v := sessionView{
		ID: s.GetId(), State: remoteState(s.GetState()), CreatedAt: s.GetCreatedAt().AsTime(), LastTurn: int(s.GetLastTurn()),
		ParentSession: s.GetParentSession(), ParentSnapshot: s.GetParentSnapshot(),
		Image: s.GetImage(), Labels: s.GetLabels(), WorkDir: s.GetWorkDir(), User: s.GetUser(),
		SnapshotMemory: s.GetSnapshotMemory(), Hibernated: s.GetHibernated(),
		Limits: environment.Limits{MemoryBytes: l.GetMemoryBytes(), CPUs: l.GetCpus(), Pids: l.GetPids(), DiskBytes: l.GetDiskBytes()},
	}
	for _, p := range s.GetPorts() {
		v.Ports = append(v.Ports, environment.PublishedPort{Port: int(p.GetPort()), Public: p.GetPublic()})
	}
	if n := s.GetNetwork(); n != nil {
		v.Network = &environment.NetworkPolicy{Mode: environment.NetworkMode(n.GetMode()), Allow: n.GetAllow()}
	}
	if st := s.GetNetworkStats(); st != nil {
		v.NetworkStats = &networkStatsView{BytesIn: st.GetBytesIn(), BytesOut: st.GetBytesOut(), PacketsIn: st.GetPacketsIn(), PacketsOut: st.GetPacketsOut(), Refused: st.GetRefused()}
	}
	return v
}

// remoteState reads the wire's enum name (SESSION_STATE_ACTIVE: active).
func remoteState(s turnboxv1.SessionState) environment.SessionState {
	return environment.SessionState(strings.ToLower(strings.TrimPrefix(s.String(), "SESSION_STATE_")))
}

// withSession binds to session id, runs fn and releases what binding
// took.
func (c *cli) withSession(ctx context.Context, id string, fn func(sessionEnv) error) error {
	e, done, err := c.session(ctx, id)
	if err != nil {
		return err
	}
	defer done()
	return fn(e)
}
