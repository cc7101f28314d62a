package remote

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
)

// client implements SandboxService over ConnectRPC.
type client struct {
	rpc      turnboxv1connect.SandboxServiceClient
	attempts int
	delay    time.Duration
}

var _ SandboxService = (*client)(nil)

// clientConfig collects ClientOptions.
type clientConfig struct {
	httpClient connect.HTTPClient
	token      string
	attempts   int
	delay      time.Duration
	grpc       bool
	maxMsg     int
}

// ClientOption configures NewClient.
type ClientOption func(*clientConfig)

// WithBearerToken sends "Authorization: Bearer <token>" with every call.
func WithBearerToken(token string) ClientOption {
	return func(c *clientConfig) { c.token = strings.TrimSpace(token) }
}

// WithHTTPClient sets the HTTP client (default: one speaking HTTP/2, over
// TLS for https:// URLs and cleartext h2c for http:// ones).
func WithHTTPClient(hc connect.HTTPClient) ClientOption {
	return func(c *clientConfig) {
		if hc != nil {
			c.httpClient = hc
		}
	}
}

// WithRetry sets how many times a call is tried in all (default 4) and the
// delay before the first retry (default 50ms, doubling, with jitter, at
// most 2s). Only calls that are safe to repeat are retried, and only when
// the server could not be reached (Unavailable): the reads, DestroySession,
// and ExecuteTool and ExecuteToolStream with a tool call id (the server
// runs a call id once). attempts 1 disables retries.
func WithRetry(attempts int, delay time.Duration) ClientOption {
	return func(c *clientConfig) {
		if attempts > 0 {
			c.attempts = attempts
		}
		if delay > 0 {
			c.delay = delay
		}
	}
}

// WithGRPC makes the client speak the gRPC protocol instead of Connect.
func WithGRPC() ClientOption { return func(c *clientConfig) { c.grpc = true } }

// WithClientMaxMessageBytes bounds each response message the client reads
// (default DefaultMaxMessageBytes).
func WithClientMaxMessageBytes(n int) ClientOption {
	return func(c *clientConfig) {
		if n > 0 {
			c.maxMsg = n
		}
	}
}

// defaultHTTPClient speaks HTTP/2 only: h2c with prior knowledge for
// http:// and h2 over TLS for https://.
func defaultHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	var p http.Protocols
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	tr.Protocols = &p
	tr.MaxIdleConnsPerHost = 16
	return &http.Client{Transport: tr}
}

// authClient adds the bearer token to every request.
type authClient struct {
	next   connect.HTTPClient
	header string
}

func (a authClient) Do(r *http.Request) (*http.Response, error) {
	r.Header.Set("Authorization", a.header)
	return a.next.Do(r)
}

// NewClient returns a SandboxService that calls the turnbox server at
// baseURL (e.g. "http://127.0.0.1:7420"). Errors wrap the environment
// sentinels the server named (see Error), ErrUnauthenticated when the token
// is refused and ErrUnavailable when the server cannot be reached.
//
// The client is safe for concurrent use. Share one among all the sessions
// on a server: their calls then share one HTTP/2 connection, which costs
// less CPU per call than a client (and a connection) per session (see
// docs/remote.md).
func NewClient(baseURL string, opts ...ClientOption) SandboxService {
	cfg := clientConfig{attempts: 4, delay: 50 * time.Millisecond, maxMsg: DefaultMaxMessageBytes}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.httpClient == nil {
		cfg.httpClient = defaultHTTPClient()
	}
	hc := cfg.httpClient
	if cfg.token != "" {
		hc = authClient{next: hc, header: "Bearer " + cfg.token}
	}
	copts := []connect.ClientOption{connect.WithReadMaxBytes(cfg.maxMsg)}
	if cfg.grpc {
		copts = append(copts, connect.WithGRPC())
	}
	return &client{
		rpc:      turnboxv1connect.NewSandboxServiceClient(hc, strings.TrimRight(baseURL, "/"), copts...),
		attempts: cfg.attempts,
		delay:    cfg.delay,
	}
}

// call runs one unary RPC, retrying it while the server is unavailable if
// idempotent, and maps its error.
func call[Req, Res any](ctx context.Context, c *client, procedure string, idempotent bool, req *Req, fn func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error)) (*Res, error) {
	for attempt := 1; ; attempt++ {
		resp, err := fn(ctx, connect.NewRequest(req))
		if err == nil {
			return resp.Msg, nil
		}
		if !idempotent || attempt >= c.attempts || !retryable(ctx, err) || !c.backoff(ctx, attempt) {
			return nil, fromConnectError(ctx, procedure, err)
		}
	}
}

// retryable reports whether a failed call may be tried again: the server
// was not reached or went away, and the call's context is still live.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var ce *connect.Error
	if errors.As(err, &ce) && len(ce.Details()) > 0 {
		return false // a service error: the server answered
	}
	return connect.CodeOf(err) == connect.CodeUnavailable || transportFailure(err)
}

