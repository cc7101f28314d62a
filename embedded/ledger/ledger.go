// Package ledger is the durable record of a host's sessions and their
// snapshots (turn numbers, labels, fork lineage, retention), kept in one
// bbolt file apart from the data. Storage backends (package snapshot) know
// volumes and snapshots by name only; which session and turn a snapshot
// belongs to is known here.
package ledger

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Ledger is the durable record of a host's sessions and their snapshots:
// turn numbers, labels, fork lineage and retention. It lives in one bbolt
// file apart from the data; a backend only maps names to volumes and
// snapshots. Safe for concurrent use; one process opens a ledger at a time
// (a second Open waits, then fails with a clear error).
//
// The ledger never holds a transaction while a backend works. A snapshot
// is created in the backend first and recorded second; if recording fails
// the caller deletes it, and a crash between the two leaves a snapshot
// with no record, which the host deletes on recovery. A session is
// recorded first (state creating) and its volume made second; a crash
// between leaves a record without a volume, which recovery drops (and a
// volume without a record is deleted). So every recorded snapshot exists
// and every snapshot that a call acknowledged is recorded (see embedded).
//
// Writes share commits (group commit). A write that arrives while no
// commit is in flight starts one at once, with no timer; writes that
// arrive while a commit and its disk sync are in progress wait and are
// committed together in the next transaction, with one sync between them.
// So a lone session pays one sync per write and many sessions writing at
// once pay about one sync per group rather than one each. The one
// concession to bursts: after a shared commit, the next commit yields the
// processor once before gathering its group (if it starts within a
// millisecond of that commit's end), so that callers released together
// and writing again at once share a commit (a scheduler yield, never a
// timer; a lone writer never yields). Every write is durable when its
// call returns, and each caller gets its own result: a write that fails
// (a duplicate id, a stale turn) is taken out of its group and the rest
// are committed without it.
type Ledger struct {
	db *bolt.DB

	mu        sync.Mutex
	idle      *sync.Cond // signalled when leading turns false; uses mu
	queue     []*ledgerWrite
	leading   bool // a caller is committing queue's writes (or is being handed the lead)
	closed    bool
	lastGroup int       // how many writes the last commit held
	lastEnd   time.Time // when it ended

	closeOnce sync.Once
	closeErr  error
}

// Errors of the ledger; callers check them with errors.Is.
var (
	// ErrClosed: a write was made on a ledger after Close.
	ErrClosed = errors.New("ledger: closed")
	// ErrNotFound: no such session or snapshot record.
	ErrNotFound = errors.New("not found")
	// ErrExists: a session of that id is recorded already, or a snapshot's
	// turn is not after the session's last.
	ErrExists = errors.New("already exists")
	// ErrInvalidID: a snapshot id is not of the form <session>@<turn>.
	ErrInvalidID = errors.New("invalid snapshot id")
)

var (
	bucketSessions  = []byte("sessions")
	bucketSnapshots = []byte("snapshots") // sub-bucket per session, keyed by turn
)

// SessionRecord is a session as the ledger keeps it.
type SessionRecord struct {
	// ID is the session id.
	ID string `json:"id"`
	// Volume is the backend volume holding the workspace.
	Volume string `json:"volume"`
	// Backend and Runtime name the storage backend and container runtime
	// the session was created with.
	Backend string `json:"backend"`
	Runtime string `json:"runtime"`
	// State is the session's last durable state (active, paused, failed).
	State string `json:"state"`
	// Config is the session's configuration as its creator encoded it.
	Config json.RawMessage `json:"config,omitempty"`
	// ParentSession and ParentSnapshot record fork lineage (empty for a
	// session that did not start from a snapshot).
	ParentSession  string `json:"parent_session,omitempty"`
	ParentSnapshot string `json:"parent_snapshot,omitempty"`
	// CreatedAt is when the session was created.
	CreatedAt time.Time `json:"created_at"`
	// LastTurn is the highest turn number recorded; the next snapshot gets
	// LastTurn+1. It never decreases, even when snapshots are pruned.
	LastTurn int `json:"last_turn"`
	// DiskQuotaBytes, if set, is the session's own disk quota (0: none),
	// which overrides the host's default; nil follows the host's.
	DiskQuotaBytes *int64 `json:"disk_quota_bytes,omitempty"`
	// AppliedDiskQuota is the quota last given to the storage backend for
	// the session's volume (0: none), so a restarted host re-applies a
	// quota only when its configuration changed it.
	AppliedDiskQuota int64 `json:"applied_disk_quota,omitempty"`
	// RootTree: the volume holds the session's whole root filesystem,
	// its workspace the directory "workspace" in it. False for sessions
	// of older hosts, whose volume is the workspace itself.
	RootTree bool `json:"root_tree,omitempty"`
	// Image holds the defaults the session's commands take from its
	// image's config, resolved once when the session was created (a
	// fork copies its parent's), so that they outlive a change or
	// removal of the image. Nil: none (the image had no config, the
	// session predates them, or the runtime uses no images).
	Image *ImageDefaults `json:"image_defaults,omitempty"`
	// Ports are the ports the session publishes (environment.PortPublisher),
	// by port.
	Ports []PublishedPort `json:"ports,omitempty"`
	// Hibernated: the session (State paused) was written to disk by
	// Hibernate: its sandbox's memory image and a snapshot of its files
	// wait in the host's state dir for Resume.
	Hibernated bool `json:"hibernated,omitempty"`
}

