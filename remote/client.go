package remote

import (
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
)

// DefaultMaxMessageBytes bounds each message a client reads and, by
// default, each message the server (remote/server) reads and sends.
const DefaultMaxMessageBytes = 16 << 20

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
// and ExecuteTool and ExecuteToolStream with a tool call id (the host runs
// a tool call id once per session). attempts 1 disables retries.
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

// streamHTTPClient is the default client of the file streams: HTTP/1.1
// (over TLS for https:// URLs), with large socket buffers' worth of
// read and write buffering.
func streamHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	var p http.Protocols
	p.SetHTTP1(true)
	tr.Protocols = &p
	tr.MaxIdleConnsPerHost = 4
	tr.WriteBufferSize, tr.ReadBufferSize = 256<<10, 256<<10
	tr.DisableCompression = true
	return &http.Client{Transport: tr}
}

// authClient adds the bearer token to every request.
type authClient struct {
	next   connect.HTTPClient
	header string
}

// Do implements connect.HTTPClient.
func (a authClient) Do(r *http.Request) (*http.Response, error) {
	r.Header.Set("Authorization", a.header)
	return a.next.Do(r)
}

// NewClient returns the generated ConnectRPC client of
// turnbox.v1.SandboxService for the server at baseURL (e.g.
// "http://127.0.0.1:7420"), with the bearer token, message bound and
// retries of opts. The client also carries the file API's client
// (turnbox.v1.FilesService and the upload and download streams), which a
// NativeSandboxEnvironment made with it uses for environment.FileSystem. Pass it to NewNativeSandboxEnvironment. Its errors are
// Connect errors; NativeSandboxEnvironment turns them into errors that
// match the environment sentinels the server named (see Error).
//
// The client also implements ProcessServiceProvider (ProcessService on
// the same server). The client is safe for concurrent use. Share one among all the sessions
// on a server: their calls then share one HTTP/2 connection, which costs
// less CPU per call than a client (and a connection) per session (see
// docs/remote.md).
func NewClient(baseURL string, opts ...ClientOption) turnboxv1connect.SandboxServiceClient {
	cfg := clientConfig{attempts: 4, delay: 50 * time.Millisecond, maxMsg: DefaultMaxMessageBytes}
	for _, o := range opts {
		o(&cfg)
	}
	// The file streams (upload, download) go over the same client unless
	// it is the default one: then over HTTP/1.1 connections of their own,
	// which move bulk bytes with less CPU than HTTP/2's framing and flow
	// control (see docs/files.md).
	var streams connect.HTTPClient
	if cfg.httpClient == nil {
		cfg.httpClient, streams = defaultHTTPClient(), streamHTTPClient()
	}
	hc := cfg.httpClient
	if streams == nil {
		streams = hc
	}
	if cfg.token != "" {
		hc = authClient{next: hc, header: "Bearer " + cfg.token}
		streams = authClient{next: streams, header: "Bearer " + cfg.token}
	}
	copts := cfg.connectOptions()
	base := strings.TrimRight(baseURL, "/")
	return &serviceClient{
		SandboxServiceClient: turnboxv1connect.NewSandboxServiceClient(hc, base, copts...),
		procs:                turnboxv1connect.NewProcessServiceClient(hc, base, copts...),
		files:                &filesClient{rpc: turnboxv1connect.NewFilesServiceClient(hc, base, copts...), http: streams, base: base},
	}
}

// connectOptions are the Connect client options cfg describes: message
// limit, retries and protocol.
func (cfg clientConfig) connectOptions() []connect.ClientOption {
	copts := []connect.ClientOption{
		connect.WithReadMaxBytes(cfg.maxMsg),
		connect.WithInterceptors(retrier{attempts: cfg.attempts, delay: cfg.delay}),
	}
	if cfg.grpc {
		copts = append(copts, connect.WithGRPC())
	}
	return copts
}

// serviceClient is what NewClient returns: the generated SandboxService
// client plus the ProcessService client and the file API's client of the
// same server, connection and token, which NativeSandboxEnvironment finds
// through ProcessServiceProvider and filesProvider.
type serviceClient struct {
	turnboxv1connect.SandboxServiceClient
	procs turnboxv1connect.ProcessServiceClient
	files *filesClient
}
