// Package remote is the client of a turnbox server: NewClient (the
// generated ConnectRPC client of turnbox.v1.SandboxService, with auth,
// message bounds and retries) and NativeSandboxEnvironment, the
// environment.Environment that agent runtimes code against. It imports
// only package environment, the generated code (remote/gen, built with buf
// from remote/proto) and connect, so a program that only talks to a
// server links nothing of the host and builds on any GOOS
// (TestClientDependencies checks both). The server is package
// remote/server; wire conversions shared by both live in
// remote/internal/wire.
//
// NewClient's client also reaches turnbox.v1.ProcessService
// (ProcessServiceProvider), so NativeSandboxEnvironment implements
// environment.ProcessRunner; its StartAndFollow starts a process and
// follows its output in one round trip.
//
// # Layers
//
//	agent runtime ──► NativeSandboxEnvironment ──► turnboxv1connect.SandboxServiceClient (NewClient)
//	                     ──ConnectRPC──► remote/server.Server ──► embedded.Host
//
// NativeSandboxEnvironment calls the generated client directly: each
// method converts its arguments to the wire messages, makes one call and
// converts the answer back. To drive a host in the same process, mount
// remote/server's Handler on an httptest.Server (see Example_inProcess) or
// use embedded.Environment itself: both behave alike, since the server
// only translates.
//
// # Errors
//
// Every failed call carries the Connect code closest to its cause and an
// ErrorInfo detail naming the exact environment sentinels it matched on
// the host; the client returns an *Error that errors.Is matches against
// the same sentinels (plus ErrUnauthenticated and ErrUnavailable for the
// transport's own failures).
//
// # Retries and idempotency
//
// NewClient retries, while the server is unreachable and with exponential
// backoff and jitter, only the calls that are safe to repeat: the reads,
// DestroySession, and ExecuteTool and ExecuteToolStream with a tool call
// id. The host runs a tool call id once per session: a repeat of a call
// that finished gets that call's response and runs nothing; a call that
// failed or did not finish is forgotten, so a retry runs the tool again
// (see embedded.Config.ToolCallCacheEntries). The same holds for every
// path to the host, in process or over the wire.
//
// # Session state
//
// NativeSandboxEnvironment keeps no session state besides its session id,
// a destroyed flag and the server's capabilities: the server holds the
// truth. It implements environment.Environment, environment.Forker,
// TurnCompleter, SnapshotLister, SnapshotDeleter and SessionIDer, and
// passes the envtest conformance suite over a loopback server.
//
// # Published ports
//
// DialPort opens a plain TCP connection to a session's published port
// through the server's TCP form (GET /tcp/<session id>/<port>, Upgrade:
// turnbox-tcp); HTTP and WebSocket reach a port at /ports/<session
// id>/<port>/ with any HTTP client (docs/ports.md).
//
// # Generated code
//
// remote/gen is generated from remote/proto by `make generate`
// (remote/scripts/gen.sh), which installs pinned buf, protoc-gen-go and
// protoc-gen-connect-go and runs buf with local plugins; commit its output.
package remote
