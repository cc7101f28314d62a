// Package envtest is the conformance suite for environment.Environment.
//
// Every implementation in this repository runs it against itself, and any
// other implementation can too, with one call from a test:
//
//	func TestConformance(t *testing.T) {
//		host := newHost(t) // whatever your implementation needs
//		envtest.Run(t, func(t *testing.T) environment.Environment {
//			return host.NewEnvironment()
//		})
//	}
//
// The factory returns a new, unbound Environment on every call; all the
// environments one factory returns must share one host, so that
// AttachSession finds a session another of them created.
//
// The suite drives implementations only through the Environment interface
// and the optional interfaces of package environment (Forker,
// TurnCompleter, SnapshotLister, SessionIDer), so it runs unchanged over the
// network against a remote host. It is organised as named subtests
// (Lifecycle, Capabilities, Tools, Snapshots, Concurrency, Security), each
// made of parallel subtests that create and destroy their own sessions;
// select parts with go test -run, e.g. -run 'Conformance/Tools/Bash'.
// Abilities an implementation reports as absent in Capabilities are checked
// to fail with environment.ErrCapabilityNotSupported, and the tests that
// need them are skipped.
//
// Snapshot and rollback are checked against a shadow model with
// property-based tests (pgregory.net/rapid): random sequences of writes,
// deletions, directory creations, snapshots and rollbacks, after each of
// which the workspace, as seen through list_files, read_file and bash, must
// equal the model. Use Option values to tune the suite (WithPropertyChecks,
// WithTimeout, WithSessionConfig, WithRemoteHost).
package envtest
