// Package forward forwards HTTP, WebSocket and plain TCP to a port of a
// session through a dial function: what `turnbox serve` (remote/server)
// and its E2B front (remote/e2b) both use for exposed ports, so that the
// two share one implementation of the bounds below.
//
// A Forwarder (Forward) is an httputil.ReverseProxy whose Transport reaches a
// session's port with the Forwarder's DialFunc (the address is ignored:
// the target is encoded in the outgoing URL's host, so keep-alive pools
// are per session and port). WebSocket and other Upgrade requests pass
// through ReverseProxy. Plain TCP is an HTTP/1.1 Upgrade of its own:
// a request with "Connection: Upgrade" and "Upgrade: turnbox-tcp" is
// answered 101 and the connection is then spliced both ways, with
// half-closes passed on (ServeTCP).
//
// Everything past the dial is the sandbox's and untrusted: response
// headers are bounded in time (ResponseHeaderTimeout) and size
// (MaxResponseHeaderBytes), bodies are streamed and never buffered
// whole, and each session has a cap of concurrent forwarded requests and
// connections (503 past it). The client's Authorization header, cookies
// whose names start with "turnbox" and any header the caller names
// (Options.StripHeaders) never reach the sandbox; X-Forwarded-For,
// -Host and -Proto are set.
//
// Errors are answered as JSON {"error": "...", "code": "..."}: 400 for an
// invalid port, 404 for an unknown session or a port not published, 502
// when nothing listens on the port, 503 for a session that is not active
// or at its cap, 504 when the sandbox does not answer in time.
package forward
