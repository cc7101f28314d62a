#!/usr/bin/env bash
# End-to-end smoke test of `turnbox serve` with a client in another language
# (buf curl, installed by gen.sh): start the server on a temporary state
# directory with a token, create a session, run a tool, check that a call
# without the token is refused, then SIGTERM and check a clean exit.
#
#   remote/scripts/serve-smoke.sh [path/to/turnbox]   (default bin/turnbox)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
turnbox=${1:-$root/bin/turnbox}
tools=${TURNBOX_TOOLS:-/var/cache/turnbox/bin}
buf=$tools/buf
[[ -x $buf ]] || bash "$root/remote/scripts/gen.sh" >/dev/null
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

token=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
printf '%s\n' "$token" >"$work/tokens"
"$turnbox" --state-dir "$work/state" --runtime none serve --listen 127.0.0.1:0 --token-file "$work/tokens" 2>"$work/log" &
pid=$!
for _ in $(seq 100); do grep -q 'serving http' "$work/log" && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$work/log")
echo "serve-smoke: server at $url"

call() { # call <procedure> <json> [buf curl flags...]
	local proc=$1 data=$2
	shift 2
	"$buf" curl --schema "$root/remote/proto" --http2-prior-knowledge "$@" --data "$data" "$url/turnbox.v1.SandboxService/$proc"
}

curl -fsS "$url/healthz" | grep -qx ok
call CreateSession '{"config":{"sessionId":"smoke"}}' -H "Authorization: Bearer $token" | grep -q '"SESSION_STATE_ACTIVE"'
# The tool's arguments as a JSON object, its output as text: no base64.
out=$(call ExecuteTool '{"sessionId":"smoke","request":{"toolCallId":"c1","toolName":"bash","arguments":{"command":"echo smoke-ok"}}}' -H "Authorization: Bearer $token")
printf '%s' "$out" | grep -q '"output": *"smoke-ok\\n"' || { echo "serve-smoke: ExecuteTool returned: $out" >&2; exit 1; }
if call ListSessions '{}' >"$work/unauth" 2>&1; then
	echo "serve-smoke: a call without a token succeeded" >&2
	exit 1
fi
grep -q unauthenticated "$work/unauth"
grep -q "$token" "$work/log" && { echo "serve-smoke: the token appears in the server log" >&2; exit 1; }

kill -TERM "$pid"
wait "$pid"
echo "serve-smoke: ok"
