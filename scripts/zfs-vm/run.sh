#!/usr/bin/env bash
# run.sh: run turnbox's zfs tests against real kernel OpenZFS in a qemu VM.
#
# The build machines' kernel cannot load modules, so this script:
#   1. fetches a Debian kernel and OpenZFS (zfs-dkms, zfsutils-linux) from
#      bookworm-backports through a private apt config (the system's apt
#      sources are never touched), unpacked with apt-get download + dpkg -x;
#   2. builds spl.ko and zfs.ko for that kernel, once: they are cached under
#      $TURNBOX_ZFS_VM_CACHE keyed by kernel and ZFS version;
#   3. builds the test binaries of the zfs and embedded packages (cgo,
#      -tags libzfs_core: both drivers);
#   4. boots the kernel under qemu (TCG) with a cached initramfs (busybox,
#      the modules, zfs/zpool, init); the test binaries and the job come
#      through a 9p share, and so do the outputs and exit statuses;
#   5. optionally first boots a crash-write VM that is powered off hard
#      mid-loop; then one main boot runs, as named parts, the crash
#      verify, the zfs suites (both drivers), embedded's envtest on zfs
#      sessions (both drivers) and optionally the benchmarks:
#      BenchmarkDrivers (turned into JSON) and `turnbox bench --backends
#      zfs` through each zfs driver (its report directories copied back).
#      The script exits non-zero naming the failed parts.
#
# Run as root on Debian 12. Environment:
#   TURNBOX_ZFS_VM_CACHE    cache dir (default /var/cache/turnbox/zfs-vm)
#   TURNBOX_ZFS_VM_KERNEL   kernel ABI name (default 6.12.95+deb12)
#   TURNBOX_ZFS_VM_ZFS      OpenZFS package version (default 2.3.2-2~bpo12+2)
#   TURNBOX_ZFS_VM_TIMEOUT  seconds before a VM boot is killed (default 1500)
#   TURNBOX_ZFS_VM_TEST_TIMEOUT  -test.timeout of each test binary (600)
#   TURNBOX_ZFS_VM_PARTS    main-boot parts (default "zfs embedded"; "shell"
#                           runs the busybox sh script TURNBOX_ZFS_VM_SHELL,
#                           for experiments: zfs, zpool and /tests/*.test are there)
#   TURNBOX_ZFS_VM_RUN      -test.run of the zfs part (default: all)
#   TURNBOX_ZFS_VM_SKIP     -test.skip of the zfs part (default: none)
#   TURNBOX_ZFS_VM_EMBEDDED_RUN  -test.run of the embedded part (default:
#                           envtest's storage-facing cases, see below)
#   TURNBOX_ZFS_VM_ENVTEST_CHECKS  envtest random model sequences (2)
#   TURNBOX_ZFS_VM_APPEND   extra guest kernel command-line arguments
#   TURNBOX_ZFS_VM_SMP      guest vCPUs (default 2)
#   TURNBOX_ZFS_VM_TXG_TIMEOUT  zfs_txg_timeout in the VM (default: 5 s)
#   TURNBOX_ZFS_VM_CRASH    0 to skip the crash-consistency check (default 1)
#   TURNBOX_ZFS_VM_CRASH_AFTER  seconds of snapshots before the power-off (12)
#   TURNBOX_ZFS_VM_CRASH_CHECKS snapshots whose content is checked (12)
#   TURNBOX_ZFS_VM_BENCH    1 to also run the benchmark parts (never
#                           result-cached): bench (BenchmarkDrivers, both
#                           drivers) and bench-cli (turnbox bench on zfs ×
#                           none through each zfs driver, raw baselines
#                           included; the CLI is built only then)
#   TURNBOX_ZFS_VM_BENCH_PARTS  which of them (default "bench bench-cli")
#   TURNBOX_ZFS_VM_BENCHTIME, TURNBOX_ZFS_VM_BENCHCOUNT  bench's (20x, 3)
#   TURNBOX_ZFS_VM_BENCH_JSON  where bench's JSON goes ($CACHE/bench/...)
#   TURNBOX_ZFS_VM_BENCH_DRIVERS  bench-cli's zfs drivers, in order
#                           (default "command libzfs_core")
#   TURNBOX_ZFS_VM_BENCH_N, TURNBOX_ZFS_VM_BENCH_EXEC_N  bench-cli's
#                           turnbox bench --n and --exec-n (10, 20)
#   TURNBOX_ZFS_VM_BENCH_FILES, TURNBOX_ZFS_VM_BENCH_FILE_SIZE  its
#                           --files and --file-size (200, 10240)
#   TURNBOX_ZFS_VM_BENCH_CLI_OUT  where bench-cli's report directories go
#                           (default $CACHE/bench/cli-<UTC time>/<driver>/)
#   TURNBOX_ZFS_VM_BENCH_TIMEOUT  seconds before one driver's bench-cli run
#                           is killed (900; the next driver still runs)
#   TURNBOX_ZFS_VM_COUNT    1 to rerun parts that passed before with the same
#                           binaries and settings (default: cached, see below)
#   TURNBOX_ZFS_VM_KEEP     1 to keep the run directory on success
#   TURNBOX_ZFS_VM_JOBS     make -j for the module build (default 3)
#   DEBIAN_MIRROR           (default http://deb.debian.org/debian)
set -euo pipefail

STEP=init
die() { echo "zfs-vm: FAILED at step '$STEP': $*" >&2; exit 1; }
trap 'rc=$?; [ $rc -eq 0 ] || echo "zfs-vm: FAILED at step '"'"'$STEP'"'"' (exit $rc, line $LINENO)" >&2' EXIT
step() { STEP=$1; echo "zfs-vm: == $1 ($(( $(date +%s) - T0 ))s)" >&2; }
T0=$(date +%s)

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${TURNBOX_ZFS_VM_CACHE:-/var/cache/turnbox/zfs-vm}
KABI_BASE=${TURNBOX_ZFS_VM_KERNEL:-6.12.95+deb12}
ZVER=${TURNBOX_ZFS_VM_ZFS:-2.3.2-2~bpo12+2}
TIMEOUT=${TURNBOX_ZFS_VM_TIMEOUT:-1500}
JOBS=${TURNBOX_ZFS_VM_JOBS:-3}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
ARCH=x86_64-linux-gnu