// PublishedPort is one port a session publishes.
type PublishedPort struct {
	Port   int  `json:"port"`
	Public bool `json:"public,omitempty"`
}

// ImageDefaults are what a session's commands inherit from its image's
// config (OCI ENV, WORKDIR and USER), already validated.
type ImageDefaults struct {
	// Env is the image's environment, KEY=value, under the session's own.
	Env []string `json:"env,omitempty"`
	// WorkDir is the absolute directory, in the sandbox's root, where
	// commands that name none start ("": the workspace).
	WorkDir string `json:"work_dir,omitempty"`
	// User is the user commands that name none run as: a name, uid or
	// uid:gid ("": root).
	User string `json:"user,omitempty"`
}

// SnapshotRecord is a snapshot as the ledger keeps it.
type SnapshotRecord struct {
	// ID is "<session>@<turn>", unique on the host.
	ID string `json:"id"`
	// Session is the session the snapshot belongs to.
	Session string `json:"session"`
	// Turn numbers the session's snapshots from 1.
	Turn int `json:"turn"`
	// Name is the caller's label; named snapshots are kept by Prune.
	Name string `json:"name,omitempty"`
	// Volume and BackendName locate the snapshot in the backend.
	Volume      string `json:"volume"`
	BackendName string `json:"backend_name"`
	// CreatedAt is when the snapshot was taken.
	CreatedAt time.Time `json:"created_at"`
	// SizeBytes is the space the snapshot used when taken.
	SizeBytes int64 `json:"size_bytes"`
	// Memory: the snapshot holds the session's sandbox memory too, an
	// image the host keeps in a directory of its own state dir, named
	// after Session and Turn (never a path stored here: the host derives
	// it); MemoryBytes is the image's size.
	Memory      bool  `json:"memory,omitempty"`
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
}

// SnapshotID returns the ledger id of a session's turn.
func SnapshotID(session string, turn int) string {
	return session + "@" + strconv.Itoa(turn)
}

// ParseSnapshotID splits an id made by SnapshotID. The error wraps
// ErrInvalidID.
func ParseSnapshotID(id string) (session string, turn int, err error) {
	session, t, ok := strings.Cut(id, "@")
	if ok {
		turn, err = strconv.Atoi(t)
	}
	if !ok || err != nil || turn < 1 || session == "" {
		return "", 0, fmt.Errorf("%w: snapshot id %q: want <session>@<turn>", ErrInvalidID, id)
	}
	return session, turn, nil
}

// BackendSnapshotName is the backend's name for a session's turn.
func BackendSnapshotName(turn int) string { return "turn-" + strconv.Itoa(turn) }

// Open opens (creating if needed) the ledger at path.
func Open(path string) (*Ledger, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("ledger %s is locked by another process (is another turnbox host running on this state directory?): %w", path, err)
		}
		return nil, fmt.Errorf("opening ledger %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketSessions, bucketSnapshots} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialising ledger %s: %w", path, err)
	}
	l := &Ledger{db: db}
	l.idle = sync.NewCond(&l.mu)
	return l, nil
}

