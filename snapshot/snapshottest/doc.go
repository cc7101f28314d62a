// Package snapshottest is the conformance suite every snapshot.Backend in
// turnbox passes, plus helpers to build and compare directory trees.
//
// A backend's test file is a few lines:
//
//	func TestSuite(t *testing.T) {
//		snapshottest.Run(t, func(t *testing.T) snapshot.Backend {
//			b, err := mybackend.New(t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { b.Close() })
//			return b
//		},
//			snapshottest.WithReopen(reopen),     // persistence across restarts
//			snapshottest.WithFullDisk(newSmall), // ENOSPC handling on a tiny filesystem
//		)
//	}
//
// Run gives each case a fresh backend and runs it as a named subtest
// (CaseNames lists them). The cases check the contract written in the doc
// comments of package snapshot: creating, listing and destroying volumes
// and snapshots; exact content after Rollback and CloneVolume (TreeHash:
// paths, types, permissions, owners, contents, symlink targets, hard-link
// structure, empty directories; modification times in RollbackModTimes);
// rollback to an older snapshot keeping newer ones; clone independence;
// snapshots taken while files are written or churned; sentinel errors for
// invalid names, collisions and missing objects; a stable Path whose parent
// directory holds only the volume; concurrent use of different volumes
// (run with -race); and, with options, a full disk and a reopen.
//
// The tree helpers (WriteTree with File, Dir, Symlink, HardLink, Fifo;
// StandardTree; FillTree; TreeHash; Manifest) are usable on their own, in
// tests and benchmarks.
package snapshottest
