package e2b

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/turnbox/turnbox/environment"
	fspb "github.com/turnbox/turnbox/remote/gen/envd/filesystem"
)

// TestWatchDir: the stream starts with a start event, a command's write
// in the watched directory arrives as an event named relative to it
// (with its entry when asked), and a quiet stream gets keepalives; in
// both encodings.
func TestWatchDir(t *testing.T) {
	r := newFSRig(t, environment.Limits{}, WithKeepAliveInterval(200*time.Millisecond))
	fsSh(t, r.env, "mkdir -p /home/user/w")
	for _, json := range []bool{true, false} {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		stream, err := r.fsClient(r.id, json).WatchDir(ctx, connect.NewRequest(&fspb.WatchDirRequest{Path: "w", IncludeEntry: true}))
		if err != nil {
			t.Fatal(err)
		}
		if !stream.Receive() || stream.Msg().GetStart() == nil {
			t.Fatalf("json=%v: first message %v (%v), want start", json, stream.Msg(), stream.Err())
		}
		name := "made-json.txt"
		if !json {
			name = "made-bin.txt"
		}
		fsSh(t, r.env, "echo hi > /home/user/w/"+name)
		var sawEvent, sawKeepAlive bool
		for (!sawEvent || !sawKeepAlive) && stream.Receive() {
			switch m := stream.Msg(); {
			case m.GetKeepalive() != nil:
				sawKeepAlive = true
			case m.GetFilesystem() != nil:
				ev := m.GetFilesystem()
				if ev.GetName() != name {
					t.Errorf("json=%v: event %v, want name %q (relative to the watched directory)", json, ev, name)
				}
				if ev.GetType() == fspb.EventType_EVENT_TYPE_CREATE && ev.GetEntry().GetPath() != "/home/user/w/"+name {
					t.Errorf("json=%v: create event entry %v", json, ev.GetEntry())
				}
				sawEvent = true
			}
		}
		if !sawEvent || !sawKeepAlive {
			t.Errorf("json=%v: event seen %v, keepalive seen %v; stream: %v", json, sawEvent, sawKeepAlive, stream.Err())
		}
		cancel()
		stream.Close()
	}
	stream, err := r.fsClient(r.id, true).WatchDir(t.Context(), connect.NewRequest(&fspb.WatchDirRequest{Path: "missing"}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if stream.Receive() {
		t.Errorf("WatchDir of a missing directory sent %v", stream.Msg())
	}
	fsWantCode(t, "WatchDir of a missing directory", stream.Err(), connect.CodeNotFound)
}

// TestPolledWatcher: CreateWatcher queues a command's write for
// GetWatcherEvents; another sandbox's client cannot read or remove the
// watcher; RemoveWatcher ends it.
func TestPolledWatcher(t *testing.T) {
	r := newFSRig(t, environment.Limits{})
	other, _ := r.sandbox(t, "otherbox", environment.Limits{})
	fsSh(t, r.env, "mkdir -p /home/user/pw")
	c := r.fsClient(r.id, true)
	ctx := t.Context()
	cw, err := c.CreateWatcher(ctx, connect.NewRequest(&fspb.CreateWatcherRequest{Path: "/home/user/pw"}))
	if err != nil {
		t.Fatal(err)
	}
	id := cw.Msg.GetWatcherId()
	fsSh(t, r.env, "echo hi > /home/user/pw/f")
	var got []*fspb.FilesystemEvent
	for deadline := time.Now().Add(10 * time.Second); len(got) == 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ev, err := c.GetWatcherEvents(ctx, connect.NewRequest(&fspb.GetWatcherEventsRequest{WatcherId: id}))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.Msg.GetEvents()...)
	}
	if len(got) == 0 || got[0].GetName() != "f" || got[0].GetType() != fspb.EventType_EVENT_TYPE_CREATE {
		t.Errorf("GetWatcherEvents = %v, want a create of f", got)
	}
	oc := r.fsClient(other, true)
	_, err = oc.GetWatcherEvents(ctx, connect.NewRequest(&fspb.GetWatcherEventsRequest{WatcherId: id}))
	fsWantCode(t, "another sandbox's GetWatcherEvents", err, connect.CodeNotFound)
	_, err = oc.RemoveWatcher(ctx, connect.NewRequest(&fspb.RemoveWatcherRequest{WatcherId: id}))
	fsWantCode(t, "another sandbox's RemoveWatcher", err, connect.CodeNotFound)
	if _, err := c.RemoveWatcher(ctx, connect.NewRequest(&fspb.RemoveWatcherRequest{WatcherId: id})); err != nil {
		t.Fatalf("RemoveWatcher: %v", err)
	}
	_, err = c.GetWatcherEvents(ctx, connect.NewRequest(&fspb.GetWatcherEventsRequest{WatcherId: id}))
	fsWantCode(t, "GetWatcherEvents after RemoveWatcher", err, connect.CodeNotFound)
}

// TestPolledWatcherBounds: a sandbox holds at most maxSandboxWatchers
// polled watchers (then ResourceExhausted), and its watchers leave the
// table when it is destroyed.
func TestPolledWatcherBounds(t *testing.T) {
	r := newFSRig(t, environment.Limits{})
	id, env := r.sandbox(t, "boundbox", environment.Limits{})
	svc := &fsService{s: r.srv, watchers: newWatcherTable(r.srv)}
	ctx := withSandboxID(t.Context(), id)
	for i := 0; i < maxSandboxWatchers; i++ {
		if _, err := svc.CreateWatcher(ctx, connect.NewRequest(&fspb.CreateWatcherRequest{Path: "/tmp"})); err != nil {
			t.Fatalf("watcher %d: %v", i, err)
		}
	}
	_, err := svc.CreateWatcher(ctx, connect.NewRequest(&fspb.CreateWatcherRequest{Path: "/tmp"}))
	fsWantCode(t, "one watcher too many", err, connect.CodeResourceExhausted)
	if err := env.Destroy(t.Context()); err != nil {
		t.Fatal(err)
	}
	n := -1
	for deadline := time.Now().Add(10 * time.Second); n != 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		svc.watchers.mu.Lock()
		n = len(svc.watchers.byID)
		svc.watchers.mu.Unlock()
	}
	if n != 0 {
		t.Errorf("%d watchers of a destroyed sandbox are still in the table", n)
	}
}
