package e2b

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
	fspb "github.com/turnbox/turnbox/remote/gen/envd/filesystem"
)

// watchEvents converts one event of a watch of dir into envd's events,
// named relative to dir: a rename is a RENAME of the old name and a
// CREATE of the new one (as envd reports them); an overflow has no
// envd form. With names, entries that still exist are described.
func watchEvents(ctx context.Context, u *userFS, dir string, ev environment.FileEvent, names *idNames) []*fspb.FilesystemEvent {
	var out []*fspb.FilesystemEvent
	add := func(p string, t fspb.EventType) {
		name := strings.TrimPrefix(strings.TrimPrefix(p, dir), "/")
		if p == "" || name == "" {
			return
		}
		e := &fspb.FilesystemEvent{Name: name, Type: t}
		if names != nil && t != fspb.EventType_EVENT_TYPE_REMOVE && t != fspb.EventType_EVENT_TYPE_RENAME {
			if info, err := statEntry(ctx, u.env, p, names); err == nil {
				e.Entry = info
			}
		}
		out = append(out, e)
	}
	switch ev.Kind {
	case environment.EventCreate:
		add(ev.Path, fspb.EventType_EVENT_TYPE_CREATE)
	case environment.EventWrite:
		add(ev.Path, fspb.EventType_EVENT_TYPE_WRITE)
	case environment.EventRemove:
		add(ev.Path, fspb.EventType_EVENT_TYPE_REMOVE)
	case environment.EventRename:
		add(ev.OldPath, fspb.EventType_EVENT_TYPE_RENAME)
		add(ev.Path, fspb.EventType_EVENT_TYPE_CREATE)
	}
	return out
}

// entryNames is a fresh owner-name cache for a watch's entries (nil
// without include_entry). Watches renew it now and then, so that users
// the sandbox adds get their names.
func entryNames(u *userFS, entry bool) *idNames {
	if !entry {
		return nil
	}
	return newIDNames(u.env)
}

// watchEnd is the outcome of a stream whose watch ended: none when the
// directory went away or the client's context ended, else the error.
func watchEnd(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, environment.ErrWatchEnded) || (ctx.Err() != nil && errors.Is(err, ctx.Err())) {
		return nil
	}
	return connectError(err)
}

// WatchDir implements filesystem.Filesystem: a start event once the
// watch is in place, then the directory's changes, and keepalives on a
// quiet stream. It ends with the call's bound, the client, the sandbox
// or the directory.
func (f *fsService) WatchDir(ctx context.Context, req *connect.Request[fspb.WatchDirRequest], stream *connect.ServerStream[fspb.WatchDirResponse]) error {
	u, p, err := f.userPath(ctx, req.Header(), req.Msg.GetPath())
	if err != nil {
		return connectError(err)
	}
	w, err := u.env.WatchDir(ctx, p, environment.WatchOptions{Recursive: req.Msg.GetRecursive()})
	if err != nil {
		return connectError(err)
	}
	defer w.Close()
	if err := stream.Send(&fspb.WatchDirResponse{Event: &fspb.WatchDirResponse_Start{Start: &fspb.WatchDirResponse_StartEvent{}}}); err != nil {
		return err
	}
	every := f.s.keepAliveInterval(req.Header())
	tick := time.NewTicker(every)
	defer tick.Stop()
	names := entryNames(u, req.Msg.GetIncludeEntry())
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				return watchEnd(ctx, w.Err())
			}
			for _, e := range watchEvents(ctx, u, p, ev, names) {
				if err := stream.Send(&fspb.WatchDirResponse{Event: &fspb.WatchDirResponse_Filesystem{Filesystem: e}}); err != nil {
					return err
				}
				tick.Reset(every) // keepalives only on a quiet stream
			}
		case <-tick.C:
			names = entryNames(u, req.Msg.GetIncludeEntry())
			if err := stream.Send(&fspb.WatchDirResponse{Event: &fspb.WatchDirResponse_Keepalive{Keepalive: &fspb.WatchDirResponse_KeepAlive{}}}); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// Bounds of the polled watchers (CreateWatcher).
const (
	// maxPolledWatchers bounds the polled watchers of one server.
	maxPolledWatchers = 256
	// maxSandboxWatchers bounds the polled watchers of one sandbox:
	// half the watches a session may run, so that WatchDir streams keep
	// room.
	maxSandboxWatchers = embedded.MaxSessionWatches / 2
	// maxPolledEvents bounds the events a watcher keeps between polls
	// (later ones are dropped until the next poll).
	maxPolledEvents = 4096
	// watcherIdle ends a watcher nobody polled for that long.
	watcherIdle = 10 * time.Minute
)

// watcherTable holds the polled watchers of a server, each bound to its
// sandbox: a watcher ends, and leaves the table, when RemoveWatcher
// names it, when its sandbox ends (its watch then ends), when its
// directory goes away, or when nobody polls it for watcherIdle.
//
// Lock order: watcherTable.mu before polledWatcher.mu.
type watcherTable struct {
	s    *Server
	mu   sync.Mutex
	byID map[string]*polledWatcher
}

