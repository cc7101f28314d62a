package e2b

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

// Pages of list answers.
const (
	defaultPageSize = 100
	maxPageSize     = 100
)

// forkSnapshotName names the snapshot a fork request takes.
const forkSnapshotName = "e2b fork"

// snapshotJSON is one snapshot as E2B's clients read it. E2B snapshots
// are turnbox images saved from a sandbox's snapshot (Host.SaveImage):
// the id is the image's name, which is also the template id that
// creates a sandbox from it, and a snapshot outlives its sandbox.
type snapshotJSON struct {
	SnapshotID string   `json:"snapshotID"`
	Names      []string `json:"names"`
}

// snapshotNamePrefix starts the image names the server chooses for
// unnamed snapshots.
const snapshotNamePrefix = "snap-"

// forkRequest is the body of fork.
type forkRequest struct {
	Timeout *int64 `json:"timeout"`
	Count   *int   `json:"count"`
}

// forkResult is one fork's outcome: its sandbox or its error.
type forkResult struct {
	Sandbox *sandboxJSON `json:"sandbox,omitempty"`
	Error   *apiError    `json:"error,omitempty"`
}

// toSnapshotJSON is the E2B view of a saved image; named says whether a
// client chose its name (then also one of its names).
func toSnapshotJSON(m embedded.ImageInfo) snapshotJSON {
	names := []string{}
	if !strings.HasPrefix(m.Name, snapshotNamePrefix) {
		names = append(names, m.Name)
	}
	return snapshotJSON{SnapshotID: m.Name, Names: names}
}

// savedFrom is the sandbox a saved image's snapshot was taken of ("" for
// other images).
func savedFrom(m embedded.ImageInfo) string {
	src, ok := strings.CutPrefix(m.Source, "snapshot:")
	if !ok || m.Volume == "" {
		return ""
	}
	return snapshotSession(src)
}

// createSnapshot serves createSnapshot: the sandbox's whole filesystem
// now, saved as an image (201). A name from the body is the image's name
// (a later snapshot of that name replaces it, as E2B moves a name to the
// newest); without one the server chooses "snap-<random>".
func (s *Server) createSnapshot(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	if err := s.readJSON(w, r, &req); err != nil {
		fail(w, err)
		return
	}
	info, ok := s.lookup(w, r)
	if !ok {
		return
	}
	name := req.Name
	if name == "" {
		name = snapshotNamePrefix + newSandboxID()
	} else if strings.HasPrefix(name, snapshotNamePrefix) {
		fail(w, fmt.Errorf("%w: snapshot names starting %q are the server's", environment.ErrInvalidArgument, snapshotNamePrefix))
		return
	}
	m, err := s.host.SaveImage(r.Context(), info.ID, name, embedded.SaveImageOptions{Replace: req.Name != ""})
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, toSnapshotJSON(m))
}

// listSnapshots serves listSnapshots: the images saved from sandboxes
// (of the sandboxID filter's only), filtered by name, by pages in id
// order.
func (s *Server) listSnapshots(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sandboxID, name := q.Get("sandboxID"), q.Get("name")
	images, err := s.host.Images(r.Context())
	if err != nil {
		fail(w, err)
		return
	}
	var out []snapshotJSON
	for _, m := range images {
		from := savedFrom(m)
		if from == "" || sandboxID != "" && from != sandboxID || name != "" && m.Name != name {
			continue
		}
		out = append(out, toSnapshotJSON(m))
	}
	pg, err := paginate(w, q, out, func(sn snapshotJSON) string { return sn.SnapshotID })
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, pg)
}

