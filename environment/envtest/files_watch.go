package envtest

import (
	"bytes"
	"errors"
	mrand "math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/turnbox/turnbox/environment"
)

// collect reads w's events until pred is satisfied by what was seen, the
// watch ends, or the timeout passes; it returns what it saw.
func collect(w environment.Watcher, timeout time.Duration, pred func([]environment.FileEvent) bool) ([]environment.FileEvent, bool) {
	var seen []environment.FileEvent
	deadline := time.After(timeout)
	for !pred(seen) {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				return seen, false
			}
			seen = append(seen, ev)
		case <-deadline:
			return seen, true
		}
	}
	return seen, true
}

// hasEvent reports whether seen holds an event of kind for path (and,
// for renames, from old).
func hasEvent(seen []environment.FileEvent, kind environment.FileEventKind, path, old string) bool {
	for _, ev := range seen {
		if ev.Kind == kind && ev.Path == path && (old == "" || ev.OldPath == old) {
			return true
		}
	}
	return false
}

// testFilesWatch: a watch sees the creation, writes, rename and removal
// made by a command inside the sandbox, in a watched subdirectory too,
// and ends with ErrWatchEnded on Close.
func (s *suite) testFilesWatch(t *testing.T) {
	env, fsys := s.fileSession(t)
	s.sh(t, env, "mkdir -p watched/sub")
	ctx, cancel := s.ctx(t)
	defer cancel()
	w, err := fsys.WatchDir(ctx, "watched", environment.WatchOptions{Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s.sh(t, env, "echo hello > watched/f.txt && echo more >> watched/f.txt && mv watched/f.txt watched/g.txt && rm watched/g.txt && echo deep > watched/sub/d.txt")
	want := []struct {
		kind      environment.FileEventKind
		path, old string
	}{
		{environment.EventCreate, "watched/f.txt", ""},
		{environment.EventWrite, "watched/f.txt", ""},
		{environment.EventRename, "watched/g.txt", "watched/f.txt"},
		{environment.EventRemove, "watched/g.txt", ""},
		{environment.EventCreate, "watched/sub/d.txt", ""},
	}
	seen, _ := collect(w, 10*time.Second, func(seen []environment.FileEvent) bool {
		for _, e := range want {
			if !hasEvent(seen, e.kind, e.path, e.old) {
				return false
			}
		}
		return true
	})
	for _, e := range want {
		if !hasEvent(seen, e.kind, e.path, e.old) {
			t.Errorf("no %s event for %s (from %q); saw %+v", e.kind, e.path, e.old, seen)
		}
	}
	if err := w.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, open := collect(w, 10*time.Second, func([]environment.FileEvent) bool { return false }); open {
		t.Fatal("Events was not closed after Close")
	}
	wantErr(t, "Err after Close", w.Err(), environment.ErrWatchEnded)
	_, err = fsys.WatchDir(ctx, "watched/missing", environment.WatchOptions{})
	wantErr(t, "WatchDir of a missing directory", err, environment.ErrFileNotFound)
	_, err = fsys.WatchDir(ctx, "watched", environment.WatchOptions{QueueSize: -1})
	wantErr(t, "WatchDir with a negative queue", err, environment.ErrInvalidArgument)
}

// testFilesWatchRollback: a rollback ends the session's watches with
// ErrWatchEnded, and a canceled context ends one with its error.
func (s *suite) testFilesWatchRollback(t *testing.T) {
	env, fsys := s.fileSession(t)
	requireSnapshots(t, env, true)
	snap := s.snapshot(t, env, "before")
	ctx, cancel := s.ctx(t)
	defer cancel()
	w, err := fsys.WatchDir(ctx, ".", environment.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s.rollback(t, env, snap.ID)
	if _, open := collect(w, 10*time.Second, func([]environment.FileEvent) bool { return false }); open {
		t.Fatal("the watch went on after a rollback")
	}
	wantErr(t, "Err after a rollback", w.Err(), environment.ErrWatchEnded)
	wctx, wcancel := s.ctx(t)
	w2, err := fsys.WatchDir(wctx, ".", environment.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wcancel()
	if _, open := collect(w2, 10*time.Second, func([]environment.FileEvent) bool { return false }); open {
		t.Fatal("the watch went on after its context was canceled")
	}
	if err := w2.Err(); err == nil || errors.Is(err, environment.ErrNotActive) {
		t.Errorf("Err after cancel = %v, want the context's error", err)
	}
}

// testFilesDiskLimit: an upload past the session's disk limit fails with
// ErrLimitExceeded and leaves neither the file nor a temporary file.
func (s *suite) testFilesDiskLimit(t *testing.T) {
	const limit = 16 << 20
	env, _ := s.limitedSession(t, environment.Limits{DiskBytes: limit}, func(c environment.Capabilities) bool {
		return c.Files && (c.Limits.DiskBytes == 0 || c.Limits.DiskBytes >= limit)
	})
	fsys, ok := env.(environment.FileSystem)
	if !ok {
		t.Fatalf("%T reports Capabilities.Files but does not implement environment.FileSystem", env)
	}
	s.upload(t, fsys, "keep.bin", []byte("kept"), 0)
	big := make([]byte, 40<<20) // random: compressing filesystems do not store zeros
	_, _ = mrand.NewChaCha8([32]byte{9}).Read(big)
	ctx, cancel := s.ctx(t)
	defer cancel()
	_, err := fsys.Upload(ctx, "dir/big.bin", bytes.NewReader(big), environment.UploadOptions{})
	wantErr(t, "Upload past the disk limit", err, environment.ErrLimitExceeded)
	_, err = fsys.Stat(ctx, "dir/big.bin")
	wantErr(t, "Stat of the refused upload", err, environment.ErrFileNotFound)
	entries, err := fsys.ListDir(ctx, ".", environment.ListOptions{Depth: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Path, "upload") || e.Size > limit/2 {
			t.Errorf("a failed upload left %s (%d bytes)", e.Path, e.Size)
		}
	}
	// Room is still there for a small file.
	s.upload(t, fsys, "small.bin", []byte("fits"), 0)
}
