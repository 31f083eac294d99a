#!/usr/bin/env bash
# Makes sure qemu-system-x86_64 (and qemu-img, cpio for the test guest) are
# installed. As root on Debian/Ubuntu it installs them with apt; anywhere else
# it prints the exact command to run and fails.
set -euo pipefail
need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v cpio >/dev/null 2>&1 || need+=(cpio)
[ ${#need[@]} -eq 0 ] && exit 0
cmd="apt-get update && apt-get install -y ${need[*]}"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "::: installing ${need[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 still missing after apt" >&2; exit 1; }
else
  echo "effect-qemu needs ${need[*]}. Install them with:" >&2
  if command -v apt-get >/dev/null 2>&1; then echo "  sudo sh -c '$cmd'" >&2; else echo "  (Debian/Ubuntu) sudo sh -c '$cmd'" >&2; fi
  exit 1
fi