// deleteSnapshot serves deleteSnapshot (DELETE /templates/{id}): the
// template id must be a snapshot's, an image saved from a sandbox (204;
// 409 while sandboxes made from it exist) or a turnbox snapshot id;
// anything else is 404, as the server builds no templates.
func (s *Server) deleteSnapshot(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	notFound := func() { writeJSONError(w, http.StatusNotFound, fmt.Sprintf("template %q not found", id)) }
	var err error
	switch {
	case isSnapshotID(id):
		var env *embedded.Environment
		if env, err = s.attach(snapshotSession(id)); err == nil {
			err = env.DeleteSnapshot(r.Context(), id)
		}
	case environment.ValidateImageName(id) == nil:
		var m embedded.ImageInfo
		if m, err = s.host.Image(r.Context(), id); err == nil && savedFrom(m) == "" {
			err = environment.ErrImageNotFound // not a snapshot
		}
		if err == nil {
			_, err = s.host.RemoveImage(r.Context(), id)
		}
	default:
		err = environment.ErrImageNotFound
	}
	switch {
	case errors.Is(err, environment.ErrSessionNotFound), errors.Is(err, environment.ErrSnapshotNotFound), errors.Is(err, environment.ErrImageNotFound):
		notFound()
	case err != nil:
		fail(w, err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// forkSandbox serves fork: one snapshot of the sandbox, then count
// sandboxes forked from it, each with the parent's metadata, template
// and on-timeout action and its own deadline. Each fork's outcome is
// reported on its own; the snapshot stays (the forks may share its
// storage).
func (s *Server) forkSandbox(w http.ResponseWriter, r *http.Request) {
	var req forkRequest
	if err := s.readJSON(w, r, &req); err != nil {
		fail(w, err)
		return
	}
	count := 1
	if req.Count != nil {
		count = *req.Count
	}
	if count < 1 || count > maxForkCount {
		fail(w, fmt.Errorf("%w: count must be 1 to %d, not %d", environment.ErrInvalidArgument, maxForkCount, count))
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
	env, err := s.attach(info.ID)
	if err != nil {
		fail(w, err)
		return
	}
	parent, err := s.host.SessionConfig(info.ID)
	if err != nil {
		fail(w, err)
		return
	}
	snap, err := env.CreateSnapshot(r.Context(), forkSnapshotName)
	if err != nil {
		fail(w, err)
		return
	}
	labels := cloneLabels(info.Labels)
	template := templateOf(info)
	labels[labelTemplate] = template
	labels[labelOnTimeout] = cmp.Or(labels[labelOnTimeout], onTimeoutKill)
	results := make([]forkResult, 0, count)
	for range count {
		cfg := environment.SessionConfig{FromSnapshot: snap.ID, Image: info.Image, Labels: labels, Env: parent.Env}
		id, err := s.start(r.Context(), cfg, ttl)
		if err != nil {
			code := createStatus(err)
			results = append(results, forkResult{Error: &apiError{Code: code, Message: err.Error()}})
			continue
		}
		sb := s.sandboxAnswer(id, template, labels)
		results = append(results, forkResult{Sandbox: &sb})
	}
	writeJSON(w, http.StatusOK, results)
}

// paginate sorts items by key and returns the page the query's limit and
// nextToken (the key of the last item of the previous page) select,
// setting the x-next-token header when more follow.
func paginate[T any](w http.ResponseWriter, q url.Values, items []T, key func(T) string) ([]T, error) {
	limit := defaultPageSize
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%w: limit must be a positive integer, not %q", environment.ErrInvalidArgument, v)
		}
		limit = min(n, maxPageSize)
	}
	slices.SortStableFunc(items, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
	if tok := q.Get("nextToken"); tok != "" {
		i, _ := slices.BinarySearchFunc(items, tok, func(it T, t string) int {
			if key(it) <= t {
				return -1
			}
			return 1
		})
		items = items[i:]
	}
	if len(items) > limit {
		items = items[:limit]
		w.Header().Set("X-Next-Token", key(items[limit-1]))
	}
	if items == nil {
		items = []T{}
	}
	return items, nil
}

// cloneLabels copies labels (nil gives an empty map).
func cloneLabels(labels map[string]string) map[string]string {
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	return out
}
