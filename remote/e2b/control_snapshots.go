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
// are turnbox snapshots: their id (<session>@<turn>) is also the
// template id that creates a sandbox from them.
type snapshotJSON struct {
	SnapshotID string   `json:"snapshotID"`
	Names      []string `json:"names"`
}

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

func toSnapshotJSON(info environment.SnapshotInfo) snapshotJSON {
	names := []string{}
	if info.Name != "" {
		names = append(names, info.Name)
	}
	return snapshotJSON{SnapshotID: info.ID, Names: names}
}

// createSnapshot serves createSnapshot: a turnbox snapshot of the
// sandbox's workspace, named by the body's name (201).
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
	env, err := s.attach(info.ID)
	if err != nil {
		fail(w, err)
		return
	}
	snap, err := env.CreateSnapshot(r.Context(), req.Name)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, toSnapshotJSON(*snap))
}

// listSnapshots serves listSnapshots: the snapshots of every sandbox (or
// of the sandboxID filter's), filtered by name, by pages in id order.
func (s *Server) listSnapshots(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sandboxID, name := q.Get("sandboxID"), q.Get("name")
	var out []snapshotJSON
	for _, info := range s.host.Sessions() {
		if sandboxID != "" && info.ID != sandboxID {
			continue
		}
		env, err := s.attach(info.ID)
		if err != nil {
			continue // destroyed meanwhile
		}
		snaps, err := env.ListSnapshots(r.Context())
		if errors.Is(err, environment.ErrSessionNotFound) {
			continue
		}
		if err != nil {
			fail(w, err)
			return
		}
		for _, sn := range snaps {
			if name == "" || sn.Name == name {
				out = append(out, toSnapshotJSON(sn))
			}
		}
	}
	pg, err := paginate(w, q, out, func(sn snapshotJSON) string { return sn.SnapshotID })
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, pg)
}

// deleteSnapshot serves deleteSnapshot (DELETE /templates/{id}): the
// template id must be a snapshot's (204); anything else is 404, as the
// server builds no templates.
func (s *Server) deleteSnapshot(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	notFound := func() { writeJSONError(w, http.StatusNotFound, fmt.Sprintf("template %q not found", id)) }
	if !isSnapshotID(id) {
		notFound()
		return
	}
	env, err := s.attach(snapshotSession(id))
	if err == nil {
		err = env.DeleteSnapshot(r.Context(), id)
	}
	switch {
	case errors.Is(err, environment.ErrSessionNotFound), errors.Is(err, environment.ErrSnapshotNotFound):
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
		sb := s.sandboxAnswer(id, template)
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