// Close closes the ledger file. Writes already accepted are committed
// first (Close waits for them); writes made after Close starts fail with
// ErrClosed, and reads fail. Calling Close again returns the first
// call's result.
func (l *Ledger) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		for l.leading {
			l.idle.Wait()
		}
		l.mu.Unlock()
		l.closeErr = l.db.Close()
	})
	return l.closeErr
}

// burstWindow is how soon after a shared commit the next one still
// yields once for the released callers (see lead). Callers writing again
// at once come back within microseconds; a session's next turn comes
// seconds later and does not yield.
const burstWindow = time.Millisecond

// ledgerWrite is one caller's write waiting in (or committed by) a group.
type ledgerWrite struct {
	fn func(*bolt.Tx) error
	// done receives false when the write's group has been committed (err
	// and panicked are then final) or true when the caller is handed the
	// lead and must commit the queue, its own write included. Buffered,
	// so the sender never waits for the caller.
	done     chan bool
	err      error
	panicked bool
	panicVal any
}

// run applies the write to tx, recording its result. A panic in fn is
// caught, so it cannot take down the goroutine committing other callers'
// writes; the write's own caller panics with the value instead.
func (w *ledgerWrite) run(tx *bolt.Tx) (err error) {
	w.err, w.panicked, w.panicVal = nil, false, nil
	defer func() {
		if r := recover(); r != nil {
			w.panicked, w.panicVal = true, r
			w.err = fmt.Errorf("ledger: write panicked: %v", r)
			err = w.err
		}
	}()
	w.err = w.fn(tx)
	return w.err
}

// update commits fn in a read-write transaction, sharing the transaction
// and its disk sync with writes that arrive while another commit is in
// flight (see Ledger). It returns fn's own error, or the commit's error if
// the group's commit failed, once the write is durable or has failed.
//
// The callers take turns: the first write to arrive when nothing is being
// committed leads, committing the queue; writes arriving meanwhile queue
// up, and when its commit is done the leader hands the lead to the first
// of them, which commits everything queued by then in one transaction. No
// goroutine outlives the calls.
//
// fn may run more than once (when another write in its group fails, the
// group is rolled back and run again without it), each time on a fresh
// transaction, so it must only read and write through tx. fn runs on
// whichever caller's goroutine leads and must not call the Ledger.
func (l *Ledger) update(fn func(*bolt.Tx) error) error {
	w := &ledgerWrite{fn: fn, done: make(chan bool, 1)}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.queue = append(l.queue, w)
	lead := !l.leading
	l.leading = true
	l.mu.Unlock()
	if !lead {
		lead = <-w.done
	}
	if lead {
		l.lead(w)
	}
	if w.panicked {
		panic(w.panicVal)
	}
	return w.err
}

// lead commits everything queued (self included) as one group, hands the
// lead to the first write queued meanwhile (or gives it up, waking Close)
// and releases the group's other callers.
func (l *Ledger) lead(self *ledgerWrite) {
	l.mu.Lock()
	if l.lastGroup > 1 && time.Since(l.lastEnd) < burstWindow {
		// The last commit was shared and has just ended, and its callers
		// were released together; in a burst they come back together
		// too. Give them one turn of the scheduler to queue, or the
		// first of them would commit alone and the rest in the next
		// commit (two syncs where one does). This is a yield, not a
		// timer: with nothing else runnable it returns at once. A lone
		// writer (whose last commit was its own) never yields, nor does
		// a write arriving well after the last shared commit.
		l.mu.Unlock()
		runtime.Gosched()
		l.mu.Lock()
	}
	group := l.queue
	l.queue = nil
	l.mu.Unlock()

	l.commitGroup(group)

	l.mu.Lock()
	var next *ledgerWrite
	l.lastGroup, l.lastEnd = len(group), time.Now()
	if len(l.queue) > 0 {
		next = l.queue[0]
	} else {
		l.leading = false
		l.idle.Broadcast()
	}
	l.mu.Unlock()
	// Start the next group's commit before waking this group's callers.
	if next != nil {
		next.done <- true
	}
	for _, w := range group {
		if w != self {
			w.done <- false
		}
	}
}

