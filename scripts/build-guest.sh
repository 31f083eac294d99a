#!/usr/bin/env bash
# Build a tiny Linux guest for effect-qemu tests: a Debian cloud kernel plus a
# busybox initramfs whose /init loads a few modules, starts acpid (so ACPI
# power-button events from QMP `system_powerdown` power the guest off), prints
# a readiness marker on ttyS0 and runs an interactive shell there. With
# `effect_qemu.ga=1` on the kernel command line it also starts the QEMU guest
# agent (Debian's qemu-guest-agent) on the virtio-serial port
# org.qemu.guest_agent.0; `effect_qemu.ga_block=cmd1,cmd2` disables commands.
#
# Usage: scripts/build-guest.sh [OUTDIR]
#   OUTDIR defaults to $EFFECT_QEMU_GUEST_DIR, else <repo>/.cache/guest.
# Output: OUTDIR/vmlinuz, OUTDIR/initramfs.cpio.gz, OUTDIR/guest.json.
#   guest.json is written last (temp file + rename): its presence means the
#   build is complete. Re-running with a complete OUTDIR is a no-op, unless the
#   helpers below were rebuilt since (guest.json records a checksum of them).
# Environment:
#   EFFECT_QEMU_GUEST_DIR     default OUTDIR
#   EFFECT_QEMU_KERNEL_META   kernel metapackage (default linux-image-cloud-amd64)
#   EFFECT_QEMU_HELPERS_DIR   where effect-qemu-hwclock and -clockd are (default build/Release)
# Needs a Debian (amd64) host with apt-get, apt-cache, dpkg-deb, tar, cpio and gzip;
# no root needed unless `apt-get update` has to run.
#
# Guest kernel command line: `console=ttyS0` is expected (the marker and the
# shell use /dev/ttyS0).
# In the guest, `qga-start` (re)starts the agent (pidfile /run/qemu-ga.pid,
# log /run/qemu-ga.log) and /sbin/shutdown (what guest-shutdown runs) powers
# off at once.
# /sbin/hwclock is effect-qemu-hwclock when `npm ci` built it: `-w` (what QGA's
# guest-set-time runs) writes the RTC without busybox, anything else is busybox's.
# With `effect_qemu.clock=1` on the kernel command line, init starts
# effect-qemu-clockd (when `npm ci` built it) on the virtio-serial port
# `org.effect-qemu.clock`: each line `<ns since the epoch>` that the host gives
# the port sets the clock (how Guest clones set theirs, with no agent and no fork).
set -euo pipefail

READY_MARKER="EFFECT-QEMU-READY"
# Bumped when the guest's contents change: an older cache is rebuilt.
GUEST_FORMAT=6
# The guest agent and the shared libraries it loads (resolved at build time).
AGENT_PACKAGES=(qemu-guest-agent libglib2.0-0 libnuma1 libudev1 liburing2 libpcre2-8-0 libc6)
KERNEL_META="${EFFECT_QEMU_KERNEL_META:-linux-image-cloud-amd64}"
WANTED_MODULES=(
  virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
  virtio_console virtio_blk failover net_failover virtio_net button evdev pvpanic pvpanic_pci pvpanic_mmio
)

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(cd "$script_dir/.." && pwd)"
OUTDIR="${1:-${EFFECT_QEMU_GUEST_DIR:-$repo_dir/.cache/guest}}"

# /sbin/hwclock: effect-qemu-hwclock (native/hwclock.c, built by `npm ci` with node-gyp) when
# there is one, else busybox's applet. QGA runs `/sbin/hwclock -w` after every guest-set-time,
# which the library sends after each restore and clone: the helper writes the RTC itself, with
# no fork of busybox through a clone's cold translation cache (~25 ms of QEMU CPU per clone).
# EFFECT_QEMU_HELPERS_DIR: where the helpers are (default: node-gyp's build/Release; tests use a copy).
helpers_dir="${EFFECT_QEMU_HELPERS_DIR:-$repo_dir/build/Release}"
hwclock_helper="$helpers_dir/effect-qemu-hwclock"
if [[ -x "$hwclock_helper" ]]; then hwclock_kind=effect-qemu; else hwclock_kind=busybox; fi
# effect-qemu-clockd (native/clockd.c): sets the clock from lines on the port org.effect-qemu.clock.
# guest.json says whether the guest has it ("clock"); Guest.config adds the port only then.
clockd_helper="$helpers_dir/effect-qemu-clockd"
if [[ -x "$clockd_helper" ]]; then clock=true; else clock=false; fi