[ "$(id -u)" = 0 ] || die "must run as root"
[ "$(uname -m)" = x86_64 ] || die "amd64 only"
mkdir -p "$CACHE" || die "cannot create $CACHE"
# One run at a time per cache: the fetch and module build are shared.
exec 9>"$CACHE/.lock"
flock -w 1800 9 || die "another zfs-vm run holds $CACHE/.lock"

# ---------------------------------------------------------------- host tools
step "host-packages"
HOST_PKGS="build-essential dwarves libelf-dev bc flex bison libssl-dev kmod
  xz-utils cpio fdisk busybox-static qemu-system-x86 qemu-utils
  debian-archive-keyring pkg-config gcc libc6-dev libtirpc3 libblkid1
  libuuid1 libudev1 libssl3 zlib1g util-linux"
# One dpkg-query for all of them (one per package took seconds under load).
declare -A installed=()
while read -r p st; do
	if [ "$st" = "install ok installed" ]; then installed[${p%%:*}]=1; fi
done < <(dpkg-query -W -f='${Package} ${Status}\n' $HOST_PKGS 2>/dev/null || true)
missing=()
for p in $HOST_PKGS; do
	[ -n "${installed[$p]:-}" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "zfs-vm: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	ok=0
	for i in 1 2 3; do
		if apt-get -q update >&2 && apt-get -q install -y --no-install-recommends "${missing[@]}" >&2; then ok=1; break; fi
		sleep 5
	done
	[ $ok = 1 ] || die "apt-get install ${missing[*]} failed"
fi
for t in apt-get dpkg-deb qemu-system-x86_64 cpio sfdisk pahole xz depmod flock timeout; do
	command -v "$t" >/dev/null || die "$t not found after installing host packages"
done
[ -x /bin/busybox ] || die "/bin/busybox missing (busybox-static)"
command -v go >/dev/null || die "go not on PATH"

# ---------------------------------------------------------- private apt config
APTDIR="$CACHE/apt"
aptcfg() {
	mkdir -p "$APTDIR/lists/partial" "$APTDIR/archives/partial"
	cat >"$APTDIR/sources.list" <<SRC
deb [signed-by=$KEYRING] $MIRROR bookworm main contrib
deb [signed-by=$KEYRING] $MIRROR bookworm-updates main contrib
deb [signed-by=$KEYRING] $MIRROR bookworm-backports main contrib
deb [signed-by=$KEYRING] http://security.debian.org/debian-security bookworm-security main contrib
SRC
	cat >"$APTDIR/apt.conf" <<CONF
Dir::Etc::sourcelist "$APTDIR/sources.list";
Dir::Etc::sourceparts "$APTDIR/no-such-dir";
Dir::State::Lists "$APTDIR/lists";
Dir::Cache::Archives "$APTDIR/archives";
Dir::State::status "$APTDIR/status";
APT::Get::AllowUnauthenticated "false";
APT::Sandbox::User "root";
CONF
	: >"$APTDIR/status"
}
APT_UPDATED=0
papt_update() {
	[ $APT_UPDATED = 1 ] && return 0
	aptcfg
	local i
	for i in 1 2 3; do
		if APT_CONFIG="$APTDIR/apt.conf" apt-get -q update >&2; then APT_UPDATED=1; return 0; fi
		sleep 5
	done
	die "private apt-get update failed"
}
papt() { APT_CONFIG="$APTDIR/apt.conf" "$@"; }
# candidate PKG: the version the private sources offer, or empty.
candidate() { papt apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}' | grep -v '(none)' || true; }
# fetch DEST PKG=VER...: download and unpack into DEST (once).
fetch() {
	local dest=$1; shift
	[ -f "$dest/.done" ] && return 0
	papt_update
	rm -rf "$dest" && mkdir -p "$dest/debs" "$dest/root"
	local i ok=0
	for i in 1 2 3; do
		if (cd "$dest/debs" && papt apt-get -q download "$@" >&2); then ok=1; break; fi
		sleep 5
	done
	[ $ok = 1 ] || die "apt-get download $* failed"
	local f
	for f in "$dest"/debs/*.deb; do dpkg-deb -x "$f" "$dest/root" || die "dpkg -x $f"; done
	touch "$dest/.done"
}

# --------------------------------------------------------- kernel: pick version
step "kernel-version"
KABI=$KABI_BASE
if [ -f "$CACHE/kernel-$KABI_BASE.used" ]; then
	KABI=$(cat "$CACHE/kernel-$KABI_BASE.used")
else
	papt_update
	if [ -z "$(candidate "linux-image-$KABI_BASE-amd64")" ]; then
		echo "zfs-vm: linux-image-$KABI_BASE-amd64 is no longer served; looking for another 6.12 kernel" >&2
		KABI=$(papt apt-cache pkgnames linux-image-6.12. 2>/dev/null |
			sed -n 's/^linux-image-\(6\.12\.[0-9]*+deb12\)-amd64$/\1/p' | sort -V | tail -1)
		[ -n "$KABI" ] || die "no linux-image-6.12.*+deb12-amd64 in bookworm(-backports|-security)"
		for p in linux-image-$KABI-amd64 linux-headers-$KABI-amd64 linux-headers-$KABI-common linux-kbuild-$KABI; do
			[ -n "$(candidate "$p")" ] || die "$p not available"
		done
		echo "zfs-vm: USING KERNEL $KABI instead of $KABI_BASE (pinned in $CACHE/kernel-$KABI_BASE.used)" >&2
	fi
	echo "$KABI" >"$CACHE/kernel-$KABI_BASE.used"
fi
KREL=$KABI-amd64
ZUP=${ZVER%%-*}            # upstream version, e.g. 2.3.2
KEY="$KREL-zfs-$ZVER"
KEYDIR="$CACHE/$KEY"
mkdir -p "$KEYDIR"
echo "zfs-vm: kernel $KREL, OpenZFS $ZVER, cache $KEYDIR" >&2

# --------------------------------------------------------------- fetch
step "fetch-kernel"
fetch "$KEYDIR/kernel" "linux-image-$KREL" "linux-headers-$KREL" "linux-headers-$KABI-common" "linux-kbuild-$KABI"
KROOT="$KEYDIR/kernel/root"
VMLINUZ="$KROOT/boot/vmlinuz-$KREL"
[ -f "$VMLINUZ" ] || die "$VMLINUZ missing after unpack"
step "fetch-zfs"
fetch "$KEYDIR/zfs" "zfs-dkms=$ZVER" "zfsutils-linux=$ZVER" "libzfs6linux=$ZVER" \
	"libnvpair3linux=$ZVER" "libuutil3linux=$ZVER" "libzfsbootenv1linux=$ZVER"
ZROOT="$KEYDIR/zfs/root"
[ -x "$ZROOT/sbin/zfs" ] || die "zfs binary missing in zfsutils-linux"

# ------------------------------------------------------- build the modules
MODDIR="$KEYDIR/modules"
if [ -f "$MODDIR/.done" ]; then
	step "modules-cached"
else
	step "modules-build"
	HDR="$KROOT/usr/src/linux-headers-$KREL"
	COM="$KROOT/usr/src/linux-headers-$KABI-common"
	[ -d "$HDR" ] && [ -d "$COM" ] || die "kernel headers missing after unpack"
	# The headers were made for /usr/src and /usr/lib: point absolute paths
	# and symlinks into our unpacked root.
	if [ ! -f "$KEYDIR/kernel/.relocated" ]; then
		while IFS= read -r l; do
			t=$(readlink "$l")
			case $t in /*) ln -sfn "$KROOT$t" "$l" ;; esac
		done < <(find "$KROOT/usr/src" "$KROOT/usr/lib" -type l)
		grep -rlF --include=Makefile /usr/src/linux-headers- "$HDR" | while IFS= read -r f; do
			sed -i "s#\([^/a-zA-Z0-9_.-]\)/usr/src/linux-headers-#\1$KROOT/usr/src/linux-headers-#g" "$f"
		done
		touch "$KEYDIR/kernel/.relocated"
	fi
	SRC="$ZROOT/usr/src/zfs-$ZUP"
	[ -f "$SRC/configure" ] || die "zfs source missing in zfs-dkms ($SRC)"
	B="$KEYDIR/build"
	rm -rf "$B" && cp -a "$SRC" "$B"
	( cd "$B" && ./configure --with-config=kernel --with-linux="$COM" --with-linux-obj="$HDR" >"$B/configure.out" 2>&1 ) || {
		tail -30 "$B/configure.out" >&2; [ -f "$B/build/build.log" ] && tail -30 "$B/build/build.log" >&2
		die "zfs configure failed (log: $B/configure.out)"; }
	step "modules-make"
	( cd "$B" && make -j"$JOBS" >"$B/make.out" 2>&1 ) || { tail -40 "$B/make.out" >&2; die "zfs make failed (log: $B/make.out)"; }
	rm -rf "$MODDIR.tmp" && mkdir -p "$MODDIR.tmp"
	for m in spl zfs; do
		ko=$(find "$B/module" -name "$m.ko" | head -1)
		[ -n "$ko" ] || die "$m.ko not built"
		strip --strip-debug -o "$MODDIR.tmp/$m.ko" "$ko" || die "strip $m.ko"
	done
	touch "$MODDIR.tmp/.done"
	rm -rf "$MODDIR" && mv "$MODDIR.tmp" "$MODDIR"
	rm -rf "$B"
fi
ls -la "$MODDIR" >&2

# ------------------------------------------------------- test binaries
step "go-test-build"
RUN=$(mktemp -d "${TMPDIR:-/tmp}/turnbox-zfs-vm.XXXXXX") || die "mktemp"
# The run directory goes on success; on failure it stays for the logs.
trap 'rc=$?; if [ $rc -eq 0 ] && [ "${TURNBOX_ZFS_VM_KEEP:-}" != 1 ]; then rm -rf "$RUN"; else echo "zfs-vm: run directory kept: $RUN" >&2; fi; [ $rc -eq 0 ] || echo "zfs-vm: FAILED at step '"'"'$STEP'"'"' (exit $rc)" >&2' EXIT
LZFS_ENV=$(bash "$REPO/zfs/scripts/fetch-libzfs-dev.sh" 2>"$RUN/libzfs-dev.log") || { cat "$RUN/libzfs-dev.log" >&2; die "zfs/scripts/fetch-libzfs-dev.sh failed"; }
# Both test binaries with the libzfs_core driver compiled in: the zfs
# package (both drivers' backend suites, the crash check, the driver
# benchmark) and embedded (envtest on zfs sessions through both drivers).
mkdir -p "$RUN/bin"
(
	cd "$REPO"
	eval "$LZFS_ENV"
	export CGO_ENABLED=1
	go test -c -vet=off -tags libzfs_core -o "$RUN/bin/" ./zfs ./embedded
) >"$RUN/go-build.log" 2>&1 || { tail -40 "$RUN/go-build.log" >&2; die "go test -c -tags libzfs_core ./zfs ./embedded"; }
for b in zfs embedded; do [ -x "$RUN/bin/$b.test" ] || die "$b.test was not built"; done
# The benchmark parts. The turnbox CLI (for bench-cli) is built only when
# that part is asked for: nothing else runs it, and its first build with
# cgo and the tag takes a while (its dependencies are many more than the
# test binaries').
BENCH=${TURNBOX_ZFS_VM_BENCH:-0}
BENCH_PARTS=${TURNBOX_ZFS_VM_BENCH_PARTS-bench bench-cli}
BENCH_CLI=0
if [ "$BENCH" = 1 ]; then
	for p in $BENCH_PARTS; do
		case $p in
		bench) ;;
		bench-cli) BENCH_CLI=1 ;;
		*) die "TURNBOX_ZFS_VM_BENCH_PARTS: unknown part '$p' (bench, bench-cli)" ;;
		esac
	done
fi
if [ "$BENCH_CLI" = 1 ]; then
	(
		cd "$REPO"
		eval "$LZFS_ENV"
		export CGO_ENABLED=1
		go build -tags libzfs_core -o "$RUN/bin/turnbox" ./cmd/turnbox
	) >"$RUN/go-build-cli.log" 2>&1 || { tail -40 "$RUN/go-build-cli.log" >&2; die "go build -tags libzfs_core ./cmd/turnbox"; }
	[ -x "$RUN/bin/turnbox" ] || die "the turnbox CLI was not built"
fi

# ------------------------------------------------------- initramfs
# The initramfs holds what does not change between runs (busybox, the
# kernel modules, zfs/zpool and their libraries, init) and is cached in
# $KEYDIR, keyed by the content of all of it; the test binaries travel
# through the 9p share (the job copies them into the VM's RAM first).
step "initramfs"
LIBPATH="$ZROOT/lib/$ARCH:$ZROOT/usr/lib/$ARCH"
# libsof FILE: the shared libraries FILE needs (host paths), or die.
libsof() {
	local out
	out=$(LD_LIBRARY_PATH="$LIBPATH" ldd "$1" 2>&1) || die "ldd $1: $out"
	if grep -q "not found" <<<"$out"; then die "$1: missing libraries: $(grep 'not found' <<<"$out" | tr -s ' \t\n' ' ')"; fi
	awk '/=> \// {print $3} /^\t\/lib64\// {print $1}' <<<"$out"
}
for b in zfs zpool; do [ -x "$ZROOT/sbin/$b" ] || die "$b missing in zfsutils-linux"; done
ZLIBS=$( { libsof "$ZROOT/sbin/zfs"; libsof "$ZROOT/sbin/zpool"; } | sort -u)
IRKEY=$(cat "$HERE/init" "$HERE/run.sh" /bin/busybox "$ZROOT/sbin/zfs" "$ZROOT/sbin/zpool" "$MODDIR/spl.ko" "$MODDIR/zfs.ko" $ZLIBS | sha256sum | cut -c1-16)
INITRD="$KEYDIR/initrd-$IRKEY.cpio"
if [ -f "$INITRD" ]; then
	echo "zfs-vm: cached initramfs $INITRD" >&2
else
	IR="$RUN/initramfs"
	mkdir -p "$IR"/{bin,sbin,usr/bin,usr/sbin,lib/$ARCH,lib64,lib/modules,proc,sys,dev,tmp,run,share,etc/zfs,root,var/tmp,mnt,tests}
	cp /bin/busybox "$IR/bin/busybox"
	ln -sf /proc/self/mounts "$IR/etc/mtab"
	echo "root:x:0:0:root:/root:/bin/sh" >"$IR/etc/passwd"
	echo "root:x:0:" >"$IR/etc/group"
	# Kernel modules: what we need from the image and their dependencies
	# (modinfo, dependencies first; the package has no modules.dep, that
	# is its postinst's job), decompressed for busybox insmod; then spl
	# and zfs.
	KMOD="$KROOT/lib/modules/$KREL"
	[ -d "$KMOD/kernel" ] || die "$KMOD missing"
	declare -A kofile=() seen=()
	while IFS= read -r f; do
		b=${f##*/}; b=${b%.xz}; kofile[${b%.ko}]=$f
	done < <(find "$KMOD/kernel" -name '*.ko' -o -name '*.ko.xz')
	order=()
	visit() { # visit NAME
		local m=$1 f d
		[ -n "${seen[$m]:-}" ] && return 0
		seen[$m]=1
		f=${kofile[$m]:-${kofile[${m//_/-}]:-}}
		if [ -z "$f" ]; then
			grep -qE "/$m\.ko$" "$KMOD/modules.builtin" && return 0
			die "module $m not found for $KREL"
		fi
		for d in $(modinfo -F depends "$f" | tr , ' '); do visit "$d"; done
		order+=("${f#$KMOD/}")
	}
	zdeps=$(modinfo -F depends "$MODDIR/spl.ko" "$MODDIR/zfs.ko" | tr , '\n' | grep -vxE 'spl|zfs|' || true)
	for m in virtio_blk 9pnet_virtio 9p $zdeps; do visit "$m"; done
	: >"$IR/lib/modules/order"
	for rel in "${order[@]}"; do
		b=$(basename "$rel"); b=${b%.xz}
		case $rel in
		*.xz) xz -dc "$KMOD/$rel" >"$IR/lib/modules/$b" || die "xz -d $rel" ;;
		*) cp "$KMOD/$rel" "$IR/lib/modules/$b" ;;
		esac
		echo "$b" >>"$IR/lib/modules/order"
	done
	for m in spl zfs; do cp "$MODDIR/$m.ko" "$IR/lib/modules/"; echo "$m.ko" >>"$IR/lib/modules/order"; done
	for b in zfs zpool; do cp "$ZROOT/sbin/$b" "$IR/sbin/$b"; done
	for lib in $ZLIBS; do
		case $lib in
		/lib64/*) cp -L "$lib" "$IR/lib64/" ;;
		*) cp -L "$lib" "$IR/lib/$ARCH/$(basename "$lib")" ;;
		esac
	done
	cp "$HERE/init" "$IR/init" && chmod +x "$IR/init"
	( cd "$IR" && find . -print0 | cpio --null -o -H newc --quiet >"$INITRD.tmp" ) || die "cpio"
	mv "$INITRD.tmp" "$INITRD"
	rm -rf "$IR"
	# Older initramfs images of this kernel+ZFS are stale now.
	find "$KEYDIR" -maxdepth 1 -name 'initrd-*.cpio' ! -name "initrd-$IRKEY.cpio" -delete
	echo "zfs-vm: initramfs $(du -h "$INITRD" | cut -f1), cached as $INITRD" >&2
fi
# Test binaries, and the libraries they need beyond the initramfs's, go
# through the share.
SHARE="$RUN/share"
mkdir -p "$SHARE/tests" "$SHARE/lib"
cp "$RUN/bin/"*.test "$SHARE/tests/"
# The CLI goes in its own directory: only the bench-cli part copies it
# into RAM (31 MB), the other jobs do not.
if [ "$BENCH_CLI" = 1 ]; then
	mkdir -p "$SHARE/cli" && cp "$RUN/bin/turnbox" "$SHARE/cli/"
fi
for t in "$SHARE"/tests/*.test "$SHARE"/cli/turnbox; do
	[ -e "$t" ] || continue
	for lib in $(libsof "$t"); do
		grep -qxF "$lib" <<<"$ZLIBS" || cp -L "$lib" "$SHARE/lib/"
	done
done
# ------------------------------------------------------- boot
DISK="$RUN/disk.img"
# boot NAME JOBSCRIPT: boot the VM once with job script JOBSCRIPT in the
# share; the console goes to $RUN/NAME.console. A VM still running after
# $TIMEOUT seconds is killed and reported with what its job had written.
# A guest kernel panic (seen once: an int3 Oops in sched_clock_cpu while
# the clocksource watchdog patched code under multi-threaded TCG) is an
# emulator accident, not a test result: the boot is retried once, loudly.
# tsc=reliable keeps the watchdog from flipping the TSC in the first place.
boot() {
	local name=$1 job=$2 try
	for try in 1 2; do
		boot1 "$name" "$job"
		grep -q "Kernel panic" "$RUN/$name.console" || return 0
		echo "zfs-vm: the guest kernel PANICKED during boot '$name' (attempt $try):" >&2
		grep -B2 -A3 -m1 "Oops\|Kernel panic" "$RUN/$name.console" >&2 || true
		[ $try = 2 ] && die "guest kernel panicked twice in boot '$name'"
		mv "$RUN/$name.console" "$RUN/$name.panic.console"
		rm -f "$SHARE"/*.status "$SHARE"/*.out "$SHARE/out.txt"
		echo "zfs-vm: retrying boot '$name' once" >&2
	done
}
boot1() {
	local name=$1 job=$2 rc=0 f t0
	step "vm-$name"
	cp "$job" "$SHARE/job.sh"
	rm -f "$SHARE/status"
	t0=$(date +%s)
	timeout --signal=KILL "$TIMEOUT" qemu-system-x86_64 \
		-accel tcg,thread=multi -cpu qemu64 -m 3072 -smp "${TURNBOX_ZFS_VM_SMP:-2}" \
		-nographic -no-reboot -nodefaults -serial stdio \
		-kernel "$VMLINUZ" -initrd "$INITRD" \
		-append "console=ttyS0 quiet panic=-1 loglevel=4 tsc=reliable${TURNBOX_ZFS_VM_APPEND:+ $TURNBOX_ZFS_VM_APPEND}" \
		-drive "file=$DISK,if=virtio,format=raw,cache=unsafe" \
		-virtfs "local,path=$SHARE,mount_tag=share,security_model=none,id=share" \
		</dev/null >"$RUN/$name.console" 2>&1 || rc=$?
	if [ $rc -eq 137 ]; then
		tail -40 "$RUN/$name.console" >&2
		for f in "$SHARE"/*.out "$SHARE/out.txt"; do
			[ -f "$f" ] && { echo "---- partial output ($(basename "$f")):" >&2; tail -60 "$f" >&2; }
		done
		die "VM hung: killed after ${TIMEOUT}s (TURNBOX_ZFS_VM_TIMEOUT)"
	fi
	[ $rc -eq 0 ] || { tail -40 "$RUN/$name.console" >&2; die "qemu exited with $rc"; }
	# Where the boot's time went before the tests (guest uptime).
	local ml ir
	# (A guest that panicked early wrote no out.txt: sed fails, which
	# must not end the script before boot() sees the panic and retries.)
	ml=$(sed -n 's/.*zfs-vm-init: modules loaded at \([0-9.]*\)s.*/\1/p' "$RUN/$name.console" | head -1) || ml=
	ir=$(sed -n 's/^zfs-vm-job: test binaries in RAM at \([0-9.]*\)s.*/\1/p' "$SHARE/out.txt" 2>/dev/null | head -1) || ir=
	echo "zfs-vm: boot '$name': $(( $(date +%s) - t0 ))s in qemu; guest uptime: kernel+modules ${ml:-?}s, test binaries in RAM ${ir:-?}s" >&2
}
newdisk() {
	truncate -s 0 "$DISK" && truncate -s "$1" "$DISK"
	echo 'label: gpt
type=linux' | sfdisk -q "$DISK" >/dev/null || die "sfdisk"
}
newdisk 2G

# Part runner of the job scripts (busybox sh in the VM): part NAME CMD...
# runs CMD with its output in /share/NAME.out and "STATUS SECONDS" in
# /share/NAME.status, so the host can tell which part failed or never
# finished.
# Every job starts by copying the test binaries (and their extra
# libraries) from the share into the VM's RAM.
SETUP="mkdir -p /tests && cp /share/tests/*.test /tests/ && { [ -z \"\$(ls /share/lib)\" ] || cp /share/lib/* /lib/$ARCH/; } || { echo 'zfs-vm-job: copying the test binaries failed'; exit 97; }
echo \"zfs-vm-job: test binaries in RAM at \$(cut -d' ' -f1 /proc/uptime)s of uptime\""
PARTFN='part() {
	name=$1; shift
	s=$(date +%s)
	echo "zfs-vm-job: part $name"
	"$@" >/share/$name.out 2>&1
	rc=$?
	echo "$rc $(( $(date +%s) - s ))" >/share/$name.status
	sync
}'
# Each test binary's own bound: a hung test panics with every
# goroutine's stack before the VM's bound kills everything.
TT="-test.v -test.count=1 -test.timeout=${TURNBOX_ZFS_VM_TEST_TIMEOUT:-600}s"
CRASH=${TURNBOX_ZFS_VM_CRASH:-1}
PARTS=${TURNBOX_ZFS_VM_PARTS-zfs embedded}
CRASH_ENV="TURNBOX_ZFS_CRASH_DEV=/dev/vda1 TURNBOX_ZFS_CRASH_ACKS=/share/acks TURNBOX_ZFS_CRASH_CHECKS=${TURNBOX_ZFS_VM_CRASH_CHECKS:-12}"

# ------------------------------------------------------- result cache
# Like go test's result cache: a part that passed before with the same
# test binary (byte for byte: Go builds are reproducible, so unchanged
# sources give the same binary), the same extra libraries, kernel,
# initramfs (which covers init, run.sh, the modules and zfs/zpool), VM
# settings and command line passes again without being run, and says so.
# A failure is never cached; the shell and bench parts (bench, bench-cli)
# never are.
# TURNBOX_ZFS_VM_COUNT=1 (as go test -count=1) runs everything.
RESULTS="$CACHE/results"
mkdir -p "$RESULTS"
find "$RESULTS" -type f -mtime +30 -delete
COUNT=${TURNBOX_ZFS_VM_COUNT:-}
BASEKEY=$( { qemu-system-x86_64 --version | head -1
	echo "$KREL $ZVER $IRKEY smp=${TURNBOX_ZFS_VM_SMP:-2} append=${TURNBOX_ZFS_VM_APPEND:-} txg=${TURNBOX_ZFS_VM_TXG_TIMEOUT:-}"
	find "$VMLINUZ" "$SHARE/lib" -type f -exec sha256sum {} + | cut -d' ' -f1 | sort; } | sha256sum | cut -c1-32)
declare -A BINSUM=()
for b in zfs embedded; do BINSUM[$b]=$(sha256sum "$SHARE/tests/$b.test" | cut -c1-32); done
echo "zfs-vm: test binaries: zfs.test ${BINSUM[zfs]:0:12}, embedded.test ${BINSUM[embedded]:0:12}" >&2
# resultkey BINARY TEXT...: the cache key of a part running BINARY so.
resultkey() { local b=$1; shift; printf '%s\n' "$BASEKEY" "${BINSUM[$b]}" "$@" | sha256sum | cut -c1-32; }
# passed KEY: whether a run with KEY passed before (and COUNT allows it).
passed() { [ "$COUNT" != 1 ] && [ -f "$RESULTS/$1" ]; }
# remember KEY WHAT: record a pass.
remember() { echo "$(date -u +%FT%TZ) $2" >"$RESULTS/$1"; }
declare -A PARTKEY=()
cached=()

# ------------------------------------------------------- crash: write
# Snapshot in a loop on a virtio disk and power the VM off hard mid-loop;
# the main boot below starts by importing the pool and checking every
# acknowledged snapshot.
if [ "$CRASH" = 1 ]; then
	WDRV=${TURNBOX_ZFS_VM_CRASH_WRITE_DRIVER:-lzc}
	VDRV=${TURNBOX_ZFS_VM_CRASH_VERIFY_DRIVER:-command}
	AFTER=${TURNBOX_ZFS_VM_CRASH_AFTER:-12}
	PARTKEY[crash-verify]=$(resultkey zfs crash "$WDRV" "$VDRV" "$AFTER" "$CRASH_ENV")
	if passed "${PARTKEY[crash-verify]}"; then
		cached+=("crash-verify")
		echo "zfs-vm: crash consistency: CACHED pass ($(cut -d' ' -f1 "$RESULTS/${PARTKEY[crash-verify]}"), same binary and settings; TURNBOX_ZFS_VM_COUNT=1 reruns it)" >&2
		CRASH=0
	fi
fi
if [ "$CRASH" = 1 ]; then
	cat >"$RUN/job-crash-write.sh" <<JOB
$SETUP
echo 1 >/proc/sys/kernel/sysrq
( sleep $AFTER; echo "zfs-vm-job: pulling the plug"; echo o >/proc/sysrq-trigger ) &
cd /tests
env TURNBOX_ZFS_CRASH=write TURNBOX_ZFS_CRASH_DRIVER=$WDRV $CRASH_ENV \
	/tests/zfs.test -test.v -test.count=1 -test.run '^TestCrashSnapshots\$'
JOB
	boot crash-write "$RUN/job-crash-write.sh"
	if [ -f "$SHARE/status" ]; then
		cat "$SHARE/out.txt" >&2
		die "crash write phase ended by itself (status $(cat "$SHARE/status")) instead of being powered off"
	fi
	[ -s "$SHARE/acks" ] || { cat "$SHARE/out.txt" >&2; tail -20 "$RUN/crash-write.console" >&2; die "crash write phase acknowledged no snapshot"; }
	echo "zfs-vm: crash write phase ($WDRV driver): powered off after ${AFTER}s, $(wc -l <"$SHARE/acks") acknowledged snapshots" >&2
	mv "$SHARE/out.txt" "$RUN/crash-write.out"
fi

# ------------------------------------------------------- main boot
# Nothing is skipped by default. FullDisk and Quota were skipped until
# 2026-11-28: FullDisk never reached ENOSPC and Quota wrote 24 MiB under
# an 8 MiB refquota, because their fill data was compressible (zeros and a
# periodic pattern) and OpenZFS 2.3 datasets compress by default (lz4;
# zero blocks are not allocated at all). With incompressible data both
# pass for both drivers (FullDisk 23 s, Quota ~33 s under TCG).
# TURNBOX_ZFS_VM_TXG_TIMEOUT sets zfs_txg_timeout (default untouched).
SKIP=${TURNBOX_ZFS_VM_SKIP-}
[ -n "$SKIP" ] && echo "zfs-vm: SKIPPING zfs tests matching '$SKIP' (TURNBOX_ZFS_VM_SKIP= to run them)" >&2
# envtest's storage-facing cases on zfs sessions, for each driver
# (session create/fork/destroy, snapshots, rollback, the random model with
# TURNBOX_ZFS_VM_ENVTEST_CHECKS sequences): the tool, capability,
# concurrency and security groups do not depend on the storage and run on
# the host in CI (localdisk, btrfs and zfs-fuse); under TCG the whole
# suite took over 7 minutes per driver on a loaded machine. TURNBOX_ZFS_VM_EMBEDDED_RUN='^TestKernelZFSDrivers$'
# runs the whole suite.
# bench-cli: the project's own `turnbox bench` on zfs × none, once per zfs
# driver, each on a fresh pool on a file vdev in the VM's RAM (/tmp is
# tmpfs), as zfstest.NewPool makes them. The raw baseline follows the
# driver (the bare `zfs` command, or the bare libzfs_core call; see
# benchmarks.RawZFS). Counts are small: everything runs 5-20x slower
# under TCG. Each driver's report directory comes back through the share.
if [ "$BENCH_CLI" = 1 ]; then
	BDRIVERS=${TURNBOX_ZFS_VM_BENCH_DRIVERS:-command libzfs_core}
	for d in $BDRIVERS; do
		case $d in command | libzfs_core) ;; *) die "TURNBOX_ZFS_VM_BENCH_DRIVERS: unknown driver '$d' (command, libzfs_core)" ;; esac
	done
	BN=${TURNBOX_ZFS_VM_BENCH_N:-10}
	BEXECN=${TURNBOX_ZFS_VM_BENCH_EXEC_N:-20}
	BFILES=${TURNBOX_ZFS_VM_BENCH_FILES:-200}
	BFSIZE=${TURNBOX_ZFS_VM_BENCH_FILE_SIZE:-10240}
	for v in "$BN" "$BEXECN" "$BFILES" "$BFSIZE"; do
		[[ $v =~ ^[0-9]+$ ]] || die "TURNBOX_ZFS_VM_BENCH_N/_EXEC_N/_FILES/_FILE_SIZE must be numbers (got '$v')"
	done
	BNOTE="qemu TCG VM (-smp ${TURNBOX_ZFS_VM_SMP:-2} -cpu qemu64, pool on a file in RAM) on a $(nproc)-core host, host load $(cut -d' ' -f1-3 /proc/loadavg) when the run began; kernel $KREL, OpenZFS $ZVER"
	# Guest side (busybox sh). A driver's bench that fails or hangs (its
	# own bound: TURNBOX_ZFS_VM_BENCH_TIMEOUT, 900 s) does not stop the
	# next driver's; the part's status is 1 if any failed.
	cat >"$SHARE/bench-cli.sh" <<JOB
