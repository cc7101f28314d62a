package snapshottest

import (
	"testing"

	"github.com/turnbox/turnbox/snapshot"
)

// Option configures Run.
type Option func(*config)

type config struct {
	fullDisk    func(t *testing.T) snapshot.Backend
	copyOnWrite bool
	reopen      func(t *testing.T, old snapshot.Backend) snapshot.Backend
	skip        map[string]string
	only        map[string]bool
}

// WithFullDisk enables the FullDisk case. newSmall returns a new, empty
// backend whose storage is small (a few MB, e.g. a tmpfs mounted with
// size=4m or a loop-mounted filesystem) and registers its cleanup with
// t.Cleanup. The suite fills that storage by writing into a volume until
// ENOSPC.
func WithFullDisk(newSmall func(t *testing.T) snapshot.Backend) Option {
	return func(c *config) { c.fullDisk = newSmall }
}

// WithCopyOnWrite declares that the backend's snapshots and clones share
// blocks with their source (btrfs, zfs), so they may succeed on a full
// disk. Without it the FullDisk case requires Snapshot and CloneVolume of
// a non-empty volume on a full disk to fail with ErrNoSpace.
func WithCopyOnWrite() Option {
	return func(c *config) { c.copyOnWrite = true }
}

// WithReopen enables the Reopen case (persistence across a restart).
// reopen is called once the suite has finished with old; it closes old (a
// clean restart) or abandons it (a crash-like restart) and returns a new
// backend opened on the same storage, registering its cleanup with
// t.Cleanup. Everything a successful call recorded must be there again.
func WithReopen(reopen func(t *testing.T, old snapshot.Backend) snapshot.Backend) Option {
	return func(c *config) { c.reopen = reopen }
}

// WithSkip skips the named cases (the names Run gives its subtests, e.g.
// "SnapshotWhileWriting"), logging reason. Use it sparingly and say why:
// a skipped case is a gap in the backend's contract.
func WithSkip(reason string, names ...string) Option {
	return func(c *config) {
		if c.skip == nil {
			c.skip = map[string]string{}
		}
		for _, n := range names {
			c.skip[n] = reason
		}
	}
}

// WithOnly runs only the named cases: for a second set-up of a backend
// that changes what only those cases check (e.g. another quota mode).
func WithOnly(names ...string) Option {
	return func(c *config) {
		if c.only == nil {
			c.only = map[string]bool{}
		}
		for _, n := range names {
			c.only[n] = true
		}
	}
}

type testCase struct {
	name string
	fn   func(t *testing.T, b snapshot.Backend)
}

var cases = []testCase{
	{"Kind", testKind},
	{"CreateVolume", testCreateVolume},
	{"VolumesSorted", testVolumesSorted},
	{"VolumeExists", testVolumeExists},
	{"NotFound", testNotFound},
	{"InvalidNames", testInvalidNames},
	{"MaxLengthNames", testMaxLengthNames},
	{"SnapshotExists", testSnapshotExists},
	{"SnapshotsOldestFirst", testSnapshotsOldestFirst},
	{"RollbackContent", testRollbackContent},
	{"RollbackModTimes", testRollbackModTimes},
	{"RollbackToOlderKeepsNewer", testRollbackToOlderKeepsNewer},
	{"RollbackPathStable", testRollbackPathStable},
	{"SnapshotIsACopy", testSnapshotIsACopy},
	{"CloneContent", testCloneContent},
	{"CloneIndependent", testCloneIndependent},
	{"CloneOutlivesSource", testCloneOutlivesSource},
	{"CloneExists", testCloneExists},
	{"ReplaceVolume", testReplaceVolume},
	{"DestroySnapshot", testDestroySnapshot},
	{"DestroyVolume", testDestroyVolume},
	{"SnapshotWhileWriting", testSnapshotWhileWriting},
	{"SnapshotWhileChurning", testSnapshotWhileChurning},
	{"ConcurrentVolumes", testConcurrentVolumes},
	{"SizeBytes", testSizeBytes},
	{"Quota", testQuota},
	{"TamperedPath", testTamperedPath},
	{"SealedVolume", testSealedVolume},
	{"SnapshotSymlinkRace", testSnapshotSymlinkRace},
	{"TotalUsage", testTotalUsage},
}

// Run runs the conformance suite as named subtests of t. Each subtest
// calls newBackend for a new, empty backend; newBackend registers any
// cleanup (Close, unmount, removal) with t.Cleanup, and Close may then be
// called twice, once by the suite or a reopen function and once by that
// cleanup. The FullDisk and Reopen cases run only with WithFullDisk and
// WithReopen. Every case is a subtest, so `go test -run 'Suite/Rollback'`
// selects cases as usual.
func Run(t *testing.T, newBackend func(t *testing.T) snapshot.Backend, opts ...Option) {
	t.Helper()
	var c config
	for _, o := range opts {
		o(&c)
	}
	all := append([]testCase(nil), cases...)
	all = append(all,
		testCase{"FullDisk", func(t *testing.T, _ snapshot.Backend) {
			if c.fullDisk == nil {
				t.Skip("snapshottest: FullDisk needs the WithFullDisk option")
			}
			testFullDisk(t, c.fullDisk(t), c.copyOnWrite)
		}},
		testCase{"Reopen", func(t *testing.T, b snapshot.Backend) {
			if c.reopen == nil {
				t.Skip("snapshottest: Reopen needs the WithReopen option")
			}
			testReopen(t, b, c.reopen)
		}},
	)
	for _, tc := range all {
		if c.only != nil && !c.only[tc.name] {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			if reason, ok := c.skip[tc.name]; ok {
				t.Skipf("skipped by the backend's test: %s", reason)
			}
			var b snapshot.Backend
			if tc.name != "FullDisk" {
				b = newBackend(t)
			}
			tc.fn(t, b)
		})
	}
}

// CaseNames lists the names of the suite's cases, in the order Run runs
// them (for WithSkip and -run patterns).
func CaseNames() []string {
	names := make([]string, 0, len(cases)+2)
	for _, c := range cases {
		names = append(names, c.name)
	}
	return append(names, "FullDisk", "Reopen")
}