// polledWatcher is one watch whose events wait for GetWatcherEvents.
type polledWatcher struct {
	id, sandbox string
	w           environment.Watcher

	mu      sync.Mutex
	events  []*fspb.FilesystemEvent
	dropped int
	polled  time.Time
}

// newWatcherTable returns an empty table for s.
func newWatcherTable(s *Server) *watcherTable {
	return &watcherTable{s: s, byID: map[string]*polledWatcher{}}
}

// add records pw unless a bound is reached (ErrLimitExceeded).
func (t *watcherTable) add(pw *polledWatcher) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.byID) >= maxPolledWatchers {
		return fmt.Errorf("%w: %d watchers on this server", environment.ErrLimitExceeded, maxPolledWatchers)
	}
	n := 0
	for _, o := range t.byID {
		if o.sandbox == pw.sandbox {
			n++
		}
	}
	if n >= maxSandboxWatchers {
		return fmt.Errorf("%w: %d watchers on sandbox %s", environment.ErrLimitExceeded, maxSandboxWatchers, pw.sandbox)
	}
	t.byID[pw.id] = pw
	return nil
}

// get finds watcher id of sandbox (another sandbox's is not found).
func (t *watcherTable) get(sandbox, id string, remove bool) (*polledWatcher, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pw, ok := t.byID[id]
	if !ok || pw.sandbox != sandbox {
		return nil, fmt.Errorf("%w: watcher %q", environment.ErrFileNotFound, id)
	}
	if remove {
		delete(t.byID, id)
	}
	return pw, nil
}

// drop removes pw if it is still recorded.
func (t *watcherTable) drop(pw *polledWatcher) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID[pw.id] == pw {
		delete(t.byID, pw.id)
	}
}

// CreateWatcher implements filesystem.Filesystem: a watch whose events
// queue (bounded) until GetWatcherEvents takes them.
func (f *fsService) CreateWatcher(ctx context.Context, req *connect.Request[fspb.CreateWatcherRequest]) (*connect.Response[fspb.CreateWatcherResponse], error) {
	u, p, err := f.userPath(ctx, req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, connectError(err)
	}
	// The watch outlives the request, not the sandbox (nor Close).
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w, err := u.env.WatchDir(wctx, p, environment.WatchOptions{Recursive: req.Msg.GetRecursive()})
	if err != nil {
		cancel()
		return nil, connectError(err)
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	pw := &polledWatcher{id: hex.EncodeToString(raw[:]), sandbox: sandboxID(ctx), w: w, polled: time.Now()}
	if err := f.watchers.add(pw); err != nil {
		cancel()
		_ = w.Close()
		return nil, connectError(err)
	}
	go func() {
		defer cancel()
		defer f.watchers.drop(pw)
		defer w.Close()
		pw.pump(wctx, u, p, req.Msg.GetIncludeEntry())
	}()
	return connect.NewResponse(&fspb.CreateWatcherResponse{WatcherId: pw.id}), nil
}

// pump queues the watch's events until it ends or nobody polls it.
func (pw *polledWatcher) pump(ctx context.Context, u *userFS, dir string, entry bool) {
	idle := time.NewTicker(watcherIdle / 10)
	defer idle.Stop()
	names := entryNames(u, entry)
	for {
		select {
		case ev, ok := <-pw.w.Events():
			if !ok {
				return
			}
			evs := watchEvents(ctx, u, dir, ev, names)
			pw.mu.Lock()
			for _, e := range evs {
				if len(pw.events) >= maxPolledEvents {
					pw.dropped++
					continue
				}
				pw.events = append(pw.events, e)
			}
			pw.mu.Unlock()
		case <-idle.C:
			names = entryNames(u, entry)
			pw.mu.Lock()
			stale := time.Since(pw.polled) > watcherIdle
			pw.mu.Unlock()
			if stale {
				return
			}
		}
	}
}

// GetWatcherEvents implements filesystem.Filesystem: the events queued
// since the last call.
func (f *fsService) GetWatcherEvents(ctx context.Context, req *connect.Request[fspb.GetWatcherEventsRequest]) (*connect.Response[fspb.GetWatcherEventsResponse], error) {
	pw, err := f.watchers.get(sandboxID(ctx), req.Msg.GetWatcherId(), false)
	if err != nil {
		return nil, connectError(err)
	}
	pw.mu.Lock()
	evs, dropped := pw.events, pw.dropped
	pw.events, pw.dropped, pw.polled = nil, 0, time.Now()
	pw.mu.Unlock()
	if dropped > 0 {
		f.s.log.Warn("e2b: a polled watcher dropped events", "sandbox", pw.sandbox, "watcher", pw.id, "dropped", dropped)
	}
	return connect.NewResponse(&fspb.GetWatcherEventsResponse{Events: evs}), nil
}

// RemoveWatcher implements filesystem.Filesystem: it ends a watcher.
func (f *fsService) RemoveWatcher(ctx context.Context, req *connect.Request[fspb.RemoveWatcherRequest]) (*connect.Response[fspb.RemoveWatcherResponse], error) {
	pw, err := f.watchers.get(sandboxID(ctx), req.Msg.GetWatcherId(), true)
	if err != nil {
		return nil, connectError(err)
	}
	_ = pw.w.Close()
	return connect.NewResponse(&fspb.RemoveWatcherResponse{}), nil
}