# Which builds of the helpers the guest holds: a helper rebuilt from changed sources (a developer's
# edit of native/*.c, then `npm ci` or node-gyp) makes a new guest, not only a new format number.
helpers_sum=none
if [[ "$hwclock_kind" == effect-qemu || "$clock" == true ]]; then
  helpers_sum="$(cat "$hwclock_helper" "$clockd_helper" 2>/dev/null | cksum | cut -d' ' -f1)"
fi

is_cached() {
  [[ -s "$OUTDIR/guest.json" && -s "$OUTDIR/vmlinuz" && -s "$OUTDIR/initramfs.cpio.gz" ]] \
    && grep -q "\"format\": $GUEST_FORMAT," "$OUTDIR/guest.json" \
    && grep -q "\"helpers\": \"$helpers_sum\"" "$OUTDIR/guest.json" \
    && grep -q "\"hwclock\": \"$hwclock_kind\"" "$OUTDIR/guest.json" \
    && grep -q "\"clock\": $clock}" "$OUTDIR/guest.json"
}

# Fast path: nothing but a few stat calls.
if is_cached; then
  echo "guest: cached in $OUTDIR"
  exit 0
fi

now_ms() { date +%s%3N; }
start_ms="$(now_ms)"

die() { echo "guest: error: $*" >&2; exit 1; }