// commitGroup runs the group's writes in order in one transaction and
// commits it. A write that fails is final with its own error: the
// transaction is rolled back (nothing was synced, so this is cheap) and
// run again without it, so no write sees another's partial changes and
// the writes that succeed are committed together. Each round drops one
// write, so a group of n takes at most n+1 transactions and one sync.
func (l *Ledger) commitGroup(group []*ledgerWrite) {
	live := slices.Clone(group)
	for len(live) > 0 {
		tx, err := l.db.Begin(true)
		if err != nil {
			for _, w := range live {
				w.err = fmt.Errorf("ledger: starting a transaction: %w", err)
			}
			return
		}
		failed := -1
		for i, w := range live {
			if w.run(tx) != nil {
				failed = i
				break
			}
		}
		if failed >= 0 {
			_ = tx.Rollback()
			live = slices.Delete(live, failed, failed+1)
			continue
		}
		if err := tx.Commit(); err != nil {
			for _, w := range live {
				w.err = fmt.Errorf("ledger: committing: %w", err)
			}
		}
		return
	}
}

func getSession(tx *bolt.Tx, id string) (SessionRecord, error) {
	var rec SessionRecord
	v := tx.Bucket(bucketSessions).Get([]byte(id))
	if v == nil {
		return rec, fmt.Errorf("session %q: %w", id, ErrNotFound)
	}
	if err := json.Unmarshal(v, &rec); err != nil {
		return rec, fmt.Errorf("ledger: decoding session %q: %w", id, err)
	}
	return rec, nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

// PutSession records a new session. It fails with ErrExists if the id is
// taken. Like every ledger write it shares a commit with concurrent writes
// (see Ledger) and is durable when it returns.
func (l *Ledger) PutSession(rec SessionRecord) error {
	return l.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSessions)
		if b.Get([]byte(rec.ID)) != nil {
			return fmt.Errorf("session %q: %w", rec.ID, ErrExists)
		}
		return putJSON(b, []byte(rec.ID), rec)
	})
}

// Session returns one session's record (ErrNotFound if absent).
func (l *Ledger) Session(id string) (SessionRecord, error) {
	var rec SessionRecord
	err := l.db.View(func(tx *bolt.Tx) error {
		var err error
		rec, err = getSession(tx, id)
		return err
	})
	return rec, err
}

// Sessions returns every session record, sorted by id.
func (l *Ledger) Sessions() ([]SessionRecord, error) {
	var out []SessionRecord
	err := l.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSessions).ForEach(func(k, v []byte) error {
			var rec SessionRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("ledger: decoding session %q: %w", k, err)
			}
			out = append(out, rec)
			return nil
		})
	})
	return out, err
}

// UpdateSession applies fn to a session's record and stores the result
// (ErrNotFound if there is no such session; fn's own error, unchanged, if
// fn fails, and then nothing is stored). The write shares a commit with
// concurrent writes (see Ledger) and is durable when it returns. fn may be
// called more than once, each time on a freshly read record (when another
// write committed with it fails, the commit is redone without that one),
// so it should only change the record; it must not call the Ledger.
func (l *Ledger) UpdateSession(id string, fn func(*SessionRecord) error) error {
	return l.update(func(tx *bolt.Tx) error {
		rec, err := getSession(tx, id)
		if err != nil {
			return err
		}
		if err := fn(&rec); err != nil {
			return err
		}
		rec.ID = id
		return putJSON(tx.Bucket(bucketSessions), []byte(id), rec)
	})
}

// DeleteSession removes a session and all its snapshot records. Deleting
// an absent session is not an error. Durable when it returns.
func (l *Ledger) DeleteSession(id string) error {
	return l.update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketSessions).Delete([]byte(id)); err != nil {
			return err
		}
		err := tx.Bucket(bucketSnapshots).DeleteBucket([]byte(id))
		if errors.Is(err, berrors.ErrBucketNotFound) {
			return nil
		}
		return err
	})
}

func turnKey(turn int) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, uint64(turn))
	return k
}

