#!/usr/bin/env bash
# E2B conformance: the unmodified e2b SDK from npm, at two pinned versions
# (clients/e2b-conformance/package.json: 2.51.0 and 2.45.0, whose REST
# paths differ), drives a real `turnbox serve --e2b` on loopback with
# gVisor (runc or none when TURNBOX_E2B_RUNTIME says so). No mock on
# either side. Needs Node.js >= 20.18.1 and npm; caches npm downloads in
# /var/cache/turnbox/npm.
#
#   scripts/test-e2b.sh [path/to/turnbox]   (default bin/turnbox)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
turnbox=${1:-$root/bin/turnbox}
runtime=${TURNBOX_E2B_RUNTIME:-gvisor}
client=$root/clients/e2b-conformance
work=$(mktemp -d)
pid=
cleanup() {
	[[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

command -v node >/dev/null || { echo "test-e2b: Node.js is required (>= 20.18.1)" >&2; exit 1; }
export npm_config_cache=${npm_config_cache:-/var/cache/turnbox/npm}
(cd "$client" && npm ci --no-audit --no-fund --loglevel=error)

key=e2b_$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
TURNBOX_E2B_API_KEY=$key "$turnbox" --state-dir "$work/state" --runtime "$runtime" --pool "${TURNBOX_E2B_POOL:-1}" \
	serve --listen 127.0.0.1:0 --e2b 2>"$work/log" &
pid=$!
for _ in $(seq 600); do grep -q 'serving http' "$work/log" && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$work/log" | head -1 || true)
if [[ -z $url ]]; then
	echo "test-e2b: the server did not start:" >&2
	cat "$work/log" >&2
	exit 1
fi
echo "test-e2b: turnbox serve --e2b ($runtime) at $url"
export E2B_API_URL=$url E2B_SANDBOX_URL=$url E2B_API_KEY=$key
status=0
for sdk in e2b-2.51 e2b-2.45; do
	(cd "$client" && node conformance.mjs "$sdk") || status=1
done
if [[ -n ${TURNBOX_E2B_BENCH:-} ]]; then
	(cd "$client" && node bench.mjs e2b-2.51) || status=1
fi
if grep -q "$key" "$work/log"; then
	echo "test-e2b: the API key appears in the server log" >&2
	status=1
fi
kill -TERM "$pid"
if ! wait "$pid"; then
	echo "test-e2b: the server did not exit cleanly; its log:" >&2
	tail -50 "$work/log" >&2
	status=1
fi
pid=
[[ $status == 0 ]] || { echo "test-e2b: FAILED; server log:" >&2; tail -80 "$work/log" >&2; }
exit $status
