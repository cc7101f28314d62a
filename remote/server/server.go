package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/remote"
	"github.com/turnbox/turnbox/remote/forward"
	"github.com/turnbox/turnbox/remote/gen/turnbox/v1/turnboxv1connect"
)

// Server defaults.
const (
	// DefaultMaxMessageBytes bounds each request and response message
	// (the client's default bound too).
	DefaultMaxMessageBytes = remote.DefaultMaxMessageBytes
	// DefaultMaxRequestDuration bounds every call (a client's shorter
	// deadline wins); it exceeds embedded.DefaultMaxToolTimeout.
	DefaultMaxRequestDuration = embedded.DefaultMaxToolTimeout + 5*time.Minute
	// DefaultKeepAliveInterval is how often a quiet ExecuteToolStream
	// sends a keepalive event.
	DefaultKeepAliveInterval = 15 * time.Second
	// DefaultCompressMinBytes is the smallest response message the server
	// compresses (gzip, for clients that accept it). Below it, compressing
	// costs more CPU than it saves on the wire: a small read_file spent
	// about a tenth of its server time setting up gzip.
	DefaultCompressMinBytes = 16 << 10
)

// Server serves turnbox.v1.SandboxService over ConnectRPC (the Connect,
// gRPC and gRPC-Web protocols) for one embedded.Host, with bearer-token
// auth, per-request limits and Prometheus metrics. Tool calls are
// idempotent by tool call id because the host's are. Mount Handler on an
// http.Server (HTTP/2, cleartext or TLS), or ServiceHandler on a mux of
// your own.
type Server struct {
	host      *embedded.Host
	log       *slog.Logger
	tokens    [][32]byte
	maxMsg    int
	maxDur    time.Duration
	keepAlive time.Duration
	minGzip   int
	draining  atomic.Bool

	reg      *prometheus.Registry
	calls    *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
	inflight prometheus.Gauge
	authFail prometheus.Counter
	// Published ports (ports.go).
	portDomain   string
	fwd          *forward.Forwarder
	portReqs     *prometheus.CounterVec
	portInflight prometheus.Gauge

	// procs caches each procedure's success counter and latency
	// observer (procedure -> *procMetrics), sparing every call the label
	// lookups.
	procs sync.Map
}

// procMetrics are one procedure's metrics.
type procMetrics struct {
	ok      prometheus.Counter
	seconds prometheus.Observer
}

// Option configures a Server.
type Option func(*Server)

// WithAuthTokens makes every call (and /metrics) require the header
// "Authorization: Bearer <token>" with one of tokens. Tokens are compared
// in constant time and never logged. Without this option the server
// accepts every caller: use it only on a loopback address.
func WithAuthTokens(tokens ...string) Option {
	return func(s *Server) {
		for _, t := range tokens {
			if t = strings.TrimSpace(t); t != "" {
				s.tokens = append(s.tokens, sha256.Sum256([]byte(t)))
			}
		}
	}
}

// WithMaxMessageBytes bounds each request and response message
// (DefaultMaxMessageBytes). A larger request fails with ResourceExhausted.
func WithMaxMessageBytes(n int) Option {
	return func(s *Server) {
		if n > 0 {
			s.maxMsg = n
		}
	}
}

// WithMaxRequestDuration bounds every call (DefaultMaxRequestDuration).
func WithMaxRequestDuration(d time.Duration) Option {
	return func(s *Server) {
		if d > 0 {
			s.maxDur = d
		}
	}
}

// WithKeepAliveInterval sets how often a quiet ExecuteToolStream sends a
// keepalive event (DefaultKeepAliveInterval).
func WithKeepAliveInterval(d time.Duration) Option {
	return func(s *Server) {
		if d > 0 {
			s.keepAlive = d
		}
	}
}

// WithCompressMinBytes sets the smallest response message that is sent
// gzip-compressed to clients accepting it (DefaultCompressMinBytes); a
// negative n never compresses.
func WithCompressMinBytes(n int) Option {
	return func(s *Server) {
		if n != 0 {
			s.minGzip = n
		}
	}
}

// WithLogger sets the server's logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(s *Server) {
		if l != nil {
			s.log = l
		}
	}
}

