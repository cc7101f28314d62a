// Package remote serves turnbox sessions over ConnectRPC and drives them
// from another process: the protobuf API turnbox.v1.SandboxService
// (remote/proto, Go code generated with buf into remote/gen), a Server over
// an embedded.Host, a client, and NativeSandboxEnvironment, the
// environment.Environment that agent runtimes code against.
//
// # Layers
//
//	agent runtime ──► NativeSandboxEnvironment ──► SandboxService
//	                                                 ├── NewClient ──ConnectRPC──► Server ──► embedded.Host
//	                                                 └── NewLocalService ─────────────────────► embedded.Host
//
// SandboxService is the RPC-level interface (generated message types in
// and out). NewClient implements it over the network; NewLocalService
// implements it in process over a Host, with the same semantics, so an
// agent runtime switches between one host and many by changing one line.
// The Server serves exactly the local service, so behaviour cannot drift
// between the two.
//
// # Server
//
// NewServer returns a Server for a Host; Handler is an http.Handler with
// the service, /healthz (unauthenticated) and /metrics (Prometheus). Serve
// it over HTTP/2: cleartext (h2c) on loopback, TLS elsewhere; HTTPServer
// returns the http.Server `turnbox serve` runs for both. Responses smaller
// than WithCompressMinBytes (DefaultCompressMinBytes) are not compressed.
// Every call, over any of the Connect, gRPC and gRPC-Web protocols:
//
//   - needs "Authorization: Bearer <token>" when the server has tokens
//     (WithAuthTokens), else fails with code Unauthenticated;
//   - is bounded in message size (WithMaxMessageBytes; ResourceExhausted)
//     and duration (WithMaxRequestDuration);
//   - fails with the Connect code closest to its cause and an ErrorInfo
//     detail naming the exact turnbox sentinel errors, which the client
//     turns back into errors that errors.Is matches against the same
//     environment sentinels.
//
// ExecuteTool is idempotent by (session id, tool call id): a call that
// repeats the id of a call that finished returns that call's response and
// runs nothing. The server keeps only finished calls, in a bounded LRU
// cache: a call that failed, or whose tool did not finish (its client
// canceled it or its deadline passed, the server or host shut down, the
// session was destroyed or its sandbox died), is forgotten, so a retry
// with its id runs the tool again. A duplicate arriving while a call with
// its id runs waits for it: it gets that call's response if it finishes,
// and runs the tool itself if it does not. ExecuteToolStream streams progress
// events, keepalives on quiet stretches and a final response, as a oneof
// envelope.
//
// # Client
//
// NewClient retries the calls that are safe to repeat while the server is
// unreachable, with exponential backoff and jitter. NativeSandboxEnvironment
// keeps no session state besides its session id and a destroyed flag: the
// server holds the truth. It implements environment.Environment,
// environment.Forker, TurnCompleter, SnapshotLister and SessionIDer, and
// passes the envtest conformance suite both over a loopback server and in
// process.
//
// # Generated code
//
// remote/gen is generated from remote/proto by `make generate`
// (remote/scripts/gen.sh), which installs pinned buf, protoc-gen-go and
// protoc-gen-connect-go and runs buf with local plugins; commit its output.
package remote
