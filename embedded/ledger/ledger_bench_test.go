package ledger_test

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/embedded/ledger"
)

// The benchmarks compare the ledger's group commit with the write path it
// replaced (bbolt's Batch with a 1 ms MaxBatchDelay), kept here only for
// that comparison, on the same filesystem in one run:
//
//	go test -run '^$' -bench LedgerAddSnapshot -benchtime 300x -count 5 ./snapshot/
//
// The ledger lives in b.TempDir() (os.TempDir, so check that it is not a
// tmpfs, where fsync costs nothing) or under $TURNBOX_LEDGER_BENCH_DIR.
// ns/op is wall time over all writers divided by the number of calls (the
// inverse of throughput); p50-ns and p99-ns are the latency of one
// AddSnapshot call as its caller saw it.

// ledgerWriter is the part of the ledger the benchmarks drive.
type ledgerWriter interface {
	PutSession(ledger.SessionRecord) error
	AddSnapshot(ledger.SnapshotRecord) error
	Close() error
}

// batchLedger is the ledger's previous write path: AddSnapshot through
// db.Batch with MaxBatchDelay = 1 ms, PutSession through db.Update, on the
// same bucket layout and record encoding as ledger.Ledger.
type batchLedger struct{ db *bolt.DB }

func openBatchLedger(path string) (*batchLedger, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{"sessions", "snapshots"} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	db.MaxBatchDelay = time.Millisecond
	return &batchLedger{db: db}, nil
}

func (o *batchLedger) Close() error { return o.db.Close() }

func (o *batchLedger) PutSession(rec ledger.SessionRecord) error {
	return o.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("sessions"))
		if b.Get([]byte(rec.ID)) != nil {
			return fmt.Errorf("session %q: %w", rec.ID, ledger.ErrExists)
		}
		data, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		return b.Put([]byte(rec.ID), data)
	})
}

func (o *batchLedger) AddSnapshot(rec ledger.SnapshotRecord) error {
	rec.ID = ledger.SnapshotID(rec.Session, rec.Turn)
	return o.db.Batch(func(tx *bolt.Tx) error {
		sessions := tx.Bucket([]byte("sessions"))
		v := sessions.Get([]byte(rec.Session))
		if v == nil {
			return fmt.Errorf("session %q: %w", rec.Session, ledger.ErrNotFound)
		}
		var s ledger.SessionRecord
		if err := json.Unmarshal(v, &s); err != nil {
			return err
		}
		if rec.Turn <= s.LastTurn {
			return fmt.Errorf("snapshot %s: turn %d is not after %d: %w", rec.ID, rec.Turn, s.LastTurn, ledger.ErrExists)
		}
		sb, err := tx.Bucket([]byte("snapshots")).CreateBucketIfNotExists([]byte(rec.Session))
		if err != nil {
			return err
		}
		k := make([]byte, 8)
		binary.BigEndian.PutUint64(k, uint64(rec.Turn))
		data, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if err := sb.Put(k, data); err != nil {
			return err
		}
		s.LastTurn = rec.Turn
		if data, err = json.Marshal(s); err != nil {
			return err
		}
		return sessions.Put([]byte(s.ID), data)
	})
}

// benchDir returns the directory for a benchmark's ledger and logs the
// filesystem it is on.
func benchDir(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	if root := os.Getenv("TURNBOX_LEDGER_BENCH_DIR"); root != "" {
		var err error
		if dir, err = os.MkdirTemp(root, "ledger-bench-"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		b.Fatal(err)
	}
	names := map[int64]string{0xEF53: "ext4", 0x9123683E: "btrfs", 0x58465342: "xfs", 0x2FC12FC1: "zfs", 0x01021994: "tmpfs"}
	fs := names[int64(st.Type)]
	if fs == "" {
		fs = fmt.Sprintf("magic %#x", st.Type)
	}
	if fs == "tmpfs" {
		b.Logf("warning: %s is on tmpfs, where fsync is free; set TURNBOX_LEDGER_BENCH_DIR to a disk", dir)
	}
	b.Logf("ledger in %s (%s)", dir, fs)
	return dir
}

func BenchmarkLedgerAddSnapshot(b *testing.B) {
	paths := []struct {
		name string
		open func(string) (ledgerWriter, error)
	}{
		{"batch1ms", func(p string) (ledgerWriter, error) { return openBatchLedger(p) }},
		{"group", func(p string) (ledgerWriter, error) { return ledger.Open(p) }},
	}
	for _, writers := range []int{1, 10, 50} {
		for _, p := range paths {
			b.Run(fmt.Sprintf("writers=%d/%s", writers, p.name), func(b *testing.B) {
				l, err := p.open(filepath.Join(benchDir(b), "ledger.db"))
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
				benchAddSnapshot(b, l, writers)
			})
		}
	}
}

// benchAddSnapshot has writers goroutines, one session each, make b.N
// AddSnapshot calls between them, as many sessions finishing turns at
// once do.
func benchAddSnapshot(b *testing.B, l ledgerWriter, writers int) {
	for i := range writers {
		if err := l.PutSession(ledger.SessionRecord{ID: fmt.Sprint("s", i), State: "active", CreatedAt: time.Now()}); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	lat := make([][]time.Duration, writers)
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprint("s", i)
			for turn := 1; next.Add(1) <= int64(b.N); turn++ {
				t0 := time.Now()
				err := l.AddSnapshot(ledger.SnapshotRecord{
					Session: id, Turn: turn, Volume: id, BackendName: ledger.BackendSnapshotName(turn),
					CreatedAt: t0, SizeBytes: 4096,
				})
				lat[i] = append(lat[i], time.Since(t0))
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(all[len(all)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(all[len(all)*99/100].Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
}
