package embedded

import (
	"context"
	"fmt"
	"os"
	"path"
	"strconv"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/environment"
)

// Directory watches: inotify on the host, each directory added through
// /proc/self/fd/N of a descriptor opened beneath the identity-checked
// workspace root (openat2), never through a path the host resolves. The
// sandbox's writes reach the host's tree (a bind mount; gVisor's gofer
// writes the host files), so the host's inotify sees them.

// watchMask is what a watch asks inotify for.
const watchMask = unix.IN_CREATE | unix.IN_MODIFY | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR | unix.IN_EXCL_UNLINK

// MaxSessionWatches bounds the watches running at once on one session
// (each holds an inotify instance, of which the host has a few hundred
// for all sessions).
const MaxSessionWatches = 16

// watchSet is a session's running watches, ended together by a rollback.
type watchSet struct {
	mu sync.Mutex
	m  map[*dirWatch]struct{}
}

// reserve admits one more watch, or fails with ErrLimitExceeded; the
// reservation is w's, filled by add or dropped by remove.
func (ws *watchSet) reserve(w *dirWatch) error {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if len(ws.m) >= MaxSessionWatches {
		return fmt.Errorf("%w: %d watches already run on this session; close one", environment.ErrLimitExceeded, len(ws.m))
	}
	if ws.m == nil {
		ws.m = map[*dirWatch]struct{}{}
	}
	ws.m[w] = struct{}{}
	return nil
}

func (ws *watchSet) remove(w *dirWatch) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	delete(ws.m, w)
}

// endAll ends every watch with err.
func (ws *watchSet) endAll(err error) {
	ws.mu.Lock()
	all := make([]*dirWatch, 0, len(ws.m))
	for w := range ws.m {
		all = append(all, w)
	}
	ws.mu.Unlock()
	for _, w := range all {
		w.end(err)
	}
}

// dirWatch is one running watch: an inotify instance read by one
// goroutine, which alone touches wds and pending. Its own lock guards err.
type dirWatch struct {
	events    chan environment.FileEvent
	ino       *os.File // the inotify instance (non-blocking, in Go's poller)
	ifd       int      // ino's descriptor (ino.Fd would make it blocking)
	root      int      // the workspace root, held for the watch's life
	recursive bool
	wds       map[int]watchedDir
	top       int                    // the watched directory's wd
	overflow  bool                   // events were dropped since the last one queued
	pending   *environment.FileEvent // a rename's first half
	lastSent  environment.FileEvent  // the newest event queued
	cookie    uint32

	mu  sync.Mutex
	err error
}

// watchedDir is one watched directory: its path relative to the root and
// as the caller names it.
type watchedDir struct{ rel, display string }

// watchDir implements WatchDir on the session.
func (s *session) watchDir(ctx context.Context, p string, opts environment.WatchOptions) (environment.Watcher, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	rel, err := s.resolveSandboxPath(p)
	if err != nil {
		return nil, err
	}
	w := &dirWatch{events: make(chan environment.FileEvent, cmp0(opts.QueueSize, environment.DefaultWatchQueue)+1),
		root: -1, recursive: opts.Recursive, wds: map[int]watchedDir{}}
	if err := s.watches.reserve(w); err != nil {
		return nil, err
	}
	err = s.fileOp(func(root int) error { return w.start(root, path.Clean(rel), p) })
	if err != nil {
		s.watches.remove(w)
		w.release()
		return nil, fileErr(p, err)
	}
	stopCtx := context.AfterFunc(ctx, func() { w.end(context.Cause(ctx)) })
	stopLife := context.AfterFunc(s.life, func() {
		w.end(fmt.Errorf("%w: session %s was destroyed or shut down (%w)", environment.ErrNotActive, s.id, environment.ErrSessionNotFound))
	})
	go func() {
		w.run()
		stopCtx()
		stopLife()
		s.watches.remove(w)
		close(w.events) // last: a reader that saw it end can watch again
	}()
	return w, nil
}

