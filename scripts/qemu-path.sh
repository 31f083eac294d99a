#!/usr/bin/env bash
# `npm run -s qemu:path -- VERSION` (7.2 | 10.0 | 11.1): prints a folder holding
# `qemu-system-x86_64` and `qemu-img` of that QEMU version, so that
#
#   PATH=$(npm run -s qemu:path -- 10.0):$PATH npm test
#
# runs everything on it. 7.2 is the host's own (Debian 12's apt package). The
# others are Debian's packages of another suite (10.0: trixie, 11.1: sid),
# installed once with mmdebstrap into a private root under the cache folder
# (git-ignored; $EFFECT_QEMU_CACHE, default .cache/ of this checkout) and run
# through that root's own dynamic loader: the host is not changed.
#
# Only the folder is printed on stdout; progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
version="${1:-}"
cache="${EFFECT_QEMU_CACHE:-$here/.cache}/qemu"

case "$version" in
  7.2) suite="" ;;
  10.0) suite=trixie ;;
  11.1) suite=sid ;;
  *)
    echo "usage: npm run -s qemu:path -- 7.2|10.0|11.1" >&2
    exit 2
    ;;
esac

# The host's QEMU (installed with apt when missing, as the tests do).
if [ -z "$suite" ]; then
  bash "$here/scripts/ensure-qemu.sh" >&2
  have="$(qemu-system-x86_64 --version | head -n 1)"
  case "$have" in
    *"version 7.2."*) ;;
    *) echo "qemu:path: the host's qemu-system-x86_64 is not 7.2 ($have)" >&2; exit 1 ;;
  esac
  dir="$cache/7.2/bin"
  mkdir -p "$dir"
  for tool in qemu-system-x86_64 qemu-img; do
    ln -sfn "$(command -v "$tool")" "$dir/$tool"
  done
  echo "$dir"
  exit 0
fi

root="$cache/$version/root"
dir="$cache/$version/bin"
stamp="$cache/$version/.complete"

if [ ! -f "$stamp" ]; then
  if ! command -v mmdebstrap >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "qemu:path: installing mmdebstrap (apt)" >&2
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >&2
    else
      echo "qemu:path needs mmdebstrap: sudo sh -c 'apt-get update && apt-get install -y mmdebstrap'" >&2
      exit 1
    fi
  fi
  echo "qemu:path: installing QEMU $version (Debian $suite) into $root (a few minutes, once)" >&2
  rm -rf "$cache/$version"
  mkdir -p "$cache/$version"
  tmp="$cache/$version/root.tmp"
  # sid's Release file may be past its Valid-Until in the mirror: accept it.
  # As root, mmdebstrap unpacks as root (no user namespace needed); otherwise it uses `unshare`.
  mode=auto
  [ "$(id -u)" = 0 ] && mode=root
  mmdebstrap --quiet --mode="$mode" --variant=essential \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --include=qemu-system-x86,qemu-system-data,qemu-utils,seabios,ipxe-qemu \
    "$suite" "$tmp" http://deb.debian.org/debian >&2
  mv "$tmp" "$root"
  mkdir -p "$dir"
  loader="$root/usr/lib64/ld-linux-x86-64.so.2"
  [ -e "$loader" ] || loader="$root/lib64/ld-linux-x86-64.so.2"
  libs="$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu"
  # A launcher per tool: the root's own loader and libraries; QEMU's modules and firmware from the root.
  # --argv0 keeps argv[0] the tool's name (QEMU prints it in messages).
  cat >"$dir/qemu-system-x86_64" <<EOF
#!/bin/sh
# QEMU $version (Debian $suite) from $root, run through that root's own loader.
export QEMU_MODULE_DIR="$root/usr/lib/x86_64-linux-gnu/qemu"
exec "$loader" --argv0 qemu-system-x86_64 --library-path "$libs" "$root/usr/bin/qemu-system-x86_64" -L "$root/usr/share/qemu" -L "$root/usr/share/seabios" "\$@"
EOF
  cat >"$dir/qemu-img" <<EOF
#!/bin/sh
# qemu-img $version (Debian $suite) from $root, run through that root's own loader.
exec "$loader" --argv0 qemu-img --library-path "$libs" "$root/usr/bin/qemu-img" "\$@"
EOF
  chmod 0755 "$dir/qemu-system-x86_64" "$dir/qemu-img"
  got="$("$dir/qemu-system-x86_64" --version | head -n 1)"
  case "$got" in
    *"version $version."*) ;;
    *) echo "qemu:path: Debian $suite's QEMU is not $version: $got" >&2; exit 1 ;;
  esac
  "$dir/qemu-img" --version >/dev/null
  touch "$stamp"
  echo "qemu:path: $got" >&2
fi
echo "$dir"
