#!/usr/bin/env bash
# Regenerates clients/typescript/src/gen from remote/proto with the repo's
# pinned buf (remote/scripts/gen.sh installs it into $TURNBOX_TOOLS) and the
# pinned @bufbuild/protoc-gen-es from package-lock.json (npm ci).
#
#   clients/typescript/scripts/generate.sh          regenerate
#   clients/typescript/scripts/generate.sh --check  fail if src/gen changed
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
root=$(cd "$here/../.." && pwd)
tools=${TURNBOX_TOOLS:-/var/cache/turnbox/bin}
[[ -x $tools/buf ]] || bash "$root/remote/scripts/gen.sh" >/dev/null
if [[ ! -x $here/node_modules/.bin/protoc-gen-es ]]; then
	export npm_config_cache=${npm_config_cache:-/var/cache/turnbox/npm}
	(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
cd "$here"
"$tools/buf" generate "$root/remote/proto" --template buf.gen.yaml

if [[ "${1:-}" == "--check" ]]; then
	if [[ -n "$(git -C "$root" status --porcelain -- clients/typescript/src/gen)" ]]; then
		echo "generate.sh: clients/typescript/src/gen is stale; run it and commit the result" >&2
		git -C "$root" status --porcelain -- clients/typescript/src/gen >&2
		exit 1
	fi
fi