// AddSnapshot records a snapshot that the caller has created in the
// backend. rec.Turn must be above the session's LastTurn (the caller takes
// NextTurn under its per-session lock); the session's LastTurn becomes
// rec.Turn. A call made while no commit is in flight commits at once;
// calls made during another's commit share the next commit and its disk
// sync (see Ledger), so many sessions snapshotting at once do not queue
// behind each other's syncs. The record is durable when this returns. A
// stale turn fails with ErrExists and an unknown session with ErrNotFound,
// without failing other sessions' calls in the same commit.
func (l *Ledger) AddSnapshot(rec SnapshotRecord) error {
	rec.ID = SnapshotID(rec.Session, rec.Turn)
	return l.update(func(tx *bolt.Tx) error {
		s, err := getSession(tx, rec.Session)
		if err != nil {
			return err
		}
		if rec.Turn <= s.LastTurn {
			return fmt.Errorf("snapshot %s: turn %d is not after the last recorded turn %d: %w", rec.ID, rec.Turn, s.LastTurn, ErrExists)
		}
		sb, err := tx.Bucket(bucketSnapshots).CreateBucketIfNotExists([]byte(rec.Session))
		if err != nil {
			return err
		}
		if err := putJSON(sb, turnKey(rec.Turn), rec); err != nil {
			return err
		}
		s.LastTurn = rec.Turn
		return putJSON(tx.Bucket(bucketSessions), []byte(s.ID), s)
	})
}

// NextTurn returns the turn number the session's next snapshot gets.
func (l *Ledger) NextTurn(session string) (int, error) {
	s, err := l.Session(session)
	if err != nil {
		return 0, err
	}
	return s.LastTurn + 1, nil
}

// Snapshot returns one snapshot record by id (ErrNotFound if absent,
// ErrInvalidID if the id is malformed).
func (l *Ledger) Snapshot(id string) (SnapshotRecord, error) {
	session, turn, err := ParseSnapshotID(id)
	if err != nil {
		return SnapshotRecord{}, err
	}
	var rec SnapshotRecord
	err = l.db.View(func(tx *bolt.Tx) error {
		sb := tx.Bucket(bucketSnapshots).Bucket([]byte(session))
		var v []byte
		if sb != nil {
			v = sb.Get(turnKey(turn))
		}
		if v == nil {
			return fmt.Errorf("snapshot %q: %w", id, ErrNotFound)
		}
		return json.Unmarshal(v, &rec)
	})
	return rec, err
}

// Snapshots returns a session's snapshot records, oldest turn first.
func (l *Ledger) Snapshots(session string) ([]SnapshotRecord, error) {
	var out []SnapshotRecord
	err := l.db.View(func(tx *bolt.Tx) error {
		sb := tx.Bucket(bucketSnapshots).Bucket([]byte(session))
		if sb == nil {
			return nil
		}
		return sb.ForEach(func(_, v []byte) error {
			var rec SnapshotRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			out = append(out, rec)
			return nil
		})
	})
	return out, err
}

// DeleteSnapshot removes one snapshot record (the caller destroys the
// backend snapshot first). Deleting an absent record is not an error.
// Durable when it returns.
func (l *Ledger) DeleteSnapshot(id string) error {
	session, turn, err := ParseSnapshotID(id)
	if err != nil {
		return err
	}
	return l.update(func(tx *bolt.Tx) error {
		sb := tx.Bucket(bucketSnapshots).Bucket([]byte(session))
		if sb == nil {
			return nil
		}
		return sb.Delete(turnKey(turn))
	})
}

// Retention says which snapshots Prune keeps.
type Retention struct {
	// KeepLast keeps the newest KeepLast snapshots (0: keep all).
	KeepLast int
	// KeepNamed keeps every snapshot with a non-empty Name.
	KeepNamed bool
}

// Prunable returns the session's snapshots that the policy does not keep,
// oldest first. The caller destroys each in the backend and then calls
// DeleteSnapshot.
func (l *Ledger) Prunable(session string, policy Retention) ([]SnapshotRecord, error) {
	if policy.KeepLast <= 0 {
		return nil, nil
	}
	all, err := l.Snapshots(session)
	if err != nil {
		return nil, err
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Turn < all[j].Turn })
	var out []SnapshotRecord
	for i, rec := range all {
		if i >= len(all)-policy.KeepLast || (policy.KeepNamed && rec.Name != "") {
			continue
		}
		out = append(out, rec)
	}
	return out, nil
}
