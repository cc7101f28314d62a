package e2b_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/container/agent/agenttest"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	"github.com/turnbox/turnbox/internal/testenv"
	"github.com/turnbox/turnbox/remote/e2b"
)

const testAPIKey = "e2b_0123456789abcdef"

var testSecret = bytes.Repeat([]byte{7}, 32)

// controlPlane is an e2b.Server over a real host, served by httptest.
type controlPlane struct {
	t    *testing.T
	host *embedded.Host
	srv  *e2b.Server
	url  string
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// openTestHost opens a host on cfg (a temporary state directory and a
// quiet logger when unset), closed when the test ends.
func openTestHost(t *testing.T, cfg embedded.Config) *embedded.Host {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	cfg.Logger = quietLogger()
	host, err := embedded.NewHost(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := host.Close(ctx); err != nil {
			t.Errorf("closing host: %v", err)
		}
	})
	return host
}

// noneHost is a host on localdisk with the none runtime.
func noneHost(t *testing.T) *embedded.Host {
	return openTestHost(t, embedded.Config{ContainerRuntime: embedded.ContainerRuntimeNone})
}

// pausableHost is a host whose sandboxes can pause: the none runtime
// where it can freeze (cgroups), else gVisor (skipped without it,
// unless CI=1).
func pausableHost(t *testing.T) *embedded.Host {
	if h := noneHost(t); h.Capabilities().Pause {
		return h
	}
	return openTestHost(t, gvisorConfig(t))
}

// gvisorConfig is a host config with gVisor (skipped without it, unless
// CI=1).
func gvisorConfig(t *testing.T) embedded.Config {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "runsc")
	return embedded.Config{ContainerRuntime: embedded.ContainerRuntimeGVisor, AgentPath: agenttest.Build(t)}
}

// serve starts an e2b.Server for host over httptest.
func serve(t *testing.T, host *embedded.Host, opts ...e2b.Option) *controlPlane {
	t.Helper()
	opts = append([]e2b.Option{e2b.WithAPIKeys(testAPIKey), e2b.WithAccessTokenSecret(testSecret), e2b.WithLogger(quietLogger())}, opts...)
	srv, err := e2b.New(host, opts...)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler(http.NotFoundHandler()))
	t.Cleanup(func() { hs.Close(); srv.Close() })
	return &controlPlane{t: t, host: host, srv: srv, url: hs.URL}
}

// reply is one answer of the control plane.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// decode decodes the answer's JSON body into v.
func (r reply) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %q: %v", r.body, err)
	}
}

