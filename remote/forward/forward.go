package forward

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
)

// Defaults of Options.
const (
	// DefaultMaxConnsPerSession bounds the requests and connections
	// forwarded to one session at a time.
	DefaultMaxConnsPerSession = 256
	// DefaultResponseHeaderTimeout bounds the wait for a sandbox's
	// response headers.
	DefaultResponseHeaderTimeout = time.Minute
	// DefaultMaxResponseHeaderBytes bounds a sandbox's response headers.
	DefaultMaxResponseHeaderBytes = 64 << 10
	// DefaultDialTimeout bounds the connect to a sandbox's port.
	DefaultDialTimeout = 10 * time.Second
	// targetSuffix ends the host of every outgoing URL: the target
	// session and port are encoded before it.
	targetSuffix = ".turnbox.invalid"
)

// TCPProtocol is the Upgrade token of the plain TCP form.
const TCPProtocol = remote.PortTCPProtocol

// DialFunc connects to port of session. Its errors are matched against
// the environment sentinels (ErrSessionNotFound, ErrPortNotPublished,
// ErrPortRefused, ErrNotActive, ErrInvalidArgument) to pick the answer.
type DialFunc func(ctx context.Context, session string, port int) (net.Conn, error)

// Options configure a Forwarder; zero fields take the defaults.
type Options struct {
	// MaxConnsPerSession bounds concurrent forwarded requests and
	// connections per session (DefaultMaxConnsPerSession).
	MaxConnsPerSession int
	// ResponseHeaderTimeout bounds the wait for response headers
	// (DefaultResponseHeaderTimeout).
	ResponseHeaderTimeout time.Duration
	// MaxResponseHeaderBytes bounds response headers
	// (DefaultMaxResponseHeaderBytes).
	MaxResponseHeaderBytes int64
	// DialTimeout bounds each connect (DefaultDialTimeout).
	DialTimeout time.Duration
	// StripHeaders are request headers never forwarded, besides
	// Authorization (credentials of the server's own API).
	StripHeaders []string
	// Check, if set, runs before each HTTP request is forwarded (which
	// may reuse a pooled connection rather than dial): an error answers
	// the request instead, as a dial error would (a paused session's
	// ErrNotActive, say).
	Check func(ctx context.Context, session string, port int) error
	// WriteError answers an error (default: JSON {"error", "code"}).
	WriteError func(w http.ResponseWriter, status int, code, msg string)
	// Requests, if set, counts forwarded requests by label "result".
	Requests *prometheus.CounterVec
	// InFlight, if set, gauges requests and connections being forwarded.
	InFlight prometheus.Gauge
	// Logger logs forwarding failures (default slog.Default()).
	Logger *slog.Logger
}

// Forwarder forwards requests to sessions' ports. Make it with New; it is
// safe for concurrent use.
type Forwarder struct {
	dial  DialFunc
	opts  Options
	tr    *http.Transport
	proxy *httputil.ReverseProxy
	strip []string

	mu    sync.Mutex     // guards conns
	conns map[string]int // session -> requests and connections in flight
}