mkdir -p /tmp/cli /share/bench-cli && cp /share/cli/turnbox /tmp/cli/turnbox || exit 97
rc=0
for d in $BDRIVERS; do
	pool=tb\$d img=/tmp/bench-\$d.img
	echo "bench-cli: zfs driver \$d: pool \$pool on \$img"
	rm -f \$img && truncate -s 1G \$img && zpool create -f -m none \$pool \$img || { echo "bench-cli: zpool create failed"; rc=1; continue; }
	s=\$(date +%s)
	timeout -s KILL ${TURNBOX_ZFS_VM_BENCH_TIMEOUT:-900} /tmp/cli/turnbox --log-level info --zfs-driver \$d bench \\
		--backends zfs --runtimes none --zfs-dataset \$pool/bench \\
		--n $BN --exec-n $BEXECN --files $BFILES --file-size $BFSIZE \\
		--out /share/bench-cli/\$d --note "$BNOTE; zfs driver \$d"
	r=\$?
	echo "\$r \$(( \$(date +%s) - s ))" >/share/bench-cli/\$d.status
	echo "bench-cli: zfs driver \$d: exit status \$r in \$(( \$(date +%s) - s ))s"
	[ \$r = 0 ] || rc=1
	zpool destroy -f \$pool || echo "bench-cli: zpool destroy \$pool failed"
	rm -f \$img
	sync