// call sends one request with key as the X-API-KEY (none when empty);
// body is marshalled to JSON unless it is a string.
func (c *controlPlane) call(method, path, key string, body any) reply {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, c.url+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-KEY", key)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

// do is call with the test API key.
func (c *controlPlane) do(method, path string, body any) reply {
	c.t.Helper()
	return c.call(method, path, testAPIKey, body)
}

// expect fails the test unless r has status want.
func (c *controlPlane) expect(r reply, want int, what string) reply {
	c.t.Helper()
	if r.status != want {
		c.t.Fatalf("%s: status %d (%s), want %d", what, r.status, r.body, want)
	}
	return r
}

type created struct {
	TemplateID      string  `json:"templateID"`
	SandboxID       string  `json:"sandboxID"`
	ClientID        string  `json:"clientID"`
	EnvdVersion     string  `json:"envdVersion"`
	EnvdAccessToken string  `json:"envdAccessToken"`
	Domain          *string `json:"domain"`
}

type detail struct {
	TemplateID      string            `json:"templateID"`
	SandboxID       string            `json:"sandboxID"`
	State           string            `json:"state"`
	StartedAt       time.Time         `json:"startedAt"`
	EndAt           time.Time         `json:"endAt"`
	Metadata        map[string]string `json:"metadata"`
	CPUCount        int               `json:"cpuCount"`
	EnvdAccessToken string            `json:"envdAccessToken"`
	EnvdVersion     string            `json:"envdVersion"`
	Lifecycle       struct {
		OnTimeout  string `json:"onTimeout"`
		AutoResume bool   `json:"autoResume"`
	} `json:"lifecycle"`
}

// create makes a sandbox through the control plane.
func (c *controlPlane) create(body map[string]any) created {
	c.t.Helper()
	var out created
	c.expect(c.do("POST", "/v2/sandboxes", body), http.StatusCreated, "create").decode(c.t, &out)
	return out
}

// get returns a sandbox's detail.
func (c *controlPlane) get(id string) detail {
	c.t.Helper()
	var d detail
	c.expect(c.do("GET", "/sandboxes/"+id, nil), http.StatusOK, "get").decode(c.t, &d)
	return d
}

// waitFor polls cond every 50 ms for up to limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// gone reports whether the host has no session id any more.
func gone(host *embedded.Host, id string) bool {
	_, err := host.Session(id)
	return err != nil
}

func TestControlAuthAndUnknownRoutes(t *testing.T) {
	c := serve(t, noneHost(t))
	for _, key := range []string{"", "e2b_wrong"} {
		r := c.expect(c.call("GET", "/v2/sandboxes", key, nil), http.StatusUnauthorized, "key "+key)
		var e struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		r.decode(t, &e)
		if e.Code != 401 || e.Message == "" {
			t.Fatalf("401 body = %s", r.body)
		}
	}
	c.expect(c.call("POST", "/v2/sandboxes", "", map[string]any{}), http.StatusUnauthorized, "create without key")
	if n := len(c.host.Sessions()); n != 0 {
		t.Fatalf("an unauthorized create made %d sessions", n)
	}
	for _, p := range [][2]string{{"GET", "/sandboxes/x/nothing"}, {"PUT", "/sandboxes"}, {"GET", "/templates/x"}} {
		r := c.expect(c.do(p[0], p[1], nil), http.StatusNotFound, p[0]+" "+p[1])
		if !strings.Contains(r.header.Get("Content-Type"), "json") {
			t.Fatalf("%s %s: content type %q", p[0], p[1], r.header.Get("Content-Type"))
		}
	}
	for _, p := range [][2]string{{"GET", "/sandboxes/nosuch"}, {"DELETE", "/sandboxes/nosuch"}, {"POST", "/sandboxes/nosuch/pause"},
		{"POST", "/v2/sandboxes/nosuch/connect"}, {"GET", "/sandboxes/nosuch/metrics"}, {"POST", "/sandboxes/nosuch/snapshots"},
		{"POST", "/sandboxes/nosuch/fork"}, {"DELETE", "/templates/nosuch@1"}, {"GET", "/sandboxes/bad%20id"}} {
		c.expect(c.do(p[0], p[1], nil), http.StatusNotFound, p[0]+" "+p[1])
	}
}

func TestControlCreateGetKill(t *testing.T) {
	c := serve(t, noneHost(t), e2b.WithDomain("e2b.example"))
	sb := c.create(map[string]any{"templateID": "base", "timeout": 120, "metadata": map[string]string{"owner": "ann"},
		"envVars": map[string]string{"GREETING": "hi"}, "network": map[string]any{"ignored": true}})
	if !regexp.MustCompile(`^[a-z0-9]{20}$`).MatchString(sb.SandboxID) {
		t.Fatalf("sandbox id %q", sb.SandboxID)
	}
	if sb.TemplateID != "base" || sb.EnvdVersion != e2b.EnvdVersion || sb.EnvdAccessToken == "" || sb.Domain == nil || *sb.Domain != "e2b.example" {
		t.Fatalf("create answer %+v", sb)
	}
	d := c.get(sb.SandboxID)
	if d.State != "running" || d.TemplateID != "base" || d.EnvdAccessToken != sb.EnvdAccessToken || d.CPUCount < 1 {
		t.Fatalf("detail %+v", d)
	}
	if len(d.Metadata) != 1 || d.Metadata["owner"] != "ann" {
		t.Fatalf("metadata %v: want only owner=ann (reserved labels hidden)", d.Metadata)
	}
	if left := time.Until(d.EndAt); left < 100*time.Second || left > 121*time.Second {
		t.Fatalf("endAt is %v away, want about 120 s", left)
	}
	// envVars reach the sandbox's commands.
	env := c.host.NewEnvironment()
	if err := env.AttachSession(sb.SandboxID); err != nil {
		t.Fatal(err)
	}
	req, err := environment.NewToolRequest("t1", environment.BashParams{Command: "printf %s \"$GREETING\""})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := env.ExecuteTool(context.Background(), req, nil)
	if err != nil || resp.Content != "hi" {
		t.Fatalf("GREETING = %q, %v", resp.Content, err)
	}
	// The 2.45 SDK's path creates too.
	var old created
	c.expect(c.do("POST", "/sandboxes", map[string]any{"templateID": "base"}), http.StatusCreated, "v1 create").decode(t, &old)
	c.expect(c.do("DELETE", "/sandboxes/"+sb.SandboxID, nil), http.StatusNoContent, "kill")
	if !gone(c.host, sb.SandboxID) {
		t.Fatal("killed sandbox still on the host")
	}
	c.expect(c.do("GET", "/sandboxes/"+sb.SandboxID, nil), http.StatusNotFound, "get killed")
	c.expect(c.do("DELETE", "/sandboxes/"+sb.SandboxID, nil), http.StatusNotFound, "kill twice")
	c.expect(c.do("GET", "/sandboxes/"+old.SandboxID+"/metrics", nil), http.StatusOK, "metrics")
}

func TestControlCreateRefusesBadInput(t *testing.T) {
	c := serve(t, noneHost(t), e2b.WithMaxMessageBytes(4096))
	bad := []any{
		map[string]any{"metadata": map[string]string{"bad key!": "x"}},
		map[string]any{"metadata": map[string]string{"e2b.template": "x"}},
		map[string]any{"timeout": 0},
		map[string]any{"timeout": -5},
		map[string]any{"timeout": "abc"},
		map[string]any{"timeout": 1.5},
		map[string]any{"envVars": map[string]string{"BAD=NAME": "x"}},
		map[string]any{"templateID": "../etc"},
		`{"templateID":`,
		map[string]any{"ignoredField": strings.Repeat("x", 5000)}, // over WithMaxMessageBytes
	}
	for _, b := range bad {
		c.expect(c.do("POST", "/v2/sandboxes", b), http.StatusBadRequest, "create "+string(mustJSON(t, b)))
	}
	if n := len(c.host.Sessions()); n != 0 {
		t.Fatalf("bad creates left %d sessions", n)
	}
	sb := c.create(nil)
	for _, b := range []any{map[string]any{"timeout": 0}, map[string]any{}, `{"timeout":"x"}`} {
		c.expect(c.do("POST", "/sandboxes/"+sb.SandboxID+"/timeout", b), http.StatusBadRequest, "setTimeout "+string(mustJSON(t, b)))
	}
	c.expect(c.do("POST", "/v2/sandboxes/"+sb.SandboxID+"/connect", map[string]any{"timeout": -1}), http.StatusBadRequest, "connect timeout -1")
}

func mustJSON(t *testing.T, v any) []byte {
	if s, ok := v.(string); ok {
		return []byte(s)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestControlSessionLimitIs429(t *testing.T) {
	c := serve(t, openTestHost(t, embedded.Config{ContainerRuntime: embedded.ContainerRuntimeNone, MaxSessions: 1}))
	c.create(nil)
	c.expect(c.do("POST", "/v2/sandboxes", nil), http.StatusTooManyRequests, "create past the limit")
}

func TestControlListFiltersAndPages(t *testing.T) {
	c := serve(t, noneHost(t))
	want := map[string]bool{}
	for i := range 3 {
		sb := c.create(map[string]any{"metadata": map[string]string{"team": "a b&c", "n": string(rune('0' + i))}})
		want[sb.SandboxID] = true
	}
	other := c.create(map[string]any{"metadata": map[string]string{"team": "z"}})
	// The JS SDK's encoding: each key and value encodeURIComponent'd,
	// the pairs form-encoded, sent as the metadata parameter.
	component := func(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }
	filter := url.QueryEscape(url.Values{component("team"): {component("a b&c")}}.Encode())
	got := map[string]bool{}
	token, pages := "", 0
	for {
		path := "/v2/sandboxes?limit=2&metadata=" + filter
		if token != "" {
			path += "&nextToken=" + url.QueryEscape(token)
		}
		r := c.expect(c.do("GET", path, nil), http.StatusOK, "list")
		var page []detail
		r.decode(t, &page)
		if len(page) > 2 {
			t.Fatalf("page of %d, limit 2", len(page))
		}
		for _, d := range page {
			if got[d.SandboxID] || d.Metadata["team"] != "a b&c" {
				t.Fatalf("listed %+v twice or unfiltered", d)
			}
			got[d.SandboxID] = true
		}
		pages++
		if token = r.header.Get("X-Next-Token"); token == "" {
			break
		}
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if len(got) != 3 || pages != 2 {
		t.Fatalf("listed %v in %d pages, want the 3 of team a in 2", got, pages)
	}
	var all []detail
	c.expect(c.do("GET", "/sandboxes?state=running", nil), http.StatusOK, "v1 list").decode(t, &all)
	if len(all) != 4 || !slices.ContainsFunc(all, func(d detail) bool { return d.SandboxID == other.SandboxID }) {
		t.Fatalf("v1 list = %+v", all)
	}
	var paused []detail
	c.expect(c.do("GET", "/v2/sandboxes?state=paused", nil), http.StatusOK, "list paused").decode(t, &paused)
	if len(paused) != 0 {
		t.Fatalf("paused list = %+v", paused)
	}
	// A filter encoded once only (as Python's urlencode does) matches too.
	var once []detail
	c.expect(c.do("GET", "/v2/sandboxes?metadata="+url.QueryEscape("team=z"), nil), http.StatusOK, "list once-encoded").decode(t, &once)
	if len(once) != 1 || once[0].SandboxID != other.SandboxID {
		t.Fatalf("once-encoded filter: %+v", once)
	}
	for _, q := range []string{"state=bogus", "limit=0", "limit=x", "metadata=%3Dx", "metadata=" + url.QueryEscape("a=1&a=2")} {
		c.expect(c.do("GET", "/v2/sandboxes?"+q, nil), http.StatusBadRequest, "list "+q)
	}
}

// writeFile writes a workspace file of sandbox id through the host.
func writeFile(t *testing.T, host *embedded.Host, id, name, content string) {
	t.Helper()
	env := host.NewEnvironment()
	if err := env.AttachSession(id); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Upload(context.Background(), name, strings.NewReader(content), environment.UploadOptions{}); err != nil {
		t.Fatal(err)
	}
}

// readFile reads a workspace file of sandbox id through the host.
func readFile(t *testing.T, host *embedded.Host, id, name string) string {
	t.Helper()
	env := host.NewEnvironment()
	if err := env.AttachSession(id); err != nil {
		t.Fatal(err)
	}
	rc, _, err := env.Download(context.Background(), name)
	if err != nil {
		t.Fatalf("reading %s of %s: %v", name, id, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type snapshotJSON struct {
	SnapshotID string   `json:"snapshotID"`
	Names      []string `json:"names"`
}

// E2B snapshots are images saved from the sandbox: a sandbox made from
// one has the snapshot's files and env, the snapshot outlives its
// sandbox, and deleting it waits until no sandbox uses it.
func TestControlSnapshotThenCreateFromIt(t *testing.T) {
	c := serve(t, openTestHost(t, gvisorConfig(t)))
	sb := c.create(map[string]any{"metadata": map[string]string{"k": "v"}, "envVars": map[string]string{"A": "1", "B": "1"}})
	writeFile(t, c.host, sb.SandboxID, "before.txt", "kept")
	var snap snapshotJSON
	c.expect(c.do("POST", "/sandboxes/"+sb.SandboxID+"/snapshots", map[string]string{"name": "snap1"}), http.StatusCreated, "snapshot").decode(t, &snap)
	if snap.SnapshotID != "snap1" || !slices.Equal(snap.Names, []string{"snap1"}) {
		t.Fatalf("snapshot %+v", snap)
	}
	writeFile(t, c.host, sb.SandboxID, "after.txt", "not in the snapshot")
	var listed []snapshotJSON
	c.expect(c.do("GET", "/snapshots?sandboxID="+sb.SandboxID+"&name=snap1", nil), http.StatusOK, "list snapshots").decode(t, &listed)
	if len(listed) != 1 || listed[0].SnapshotID != snap.SnapshotID {
		t.Fatalf("listed %+v", listed)
	}
	c.expect(c.do("GET", "/snapshots?name=nosuch", nil), http.StatusOK, "list none").decode(t, &listed)
	if len(listed) != 0 {
		t.Fatalf("name filter: %+v", listed)
	}
	// The snapshot outlives its sandbox.
	c.expect(c.do("DELETE", "/sandboxes/"+sb.SandboxID, nil), http.StatusNoContent, "kill the snapshot's sandbox")
	from := c.create(map[string]any{"templateID": snap.SnapshotID, "envVars": map[string]string{"B": "2"}})
	if got := readFile(t, c.host, from.SandboxID, "before.txt"); got != "kept" {
		t.Fatalf("before.txt in the new sandbox = %q", got)
	}
	if out := sandboxSh(t, c.host, from.SandboxID, "echo $A$B; ls after.txt 2>&1 || true"); !strings.HasPrefix(out, "12\n") || !strings.Contains(out, "No such file") {
		t.Fatalf("a sandbox from the snapshot: %q; want the parent's env under the request's, and no after.txt", out)
	}
	if d := c.get(from.SandboxID); d.TemplateID != snap.SnapshotID {
		t.Fatalf("template of a sandbox from a snapshot = %q", d.TemplateID)
	}
	c.expect(c.do("POST", "/v2/sandboxes", map[string]any{"templateID": "nosuch-snapshot"}), http.StatusBadRequest, "create from an unknown template")
	c.expect(c.do("DELETE", "/templates/"+snap.SnapshotID, nil), http.StatusConflict, "delete a snapshot a sandbox uses")
	c.expect(c.do("DELETE", "/sandboxes/"+from.SandboxID, nil), http.StatusNoContent, "kill the sandbox from the snapshot")
	c.expect(c.do("DELETE", "/templates/"+snap.SnapshotID, nil), http.StatusNoContent, "delete snapshot")
	c.expect(c.do("DELETE", "/templates/"+snap.SnapshotID, nil), http.StatusNotFound, "delete snapshot twice")
	c.expect(c.do("DELETE", "/templates/base", nil), http.StatusNotFound, "delete a template")
	c.expect(c.do("DELETE", "/templates/busybox", nil), http.StatusNotFound, "delete an image that is no snapshot")
}

// sandboxSh runs command in sandbox id through the host and returns its
// output.
func sandboxSh(t *testing.T, host *embedded.Host, id, command string) string {
	t.Helper()
	env := host.NewEnvironment()
	if err := env.AttachSession(id); err != nil {
		t.Fatal(err)
	}
	req, err := environment.NewToolRequest("", environment.BashParams{Command: command})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := env.ExecuteTool(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Content
}

// Unnamed snapshots get server-chosen names and come in pages; on the
// none runtime, which has no images, a snapshot is refused with 501.
func TestControlSnapshotPages(t *testing.T) {
	c := serve(t, openTestHost(t, gvisorConfig(t)))
	sb := c.create(nil)
	for range 3 {
		c.expect(c.do("POST", "/sandboxes/"+sb.SandboxID+"/snapshots", nil), http.StatusCreated, "snapshot")
	}
	var page []snapshotJSON
	r := c.expect(c.do("GET", "/snapshots?limit=2", nil), http.StatusOK, "page 1")
	r.decode(t, &page)
	tok := r.header.Get("X-Next-Token")
	if len(page) != 2 || tok == "" || len(page[0].Names) != 0 || !strings.HasPrefix(page[0].SnapshotID, "snap-") {
		t.Fatalf("page 1: %+v, token %q", page, tok)
	}
	var rest []snapshotJSON
	r = c.expect(c.do("GET", "/snapshots?limit=2&nextToken="+url.QueryEscape(tok), nil), http.StatusOK, "page 2")
	r.decode(t, &rest)
	if len(rest) != 1 || r.header.Get("X-Next-Token") != "" || rest[0].SnapshotID == page[0].SnapshotID || rest[0].SnapshotID == page[1].SnapshotID {
		t.Fatalf("page 2: %+v (page 1 %+v)", rest, page)
	}
	c.expect(c.do("POST", "/sandboxes/"+sb.SandboxID+"/snapshots", map[string]string{"name": "snap-mine"}), http.StatusBadRequest, "a name in the server's space")
	n := serve(t, noneHost(t))
	c.expect(n.do("POST", "/sandboxes/"+n.create(nil).SandboxID+"/snapshots", nil), http.StatusNotImplemented, "a snapshot on the none runtime")
}

func TestControlFork(t *testing.T) {
	c := serve(t, noneHost(t))
	sb := c.create(map[string]any{"metadata": map[string]string{"k": "v"}, "envVars": map[string]string{"A": "1"}})
	writeFile(t, c.host, sb.SandboxID, "f.txt", "forked")
	var results []struct {
		Sandbox *created `json:"sandbox"`
		Error   *struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	c.expect(c.do("POST", "/sandboxes/"+sb.SandboxID+"/fork", map[string]any{"count": 2, "timeout": 60}), http.StatusOK, "fork").decode(t, &results)
	if len(results) != 2 {
		t.Fatalf("fork results %+v", results)
	}
	for _, res := range results {
		if res.Sandbox == nil || res.Error != nil {
			t.Fatalf("fork result %+v", res)
		}
		id := res.Sandbox.SandboxID
		if got := readFile(t, c.host, id, "f.txt"); got != "forked" {
			t.Fatalf("f.txt in fork %s = %q", id, got)
		}
		if d := c.get(id); d.Metadata["k"] != "v" || d.State != "running" || time.Until(d.EndAt) > 61*time.Second {
			t.Fatalf("fork detail %+v", d)
		}
		if cfg, err := c.host.SessionConfig(id); err != nil || cfg.Env["A"] != "1" {
			t.Fatalf("fork %s: env %v (%v), want the parent's", id, cfg.Env, err)
		}
	}
	for _, n := range []int{0, -1, 17} {
		c.expect(c.do("POST", "/sandboxes/"+sb.SandboxID+"/fork", map[string]any{"count": n}), http.StatusBadRequest, "fork count")
	}
	if got := len(c.host.Sessions()); got != 3 {
		t.Fatalf("%d sessions after forks, want 3", got)
	}
}

func TestControlTimeoutKills(t *testing.T) {
	c := serve(t, noneHost(t))
	short := c.create(map[string]any{"timeout": 1})
	long := c.create(map[string]any{"timeout": 300})
	extended := c.create(map[string]any{"timeout": 1})
	c.expect(c.do("POST", "/v2/sandboxes/"+extended.SandboxID+"/connect", map[string]any{"timeout": 60}), http.StatusOK, "connect a running sandbox")
	c.expect(c.do("POST", "/sandboxes/"+long.SandboxID+"/timeout", map[string]any{"timeout": 1}), http.StatusNoContent, "setTimeout")
	waitFor(t, 15*time.Second, "the 1 s sandboxes are destroyed", func() bool {
		return gone(c.host, short.SandboxID) && gone(c.host, long.SandboxID)
	})
	if gone(c.host, extended.SandboxID) {
		t.Fatal("connect did not extend the lifetime")
	}
	if c.host.Capabilities().Pause {
		return // TestControlPauseConnectTimeoutPause covers autoPause
	}
	// A sandbox that asked to pause on a runtime that cannot pause is
	// destroyed rather than left running.
	p := c.create(map[string]any{"timeout": 1, "autoPause": true})
	waitFor(t, 15*time.Second, "the autoPause sandbox is destroyed", func() bool { return gone(c.host, p.SandboxID) })
}

func TestControlCloseStopsTimers(t *testing.T) {
	c := serve(t, noneHost(t))
	sb := c.create(map[string]any{"timeout": 1})
	c.srv.Close()
	time.Sleep(2 * time.Second)
	if gone(c.host, sb.SandboxID) {
		t.Fatal("a deadline fired after Close")
	}
}

func TestControlRestartGivesFreshDeadline(t *testing.T) {
	host := noneHost(t)
	c := serve(t, host)
	sb := c.create(map[string]any{"timeout": 3600})
	c.srv.Close()
	// A turnbox session has no deadline.
	if _, err := host.CreateSession(context.Background(), environment.SessionConfig{SessionID: "own"}); err != nil {
		t.Fatal(err)
	}
	c2 := serve(t, host)
	left := time.Until(c2.get(sb.SandboxID).EndAt)
	if left < e2b.DefaultTimeout-time.Minute || left > e2b.DefaultTimeout {
		t.Fatalf("after a restart the sandbox ends in %v, want about %v", left, e2b.DefaultTimeout)
	}
	c2.expect(c2.do("POST", "/v2/sandboxes/own/connect", nil), http.StatusOK, "connect a turnbox session")
	if left := time.Until(c2.get("own").EndAt); left > time.Second {
		t.Fatalf("a turnbox session got a deadline %v away", left)
	}
	c2.expect(c2.do("POST", "/sandboxes/own/timeout", map[string]any{"timeout": 600}), http.StatusNoContent, "setTimeout on a turnbox session")
	if left := time.Until(c2.get("own").EndAt); left < 590*time.Second || left > 600*time.Second {
		t.Fatalf("setTimeout 600 on a turnbox session: ends in %v", left)
	}
}

func TestControlPauseConnectTimeoutPause(t *testing.T) {
	host := pausableHost(t)
	c := serve(t, host)
	sb := c.create(map[string]any{"timeout": 300})
	c.expect(c.do("POST", "/sandboxes/"+sb.SandboxID+"/pause", nil), http.StatusNoContent, "pause")
	if d := c.get(sb.SandboxID); d.State != "paused" {
		t.Fatalf("state after pause %q", d.State)
	}
	c.expect(c.do("POST", "/sandboxes/"+sb.SandboxID+"/pause", nil), http.StatusConflict, "pause twice")
	c.expect(c.do("POST", "/sandboxes/"+sb.SandboxID+"/timeout", map[string]any{"timeout": 1}), http.StatusConflict, "setTimeout while paused")
	var conn created
	c.expect(c.do("POST", "/v2/sandboxes/"+sb.SandboxID+"/connect", map[string]any{"timeout": 60}), http.StatusCreated, "connect paused").decode(t, &conn)
	if conn.SandboxID != sb.SandboxID || conn.EnvdAccessToken != sb.EnvdAccessToken {
		t.Fatalf("connect answer %+v", conn)
	}
	if d := c.get(sb.SandboxID); d.State != "running" {
		t.Fatalf("state after connect %q", d.State)
	}
	c.expect(c.do("POST", "/sandboxes/"+sb.SandboxID+"/pause", nil), http.StatusNoContent, "pause again")
	c.expect(c.do("POST", "/sandboxes/"+sb.SandboxID+"/resume", map[string]any{"timeout": 60}), http.StatusCreated, "resume (2.45 path)")

	auto := c.create(map[string]any{"timeout": 1, "autoPause": true})
	waitFor(t, 30*time.Second, "the autoPause sandbox pauses at its deadline", func() bool {
		info, err := host.Session(auto.SandboxID)
		return err == nil && info.State == environment.StatePaused
	})
	time.Sleep(1500 * time.Millisecond) // a paused sandbox has no deadline
	if info, err := host.Session(auto.SandboxID); err != nil || info.State != environment.StatePaused {
		t.Fatalf("paused sandbox changed: %+v, %v", info, err)
	}
	kill := c.create(map[string]any{"timeout": 1})
	waitFor(t, 30*time.Second, "the kill sandbox is destroyed at its deadline", func() bool { return gone(host, kill.SandboxID) })

	// autoResume: an envd request with the sandbox's token resumes it;
	// one without is refused and leaves it paused.
	c.expect(c.do("POST", "/v2/sandboxes", map[string]any{"autoResume": map[string]bool{"enabled": true}}), http.StatusBadRequest, "autoResume without autoPause")
	ar := c.create(map[string]any{"timeout": 1, "autoPause": true, "autoResume": map[string]bool{"enabled": true}})
	if d := c.get(ar.SandboxID); d.Lifecycle.OnTimeout != "pause" || !d.Lifecycle.AutoResume {
		t.Fatalf("lifecycle %+v", d.Lifecycle)
	}
	waitFor(t, 30*time.Second, "the autoResume sandbox pauses at its deadline", func() bool {
		return c.get(ar.SandboxID).State == "paused"
	})
	health := func(token string) int {
		req, _ := http.NewRequest(http.MethodGet, c.url+"/health", nil)
		req.Header.Set("E2b-Sandbox-Id", ar.SandboxID)
		req.Header.Set("X-Access-Token", token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := health("wrong"); code != http.StatusUnauthorized || c.get(ar.SandboxID).State != "paused" {
		t.Fatalf("a request with a wrong token: %d, state %s", code, c.get(ar.SandboxID).State)
	}
	if code := health(ar.EnvdAccessToken); code != http.StatusNoContent {
		t.Fatalf("an envd request to the paused autoResume sandbox: %d", code)
	}
	if d := c.get(ar.SandboxID); d.State != "running" || time.Until(d.EndAt) <= 0 {
		t.Fatalf("after auto-resume: %+v", d)
	}
	c.expect(c.do("POST", "/sandboxes/"+ar.SandboxID+"/pause", nil), http.StatusNoContent, "pause the autoResume sandbox")
	if code := health(sb.EnvdAccessToken); code != http.StatusUnauthorized {
		t.Fatalf("another sandbox's token: %d", code)
	}
}

// TestControlSandboxRunsBash: a sandbox of the default (busybox) image
// runs /bin/bash -l -c, as E2B's commands.run does, when the host has
// bash-static.
func TestControlSandboxRunsBash(t *testing.T) {
	_, err := os.Stat("/bin/bash-static")
	testenv.Require(t, err == nil, "/bin/bash-static (apt install bash-static)")
	host := openTestHost(t, gvisorConfig(t))
	c := serve(t, host)
	sb := c.create(nil)
	env := host.NewEnvironment()
	if err := env.AttachSession(sb.SandboxID); err != nil {
		t.Fatal(err)
	}
	req, err := environment.NewToolRequest("b1", environment.BashParams{Command: `/bin/bash -l -c 'echo "bash ${BASH_VERSINFO[0]}"'`})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := env.ExecuteTool(context.Background(), req, nil)
	if err != nil || !regexp.MustCompile(`^bash [0-9]+\n?$`).MatchString(resp.Content) {
		t.Fatalf("/bin/bash in the sandbox: %+v, %v", resp, err)
	}
}
