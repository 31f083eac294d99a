#!/usr/bin/env bash
# Builds the Debian 12 test guest (effect-qemu/testing DebianImage.build):
# systemd, qemu-guest-agent and openssh-server from Debian's packages with
# mmdebstrap, an ext4 file system made without root privileges on the image
# (mke2fs -d) and converted to qcow2, the cloud kernel and its initrd beside
# it, and an SSH key pair whose public half root accepts.
#
#   scripts/build-debian-image.sh OUTDIR [EXTRA_PACKAGE ...]
#
# Writes OUTDIR/{disk.qcow2,vmlinuz,initrd.img,id_ed25519,id_ed25519.pub,image.json}.
# Caching (by a hash of this script and the package list) is the caller's:
# this script always builds, into OUTDIR.tmp, then renames.
set -euo pipefail
out="${1:?usage: build-debian-image.sh OUTDIR [PACKAGE ...]}"
shift
extra=("$@")
suite="${EFFECT_QEMU_DEBIAN_SUITE:-bookworm}"
mirror="${EFFECT_QEMU_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
size="${EFFECT_QEMU_DEBIAN_SIZE:-2G}"
packages=(systemd systemd-sysv udev dbus qemu-guest-agent openssh-server linux-image-cloud-amd64
  initramfs-tools e2fsprogs iproute2 ca-certificates "${extra[@]}")

command -v mmdebstrap >/dev/null || { echo "debian-image: needs mmdebstrap (apt-get install mmdebstrap)" >&2; exit 2; }
command -v mke2fs >/dev/null || { echo "debian-image: needs mke2fs (e2fsprogs)" >&2; exit 2; }
command -v qemu-img >/dev/null || { echo "debian-image: needs qemu-img" >&2; exit 2; }

start=$(date +%s%N)
tmp="$out.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
root="$tmp/root"

ssh-keygen -q -t ed25519 -N "" -C effect-qemu-debian -f "$tmp/id_ed25519"

mode=auto
[ "$(id -u)" = 0 ] && mode=root
join() { local IFS=,; echo "$*"; }
# The customize hooks run with the root file system at "$1". Masked: timers and the
# e2scrub reaper (22 s of a TCG boot), useless in a throwaway test guest.
mmdebstrap --quiet --mode="$mode" --variant=minbase \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --include="$(join "${packages[@]}")" \
  --customize-hook='echo debian > "$1/etc/hostname"' \
  --customize-hook='printf "127.0.0.1 localhost\n127.0.1.1 debian\n" > "$1/etc/hosts"' \
  --customize-hook='echo "/dev/vda / ext4 rw,discard,errors=remount-ro 0 1" > "$1/etc/fstab"' \
  --customize-hook='mkdir -p "$1/etc/systemd/network" && printf "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n" > "$1/etc/systemd/network/10-dhcp.network"' \
  --customize-hook='chroot "$1" systemctl enable systemd-networkd.service' \
  --customize-hook='chroot "$1" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer' \
  --customize-hook="install -d -m 0700 \"\$1/root/.ssh\" && install -m 0600 \"$tmp/id_ed25519.pub\" \"\$1/root/.ssh/authorized_keys\"" \
  --customize-hook='printf "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n" > "$1/etc/ssh/sshd_config.d/effect-qemu.conf"' \
  --customize-hook="cp \"\$1\"/boot/vmlinuz-* \"$tmp/vmlinuz\" && cp \"\$1\"/boot/initrd.img-* \"$tmp/initrd.img\"" \
  --customize-hook='ls "$1/lib/modules" > "$1/../kernel-version"' \
  "$suite" "$root" "$mirror" >&2

# ext4 populated from the directory: no loop device, no mount.
mke2fs -q -t ext4 -L debian -d "$root" -E root_owner=0:0 "$tmp/disk.raw" "$size"
qemu-img convert -O qcow2 "$tmp/disk.raw" "$tmp/disk.qcow2"
rm -f "$tmp/disk.raw"
kernel_version="$(cat "$tmp/kernel-version")"
rm -rf "$root" "$tmp/kernel-version"
chmod 0644 "$tmp/vmlinuz" "$tmp/initrd.img"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
printf '{ "suite": "%s", "kernelVersion": "%s", "packages": "%s", "buildMs": %d }\n' \
  "$suite" "$kernel_version" "$(join "${packages[@]}")" "$ms" >"$tmp/image.json"
trap - EXIT
rm -rf "$out"
mv "$tmp" "$out"
echo "debian-image: built $out in $ms ms (kernel $kernel_version)" >&2
