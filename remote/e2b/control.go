package e2b

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// clientID is what the server reports as a sandbox's client (E2B's
// cluster node) id.
const clientID = "turnbox"

// maxForkCount bounds the forks one fork request makes.
const maxForkCount = 16

// sandboxJSON is the answer of create and connect (E2B's Sandbox).
type sandboxJSON struct {
	TemplateID      string  `json:"templateID"`
	SandboxID       string  `json:"sandboxID"`
	ClientID        string  `json:"clientID"`
	EnvdVersion     string  `json:"envdVersion"`
	EnvdAccessToken string  `json:"envdAccessToken"`
	Domain          *string `json:"domain"`
	// TrafficAccessToken is what requests to the sandbox's other ports
	// carry in e2b-traffic-access-token, for a sandbox created with
	// network.allowPublicTraffic false.
	TrafficAccessToken string `json:"trafficAccessToken,omitempty"`
}

// sandboxDetail is the answer of get and, without the access token, one
// entry of list (E2B's SandboxDetail and ListedSandbox).
type sandboxDetail struct {
	TemplateID      string            `json:"templateID"`
	SandboxID       string            `json:"sandboxID"`
	ClientID        string            `json:"clientID"`
	StartedAt       time.Time         `json:"startedAt"`
	EndAt           time.Time         `json:"endAt"`
	State           string            `json:"state"`
	CPUCount        int               `json:"cpuCount"`
	MemoryMB        int64             `json:"memoryMB"`
	DiskSizeMB      int64             `json:"diskSizeMB"`
	Metadata        map[string]string `json:"metadata"`
	EnvdVersion     string            `json:"envdVersion"`
	EnvdAccessToken string            `json:"envdAccessToken,omitempty"`
	Domain          *string           `json:"domain"`
	Lifecycle       lifecycleJSON     `json:"lifecycle"`
}

// lifecycleJSON is what a sandbox does at its deadline and on a request
// while paused.
type lifecycleJSON struct {
	OnTimeout  string `json:"onTimeout"`
	AutoResume bool   `json:"autoResume"`
}

// createRequest is the body of create; fields the server does not act
// on (network's egress rules, mcp, volume mounts, ...) are ignored.
type createRequest struct {
	TemplateID string `json:"templateID"`
	Timeout    *int64 `json:"timeout"`
	AutoPause  bool   `json:"autoPause"`
	AutoResume *struct {
		Enabled bool `json:"enabled"`
	} `json:"autoResume"`
	Metadata map[string]string `json:"metadata"`
	EnvVars  map[string]string `json:"envVars"`
	Network  *struct {
		// AllowPublicTraffic false makes the sandbox's ports need the
		// traffic access token (default true: public).
		AllowPublicTraffic *bool `json:"allowPublicTraffic"`
	} `json:"network"`
}

// timeoutRequest is the body of connect, resume and setTimeout.
type timeoutRequest struct {
	Timeout *int64 `json:"timeout"`
}

// controlHandler serves E2B's control plane (REST, X-API-KEY): every
// request needs a valid API key, and every answer, errors and unknown
// routes included, is JSON.
func (s *Server) controlHandler() http.Handler {
	mux := http.NewServeMux()
	routes := map[string]http.HandlerFunc{
		"POST /sandboxes":                 s.createSandbox,
		"POST /v2/sandboxes":              s.createSandbox,
		"GET /sandboxes":                  s.listSandboxes,
		"GET /v2/sandboxes":               s.listSandboxes,
		"GET /sandboxes/{id}":             s.getSandbox,
		"DELETE /sandboxes/{id}":          s.killSandbox,
		"POST /sandboxes/{id}/connect":    s.connectSandbox,
		"POST /v2/sandboxes/{id}/connect": s.connectSandbox,
		"POST /sandboxes/{id}/resume":     s.connectSandbox,
		"POST /sandboxes/{id}/pause":      s.pauseSandbox,
		"POST /sandboxes/{id}/timeout":    s.setSandboxTimeout,
		"GET /sandboxes/{id}/metrics":     s.sandboxMetrics,
		"POST /sandboxes/{id}/snapshots":  s.createSnapshot,
		"POST /sandboxes/{id}/fork":       s.forkSandbox,
		"GET /snapshots":                  s.listSnapshots,
		"DELETE /templates/{id}":          s.deleteSnapshot,
	}
	for pattern, h := range routes {
		mux.HandleFunc(pattern, h)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.validAPIKey(r.Header.Get("X-API-KEY")) {
			writeJSONError(w, http.StatusUnauthorized, "missing or invalid API key")
			return
		}
		if _, pattern := mux.Handler(r); pattern == "" {
			writeJSONError(w, http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.maxDur)
		defer cancel()
		mux.ServeHTTP(w, r.WithContext(ctx))
	})
}

