// Package e2b serves E2B's protocols over turnbox sessions, so that
// programs written against E2B's SDKs (the e2b npm and PyPI packages)
// run unchanged on a self-hosted turnbox host: set E2B_API_URL and
// E2B_SANDBOX_URL to `turnbox serve --e2b` and E2B_API_KEY to one of its
// keys.
//
// Two planes are served. The control plane is E2B's REST API (create,
// connect, pause, kill, list, timeouts, snapshots, fork), authenticated
// by the X-API-KEY header. The envd plane is the API of E2B's in-sandbox
// daemon: the Connect services process.Process and
// filesystem.Filesystem (JSON and binary encodings, HTTP/1.1 and h2c),
// /files upload and download and /health, authenticated per sandbox by
// the X-Access-Token header the create answer carries. Envd requests are
// routed by the E2b-Sandbox-Id header, or by a host name
// <port>-<sandbox id>.<domain>.
//
// A sandbox is a turnbox session with the same id: turnbox's own API
// (TurnComplete, Rollback to any snapshot, Fork) works on it too. See
// docs/e2b.md for the mapping and what differs from E2B.
package e2b
