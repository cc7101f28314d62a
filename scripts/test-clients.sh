#!/usr/bin/env bash
# The other-language clients against a real `turnbox serve` on loopback:
# the TypeScript client (clients/typescript: its generated code must be
# current, it must compile, its node:test suite and its README's example
# must pass) and the standard-library Python example
# (clients/python/example.py). Runtime none by default for speed
# (TURNBOX_CLIENTS_RUNTIME=gvisor to change). Needs Node.js >= 20, npm
# and python3; caches npm downloads in /var/cache/turnbox/npm.
#
#   scripts/test-clients.sh [path/to/turnbox]   (default bin/turnbox)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
turnbox=${1:-$root/bin/turnbox}
runtime=${TURNBOX_CLIENTS_RUNTIME:-none}
ts=$root/clients/typescript
work=$(mktemp -d)
pid=
cleanup() {
	[[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf 'test-clients: [%3ds] %s\n' "$SECONDS" "$*"; }
for tool in node npm python3; do
	command -v "$tool" >/dev/null || { echo "test-clients: $tool is required" >&2; exit 1; }
done
[[ -x $turnbox ]] || { echo "test-clients: no turnbox binary at $turnbox (make build)" >&2; exit 1; }

# docs_curl FILE runs the `curl` command lines of FILE (backslash
# continuations joined) against this server: its address and token in
# place of the docs' http://127.0.0.1:7420 and my-secret-token.
docs_curl() {
	awk '/\\$/ { sub(/\\$/, ""); buf = buf $0; next } { print buf $0; buf = "" }' "$1" |
		grep '^curl ' | sed -e "s|http://127.0.0.1:7420|$url|g" -e "s|my-secret-token|$token|g" |
		while IFS= read -r line; do bash -c "$line --fail-with-body" || exit 1; echo; done
}

export npm_config_cache=${npm_config_cache:-/var/cache/turnbox/npm}
step "npm ci (clients/typescript)"
(cd "$ts" && npm ci --no-audit --no-fund --loglevel=error)
step "checking that src/gen matches remote/proto"
bash "$ts/scripts/generate.sh" --check
step "compiling with tsc"
(cd "$ts" && rm -rf dist && npx --no-install tsc -p tsconfig.json)

token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$token" >"$work/tokens"
"$turnbox" --state-dir "$work/state" --runtime "$runtime" serve --listen 127.0.0.1:0 --token-file "$work/tokens" 2>"$work/log" &
pid=$!
for _ in $(seq 300); do grep -q 'serving http' "$work/log" && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$work/log" | head -1 || true)
if [[ -z $url ]]; then
	echo "test-clients: the server did not start:" >&2
	cat "$work/log" >&2
	exit 1
fi
step "turnbox serve ($runtime) at $url"
export TURNBOX_URL=$url TURNBOX_TOKEN=$token

status=0
step "TypeScript client tests (node --test)"
(cd "$ts" && node --test --test-reporter=spec dist/test/) || status=1
step "TypeScript example (clients/typescript/README.md)"
(cd "$ts" && node dist/examples/quickstart.js) || status=1
step "Python example (standard library)"
python3 "$root/clients/python/example.py" || status=1
step "curl lines of docs/getting-started.md"
docs_curl "$root/docs/getting-started.md" >"$work/curl.out" || status=1
grep -q '"SESSION_STATE_ACTIVE"' "$work/curl.out" && grep -q '"turn" *: *"1"' "$work/curl.out" &&
	grep -q '"output" *: *"hello\\n"' "$work/curl.out" ||
	{ echo "test-clients: the docs' curl calls answered:" >&2; cat "$work/curl.out" >&2; status=1; }
step "the CLI through the server (docs/getting-started.md)"
# The docs' `turnbox session ...` lines with TURNBOX_SERVER set, on an
# empty state directory of its own: they must work through the server.
grep -E '^turnbox session ' "$root/docs/getting-started.md" | sed -n '/--id cli1/,$p' |
	while IFS= read -r line; do
		TURNBOX_SERVER=$url TURNBOX_TOKEN=$token TURNBOX_STATE_DIR=$work/cli-state bash -c "\"$turnbox\" ${line#turnbox }" || exit 1
	done >"$work/cli.out" 2>&1 || status=1
grep -q 'hello from the server' "$work/cli.out" && grep -q 'cli1' "$work/cli.out" && [[ ! -e $work/cli-state/ledger.db ]] ||
	{ echo "test-clients: the CLI through the server printed:" >&2; cat "$work/cli.out" >&2; status=1; }
if grep -q "$token" "$work/log"; then
	echo "test-clients: the token appears in the server log" >&2
	status=1
fi
kill -TERM "$pid"
if ! wait "$pid"; then
	echo "test-clients: the server did not exit cleanly" >&2
	status=1
fi
pid=
if [[ $status != 0 ]]; then
	echo "test-clients: FAILED; server log:" >&2
	tail -80 "$work/log" >&2
fi
exit $status