func cmp0(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// start makes the inotify instance and watches rel (and its tree).
func (w *dirWatch) start(root int, rel, display string) error {
	var err error
	if w.root, err = unix.Dup(root); err != nil {
		return err
	}
	unix.CloseOnExec(w.root)
	ifd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		if err == unix.EMFILE || err == unix.ENFILE {
			return fmt.Errorf("%w: the host's inotify instances are used up: %v", environment.ErrLimitExceeded, err)
		}
		return err
	}
	w.ifd, w.ino = ifd, os.NewFile(uintptr(ifd), "inotify")
	if w.top, err = w.addDir(rel, display); err != nil {
		return err
	}
	if w.recursive {
		w.addTree(rel, display)
	}
	return nil
}

// addDir watches the directory rel, opened beneath the root.
func (w *dirWatch) addDir(rel, display string) (int, error) {
	fd, err := openat2(w.root, rel, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(fd)
	wd, err := unix.InotifyAddWatch(w.ifd, "/proc/self/fd/"+strconv.Itoa(fd), watchMask)
	if err != nil {
		if err == unix.ENOSPC {
			return -1, fmt.Errorf("%w: the host's inotify watches are used up", environment.ErrLimitExceeded)
		}
		return -1, err
	}
	w.wds[wd] = watchedDir{rel: rel, display: display}
	return wd, nil
}

// addTree watches the subdirectories of rel, depth first, up to
// MaxWatchDirs in all (past it, an overflow event says so).
func (w *dirWatch) addTree(rel, display string) {
	fd, err := openat2(w.root, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), rel)
	names, _ := f.Readdirnames(-1)
	var dirs []string
	for _, n := range names {
		var st unix.Stat_t
		if unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			dirs = append(dirs, n)
		}
	}
	f.Close()
	for _, n := range dirs {
		if len(w.wds) >= environment.MaxWatchDirs {
			w.send(environment.FileEvent{Kind: environment.EventOverflow, Path: display})
			return
		}
		crel, cdisp := path.Join(rel, n), joinDisplay(display, n)
		if _, err := w.addDir(crel, cdisp); err == nil {
			w.addTree(crel, cdisp)
		}
	}
}

// run reads inotify events until the watch ends.
func (w *dirWatch) run() {
	defer w.release()
	buf := make([]byte, 64<<10)
	for {
		n, err := w.ino.Read(buf)
		if err != nil {
			w.end(fmt.Errorf("%w: reading inotify: %v", environment.ErrWatchEnded, err))
			return
		}
		if w.ended() {
			return
		}
		w.parse(buf[:n])
	}
}

// parse handles one read's worth of inotify events.
func (w *dirWatch) parse(b []byte) {
	for len(b) >= unix.SizeofInotifyEvent {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&b[0]))
		end := unix.SizeofInotifyEvent + int(ev.Len)
		if end > len(b) {
			break
		}
		name := string(b[unix.SizeofInotifyEvent:end])
		for len(name) > 0 && name[len(name)-1] == 0 {
			name = name[:len(name)-1]
		}
		w.handle(int(ev.Wd), ev.Mask, ev.Cookie, name)
		b = b[end:]
	}
	w.flushRename()
}