// New returns a Server for host. The server never closes the host.
func New(host *embedded.Host, opts ...Option) *Server {
	s := &Server{
		host:      host,
		log:       slog.Default(),
		maxMsg:    DefaultMaxMessageBytes,
		maxDur:    DefaultMaxRequestDuration,
		keepAlive: DefaultKeepAliveInterval,
		minGzip:   DefaultCompressMinBytes,
		reg:       prometheus.NewRegistry(),
	}
	for _, o := range opts {
		o(s)
	}
	s.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnbox_rpc_requests_total",
		Help: "RPCs handled, by procedure and Connect code (ok for success).",
	}, []string{"procedure", "code"})
	s.seconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "turnbox_rpc_duration_seconds",
		Help:    "RPC latency as seen by the server, by procedure.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 20),
	}, []string{"procedure"})
	s.inflight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "turnbox_rpc_in_flight",
		Help: "RPCs being handled.",
	})
	s.authFail = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "turnbox_rpc_auth_failures_total",
		Help: "Requests rejected for a missing or wrong bearer token.",
	})
	s.reg.MustRegister(s.calls, s.seconds, s.inflight, s.authFail,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.newPortForwarder()
	return s
}

// ServiceHandler returns the path and handler of turnbox.v1.SandboxService,
// with auth, limits and metrics, to mount on a mux.
func (s *Server) ServiceHandler() (string, http.Handler) {
	path, h := turnboxv1connect.NewSandboxServiceHandler(handler{s: s}, s.handlerOptions()...)
	return path, s.rpcHTTP(h)
}

// handlerOptions are every service's auth, limits, compression and
// panic recovery.
func (s *Server) handlerOptions() []connect.HandlerOption {
	minGzip := s.minGzip
	if minGzip < 0 {
		minGzip = math.MaxInt
	}
	return []connect.HandlerOption{
		connect.WithInterceptors(&interceptor{s: s}),
		connect.WithReadMaxBytes(s.maxMsg),
		connect.WithSendMaxBytes(s.maxMsg),
		connect.WithCompressMinBytes(minGzip),
		connect.WithRecover(s.recovered),
	}
}

// Handler returns a mux with the sandbox, process and image services, the
// file service and its upload and download streams (FilesHandler), /healthz (no auth: 200 while
// serving, 503 once draining), /metrics (Prometheus; auth like the
// service) and the sessions' published ports (/ports/, /tcp/ and, with
// WithPortDomain, <port>-<session id>.<domain> host names; ports.go).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	path, h := s.ServiceHandler()
	mux.Handle(path, h)
	path, h = s.ProcessServiceHandler()
	mux.Handle(path, h)
	path, h = s.ImageServiceHandler()
	mux.Handle(path, h)
	fpath, fh := s.FilesHandler()
	mux.Handle(fpath, fh)
	mux.Handle("/healthz", s.HealthHandler())
	mux.Handle("/metrics", s.MetricsHandler())
	mux.Handle("/ports/", s.portsHandler())
	mux.Handle("/tcp/", s.tcpHandler())
	return s.withPortHosts(mux)
}

// HealthHandler serves /healthz: "ok" while serving, 503 "draining" after
// Drain. It needs no token.
func (s *Server) HealthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if s.draining.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("draining\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
}