done
exit \$rc
JOB
fi
ERUN=${TURNBOX_ZFS_VM_EMBEDDED_RUN:-^TestKernelZFSDrivers\$/^(command|libzfs_core)\$/^(Lifecycle|Snapshots)\$/^(Create|FromSnapshot|DestroyDeletesSnapshots|Model|RollForward|Info|MetadataSurvives|TurnComplete|ListSnapshots|Fork)\$}
{
	echo "$SETUP"
	echo "$PARTFN"
	[ -n "${TURNBOX_ZFS_VM_TXG_TIMEOUT:-}" ] && echo "echo $TURNBOX_ZFS_VM_TXG_TIMEOUT >/sys/module/zfs/parameters/zfs_txg_timeout"
	echo "cd /tests"
	[ "$CRASH" = 1 ] && echo "part crash-verify env TURNBOX_ZFS_CRASH=verify TURNBOX_ZFS_CRASH_DRIVER=$VDRV $CRASH_ENV /tests/zfs.test -test.v -test.count=1 -test.run '^TestCrashSnapshots\$'"
	for p in $PARTS; do
		case $p in
		zfs) line="part zfs /tests/zfs.test $TT ${TURNBOX_ZFS_VM_RUN:+-test.run '$TURNBOX_ZFS_VM_RUN'} ${SKIP:+-test.skip '$SKIP'}" ;;
		embedded) line="part embedded env TURNBOX_ENVTEST_PROPERTY_CHECKS=${TURNBOX_ZFS_VM_ENVTEST_CHECKS:-2} /tests/embedded.test $TT -test.run '$ERUN'" ;;
		shell)
			[ -f "${TURNBOX_ZFS_VM_SHELL:-}" ] || die "part shell: TURNBOX_ZFS_VM_SHELL must name a script"
			cp "$TURNBOX_ZFS_VM_SHELL" "$SHARE/shell.sh"
			echo "part shell sh /share/shell.sh"
			continue ;;
		*) die "TURNBOX_ZFS_VM_PARTS: unknown part '$p' (zfs, embedded, shell)" ;;
		esac
		PARTKEY[$p]=$(resultkey "$p" "$line")
		if passed "${PARTKEY[$p]}"; then
			cached+=("$p")
			echo "zfs-vm: part $p: CACHED pass ($(cut -d' ' -f1 "$RESULTS/${PARTKEY[$p]}"), same test binary, VM and command line; TURNBOX_ZFS_VM_COUNT=1 reruns it)" >&2
			continue
		fi
		echo "$line"
	done
	if [ "$BENCH" = 1 ]; then
		for p in $BENCH_PARTS; do
			case $p in
			bench) echo "part bench /tests/zfs.test -test.run '^\$' -test.bench '^BenchmarkDrivers\$' -test.benchtime ${TURNBOX_ZFS_VM_BENCHTIME:-20x} -test.count ${TURNBOX_ZFS_VM_BENCHCOUNT:-3}" ;;
			bench-cli) echo "part bench-cli sh /share/bench-cli.sh" ;;
			esac
		done
	fi
	echo "true"
} >"$RUN/job-main.sh"
if grep -q '^part ' "$RUN/job-main.sh"; then
	boot main "$RUN/job-main.sh"
