#!/usr/bin/env bash
# Regenerates remote/gen from remote/proto with pinned tools, byte for byte.
# Installs buf, protoc-gen-go and protoc-gen-connect-go into $TURNBOX_TOOLS
# (default /var/cache/turnbox/bin) when missing or of another version.
# Needs only the Go module proxy: plugins are local, no BSR.
#
#   remote/scripts/gen.sh          regenerate
#   remote/scripts/gen.sh --check  regenerate and fail if remote/gen changed
set -euo pipefail

BUF_VERSION=v1.75.0
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_CONNECT_GO_VERSION=v1.19.1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools=${TURNBOX_TOOLS:-/var/cache/turnbox/bin}
mkdir -p "$tools"

# install <binary> <module path>@<version> <version>: go install unless the
# binary is there and reports that version (recorded in a stamp file).
install() {
	local bin=$1 pkg=$2 version=$3 stamp="$tools/.$1.version"
	if [[ -x "$tools/$bin" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
		return
	fi
	echo "gen.sh: installing $pkg@$version into $tools" >&2
	GOBIN="$tools" go install "$pkg@$version"
	echo "$version" >"$stamp"
}

install protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
install protoc-gen-connect-go connectrpc.com/connect/cmd/protoc-gen-connect-go "$PROTOC_GEN_CONNECT_GO_VERSION"
install buf github.com/bufbuild/buf/cmd/buf "$BUF_VERSION"

export PATH="$tools:$PATH"
cd "$here"
buf lint
buf generate

if [[ "${1:-}" == "--check" ]]; then
	cd "$here/.."
	if [[ -n "$(git status --porcelain -- remote/gen)" ]]; then
		echo "gen.sh: remote/gen is stale; run make generate and commit it" >&2
		git status --porcelain -- remote/gen >&2
		exit 1
	fi
fi