// fail answers err with the status E2B's clients map it to.
func fail(w http.ResponseWriter, err error) {
	writeJSONError(w, httpStatus(err), err.Error())
}

// readJSON decodes r's JSON body, at most s.maxMsg bytes, into v; an
// empty body leaves v as it is.
func (s *Server) readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body := http.MaxBytesReader(w, r.Body, int64(s.maxMsg))
	err := json.NewDecoder(body).Decode(v)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		return fmt.Errorf("%w: the body is larger than %d bytes", environment.ErrInvalidArgument, s.maxMsg)
	}
	return fmt.Errorf("%w: bad JSON body: %v", environment.ErrInvalidArgument, err)
}

// ttl is the lifetime a timeout in seconds asks for: DefaultTimeout when
// nil, capped at the server's maximum; not positive is invalid.
func (s *Server) ttl(seconds *int64) (time.Duration, error) {
	if seconds == nil {
		return min(DefaultTimeout, s.maxTTL), nil
	}
	if *seconds <= 0 {
		return 0, fmt.Errorf("%w: timeout must be a positive number of seconds, not %d", environment.ErrInvalidArgument, *seconds)
	}
	if *seconds >= int64(s.maxTTL/time.Second) {
		return s.maxTTL, nil
	}
	return time.Duration(*seconds) * time.Second, nil
}

// lookup returns the session of the request's {id}, answering 404 (and
// ok false) when there is none.
func (s *Server) lookup(w http.ResponseWriter, r *http.Request) (embedded.SessionInfo, bool) {
	id := r.PathValue("id")
	info, err := s.host.Session(id)
	if err == nil && info.State != environment.StateDestroying && info.State != environment.StateDestroyed {
		return info, true
	}
	writeJSONError(w, http.StatusNotFound, fmt.Sprintf("sandbox %q not found", id))
	return info, false
}

// attach returns an Environment bound to session id.
func (s *Server) attach(id string) (*embedded.Environment, error) {
	env := s.host.NewEnvironment()
	if err := env.AttachSession(id); err != nil {
		return nil, err
	}
	return env, nil
}

var sandboxIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newSandboxID makes a sandbox id: 20 lowercase letters and digits (100
// random bits), with no '-', which host-name routing splits on.
func newSandboxID() string {
	b := make([]byte, 13)
	_, _ = rand.Read(b)
	return sandboxIDEncoding.EncodeToString(b)[:20]
}

// metadataLabels turns a create request's metadata into session labels
// (the reserved prefix is refused) plus the server's own labels.
func metadataLabels(metadata map[string]string, template, onTimeout string) (map[string]string, error) {
	labels := make(map[string]string, len(metadata)+2)
	for k, v := range metadata {
		if strings.HasPrefix(k, labelPrefix) {
			return nil, fmt.Errorf("%w: metadata key %q: the prefix %q is reserved", environment.ErrInvalidArgument, k, labelPrefix)
		}
		labels[k] = v
	}
	labels[labelTemplate] = template
	labels[labelOnTimeout] = onTimeout
	if err := environment.ValidateLabels(labels); err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	return labels, nil
}

// metadata is the client's view of a session's labels: the reserved
// ones hidden.
func metadata(labels map[string]string) map[string]string {
	out := make(map[string]string, len(labels))
	for k, v := range labels {
		if !strings.HasPrefix(k, labelPrefix) {
			out[k] = v
		}
	}
	return out
}

// isSnapshotID reports whether a template id names a turnbox snapshot
// (<session>@<turn>) rather than an image.
func isSnapshotID(template string) bool {
	return strings.Contains(template, "@") && environment.ValidateSnapshotID(template) == nil
}

// snapshotSession is the session a snapshot id belongs to.
func snapshotSession(snapshotID string) string {
	id, _, _ := strings.Cut(snapshotID, "@")
	return id
}

// createSandbox serves create: a session from the template's image, or a
// fork of the snapshot the template id names, with a deadline.
func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if err := s.readJSON(w, r, &req); err != nil {
		fail(w, err)
		return
	}
	ttl, err := s.ttl(req.Timeout)
	if err != nil {
		fail(w, err)
		return
	}
	template := cmp.Or(req.TemplateID, DefaultTemplate)
	onTimeout := onTimeoutKill
	if req.AutoPause {
		onTimeout = onTimeoutPause
	}
	labels, err := metadataLabels(req.Metadata, template, onTimeout)
	if err != nil {
		fail(w, err)
		return
	}
	if req.AutoResume != nil && req.AutoResume.Enabled {
		if !req.AutoPause {
			fail(w, fmt.Errorf("%w: autoResume needs autoPause (the pause on timeout)", environment.ErrInvalidArgument))
			return
		}
		labels[labelAutoResume] = strconv.FormatInt(int64(ttl/time.Second), 10)
	}
	if n := req.Network; n != nil && n.AllowPublicTraffic != nil && !*n.AllowPublicTraffic {
		labels[labelTraffic] = trafficPrivate
	}
	cfg := environment.SessionConfig{Env: req.EnvVars, Labels: labels}
	if isSnapshotID(template) {
		parent, err := s.host.SessionConfig(snapshotSession(template))
		if err != nil {
			fail(w, fmt.Errorf("%w: template %q", environment.ErrSnapshotNotFound, template))
			return
		}
		// The sandbox continues its parent's: the parent's environment,
		// with the request's envVars over it.
		cfg.FromSnapshot, cfg.Image, cfg.Env = template, parent.Image, mergeEnv(parent.Env, req.EnvVars)
	} else if img, ok := s.templates[template]; ok {
		cfg.Image = img
	} else {
		cfg.Image = template
	}
	id, err := s.start(r.Context(), cfg, ttl)
	if err != nil {
		writeJSONError(w, createStatus(err), err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, s.sandboxAnswer(id, template, labels))
}

// mergeEnv is base with over's variables set over it.
func mergeEnv(base, over map[string]string) map[string]string {
	if len(base) == 0 {
		return over
	}
	out := maps.Clone(base)
	maps.Copy(out, over)
	return out
}

// createStatus is the status of a failed create: a host at its session
// limit is E2B's rate limit (429), which the SDKs report as such.
func createStatus(err error) int {
	if errors.Is(err, environment.ErrLimitExceeded) {
		return http.StatusTooManyRequests
	}
	return httpStatus(err)
}

// start creates a sandbox (a fork when cfg.FromSnapshot is set) under a
// new id and gives it the deadline now+ttl.
func (s *Server) start(ctx context.Context, cfg environment.SessionConfig, ttl time.Duration) (string, error) {
	cfg.SessionID = newSandboxID()
	var err error
	if cfg.FromSnapshot != "" {
		_, err = s.host.Fork(ctx, cfg.FromSnapshot, cfg)
	} else {
		_, err = s.host.CreateSession(ctx, cfg)
	}
	if err != nil {
		return "", err
	}
	s.life.set(cfg.SessionID, ttl)
	return cfg.SessionID, nil
}

// sandboxAnswer is the create and connect answer for sandbox id, whose
// session has labels.
func (s *Server) sandboxAnswer(id, template string, labels map[string]string) sandboxJSON {
	return sandboxJSON{
		TemplateID: template, SandboxID: id, ClientID: clientID, EnvdVersion: EnvdVersion,
		EnvdAccessToken: s.accessToken(id), Domain: s.domainJSON(),
		TrafficAccessToken: s.trafficTokenOf(id, labels),
	}
}

// domainJSON is the domain clients get (null when the server has none).
func (s *Server) domainJSON() *string {
	if s.domain == "" {
		return nil
	}
	d := s.domain
	return &d
}

// templateOf is the template id of a session: its create request's, or
// for sessions made through turnbox's API, its image (DefaultTemplate
// for the default image).
func templateOf(info embedded.SessionInfo) string {
	if t, ok := info.Labels[labelTemplate]; ok {
		return t
	}
	return cmp.Or(info.Image, DefaultTemplate)
}

// detail describes a session as E2B's SandboxDetail. A sandbox with no
// deadline (paused, or made through turnbox's API) reports now as its
// end.
func (s *Server) detail(info embedded.SessionInfo) sandboxDetail {
	state := "running"
	if info.State == environment.StatePaused {
		state = "paused"
	}
	end, ok := s.life.at(info.ID)
	if !ok {
		end = time.Now().UTC()
	}
	cpus := runtime.NumCPU()
	if c := info.Limits.CPUs; c > 0 {
		cpus = int(math.Ceil(c))
	}
	return sandboxDetail{
		TemplateID: templateOf(info), SandboxID: info.ID, ClientID: clientID,
		StartedAt: info.CreatedAt.UTC(), EndAt: end.UTC(), State: state, CPUCount: cpus,
		MemoryMB: info.Limits.MemoryBytes >> 20, DiskSizeMB: info.Limits.DiskBytes >> 20,
		Metadata: metadata(info.Labels), EnvdVersion: EnvdVersion, Domain: s.domainJSON(),
		Lifecycle: lifecycleJSON{OnTimeout: cmp.Or(info.Labels[labelOnTimeout], onTimeoutKill), AutoResume: info.Labels[labelAutoResume] != ""},
	}
}

// getSandbox serves get: the sandbox's detail with its access token.
func (s *Server) getSandbox(w http.ResponseWriter, r *http.Request) {
	info, ok := s.lookup(w, r)
	if !ok {
		return
	}
	d := s.detail(info)
	d.EnvdAccessToken = s.accessToken(info.ID)
	writeJSON(w, http.StatusOK, d)
}

// killSandbox serves kill: destroy the sandbox (204; 404 when unknown).
func (s *Server) killSandbox(w http.ResponseWriter, r *http.Request) {
	info, ok := s.lookup(w, r)
	if !ok {
		return
	}
	s.stopClock(w, info.ID, func(env *embedded.Environment) error { return env.Destroy(r.Context()) })
}

// stopClock runs op on sandbox id (a kill or a pause) and, when it
// succeeds, drops the sandbox's deadline and answers 204.
func (s *Server) stopClock(w http.ResponseWriter, id string, op func(*embedded.Environment) error) {
	env, err := s.attach(id)
	if err == nil {
		err = op(env)
	}
	if err != nil {
		fail(w, err)
		return
	}
	s.life.clear(id)
	w.WriteHeader(http.StatusNoContent)
}

// connectSandbox serves connect and resume: a paused (or failed) sandbox
// is resumed (201), a running one is left as it is (200); either way its
// deadline moves to at least now+timeout (DefaultTimeout when the body
// gives none, except for sessions made through turnbox's API, which keep
// having none).
func (s *Server) connectSandbox(w http.ResponseWriter, r *http.Request) {
	var req timeoutRequest
	if err := s.readJSON(w, r, &req); err != nil {
		fail(w, err)
		return
	}
	ttl, err := s.ttl(req.Timeout)
	if err != nil {
		fail(w, err)
		return
	}
	info, ok := s.lookup(w, r)
	if !ok {
		return
	}
	status := http.StatusOK
	if info.State == environment.StatePaused || info.State == environment.StateFailed {
		env, err := s.attach(info.ID)
		if err == nil {
			err = env.Resume(r.Context())
		}
		if err != nil {
			fail(w, err)
			return
		}
		status = http.StatusCreated
	}
	// A session made through turnbox's API gets a deadline only when
	// the client asks for one.
	if _, e2bMade := info.Labels[labelTemplate]; e2bMade || req.Timeout != nil {
		s.life.extend(info.ID, ttl)
	}
	writeJSON(w, status, s.sandboxAnswer(info.ID, templateOf(info), info.Labels))
}

// pauseSandbox serves pause: 204, 409 when paused already. A paused
// sandbox has no deadline until it is connected.
func (s *Server) pauseSandbox(w http.ResponseWriter, r *http.Request) {
	info, ok := s.lookup(w, r)
	if !ok {
		return
	}
	if info.State == environment.StatePaused {
		writeJSONError(w, http.StatusConflict, fmt.Sprintf("sandbox %q is already paused", info.ID))
		return
	}
	s.stopClock(w, info.ID, func(env *embedded.Environment) error { return s.pause(r.Context(), env) })
}

// setSandboxTimeout serves setTimeout: the running sandbox's deadline
// becomes now+timeout (shorter or longer). A paused sandbox has none to
// set (409): connect gives it one.
func (s *Server) setSandboxTimeout(w http.ResponseWriter, r *http.Request) {
	var req timeoutRequest
	if err := s.readJSON(w, r, &req); err != nil {
		fail(w, err)
		return
	}
	if req.Timeout == nil {
		fail(w, fmt.Errorf("%w: timeout is required", environment.ErrInvalidArgument))
		return
	}
	ttl, err := s.ttl(req.Timeout)
	if err != nil {
		fail(w, err)
		return
	}
	info, ok := s.lookup(w, r)
	if !ok {
		return
	}
	if info.State == environment.StatePaused {
		writeJSONError(w, http.StatusConflict, fmt.Sprintf("sandbox %q is paused: connect to it to give it a timeout", info.ID))
		return
	}
	s.life.set(info.ID, ttl)
	w.WriteHeader(http.StatusNoContent)
}

// sandboxMetrics serves getMetrics: the server keeps no metrics history,
// so a known sandbox has none ([]).
func (s *Server) sandboxMetrics(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.lookup(w, r); ok {
		writeJSON(w, http.StatusOK, []struct{}{})
	}
}

// listSandboxes serves list: the host's sandboxes, filtered by metadata
// and state, by pages in id order.
func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	want, err := parseMetadataFilter(q.Get("metadata"))
	if err != nil {
		fail(w, err)
		return
	}
	states, err := parseStates(q["state"])
	if err != nil {
		fail(w, err)
		return
	}
	var out []sandboxDetail
	for _, info := range s.host.Sessions() {
		if info.State == environment.StateDestroying || info.State == environment.StateDestroyed {
			continue
		}
		d := s.detail(info)
		if states[d.State] && hasMetadata(d.Metadata, want) {
			out = append(out, d)
		}
	}
	pg, err := paginate(w, q, out, func(d sandboxDetail) string { return d.SandboxID })
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, pg)
}

