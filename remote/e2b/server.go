package e2b

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/remote"
	"github.com/turnbox/turnbox/remote/forward"
)

// EnvdVersion is the envd version the server reports to clients: the
// highest one whose features (as the SDKs gate them) it implements.
const EnvdVersion = "0.5.7"

// EnvdPort is the port E2B clients address envd on (in the host name
// <port>-<sandbox id>.<domain> and the E2b-Sandbox-Port header).
const EnvdPort = 49983

// Server defaults.
const (
	// DefaultTimeout is a sandbox's lifetime when its create request
	// gives none (E2B's default).
	DefaultTimeout = 5 * time.Minute
	// DefaultMaxTimeout bounds the lifetime a client can ask for.
	DefaultMaxTimeout = 24 * time.Hour
	// DefaultKeepAliveInterval is how often a quiet stream (a process
	// followed, a watch) sends a keepalive event.
	DefaultKeepAliveInterval = 15 * time.Second
	// DefaultTemplate is the template the SDKs ask for by default; it
	// names the host's default image.
	DefaultTemplate = "base"
)

// Server serves E2B's control plane (REST, X-API-KEY) and its in-sandbox
// envd API (Connect protocol, X-Access-Token) for one embedded.Host, so
// that the unmodified E2B SDKs drive turnbox sessions. A sandbox is a
// session; every sandbox also stays reachable through turnbox's own API
// under the same id. Mount it with Handler in front of turnbox's own
// handler.
type Server struct {
	host      *embedded.Host
	log       *slog.Logger
	apiKeys   [][32]byte
	secret    []byte
	domain    string
	maxMsg    int
	maxDur    time.Duration
	keepAlive time.Duration
	maxTTL    time.Duration
	templates map[string]string
	life      *lifetimes         // sandbox deadlines
	fwd       *forward.Forwarder // ports other than envd's (ports.go)
}

// Option configures a Server.
type Option func(*Server)

// WithAPIKeys sets the API keys the control plane accepts in the
// X-API-KEY header (compared in constant time, never logged). Without
// keys every control-plane request fails with 401.
func WithAPIKeys(keys ...string) Option {
	return func(s *Server) {
		for _, k := range keys {
			if k = strings.TrimSpace(k); k != "" {
				s.apiKeys = append(s.apiKeys, sha256.Sum256([]byte(k)))
			}
		}
	}
}

// WithAccessTokenSecret sets the secret that envd access tokens are
// derived from (HMAC-SHA256 of the sandbox id): keep it stable across
// restarts so that clients' tokens stay valid. At least 32 bytes.
func WithAccessTokenSecret(secret []byte) Option {
	return func(s *Server) { s.secret = append([]byte(nil), secret...) }
}

// WithDomain sets the domain of sandbox host names
// (<port>-<sandbox id>.<domain>), reported to clients in create and
// connect answers ("" reports none: clients then need E2B_SANDBOX_URL).
func WithDomain(domain string) Option {
	return func(s *Server) { s.domain = strings.ToLower(strings.TrimSuffix(domain, ".")) }
}

// WithMaxMessageBytes bounds each request and response message and each
// JSON body (remote.DefaultMaxMessageBytes).
func WithMaxMessageBytes(n int) Option {
	return func(s *Server) {
		if n > 0 {
			s.maxMsg = n
		}
	}
}

// WithMaxRequestDuration bounds every call, streams included.
func WithMaxRequestDuration(d time.Duration) Option {
	return func(s *Server) {
		if d > 0 {
			s.maxDur = d
		}
	}
}

// WithKeepAliveInterval sets how often quiet streams send a keepalive
// (DefaultKeepAliveInterval).
func WithKeepAliveInterval(d time.Duration) Option {
	return func(s *Server) {
		if d > 0 {
			s.keepAlive = d
		}
	}
}

// WithMaxTimeout bounds the lifetime a client can give a sandbox
// (DefaultMaxTimeout).
func WithMaxTimeout(d time.Duration) Option {
	return func(s *Server) {
		if d > 0 {
			s.maxTTL = d
		}
	}
}

// WithTemplate maps an E2B template id to an image of the host (a
// template id that is not mapped names the image of the same name, and
// DefaultTemplate the host's default image).
func WithTemplate(template, image string) Option {
	return func(s *Server) { s.templates[template] = image }
}

// WithLogger sets the server's logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(s *Server) {
		if l != nil {
			s.log = l
		}
	}
}

// New returns a Server for host. It fails when the access-token secret
// is missing or short. The server never closes the host; call Close to
// stop its sandbox timers.
func New(host *embedded.Host, opts ...Option) (*Server, error) {
	s := &Server{
		host:      host,
		log:       slog.Default(),
		maxMsg:    remote.DefaultMaxMessageBytes,
		maxDur:    embedded.DefaultMaxToolTimeout + 5*time.Minute,
		keepAlive: DefaultKeepAliveInterval,
		maxTTL:    DefaultMaxTimeout,
		templates: map[string]string{DefaultTemplate: ""},
	}
	for _, o := range opts {
		o(s)
	}
	if len(s.secret) < 32 {
		return nil, errors.New("e2b: the access-token secret must be at least 32 bytes")
	}
	s.life = newLifetimes(s.expire)
	s.fwd = s.newForwarder()
	s.armRecovered()
	return s, nil
}

