package snapshot

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
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
type Ledger struct {
	db *bolt.DB
}

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
}

// SnapshotID returns the ledger id of a session's turn.
func SnapshotID(session string, turn int) string {
	return session + "@" + strconv.Itoa(turn)
}

// ParseSnapshotID splits an id made by SnapshotID. The error wraps
// ErrInvalidName.
func ParseSnapshotID(id string) (session string, turn int, err error) {
	session, t, ok := strings.Cut(id, "@")
	if ok {
		turn, err = strconv.Atoi(t)
	}
	if !ok || err != nil || turn < 1 || session == "" {
		return "", 0, fmt.Errorf("%w: snapshot id %q: want <session>@<turn>", ErrInvalidName, id)
	}
	return session, turn, nil
}

// BackendSnapshotName is the backend's name for a session's turn.
func BackendSnapshotName(turn int) string { return "turn-" + strconv.Itoa(turn) }

// OpenLedger opens (creating if needed) the ledger at path.
func OpenLedger(path string) (*Ledger, error) {
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
	// Batch waits this long for other writers to join a commit. bbolt's
	// default (10 ms) was the largest part of a btrfs snapshot's latency;
	// 1 ms still lets concurrent sessions share one disk sync.
	db.MaxBatchDelay = time.Millisecond
	return &Ledger{db: db}, nil
}

// Close closes the ledger file.
func (l *Ledger) Close() error { return l.db.Close() }

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
// taken.
func (l *Ledger) PutSession(rec SessionRecord) error {
	return l.db.Update(func(tx *bolt.Tx) error {
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

// UpdateSession applies fn to a session's record and stores the result.
func (l *Ledger) UpdateSession(id string, fn func(*SessionRecord) error) error {
	return l.db.Update(func(tx *bolt.Tx) error {
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

// DeleteSession removes a session and all its snapshot records.
func (l *Ledger) DeleteSession(id string) error {
	return l.db.Update(func(tx *bolt.Tx) error {
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
// rec.Turn. Concurrent calls for different sessions share one commit
// (bbolt's batching), so many sessions snapshotting at once do not queue
// behind each other's disk syncs. The record is durable when this returns.
func (l *Ledger) AddSnapshot(rec SnapshotRecord) error {
	rec.ID = SnapshotID(rec.Session, rec.Turn)
	return l.db.Batch(func(tx *bolt.Tx) error {
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
// ErrInvalidName if the id is malformed).
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
func (l *Ledger) DeleteSnapshot(id string) error {
	session, turn, err := ParseSnapshotID(id)
	if err != nil {
		return err
	}
	return l.db.Update(func(tx *bolt.Tx) error {
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
