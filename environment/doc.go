// Package environment is turnbox's public contract: the interface an agent
// runtime codes against to drive one sandbox session, whichever host serves it.
//
// # Session lifecycle
//
// An Environment is bound to at most one session. Create makes a new session
// (state creating, then active); AttachSession binds an existing one by id.
// While active, ExecuteTool runs tool calls (see the tool catalogue in
// tools.go: bash, read_file, write_file, edit_file, list_files, grep) and
// CreateSnapshot records the workspace as an immutable snapshot. Rollback
// makes the workspace equal to any earlier snapshot of the session; newer
// snapshots survive, so a caller can roll forward again. Pause freezes the
// sandbox (state paused; tool calls fail with ErrNotActive) and Resume thaws
// it. Destroy removes the session and all its data (state destroyed); it is
// the only call that deletes data.
//
//	           Create
//	(unbound) ────────► creating ──► active ◄──── Resume ──── paused
//	                         │          │  └────── Pause ──────►  │
//	                         ▼          ▼                         ▼
//	                      failed     destroying ──► destroyed ◄───┘ (Destroy)
//
// # Capabilities
//
// Not every implementation can do everything. Capabilities reports what this
// one can; a method whose capability is false returns an error for which
// errors.Is(err, ErrCapabilityNotSupported) is true and changes nothing.
// Optional abilities beyond the core interface (Forker, TurnCompleter,
// SnapshotLister) are separate small interfaces found by type assertion.
//
// # Errors
//
// Every error returned by an implementation wraps one of the sentinel errors
// in this package where one applies, so callers branch with errors.Is.
//
// # Conformance
//
// Package envtest holds a conformance suite that every implementation in this
// repository passes; run it against your own with envtest.Run.
package environment