// parseMetadataFilter parses list's metadata filter. The JS SDK sends
// each key and value percent-encoded (encodeURIComponent), then the pairs
// form-encoded ("k=v&k2=v2") as the parameter's value; so after the
// form decoding each key and value is percent-decoded once more. A key
// or value that does not percent-decode (a client that encoded it once
// only, with a literal '%') is taken as it is.
func parseMetadataFilter(raw string) (map[string]string, error) {
	want := map[string]string{}
	if raw == "" {
		return want, nil
	}
	pairs, err := url.ParseQuery(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: bad metadata filter %q: %v", environment.ErrInvalidArgument, raw, err)
	}
	for k, vs := range pairs {
		key := decodeComponent(k)
		if key == "" || len(vs) != 1 {
			return nil, fmt.Errorf("%w: bad metadata filter %q", environment.ErrInvalidArgument, raw)
		}
		want[key] = decodeComponent(vs[0])
	}
	return want, nil
}

// decodeComponent undoes encodeURIComponent, leaving s as it is when it
// is not percent-encoded.
func decodeComponent(s string) string {
	if d, err := url.PathUnescape(s); err == nil {
		return d
	}
	return s
}

// hasMetadata reports whether md has every pair of want.
func hasMetadata(md, want map[string]string) bool {
	for k, v := range want {
		if got, ok := md[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// parseStates parses list's state filter (repeated or comma-separated;
// none means both states).
func parseStates(vals []string) (map[string]bool, error) {
	states := map[string]bool{}
	for _, v := range vals {
		for st := range strings.SplitSeq(v, ",") {
			if st != "running" && st != "paused" {
				return nil, fmt.Errorf("%w: state %q: want running or paused", environment.ErrInvalidArgument, st)
			}
			states[st] = true
		}
	}
	if len(states) == 0 {
		states["running"], states["paused"] = true, true
	}
	return states, nil
}