// transportFailure reports whether err says the connection broke.
func transportFailure(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

// backoff sleeps before retry attempt+1; false if ctx ended first.
func (c *client) backoff(ctx context.Context, attempt int) bool {
	d := c.delay << (attempt - 1)
	if d > 2*time.Second || d <= 0 {
		d = 2 * time.Second
	}
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (c *client) CreateSession(ctx context.Context, req *turnboxv1.CreateSessionRequest) (*turnboxv1.CreateSessionResponse, error) {
	return call(ctx, c, "CreateSession", false, req, c.rpc.CreateSession)
}

func (c *client) GetSession(ctx context.Context, req *turnboxv1.GetSessionRequest) (*turnboxv1.GetSessionResponse, error) {
	return call(ctx, c, "GetSession", true, req, c.rpc.GetSession)
}

func (c *client) ListSessions(ctx context.Context, req *turnboxv1.ListSessionsRequest) (*turnboxv1.ListSessionsResponse, error) {
	return call(ctx, c, "ListSessions", true, req, c.rpc.ListSessions)
}

func (c *client) AttachSession(ctx context.Context, req *turnboxv1.AttachSessionRequest) (*turnboxv1.AttachSessionResponse, error) {
	return call(ctx, c, "AttachSession", true, req, c.rpc.AttachSession)
}

func (c *client) PauseSession(ctx context.Context, req *turnboxv1.PauseSessionRequest) (*turnboxv1.PauseSessionResponse, error) {
	return call(ctx, c, "PauseSession", false, req, c.rpc.PauseSession)
}

func (c *client) ResumeSession(ctx context.Context, req *turnboxv1.ResumeSessionRequest) (*turnboxv1.ResumeSessionResponse, error) {
	return call(ctx, c, "ResumeSession", false, req, c.rpc.ResumeSession)
}

func (c *client) DestroySession(ctx context.Context, req *turnboxv1.DestroySessionRequest) (*turnboxv1.DestroySessionResponse, error) {
	return call(ctx, c, "DestroySession", true, req, c.rpc.DestroySession)
}

func (c *client) ExecuteTool(ctx context.Context, req *turnboxv1.ExecuteToolRequest) (*turnboxv1.ExecuteToolResponse, error) {
	return call(ctx, c, "ExecuteTool", req.GetRequest().GetToolCallId() != "", req, c.rpc.ExecuteTool)
}

// ExecuteToolStream reads the stream's events: progress goes to onProgress,
// keepalives are dropped, the response ends the call. A stream that fails
// before its first event is retried like ExecuteTool.
func (c *client) ExecuteToolStream(ctx context.Context, req *turnboxv1.ExecuteToolStreamRequest, onProgress func(*turnboxv1.ToolProgress)) (*turnboxv1.ToolResponse, error) {
	idempotent := req.GetRequest().GetToolCallId() != ""
	for attempt := 1; ; attempt++ {
		resp, events, err := c.stream(ctx, req, onProgress)
		if err == nil {
			return resp, nil
		}
		if events > 0 || !idempotent || attempt >= c.attempts || !retryable(ctx, err) || !c.backoff(ctx, attempt) {
			return nil, fromConnectError(ctx, "ExecuteToolStream", err)
		}
	}
}

// errNoResponse: a stream that ended cleanly without its response event.
var errNoResponse = connect.NewError(connect.CodeUnavailable, errors.New("stream ended without a response"))

func (c *client) stream(ctx context.Context, req *turnboxv1.ExecuteToolStreamRequest, onProgress func(*turnboxv1.ToolProgress)) (*turnboxv1.ToolResponse, int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.rpc.ExecuteToolStream(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, 0, err
	}
	defer st.Close()
	events := 0
	var final *turnboxv1.ToolResponse
	for st.Receive() {
		events++
		switch ev := st.Msg().GetEvent().(type) {
		case *turnboxv1.ExecuteToolStreamResponse_Progress:
			if onProgress != nil && final == nil {
				onProgress(ev.Progress)
			}
		case *turnboxv1.ExecuteToolStreamResponse_Response:
			final = ev.Response
		}
	}
	if err := st.Err(); err != nil {
		return nil, events, err
	}
	if final == nil {
		return nil, events, errNoResponse
	}
	return final, events, nil
}

func (c *client) TurnComplete(ctx context.Context, req *turnboxv1.TurnCompleteRequest) (*turnboxv1.TurnCompleteResponse, error) {
	return call(ctx, c, "TurnComplete", false, req, c.rpc.TurnComplete)
}

func (c *client) CreateSnapshot(ctx context.Context, req *turnboxv1.CreateSnapshotRequest) (*turnboxv1.CreateSnapshotResponse, error) {
	return call(ctx, c, "CreateSnapshot", false, req, c.rpc.CreateSnapshot)
}

func (c *client) ListSnapshots(ctx context.Context, req *turnboxv1.ListSnapshotsRequest) (*turnboxv1.ListSnapshotsResponse, error) {
	return call(ctx, c, "ListSnapshots", true, req, c.rpc.ListSnapshots)
}

func (c *client) Rollback(ctx context.Context, req *turnboxv1.RollbackRequest) (*turnboxv1.RollbackResponse, error) {
	return call(ctx, c, "Rollback", false, req, c.rpc.Rollback)
}

func (c *client) Fork(ctx context.Context, req *turnboxv1.ForkRequest) (*turnboxv1.ForkResponse, error) {
	return call(ctx, c, "Fork", false, req, c.rpc.Fork)
}

func (c *client) Health(ctx context.Context, req *turnboxv1.HealthRequest) (*turnboxv1.HealthResponse, error) {
	return call(ctx, c, "Health", true, req, c.rpc.Health)
}

func (c *client) Capabilities(ctx context.Context, req *turnboxv1.CapabilitiesRequest) (*turnboxv1.CapabilitiesResponse, error) {
	return call(ctx, c, "Capabilities", true, req, c.rpc.Capabilities)
}
