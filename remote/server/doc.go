// Package server serves one embedded.Host over ConnectRPC: the
// turnbox.v1.SandboxService of remote/proto, for the clients of package
// remote and any other Connect, gRPC or gRPC-Web client. It translates
// and nothing more: each RPC decodes its request (remote/internal/wire),
// calls the host's embedded.Environment for the session and encodes the
// answer, so a call behaves over the wire as it does in process.
//
// New returns a Server for a Host; Handler is an http.Handler with the
// service, /healthz (unauthenticated) and /metrics (Prometheus). Serve it
// over HTTP/2: cleartext (h2c) on loopback, TLS elsewhere; HTTPServer
// returns the http.Server `turnbox serve` runs for both. Responses smaller
// than WithCompressMinBytes (DefaultCompressMinBytes) are not compressed.
// Every call:
//
//   - needs "Authorization: Bearer <token>" when the server has tokens
//     (WithAuthTokens), else fails with code Unauthenticated;
//   - is bounded in message size (WithMaxMessageBytes; ResourceExhausted)
//     and duration (WithMaxRequestDuration);
//   - fails with the Connect code closest to its cause and an ErrorInfo
//     detail naming the exact environment sentinel errors, which package
//     remote turns back into errors that errors.Is matches against the
//     same sentinels (an invalid id is InvalidArgument, an unknown
//     snapshot NotFound, a call on an unknown or destroyed session
//     NotFound on every method, with both SESSION_NOT_FOUND and
//     NOT_ACTIVE; docs/remote.md lists every cause's code);
//   - is refused with ResourceExhausted before its body is read when its
//     Content-Length exceeds the message bound;
//   - streams send their response headers at once, before any event.
//
// ExecuteTool is idempotent by (session id, tool call id) because the
// host's tool calls are (embedded.Config.ToolCallCacheEntries): the server
// keeps no cache of its own. ExecuteToolStream streams progress events,
// keepalives on quiet stretches and a final response, as a oneof envelope.
//
// Handler also serves turnbox.v1.ProcessService (ProcessServiceHandler,
// process.proto), with the same auth and limits: the session's processes
// (environment.ProcessRunner). StartAndFollow starts a process and
// streams it in one call; AttachProcess streams with keepalives.
//
// Handler also forwards to the sessions' published ports (ports.go,
// through remote/forward): /ports/<session id>/<port>/... (HTTP and
// WebSocket), /tcp/<session id>/<port> (plain TCP) and, with
// WithPortDomain, host names <port>-<session id>.<domain>; public ports
// need no token, others the API's.
package server