// MetricsHandler serves the server's and the host's Prometheus metrics,
// with the Go runtime's (go_*) and the process's (process_*), behind the
// same bearer tokens as the service.
func (s *Server) MetricsHandler() http.Handler {
	h := promhttp.HandlerFor(prometheus.Gatherers{s.reg, s.host.Registry()}, promhttp.HandlerOpts{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r.Header) {
			s.authFail.Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="turnbox"`)
			http.Error(w, "unauthenticated", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// HTTPServer returns the http.Server that `turnbox serve` runs: Handler
// over HTTP/1.1 and HTTP/2, plus cleartext HTTP/2 with prior knowledge
// (h2c) when cleartext is true, with bounded headers, header and idle
// timeouts, the server's logger for connection errors, and HTTP/2 settings
// for many concurrent calls per connection (an agent runtime multiplexes
// all its sessions over one). Serve it with Serve (cleartext) or ServeTLS;
// stop it with Drain, then Shutdown.
func (s *Server) HTTPServer(cleartext bool) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(cleartext)
	return &http.Server{
		Handler:           s.Handler(),
		Protocols:         &p,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		HTTP2: &http.HTTP2Config{
			// Calls in flight per connection (net/http: 250): one
			// client drives all its sessions over one connection.
			MaxConcurrentStreams: 1000,
			// The connection's receive window (net/http: 1 MiB), so
			// that the sessions of one client can upload write_file
			// contents at once without stalling on WINDOW_UPDATEs;
			// the stream window stays at net/http's 1 MiB. (Set for
			// uploads; the small calls measured in docs/remote.md do
			// not exercise it.)
			MaxReceiveBufferPerConnection: 4<<20 - 1,
			MaxReceiveBufferPerStream:     1 << 20,
			// Detect a silently dead peer on an idle connection.
			SendPingTimeout: time.Minute,
		},
	}
}

// Registry returns the registry of the server's own metrics.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Drain marks the server as shutting down: /healthz and Health report it,
// so load balancers stop sending calls, while calls in progress continue.
// Stop the http.Server with Shutdown afterwards, then close the host.
func (s *Server) Drain() { s.draining.Store(true) }

// authorized reports whether h carries one of the server's tokens (always
// true when the server has none). Every token is compared, in constant
// time.
func (s *Server) authorized(h http.Header) bool {
	if len(s.tokens) == 0 {
		return true
	}
	auth := h.Get("Authorization")
	const prefix = "Bearer "
	if len(auth) < len(prefix) || !strings.EqualFold(auth[:len(prefix)], prefix) {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(auth[len(prefix):])))
	ok := 0
	for i := range s.tokens {
		ok |= subtle.ConstantTimeCompare(sum[:], s.tokens[i][:])
	}
	return ok == 1
}

func (s *Server) recovered(_ context.Context, spec connect.Spec, _ http.Header, p any) error {
	s.log.Error("turnbox server: panic in handler", "procedure", spec.Procedure, "panic", p)
	return connect.NewError(connect.CodeInternal, errors.New("internal error"))
}

var errUnauthenticated = errors.New("missing or invalid bearer token")

// interceptor applies auth, the request deadline and metrics to every call.
type interceptor struct{ s *Server }

// begin checks auth and bounds ctx; done records the outcome.
func (i *interceptor) begin(ctx context.Context, h http.Header) (context.Context, context.CancelFunc, error) {
	if !i.s.authorized(h) {
		i.s.authFail.Inc()
		return ctx, func() {}, connect.NewError(connect.CodeUnauthenticated, errUnauthenticated)
	}
	ctx, cancel := context.WithTimeout(ctx, i.s.maxDur)
	return ctx, cancel, nil
}

func (i *interceptor) done(procedure string, start time.Time, err error) {
	m := i.s.procMetrics(procedure)
	m.seconds.Observe(time.Since(start).Seconds())
	if err == nil {
		m.ok.Inc()
		return
	}
	code := connect.CodeOf(err).String()
	i.s.calls.WithLabelValues(procedure, code).Inc()
	if i.s.log.Enabled(context.Background(), slog.LevelDebug) {
		i.s.log.Debug("turnbox rpc failed", "procedure", procedure, "code", code, "err", err)
	}
}

// procMetrics returns procedure's metrics, made on its first call.
func (s *Server) procMetrics(procedure string) *procMetrics {
	if m, ok := s.procs.Load(procedure); ok {
		return m.(*procMetrics)
	}
	m, _ := s.procs.LoadOrStore(procedure, &procMetrics{
		ok:      s.calls.WithLabelValues(procedure, "ok"),
		seconds: s.seconds.WithLabelValues(procedure),
	})
	return m.(*procMetrics)
}

// WrapUnary implements connect.Interceptor.
func (i *interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		i.s.inflight.Inc()
		defer i.s.inflight.Dec()
		ctx, cancel, err := i.begin(ctx, req.Header())
		defer cancel()
		var resp connect.AnyResponse
		if err == nil {
			resp, err = next(ctx, req)
		}
		i.done(req.Spec().Procedure, start, err)
		return resp, err
	}
}

// WrapStreamingClient implements connect.Interceptor.
func (i *interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler implements connect.Interceptor.
func (i *interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		i.s.inflight.Inc()
		defer i.s.inflight.Dec()
		ctx, cancel, err := i.begin(ctx, conn.RequestHeader())
		defer cancel()
		if err == nil {
			err = next(ctx, newHeaderFlusher(ctx, conn))
		}
		i.done(conn.Spec().Procedure, start, err)
		return err
	}
}
