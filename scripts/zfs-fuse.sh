#!/usr/bin/env bash
# zfs-fuse is one daemon per machine. `go test ./...` runs several test
# binaries at once, and a binary that started the daemon would stop it
# under the others; so the test run owns it: `start` before the tests,
# `stop` after. Test fixtures (zfs/zfstest) use a running daemon and leave
# it alone. Kernel ZFS (/dev/zfs) needs no daemon: both are then no-ops.
set -euo pipefail
PIDFILE=${ZFS_FUSE_PIDFILE:-/run/turnbox-zfs-fuse.pid}
case "${1:-}" in
start)
  [ -e /dev/zfs ] && exit 0
  command -v zfs-fuse >/dev/null || { echo "zfs-fuse not installed" >&2; exit 0; }
  if zpool list -H >/dev/null 2>&1; then exit 0; fi
  zfs-fuse --pidfile "$PIDFILE"
  for _ in $(seq 100); do
    zpool list -H >/dev/null 2>&1 && exit 0
    sleep 0.1
  done
  echo "zfs-fuse did not come up" >&2; exit 1
  ;;
stop)
  [ -f "$PIDFILE" ] || exit 0
  pid=$(cat "$PIDFILE")
  # Pools left by a crashed test would keep the daemon busy: export them.
  for p in $(zpool list -H -o name 2>/dev/null | grep '^tbt' || true); do zpool destroy -f "$p" || true; done
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$PIDFILE"
  ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