else
	echo "zfs-vm: every part passed before with these binaries: no boot (TURNBOX_ZFS_VM_COUNT=1 reruns them)" >&2
	touch "$SHARE/status"
fi

# ------------------------------------------------------- results
step "results"
[ -f "$SHARE/status" ] || echo "zfs-vm: the VM ended without finishing its job (console tail below)" >&2
failed=()
# timings FILE: the slowest tests of a -test.v output.
timings() {
	{ grep -E '^ *--- (PASS|FAIL|SKIP): ' "$1" || true; } | sed -E 's/^ *--- ([A-Z]+): (.*) \(([0-9.]+)s\)$/\3 \1 \2/' |
		sort -rn | head -"${TURNBOX_ZFS_VM_TIMINGS:-25}" | awk '{printf "    %8.2fs %s %s\n", $1, $2, $3}'
}
report() { # report PART DESCRIPTION
	local p=$1 what=$2 st
	if [[ " ${cached[*]} " == *" $p "* ]]; then
		echo "==== $what: cached pass ($(cat "$RESULTS/${PARTKEY[$p]}"))"
		return
	fi
	if [ ! -f "$SHARE/$p.status" ]; then
		echo "==== $what: DID NOT FINISH"
		[ -f "$SHARE/$p.out" ] && tail -80 "$SHARE/$p.out"
		failed+=("$p (did not finish)")
		return
	fi
	read -r st secs <"$SHARE/$p.status"
	echo "==== $what: exit status $st in ${secs}s"
	cat "$SHARE/$p.out"
	if [ "$p" != bench ] && [ "$p" != bench-cli ] && [ "$p" != crash-verify ]; then
		echo "---- $p: slowest tests"
		timings "$SHARE/$p.out"
	fi
	if [ "$st" = 0 ]; then
		[ -n "${PARTKEY[$p]:-}" ] && remember "${PARTKEY[$p]}" "part $p passed in ${secs}s"
	else
		failed+=("$p (status $st)")
	fi
	echo "zfs-vm: part $p: status $st, ${secs}s" >&2
}
[ "$CRASH" = 1 ] || [ -n "${PARTKEY[crash-verify]:-}" ] && report crash-verify "crash consistency (write: $WDRV driver, hard power-off after ${AFTER}s; verify: $VDRV driver)"
for p in $PARTS; do
	case $p in
	zfs) report zfs "zfs package tests (libzfs_core and command drivers)" ;;
	embedded) report embedded "embedded: envtest on zfs sessions (both drivers)" ;;
	shell) report shell "shell script $TURNBOX_ZFS_VM_SHELL" ;;
	esac
