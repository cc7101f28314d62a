#!/bin/sh
# fetch-libzfs-dev.sh: download the OpenZFS libzfs_core development files
# (headers, .so links, pkg-config files) from Debian bookworm-backports
# contrib WITHOUT touching the system's apt sources, and unpack them into a
# cache directory. Idempotent: a second run with the same version is a no-op.
#
#   TURNBOX_LIBZFS_DIR   cache directory (default /var/cache/turnbox/libzfs)
#   TURNBOX_LIBZFS_VER   package version (default 2.3.2-2~bpo12+2)
#   DEBIAN_MIRROR        mirror URL (default http://deb.debian.org/debian)
#
# On success it prints the environment a cgo build needs, e.g.:
#   eval "$(zfs/scripts/fetch-libzfs-dev.sh)"
#   go vet -tags libzfs_core ./zfs/...
#   go test -c -o /dev/null -tags libzfs_core ./zfs
# The packages are unpacked with dpkg -x only: nothing is installed, no
# maintainer scripts run. The libraries link here but cannot run without
# /dev/zfs (kernel OpenZFS).
set -eu

DIR=${TURNBOX_LIBZFS_DIR:-/var/cache/turnbox/libzfs}
VER=${TURNBOX_LIBZFS_VER:-2.3.2-2~bpo12+2}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
PKGS="libzfslinux-dev libzfs6linux libnvpair3linux libuutil3linux libzpool6linux libzfsbootenv1linux"
ROOT="$DIR/$VER/root"
STAMP="$DIR/$VER/.done"

env_out() {
	lib="$ROOT/lib/x86_64-linux-gnu"
	echo "export PKG_CONFIG_PATH='$ROOT/usr/lib/x86_64-linux-gnu/pkgconfig'"
	echo "export PKG_CONFIG_SYSROOT_DIR='$ROOT'"
	echo "export CGO_LDFLAGS='-L$lib -Wl,-rpath-link,$lib'"
}

if [ -f "$STAMP" ]; then
	env_out
	exit 0
fi

for t in apt-get dpkg; do
	command -v "$t" >/dev/null || { echo "fetch-libzfs-dev: $t not found" >&2; exit 1; }
done
[ -r "$KEYRING" ] || { echo "fetch-libzfs-dev: $KEYRING missing (apt-get install debian-archive-keyring)" >&2; exit 1; }

APTDIR="$DIR/apt"
mkdir -p "$APTDIR/lists/partial" "$APTDIR/archives/partial" "$DIR/$VER/debs"
cat >"$APTDIR/sources.list" <<SRC
deb [signed-by=$KEYRING] $MIRROR bookworm main contrib
deb [signed-by=$KEYRING] $MIRROR bookworm-backports main contrib
SRC
cat >"$APTDIR/apt.conf" <<CONF
Dir::Etc::sourcelist "$APTDIR/sources.list";
Dir::Etc::sourceparts "$APTDIR/no-such-dir";
Dir::State::Lists "$APTDIR/lists";
Dir::Cache::Archives "$APTDIR/archives";
Dir::State::status "$APTDIR/status";
CONF
: >"$APTDIR/status"
export APT_CONFIG="$APTDIR/apt.conf"

apt-get -q update >&2
cd "$DIR/$VER/debs"
specs=""
for p in $PKGS; do specs="$specs $p=$VER"; done
# shellcheck disable=SC2086
apt-get -q download $specs >&2
rm -rf "$ROOT"
mkdir -p "$ROOT"
for f in ./*.deb; do dpkg -x "$f" "$ROOT"; done

# The .pc files say libdir=/lib/x86_64-linux-gnu and includedir=/usr/include;
# PKG_CONFIG_SYSROOT_DIR prefixes both with $ROOT. The dev package's .so
# links are absolute (/lib/...): recreate them, relative, beside the real
# libraries so -L$ROOT/lib/x86_64-linux-gnu finds them.
lib="$ROOT/lib/x86_64-linux-gnu"
for l in "$ROOT"/usr/lib/x86_64-linux-gnu/*.so; do
	t=$(readlink "$l")
	ln -sfn "$(basename "$t")" "$lib/$(basename "$l")"
done
[ -f "$ROOT/usr/include/libzfs/libzfs_core.h" ] || { echo "fetch-libzfs-dev: libzfs_core.h missing after unpack" >&2; exit 1; }
[ -e "$lib/libzfs_core.so" ] || { echo "fetch-libzfs-dev: libzfs_core.so missing after unpack" >&2; exit 1; }
touch "$STAMP"
env_out