// handle turns one inotify event into FileEvents.
func (w *dirWatch) handle(wd int, mask, cookie uint32, name string) {
	if mask&unix.IN_Q_OVERFLOW != 0 {
		w.send(environment.FileEvent{Kind: environment.EventOverflow})
		return
	}
	dir, ok := w.wds[wd]
	if !ok {
		return
	}
	if mask&unix.IN_IGNORED != 0 || (wd != w.top && mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF) != 0) {
		delete(w.wds, wd)
		return
	}
	if wd == w.top && mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_UNMOUNT) != 0 {
		w.end(fmt.Errorf("%w: the watched directory %s was removed or moved", environment.ErrWatchEnded, dir.display))
		return
	}
	isDir := mask&unix.IN_ISDIR != 0
	ev := environment.FileEvent{Path: joinDisplay(dir.display, name), IsDir: isDir}
	switch {
	case mask&unix.IN_CREATE != 0:
		ev.Kind = environment.EventCreate
	case mask&unix.IN_MODIFY != 0:
		ev.Kind = environment.EventWrite
	case mask&unix.IN_DELETE != 0:
		ev.Kind = environment.EventRemove
	case mask&unix.IN_MOVED_FROM != 0:
		w.flushRename()
		w.pending = &environment.FileEvent{Kind: environment.EventRename, OldPath: ev.Path, IsDir: isDir}
		w.cookie = cookie
		return
	case mask&unix.IN_MOVED_TO != 0:
		ev.Kind = environment.EventRename
		if w.pending != nil && w.cookie == cookie {
			ev.OldPath = w.pending.OldPath
			w.pending = nil
		}
		w.flushRename()
	default:
		return
	}
	w.send(ev)
	if isDir && w.recursive && (ev.Kind == environment.EventCreate || ev.Kind == environment.EventRename) {
		w.watchNew(path.Join(dir.rel, name), ev.Path)
	}
}

// watchNew watches a directory created (or moved in) during the watch.
func (w *dirWatch) watchNew(rel, display string) {
	if len(w.wds) >= environment.MaxWatchDirs {
		w.send(environment.FileEvent{Kind: environment.EventOverflow, Path: display})
		return
	}
	if _, err := w.addDir(rel, display); err == nil {
		w.addTree(rel, display)
	}
}

// flushRename sends a rename whose second half did not come.
func (w *dirWatch) flushRename() {
	if w.pending != nil {
		ev := *w.pending
		w.pending = nil
		w.send(ev)
	}
}

// send queues ev without blocking. The channel has one slot more than
// the queue's size, kept for an overflow event: with the queue full, ev
// is dropped and an overflow event is queued at once behind what the
// reader has yet to take (one per loss, until an event gets through
// again). A write event equal to the newest one queued, while the reader
// has not taken it yet (the queue is first in, first out: while it is
// not empty it holds the newest event), is coalesced with it: a large
// write is one event, not one per write call.
func (w *dirWatch) send(ev environment.FileEvent) {
	if ev.Kind == environment.EventWrite && ev == w.lastSent && len(w.events) > 0 {
		return
	}
	if len(w.events) >= cap(w.events)-1 {
		if !w.overflow {
			w.overflow = true
			ov := environment.FileEvent{Kind: environment.EventOverflow}
			select {
			case w.events <- ov:
				w.lastSent = ov
			default: // the spare slot is taken (by an earlier overflow)
			}
		}
		return
	}
	w.events <- ev // room: only this goroutine sends
	w.lastSent, w.overflow = ev, false
}

// end ends the watch with err (the first reason wins).
func (w *dirWatch) end(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return
	}
	w.err = err
	if w.ino != nil {
		w.ino.Close() // wakes run's Read
	}
}

func (w *dirWatch) ended() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err != nil
}

// release closes the descriptors (after run, or after a failed start).
func (w *dirWatch) release() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ino != nil {
		w.ino.Close()
	}
	if w.root >= 0 {
		unix.Close(w.root)
		w.root = -1
	}
}

// Events implements environment.Watcher.
func (w *dirWatch) Events() <-chan environment.FileEvent { return w.events }

// Err implements environment.Watcher.
func (w *dirWatch) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close implements environment.Watcher.
func (w *dirWatch) Close() error {
	w.end(fmt.Errorf("%w: closed", environment.ErrWatchEnded))
	return nil
}

// endWatches ends the session's watches: a rollback replaced the tree
// they watch.
func (s *session) endWatches() {
	s.watches.endAll(fmt.Errorf("%w: session %s was rolled back; watch again", environment.ErrWatchEnded, s.id))
}