done
if [ "$BENCH" = 1 ] && [[ " $BENCH_PARTS " == *" bench "* ]]; then
	report bench "driver benchmark (TCG emulation: compare the drivers, not absolute times)"
	if [ -f "$SHARE/bench.status" ]; then
		JSON=${TURNBOX_ZFS_VM_BENCH_JSON:-$CACHE/bench/bench-$(date -u +%Y%m%dT%H%M%SZ).json}
		mkdir -p "$(dirname "$JSON")"
		bash "$HERE/bench2json.sh" "$SHARE/bench.out" "kernel $KREL, OpenZFS $ZVER, qemu TCG -smp 2 -cpu qemu64, host $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" >"$JSON" ||
			failed+=("bench JSON")
		echo "zfs-vm: benchmark JSON: $JSON" >&2
		bash "$HERE/bench2json.sh" --table "$SHARE/bench.out" || true
	fi
fi
# p50s FILE: "op series p50" for each result of a bench report.json
# (series: turnbox, or the baseline's name; p50 rounded as report.md
# does), from the indented JSON WriteDir writes, one field a line (plain
# awk: no jq needed).
p50s() {
	awk -F': ' '
		/^ *"op": / { op = $2; gsub(/[",]/, "", op) }
		/^ *"p50_ms": / { p50 = $2; gsub(/,/, "", p50) }
		/^ *"baseline": / {
			bl = $2; gsub(/[",]/, "", bl)
			printf "%s %s %s\n", op, (bl == "" ? "turnbox" : bl), sprintf(p50 + 0 < 100 ? "%.2f" : "%.0f", p50)
		}
	' "$1"
}
if [ "$BENCH_CLI" = 1 ]; then
	report bench-cli "turnbox bench --backends zfs --runtimes none through each zfs driver (TCG emulation: compare within the run, not absolute times)"
	BOUT=${TURNBOX_ZFS_VM_BENCH_CLI_OUT:-$CACHE/bench/cli-$(date -u +%Y%m%dT%H%M%SZ)}
	declare -A P50=()
	got=()
	for d in $BDRIVERS; do
		st="did not finish"
		[ -f "$SHARE/bench-cli/$d.status" ] && st="exit status $(cut -d' ' -f1 "$SHARE/bench-cli/$d.status") in $(cut -d' ' -f2 "$SHARE/bench-cli/$d.status")s"
		if [ ! -f "$SHARE/bench-cli/$d/report.json" ]; then
			echo "==== turnbox bench, zfs driver $d: NO REPORT ($st)"
			failed+=("bench-cli $d (no report)")
			continue
		fi
		mkdir -p "$BOUT/$d" && cp -a "$SHARE/bench-cli/$d/." "$BOUT/$d/"
		echo "==== turnbox bench, zfs driver $d ($st): $BOUT/$d/report.md"
		cat "$BOUT/$d/report.md"
		got+=("$d")
		while read -r op ser v; do P50[$d/$op/$ser]=$v; done < <(p50s "$BOUT/$d/report.json")
	done
	if [ ${#got[@]} -gt 0 ]; then
		echo "==== turnbox bench medians (p50 ms) by zfs driver; raw = that driver's bare calls"
		hdr="| op |" sep="|---|"
		for d in "${got[@]}"; do hdr+=" $d | raw $d |"; sep+="---:|---:|"; done
		echo "$hdr"; echo "$sep"
		for op in create start exec turn_complete rollback fork pause_resume; do
			row="| $op |"
			for d in "${got[@]}"; do row+=" ${P50[$d/$op/turnbox]:--} | ${P50[$d/$op/raw]:--} |"; done
			echo "$row"
		done
		echo "zfs-vm: turnbox bench reports (report.json, report.md, chart.svg): $BOUT/<driver>/" >&2
	fi
fi
if [ ${#failed[@]} -gt 0 ]; then
	[ -f "$SHARE/out.txt" ] && { echo "---- job output tail:" >&2; tail -20 "$SHARE/out.txt" >&2; }
	echo "---- VM console tail:" >&2
	tail -20 "$RUN/main.console" >&2
fi
echo "zfs-vm: total $(( $(date +%s) - T0 ))s" >&2
if [ ${#failed[@]} -gt 0 ]; then
	STEP="VM parts: ${failed[*]}"
	exit 1
fi
exit 0