// Close stops the server's background work: it disarms every sandbox
// deadline and waits for on-timeout actions already running. It does not
// close the host; the server's handlers must not be used after it.
func (s *Server) Close() {
	s.life.stop()
	s.fwd.Close()
}

// Handler returns a handler that serves E2B's requests and passes every
// other request to next: a request with an E2b-Sandbox-Id header or a
// host name <port>-<sandbox id>.<domain> goes to envd, a control-plane
// path (/sandboxes, /v2/sandboxes, /snapshots, /templates) to the
// control plane. A request for another port of a sandbox is forwarded to
// that port (ports.go).
func (s *Server) Handler(next http.Handler) http.Handler {
	envd := s.envdHandler()
	control := s.controlHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, port, ok := s.sandboxTarget(r); ok {
			if port != EnvdPort {
				s.servePort(w, r, id, port)
				return
			}
			envd.ServeHTTP(w, r.WithContext(withSandboxID(r.Context(), id)))
			return
		}
		if isControlPath(r.URL.Path) {
			control.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// isControlPath reports a path of E2B's control plane.
func isControlPath(p string) bool {
	for _, prefix := range []string{"/sandboxes", "/v2/sandboxes", "/snapshots", "/templates"} {
		if p == prefix || strings.HasPrefix(p, prefix+"/") {
			return true
		}
	}
	return false
}

// sandboxTarget finds the sandbox (and port) a request is for: the
// E2b-Sandbox-Id and E2b-Sandbox-Port headers, else a host name
// <port>-<sandbox id>.<domain> when the server has a domain.
func (s *Server) sandboxTarget(r *http.Request) (id string, port int, ok bool) {
	if id = r.Header.Get("E2b-Sandbox-Id"); id != "" {
		port = EnvdPort
		if p := r.Header.Get("E2b-Sandbox-Port"); p != "" {
			if _, err := fmt.Sscanf(p, "%d", &port); err != nil {
				port = -1
			}
		}
		return id, port, true
	}
	return forward.ParseHost(strings.ToLower(r.Host), s.domain)
}

// accessToken is the envd access token of sandbox id.
func (s *Server) accessToken(id string) string {
	return s.derive("tbx_", "turnbox e2b envd access token", id)
}

// derive is a token of sandbox id: prefix and the HMAC-SHA256, under the
// server's secret, of label and id (distinct labels, distinct tokens).
func (s *Server) derive(prefix, label, id string) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(label + "\x00" + id))
	return prefix + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// validAccessToken reports whether token is sandbox id's, in constant
// time.
func (s *Server) validAccessToken(id, token string) bool {
	return hmac.Equal([]byte(token), []byte(s.accessToken(id)))
}

// validAPIKey reports whether key is one of the server's API keys; every
// key is compared, in constant time.
func (s *Server) validAPIKey(key string) bool {
	if key == "" {
		return false
	}
	sum := sha256.Sum256([]byte(key))
	ok := 0
	for _, k := range s.apiKeys {
		ok |= subtle.ConstantTimeCompare(sum[:], k[:])
	}
	return ok == 1
}

// liveSandbox returns sandbox id's session, answering 502 (and ok false)
// when there is none: what E2B's proxy answers for a sandbox that is
// gone, which the SDKs report as the sandbox having timed out.
func (s *Server) liveSandbox(w http.ResponseWriter, id string) (embedded.SessionInfo, bool) {
	info, err := s.host.Session(id)
	if err != nil || info.State == environment.StateDestroyed || info.State == environment.StateDestroying {
		writeJSONError(w, http.StatusBadGateway, fmt.Sprintf("sandbox %q not found", id))
		return info, false
	}
	return info, true
}

// running reports whether the sandbox of info runs, resuming it when it
// is paused and was made with autoResume; else it answers 502.
func (s *Server) running(w http.ResponseWriter, r *http.Request, info embedded.SessionInfo) bool {
	if info.State == environment.StateActive || s.autoResume(r.Context(), info) {
		return true
	}
	writeJSONError(w, http.StatusBadGateway, fmt.Sprintf("sandbox %q is %s", info.ID, info.State))
	return false
}

// sandboxIDKey keys the sandbox id of an envd request in its context.
type sandboxIDKey struct{}

func withSandboxID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, sandboxIDKey{}, id)
}

// sandboxID is the sandbox an envd request is for.
func sandboxID(ctx context.Context) string {
	id, _ := ctx.Value(sandboxIDKey{}).(string)
	return id
}

// sandbox returns an Environment bound to the session of an envd
// request's sandbox.
func (s *Server) sandbox(ctx context.Context) (*embedded.Environment, error) {
	env := s.host.NewEnvironment()
	if err := env.AttachSession(sandboxID(ctx)); err != nil {
		return nil, err
	}
	return env, nil
}

// envdHandler serves envd: it checks the request's access token, that
// the sandbox exists and runs (resuming it when it was made with
// autoResume), then serves the process and filesystem
// services, /files and /health.
func (s *Server) envdHandler() http.Handler {
	mux := http.NewServeMux()
	s.mountEnvd(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := sandboxID(r.Context())
		// The token first: without it a caller learns nothing, not even
		// whether the sandbox exists.
		if !s.validAccessToken(id, r.Header.Get("X-Access-Token")) {
			writeJSONError(w, http.StatusUnauthorized, "missing or invalid access token")
			return
		}
		if info, ok := s.liveSandbox(w, id); ok && s.running(w, r, info) {
			mux.ServeHTTP(w, r)
		}
	})
}