// New returns a Forwarder that reaches sessions' ports with dial.
func New(dial DialFunc, opts Options) *Forwarder {
	if opts.MaxConnsPerSession <= 0 {
		opts.MaxConnsPerSession = DefaultMaxConnsPerSession
	}
	if opts.ResponseHeaderTimeout <= 0 {
		opts.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	}
	if opts.MaxResponseHeaderBytes <= 0 {
		opts.MaxResponseHeaderBytes = DefaultMaxResponseHeaderBytes
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	if opts.WriteError == nil {
		opts.WriteError = WriteJSONError
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	f := &Forwarder{dial: dial, opts: opts, conns: make(map[string]int)}
	f.strip = append([]string{"Authorization"}, opts.StripHeaders...)
	f.tr = &http.Transport{
		DialContext:            f.dialAddr,
		ResponseHeaderTimeout:  opts.ResponseHeaderTimeout,
		MaxResponseHeaderBytes: opts.MaxResponseHeaderBytes,
		MaxIdleConns:           1024,
		MaxIdleConnsPerHost:    32,
		IdleConnTimeout:        90 * time.Second,
		ExpectContinueTimeout:  time.Second,
		DisableCompression:     true, // pass the sandbox's encoding through
	}
	f.proxy = &httputil.ReverseProxy{
		Rewrite:      f.rewrite,
		Transport:    f.tr,
		ErrorHandler: f.proxyError,
		ErrorLog:     slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug),
	}
	return f
}

// Close closes the Forwarder's idle connections to sandboxes.
func (f *Forwarder) Close() { f.tr.CloseIdleConnections() }

// targetKey keys a request's target in its context.
type targetKey struct{}

// target is where one request goes.
type target struct {
	session string
	port    int
	path    string // "" keeps the request's path
}

// admit checks port and takes one of session's in-flight slots, or
// answers the error; release gives the slot back.
func (f *Forwarder) admit(w http.ResponseWriter, session string, port int) (release func(), ok bool) {
	if err := environment.ValidatePort(port); err != nil {
		f.fail(w, err)
		return nil, false
	}
	release, err := f.acquire(session)
	if err != nil {
		f.fail(w, err)
		return nil, false
	}
	return release, true
}

// Forward forwards r to port of session: with path (and r's query) as
// the request target when path is not empty, else r's whole URL. WebSocket
// and other upgrades pass through.
func (f *Forwarder) Forward(w http.ResponseWriter, r *http.Request, session string, port int, path string) {
	release, ok := f.admit(w, session, port)
	if !ok {
		return
	}
	defer release()
	if f.opts.Check != nil {
		if err := f.opts.Check(r.Context(), session, port); err != nil {
			f.fail(w, err)
			return
		}
	}
	ctx := context.WithValue(r.Context(), targetKey{}, target{session: session, port: port, path: path})
	rec := &statusRecorder{ResponseWriter: w}
	f.proxy.ServeHTTP(rec, r.WithContext(ctx))
	if !rec.failed {
		f.count("ok")
	}
}

// rewrite builds the outgoing request: its URL host names the target,
// the client's credentials are removed, X-Forwarded-* are set.
func (f *Forwarder) rewrite(pr *httputil.ProxyRequest) {
	t, _ := pr.In.Context().Value(targetKey{}).(target)
	pr.SetXForwarded()
	out := pr.Out
	out.URL.Scheme = "http"
	out.URL.Host = targetHost(t.session, t.port)
	if t.path != "" {
		out.URL.Path, out.URL.RawPath = t.path, ""
		if p, err := url.PathUnescape(t.path); err == nil {
			out.URL.Path, out.URL.RawPath = p, t.path
		}
	}
	out.Host = pr.In.Host
	for _, h := range f.strip {
		out.Header.Del(h)
	}
	stripCookies(out.Header)
}

// stripCookies removes the cookies whose names start with "turnbox".
func stripCookies(h http.Header) {
	lines := h.Values("Cookie")
	if len(lines) == 0 {
		return
	}
	h.Del("Cookie")
	var keep []string
	for _, line := range lines {
		for part := range strings.SplitSeq(line, ";") {
			name, _, _ := strings.Cut(strings.TrimSpace(part), "=")
			if name != "" && !strings.HasPrefix(strings.ToLower(name), "turnbox") {
				keep = append(keep, strings.TrimSpace(part))
			}
		}
	}
	if len(keep) > 0 {
		h.Set("Cookie", strings.Join(keep, "; "))
	}
}

// targetHost encodes session and port as an outgoing URL host (the id in
// hex: the host is only a key, never resolved).
func targetHost(session string, port int) string {
	return strconv.Itoa(port) + "." + hex.EncodeToString([]byte(session)) + targetSuffix
}

// parseTarget decodes an address made by targetHost (with its ":80").
func parseTarget(addr string) (session string, port int, err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	rest, ok := strings.CutSuffix(host, targetSuffix)
	p, hexID, ok2 := strings.Cut(rest, ".")
	id, err := hex.DecodeString(hexID)
	if !ok || !ok2 || err != nil {
		return "", 0, fmt.Errorf("forward: not a target address: %q", addr)
	}
	port, err = strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("forward: not a target address: %q", addr)
	}
	return string(id), port, nil
}

