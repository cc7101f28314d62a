#!/usr/bin/env bash
# Installs everything turnbox's tests and benchmarks need on Debian 12, as
# root: apt packages, a pinned runsc (built with CGO_ENABLED=0: a cgo build
# is dynamically linked and fails at start), staticcheck, and the OpenZFS
# development headers for the libzfs_core driver's compile check. Idempotent;
# built tools are cached under $TURNBOX_CACHE (default /var/cache/turnbox)
# so a later run on the same machine skips the builds.
set -euo pipefail

RUNSC_VERSION=v0.0.0-20260905035102-160fafc42237
STATICCHECK_VERSION=v0.8.2
CACHE=${TURNBOX_CACHE:-/var/cache/turnbox}
APT_PACKAGES=(
  gcc libc6-dev linux-libc-dev pkg-config libseccomp-dev
  btrfs-progs zfs-fuse fuse runc busybox-static bash-static xfsprogs e2fsprogs util-linux
  iproute2 procps psmisc
)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'install-deps: FAILED: %s\n' "$*" >&2; exit 1; }
# step NAME WHAT...: announce a step a person waits for; done_step reports
# how long it took. The whole run's time is reported at the end.
STARTED=$SECONDS
step() { STEP=$1; STEP_AT=$SECONDS; shift; log "$STEP: $*"; }
done_step() { log "$STEP: done in $((SECONDS - STEP_AT))s"; }

[ "$(id -u)" = 0 ] || die "run as root (apt-get, runsc install)"
command -v go >/dev/null || die "Go 1.26 is required on PATH (see README)"
mkdir -p "$CACHE/bin"
export DEBIAN_FRONTEND=noninteractive

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
retry() { # a mirror hiccup on a fresh machine should not fail CI
  local i
  for i in 1 2 3; do "$@" && return 0; log "retrying ($i): $*"; sleep $((i * 5)); done
  return 1
}
if [ ${#missing[@]} -gt 0 ]; then
  step apt-get "installing ${#missing[@]} packages: ${missing[*]}"
  retry apt-get update -qq || die "apt-get update"
  retry apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]}"
  done_step
else
  log "apt packages: all ${#APT_PACKAGES[@]} installed already"
fi
# Debian starts the zfs-fuse service when the package is installed; the test
# run starts its own daemon (scripts/zfs-fuse.sh). Stop it only then, never
# a daemon someone started on purpose.
case " ${missing[*]} " in
*" zfs-fuse "*)
  service zfs-fuse stop >/dev/null 2>&1 || true
  pkill -x zfs-fuse 2>/dev/null || true
  ;;
esac

gobuild() { # name module@version what
  local name=$1 mod=$2 what=$3 stamp="$CACHE/bin/$1.version"
  if [ -x "$CACHE/bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$mod" ]; then
    log "$name: built already (cached in $CACHE/bin)"
    return
  fi
  step "$name" "building $what from source: go install $mod (the go: downloading lines are its modules)"
  retry env CGO_ENABLED=0 GOBIN="$CACHE/bin" GOFLAGS=-mod=mod go install "$mod" || die "go install $mod"
  echo "$mod" > "$stamp"
  done_step
}
gobuild runsc "gvisor.dev/gvisor/runsc@$RUNSC_VERSION" "gVisor's sandbox runtime (the longest step on a fresh machine: minutes)"
gobuild staticcheck "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION" "the Go linter make lint runs"
install -m 0755 "$CACHE/bin/runsc" /usr/local/bin/runsc
install -m 0755 "$CACHE/bin/staticcheck" /usr/local/bin/staticcheck

here=$(cd "$(dirname "$0")/.." && pwd)
if [ -x "$here/zfs/scripts/fetch-libzfs-dev.sh" ] || [ -f "$here/zfs/scripts/fetch-libzfs-dev.sh" ]; then
  step libzfs-dev "fetching the OpenZFS development headers (for the libzfs_core driver's compile check)"
  bash "$here/zfs/scripts/fetch-libzfs-dev.sh" >/dev/null || die "fetching libzfs development headers"
  done_step
fi
# The e2b conformance run (scripts/test-e2b.sh) uses the machine's Node.js
# and npm with the SDK from the npm registry.
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=18)?0:1)' 2>/dev/null ||
  die "Node.js >= 20.18.1 with npm is required for the e2b conformance run (test-e2b)"
log "dependencies ready in $((SECONDS - STARTED))s"