# --- host checks ------------------------------------------------------------
if [[ ! -r /etc/debian_version ]] || ! command -v apt-get >/dev/null 2>&1 \
   || ! command -v apt-cache >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
  missing=()
  for t in apt-get apt-cache dpkg-deb; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  {
    echo "guest: error: this script needs a Debian host (it downloads Debian's kernel and busybox .debs)."
    [[ -r /etc/debian_version ]] || echo "guest:   /etc/debian_version not found: not a Debian-based system"
    ((${#missing[@]})) && echo "guest:   missing: ${missing[*]} (install with: apt-get install -y apt dpkg)"
    echo "guest:   e.g. run it in a container: docker run --rm -v \"$repo_dir:/w\" -w /w debian:12 scripts/build-guest.sh"
  } >&2
  exit 2
fi
host_arch="$(dpkg --print-architecture 2>/dev/null || true)"
if [[ -n "$host_arch" && "$host_arch" != amd64 ]]; then
  echo "guest: error: host architecture is $host_arch; this script needs an amd64 Debian host (it runs the guest's busybox at build time)" >&2
  exit 2
fi
missing=()
for t in cpio gzip tar; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
if ((${#missing[@]})); then
  echo "guest: error: missing: ${missing[*]}; install with: apt-get install -y ${missing[*]}" >&2
  exit 2
fi

mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"

# Serialize concurrent builds into the same OUTDIR; the loser finds the cache.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$OUTDIR/.build.lock"
  flock 9
  if is_cached; then
    echo "guest: cached in $OUTDIR"
    exit 0
  fi
fi

work="$(mktemp -d "$OUTDIR/.build.XXXXXX")"
kernel_pid=""
cleanup() {
  # Stop a background kernel extraction first: it writes into $work.
  if [[ -n "$kernel_pid" ]]; then
    kill -- "-$kernel_pid" 2>/dev/null || kill "$kernel_pid" 2>/dev/null || true
    wait "$kernel_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Wall-clock milliseconds per phase, for the last line of output.
phase_ms="$(now_ms)"
phases=""
phase_done() {
  local t
  t="$(now_ms)"
  phases+="${phases:+, }$1 $((t - phase_ms))"
  phase_ms="$t"
}

# --- resolve + download -----------------------------------------------------
# The host's apt may keep no binary package cache (Debian's Docker images set
# Dir::Cache::pkgcache ""), so every apt call would parse all package lists
# again (~1-2 s each): build it once, privately, and share it between calls.
mkdir -p "$work/apt"
APT_OPTS=(-o "Dir::Cache::pkgcache=$work/apt/pkgcache.bin" -o "Dir::Cache::srcpkgcache=")

resolve_kernel() {
  apt-cache "${APT_OPTS[@]}" depends "$KERNEL_META" 2>/dev/null \
    | awk '$1 ~ /^\|?Depends:$/ && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

download() {
  (cd "$work/debs" && apt-get download -q -o APT::Sandbox::User=root "${APT_OPTS[@]}" "$@" >"$work/download.log" 2>&1)
}

mkdir -p "$work/debs"
echo "guest: resolving kernel from $KERNEL_META"
kernel_pkg="$(resolve_kernel || true)"
updated=0
if [[ -z "$kernel_pkg" ]]; then
  echo "guest: cannot resolve $KERNEL_META; running apt-get update"
  apt-get update -q >"$work/update.log" 2>&1 || { cat "$work/update.log" >&2; die "apt-get update failed (needs root)"; }
  updated=1
  kernel_pkg="$(resolve_kernel || true)"
  [[ -n "$kernel_pkg" ]] || die "cannot resolve a kernel package from $KERNEL_META (apt-cache depends $KERNEL_META)"
fi
phase_done resolve

echo "guest: downloading $kernel_pkg busybox-static ${AGENT_PACKAGES[*]}"
if ! download "$kernel_pkg" busybox-static "${AGENT_PACKAGES[@]}"; then
  if ((updated)); then
    cat "$work/download.log" >&2
    die "apt-get download failed"
  fi
  echo "guest: download failed; running apt-get update and retrying"
  apt-get update -q >"$work/update.log" 2>&1 || { cat "$work/update.log" >&2; die "apt-get update failed (needs root)"; }
  kernel_pkg="$(resolve_kernel || true)"
  [[ -n "$kernel_pkg" ]] || die "cannot resolve a kernel package from $KERNEL_META"
  echo "guest: downloading $kernel_pkg busybox-static ${AGENT_PACKAGES[*]}"
  download "$kernel_pkg" busybox-static "${AGENT_PACKAGES[@]}" || { cat "$work/download.log" >&2; die "apt-get download failed"; }
fi
phase_done download

# --- extract ----------------------------------------------------------------
shopt -s nullglob
kernel_debs=("$work"/debs/"${kernel_pkg}"_*.deb)
((${#kernel_debs[@]} == 1)) || die "apt-get download did not leave one $kernel_pkg .deb in $work/debs"
kernel_deb="${kernel_debs[0]}"
kroot="$work/kernel"

# Extracts from the kernel .deb only what the guest uses: with $1 = full, the
# kernel image, modules.builtin and modules.order too; then the modules named
# in the other arguments (any of .ko, .ko.xz, ...; `_` also matches `-` as in
# file names). The whole package is ~1400 files and ~107 MB unpacked.
extract_kernel() {
  local what="$1" m status=0
  shift
  local patterns=()
  if [[ "$what" == full ]]; then
    patterns+=('./boot/vmlinuz-*' './lib/modules/*/modules.builtin' './lib/modules/*/modules.order')
  fi
  for m in "$@"; do
    patterns+=("./lib/modules/*/kernel/*/${m//_/[-_]}.ko*")
  done
  mkdir -p "$kroot"
  { dpkg-deb --fsys-tarfile "$kernel_deb" | tar -x -C "$kroot" --wildcards -- "${patterns[@]}"; } 2>"$kroot.err" || status=$?
  # A module built into the kernel (or absent from it) matches nothing, and
  # tar then exits 2 after "Not found in archive": that alone is no error.
  if ((status)) && grep -v -e ': Not found in archive$' -e 'Exiting with failure status due to previous errors' "$kroot.err" >&2; then
    echo "guest: error: cannot extract from $kernel_deb" >&2
    return 1
  fi
  return 0
}

# The kernel (xz, ~2 CPU seconds to decompress) unpacks in the background while
# the rest of the tree is built.
echo "guest: extracting"
set -m # its own process group, so cleanup can stop dpkg-deb and tar too
extract_kernel full "${WANTED_MODULES[@]}" &
kernel_pid=$!
set +m

pkgroot="$work/pkg"
mkdir -p "$pkgroot"
for deb in "$work"/debs/*.deb; do
  [[ "$deb" == "$kernel_deb" ]] && continue
  dpkg-deb -x "$deb" "$pkgroot"
done

bb="$pkgroot/bin/busybox"
[[ -x "$bb" ]] || die "busybox-static did not provide bin/busybox"

# --- initramfs tree ---------------------------------------------------------
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,root,var/log,etc/acpi/PWRF}
ln -s ../run "$rootfs/var/run"
cp "$bb" "$rootfs/bin/busybox"
# A symlink to /bin/busybox per applet (~270): in one perl process when there is
# one (perl-base is essential on Debian), as one `ln` each costs ~10 ms.
applets="$("$bb" --list-full | grep '/' | grep -vx 'bin/busybox')" || die "busybox --list-full listed no applets"
(cd "$rootfs" && sed 's,/[^/]*$,,' <<<"$applets" | sort -u | xargs mkdir -p)
if command -v perl >/dev/null 2>&1; then
  perl -e 'chdir $ARGV[0] or die "$ARGV[0]: $!"; while (<STDIN>) { chomp; next if -e $_ || -l $_; symlink("/bin/busybox", $_) or die "$_: $!\n" }' \
    "$rootfs" <<<"$applets" || die "cannot link busybox applets"
else
  while IFS= read -r applet; do
    [[ -e "$rootfs/$applet" || -L "$rootfs/$applet" ]] && continue
    ln -s /bin/busybox "$rootfs/$applet"
  done <<<"$applets"
fi

if [[ "$hwclock_kind" == effect-qemu ]]; then
  rm -f "$rootfs/sbin/hwclock"
  cp "$hwclock_helper" "$rootfs/sbin/hwclock"
  chmod 0755 "$rootfs/sbin/hwclock"
fi
if [[ "$clock" == true ]]; then
  cp "$clockd_helper" "$rootfs/sbin/effect-qemu-clockd"
  chmod 0755 "$rootfs/sbin/effect-qemu-clockd"
fi

# --- guest agent --------------------------------------------------------------
# qemu-ga and exactly the libraries the loader resolves for it (from the
# extracted packages, never the host's), at the paths the guest's loader searches.
qga="$pkgroot/usr/sbin/qemu-ga"
[[ -x "$qga" ]] || qga="$pkgroot/usr/bin/qemu-ga"
[[ -x "$qga" ]] || die "qemu-guest-agent did not provide qemu-ga"
loader="$pkgroot/lib64/ld-linux-x86-64.so.2"
[[ -e "$loader" ]] || die "libc6 did not provide lib64/ld-linux-x86-64.so.2"
libpath="$pkgroot/lib/x86_64-linux-gnu:$pkgroot/usr/lib/x86_64-linux-gnu"
libs="$("$loader" --library-path "$libpath" --list "$qga")" || die "cannot resolve qemu-ga's libraries: $libs"
if grep -q "not found" <<<"$libs"; then
  die "qemu-ga needs libraries missing from ${AGENT_PACKAGES[*]}: $(grep 'not found' <<<"$libs" | tr -s ' \t\n' ' ')"
fi
mkdir -p "$rootfs/usr/bin" "$rootfs/lib64" "$rootfs/lib/x86_64-linux-gnu" "$rootfs/etc/qemu"
cp "$qga" "$rootfs/usr/bin/qemu-ga"
cp -L "$loader" "$rootfs/lib64/ld-linux-x86-64.so.2"
while read -r soname arrow libfile _; do
  [[ "$arrow" == "=>" && -f "$libfile" && "$soname" != */* ]] || continue
  cp -L "$libfile" "$rootfs/lib/x86_64-linux-gnu/$soname"
done <<<"$libs"
if [[ -f "$pkgroot/usr/share/doc/qemu-guest-agent/qapi-schema.json.gz" ]]; then
  cp "$pkgroot/usr/share/doc/qemu-guest-agent/qapi-schema.json.gz" "$work/qga-qapi-schema.json.gz"
fi

cat >"$rootfs/etc/os-release" <<'EOF'
NAME="effect-qemu test guest"
ID=effect-qemu-guest
PRETTY_NAME="effect-qemu test guest (busybox)"
VERSION_ID="2"
EOF

# guest-shutdown runs `/sbin/shutdown -h -P +0 ...` (or -r for reboot); busybox has no shutdown.
rm -f "$rootfs/sbin/shutdown"
cat >"$rootfs/sbin/shutdown" <<'EOF'
#!/bin/sh
# Called by qemu-ga's guest-shutdown: power off (or reboot) at once.
sync
case " $* " in
  *" -r "*) exec /bin/busybox reboot -f ;;
  *) exec /bin/busybox poweroff -f ;;
esac
EOF
chmod 0755 "$rootfs/sbin/shutdown"

# Waits (up to 30 s) for the virtio-serial port named $1, links it under
# /dev/virtio-ports (there is no udev) and prints that path.
cat >"$rootfs/sbin/virtio-port" <<'EOF'
#!/bin/sh
NAME=$1
i=0
port=
while [ $i -lt 3000 ]; do
  for f in /sys/class/virtio-ports/vport*/name; do
    [ -r "$f" ] || continue
    if [ "$(cat "$f")" = "$NAME" ]; then
      d="${f%/name}"
      port="${d##*/}"
    fi
  done
  [ -n "$port" ] && [ -e "/dev/$port" ] && break
  usleep 10000
  i=$((i + 1))
done
if [ -z "$port" ] || [ ! -e "/dev/$port" ]; then
  echo "virtio-port: no virtio-serial port named $NAME" >&2
  exit 1
fi
mkdir -p /dev/virtio-ports
ln -sf "../$port" "/dev/virtio-ports/$NAME"
echo "/dev/virtio-ports/$NAME"
EOF
chmod 0755 "$rootfs/sbin/virtio-port"

# (Re)starts the agent on its virtio-serial port, as a daemon.
cat >"$rootfs/sbin/qga-start" <<'EOF'
#!/bin/sh
port=$(virtio-port org.qemu.guest_agent.0) || exit 1
block=
for word in $(cat /proc/cmdline); do
  case "$word" in
    effect_qemu.ga_block=*) block="${word#effect_qemu.ga_block=}" ;;
  esac
done
rm -f /run/qemu-ga.pid
exec qemu-ga -d -m virtio-serial -p "$port" -t /run -f /run/qemu-ga.pid -l /run/qemu-ga.log ${block:+-b "$block"}
EOF
chmod 0755 "$rootfs/sbin/qga-start"

# Runs the clock daemon on its port (effect-qemu-clockd, see the top of this file).
cat >"$rootfs/sbin/clock-start" <<'EOF'
#!/bin/sh
port=$(virtio-port org.effect-qemu.clock) || exit 1
exec effect-qemu-clockd "$port"
EOF
chmod 0755 "$rootfs/sbin/clock-start"

cat >"$rootfs/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
# ACPI power button (QMP system_powerdown): power off immediately.
sync
exec /bin/busybox poweroff -f
EOF
chmod 0755 "$rootfs/etc/acpi/PWRF/00000080"

cat >"$rootfs/etc/profile" <<'EOF'
export PS1='# '
EOF

cat >"$rootfs/init" <<EOF
#!/bin/busybox sh
# effect-qemu guest init (generated by scripts/build-guest.sh)
READY_MARKER='$READY_MARKER'
EOF
cat >>"$rootfs/init" <<'EOF'
export PATH=/sbin:/usr/sbin:/bin:/usr/bin HOME=/root TERM=linux PS1='# '
cd /

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null || true
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp

while read -r ko; do
  [ -n "$ko" ] || continue
  insmod "$ko" 2>/dev/null || echo "init: insmod ${ko##*/} failed" >&2
done </etc/modules

ip link set lo up 2>/dev/null || true
# User-mode networking (QemuMachine.addNetwork): QEMU's slirp always serves
# 10.0.2.0/24 with the gateway at .2; a static address needs no DHCP wait.
if [ -e /sys/class/net/eth0 ]; then
  ip addr add 10.0.2.15/24 dev eth0 2>/dev/null && ip link set eth0 up && ip route add default via 10.0.2.2 2>/dev/null || true
fi

# The guest agent and the clock daemon, when the kernel command line asks for them (in the
# background: their ports appear asynchronously).
cmdline=" $(cat /proc/cmdline) "
case "$cmdline" in
  *" effect_qemu.ga=1 "*) qga-start </dev/null >/dev/ttyS0 2>&1 & ;;
esac
case "$cmdline" in
  *" effect_qemu.clock=1 "*) [ -x /sbin/effect-qemu-clockd ] && clock-start </dev/null >/dev/ttyS0 2>&1 & ;;
esac

# acpid: exits if /dev/input/event0 is missing, opens event0..N until one
# fails, and writes its pidfile only after opening them.
i=0
while [ $i -lt 200 ]; do
  ok=1
  [ -e /dev/input/event0 ] || ok=0
  for ev in /sys/class/input/event*; do
    [ -e "$ev" ] || continue
    [ -e "/dev/input/${ev##*/}" ] || ok=0
  done
  [ $ok = 1 ] && break
  usleep 10000
  i=$((i + 1))
done
if [ -e /dev/input/event0 ]; then
  acpid -p /run/acpid.pid -l /run/acpid.log
  i=0
  while [ ! -s /run/acpid.pid ] && [ $i -lt 300 ]; do
    usleep 10000
    i=$((i + 1))
  done
  [ -s /run/acpid.pid ] || echo "init: acpid did not start; system_powerdown will not work" >&2
else
  echo "init: no /dev/input/event0; acpid not started; system_powerdown will not work" >&2
fi

stty -F /dev/ttyS0 cols 1024 rows 50 2>/dev/null || true

printf '\n%s\n' "$READY_MARKER" >/dev/ttyS0

# Interactive shell on ttyS0 as a session leader with ttyS0 as its
# controlling terminal (job control works).
setsid sh -c 'exec sh -l <>/dev/ttyS0 >&0 2>&0'
poweroff -f
EOF
chmod 0755 "$rootfs/init"

# --- modules ----------------------------------------------------------------
wait "$kernel_pid" || { kernel_pid=""; die "cannot extract $kernel_pkg"; }
kernel_pid=""
phase_done extract
moddir_base="$kroot/lib/modules"
[[ -d "$moddir_base" ]] || die "$kernel_pkg has no lib/modules"
kernel_version="$(ls -1 "$moddir_base" | head -n1)"
[[ -n "$kernel_version" ]] || die "cannot determine kernel version"
vmlinuz="$kroot/boot/vmlinuz-$kernel_version"
[[ -f "$vmlinuz" ]] || die "$kernel_pkg has no boot/vmlinuz-$kernel_version"
kmod="$moddir_base/$kernel_version"

# busybox insmod cannot be trusted with xz/zstd: decompress at build time.
decompress_modules() {
  if find "$kmod" -name '*.ko.xz' -print -quit | grep -q .; then
    command -v xz >/dev/null 2>&1 || { echo "guest: error: modules are .ko.xz but xz is missing; install with: apt-get install -y xz-utils" >&2; exit 2; }
    find "$kmod" -name '*.ko.xz' -exec xz -d -f -- {} +
  fi
  if find "$kmod" -name '*.ko.zst' -print -quit | grep -q .; then
    command -v zstd >/dev/null 2>&1 || { echo "guest: error: modules are .ko.zst but zstd is missing; install with: apt-get install -y zstd" >&2; exit 2; }
    find "$kmod" -name '*.ko.zst' -exec zstd -q -d -f --rm -- {} +
  fi
  if find "$kmod" -name '*.ko.gz' -print -quit | grep -q .; then
    find "$kmod" -name '*.ko.gz' -exec gzip -d -f -- {} +
  fi
}

declare -A mod_path=() mod_deps=() mod_seen=()
# Module name of a path: kernel/drivers/misc/pvpanic/pvpanic-pci.ko -> pvpanic_pci
modname() { local n="${1##*/}"; n="${n%%.ko*}"; REPLY="${n//-/_}"; }

# Indexes the extracted modules with the dependencies each records in its
# .modinfo (`depends=a,b`, written by the kernel build: the .deb ships no
# modules.dep, and depmod over the whole package is what this avoids).
index_modules() {
  local line rel deps
  decompress_modules
  # One grep for all: "kernel/drivers/virtio/virtio.ko:depends=virtio_ring".
  while IFS= read -r line; do
    rel="${line%%:depends=*}"
    deps="${line#*:depends=}"
    modname "$rel"
    [[ -n "${mod_path[$REPLY]:-}" ]] && continue
    mod_path[$REPLY]="$rel"
    mod_deps[$REPLY]="${deps//,/ }"
  done < <(cd "$kmod" && find kernel -name '*.ko' | LC_ALL=C sort | xargs -r grep -a -o -H -m1 'depends=[^[:cntrl:]]*')
}

index_modules
# Dependencies outside WANTED_MODULES (none for the current kernel): another pass each.
for _ in 1 2 3 4 5; do
  missing=()
  for m in "${!mod_deps[@]}"; do
    for dep in ${mod_deps[$m]}; do
      modname "$dep"
      [[ -n "${mod_path[$REPLY]:-}" || " ${missing[*]} " == *" $REPLY "* ]] || missing+=("$REPLY")
    done
  done
  ((${#missing[@]})) || break
  echo "guest: extracting dependencies: ${missing[*]}"
  extract_kernel deps "${missing[@]}" || die "cannot extract $kernel_pkg"
  before=${#mod_path[@]}
  index_modules
  ((${#mod_path[@]} > before)) || die "$kernel_pkg lacks modules needed by others: ${missing[*]}"
done

builtin_names=" "
if [[ -f "$kmod/modules.builtin" ]]; then
  while IFS= read -r path; do
    modname "$path"
    builtin_names+="$REPLY "
  done <"$kmod/modules.builtin"
fi

load_order=()
visit() {
  local name="$1" dep
  [[ -n "${mod_seen[$name]:-}" ]] && return 0
  mod_seen[$name]=1
  for dep in ${mod_deps[$name]}; do
    modname "$dep"
    visit "$REPLY"
  done
  load_order+=("$name")
}

for m in "${WANTED_MODULES[@]}"; do
  if [[ -n "${mod_path[$m]:-}" ]]; then
    visit "$m"
  elif [[ "$builtin_names" == *" $m "* ]]; then
    echo "guest: module $m is built into the kernel; skipping"
  else
    echo "guest: module $m not found in $kernel_pkg; skipping"
  fi
done

pvpanic=false
if [[ -n "${mod_seen[pvpanic_pci]:-}" || "$builtin_names" == *" pvpanic_pci "* ]]; then
  pvpanic=true
fi

gmod="$rootfs/lib/modules/$kernel_version"
mkdir -p "$gmod"
rels=()
for name in "${load_order[@]}"; do
  rels+=("${mod_path[$name]}")
done
if ((${#rels[@]})); then
  (cd "$kmod" && cp --parents -- "${rels[@]}" "$gmod/")
  printf '%s\n' "${rels[@]/#//lib/modules/$kernel_version/}" >"$rootfs/etc/modules"
else
  : >"$rootfs/etc/modules"
fi
for f in modules.builtin modules.order; do
  [[ -f "$kmod/$f" ]] && cp "$kmod/$f" "$gmod/$f"
done
# modules.dep etc. for the copied subset, so `modprobe` also works in the guest.
"$bb" depmod -b "$rootfs" "$kernel_version"
phase_done modules

# --- pack -------------------------------------------------------------------
# gzip -1: on this 8.7 MB cpio, 0.2 s of CPU against 0.45 s for -6 and 1.5 s
# for -9, for 4.1 MB instead of 3.8 MB; the guest inflates all of them equally fast.
echo "guest: packing initramfs"
(
  cd "$rootfs"
  find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet
) | gzip -1 -n >"$work/initramfs.cpio.gz"
mv -f "$vmlinuz" "$work/vmlinuz"
phase_done pack

modules_json=""
for name in "${load_order[@]}"; do
  modules_json+="${modules_json:+, }\"$name\""
done
cat >"$work/guest.json" <<EOF
{"format": $GUEST_FORMAT, "guestAgent": true, "kernelPackage": "$kernel_pkg", "kernelVersion": "$kernel_version", "readyMarker": "$READY_MARKER", "modules": [$modules_json], "pvpanic": $pvpanic, "helpers": "$helpers_sum", "hwclock": "$hwclock_kind", "clock": $clock}
EOF

# Publish: payload first, guest.json last (each a same-filesystem rename).
rm -f "$OUTDIR/guest.json"
mv -f "$work/vmlinuz" "$OUTDIR/vmlinuz"
mv -f "$work/initramfs.cpio.gz" "$OUTDIR/initramfs.cpio.gz"
[[ -f "$work/qga-qapi-schema.json.gz" ]] && mv -f "$work/qga-qapi-schema.json.gz" "$OUTDIR/qga-qapi-schema.json.gz"
mv -f "$work/guest.json" "$OUTDIR/guest.json"

echo "guest: $kernel_pkg ($kernel_version), modules: ${load_order[*]:-none}"
echo "guest: built in $(( $(now_ms) - start_ms )) ms ($phases ms)"