// dialAddr is the Transport's dial: the target decoded from addr.
func (f *Forwarder) dialAddr(ctx context.Context, _, addr string) (net.Conn, error) {
	session, port, err := parseTarget(addr)
	if err != nil {
		return nil, err
	}
	return f.dialTarget(ctx, session, port)
}

// dialTarget connects to port of session within the dial timeout.
func (f *Forwarder) dialTarget(ctx context.Context, session string, port int) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, f.opts.DialTimeout)
	defer cancel()
	return f.dial(ctx, session, port)
}

// errAtCap reports a session at its cap of forwarded connections.
var errAtCap = errors.New("too many forwarded connections")

// acquire takes one of session's forwarding slots; release gives it back.
func (f *Forwarder) acquire(session string) (release func(), err error) {
	f.mu.Lock()
	n := f.conns[session]
	if n >= f.opts.MaxConnsPerSession {
		f.mu.Unlock()
		return nil, fmt.Errorf("%w: session %s has %d in flight (at most %d)", errAtCap, session, n, f.opts.MaxConnsPerSession)
	}
	f.conns[session] = n + 1
	f.mu.Unlock()
	if f.opts.InFlight != nil {
		f.opts.InFlight.Inc()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			if f.conns[session]--; f.conns[session] <= 0 {
				delete(f.conns, session)
			}
			f.mu.Unlock()
			if f.opts.InFlight != nil {
				f.opts.InFlight.Dec()
			}
		})
	}, nil
}

// count adds one forwarded request with result.
func (f *Forwarder) count(result string) {
	if f.opts.Requests != nil {
		f.opts.Requests.WithLabelValues(result).Inc()
	}
}

// proxyError answers a failed forward (ReverseProxy's ErrorHandler).
func (f *Forwarder) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if rec, ok := w.(*statusRecorder); ok {
		rec.failed = true
	}
	t, _ := r.Context().Value(targetKey{}).(target)
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		f.count("canceled")
		return // the client went away: nobody to answer
	}
	f.opts.Logger.Debug("port forward failed", "session", t.session, "port", t.port, "err", err)
	f.fail(w, err)
}

// fail answers err with its status and counts it.
func (f *Forwarder) fail(w http.ResponseWriter, err error) {
	status, code := Status(err)
	f.count(code)
	f.opts.WriteError(w, status, code, err.Error())
}

// Status is the HTTP status and short code of a forwarding error.
func Status(err error) (status int, code string) {
	switch {
	case errors.Is(err, environment.ErrInvalidArgument):
		return http.StatusBadRequest, "invalid_argument"
	case errors.Is(err, environment.ErrSessionNotFound):
		return http.StatusNotFound, "session_not_found"
	case errors.Is(err, environment.ErrPortNotPublished):
		return http.StatusNotFound, "port_not_published"
	case errors.Is(err, environment.ErrPortRefused):
		return http.StatusBadGateway, "port_refused"
	case errors.Is(err, environment.ErrNotActive):
		return http.StatusServiceUnavailable, "not_active"
	case errors.Is(err, errAtCap):
		return http.StatusServiceUnavailable, "limit_exceeded"
	case errors.Is(err, environment.ErrCapabilityNotSupported):
		return http.StatusNotImplemented, "not_supported"
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return http.StatusGatewayTimeout, "timeout"
	}
	return http.StatusBadGateway, "bad_gateway"
}

// isTimeout reports a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// WriteJSONError answers status with {"error": msg, "code": code}.
func WriteJSONError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}{msg, code})
}

// statusRecorder notes whether the proxy answered with an error.
type statusRecorder struct {
	http.ResponseWriter
	failed bool
}

// Unwrap lets http.ResponseController reach the connection (flush,
// hijack for upgrades).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
