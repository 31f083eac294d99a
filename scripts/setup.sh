#!/usr/bin/env bash
# Installs what the demo and the tests need, and nothing when it is all there:
# QEMU (apt, as root) and the node modules with the native addon (npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-qemu.sh
# npm ci again only when the lockfile changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] \
   || [ ! -f build/Release/fdpass.node ] || [ ! -f build/Release/spawn.node ]; then
  echo "::: npm ci"
  npm ci --no-audit --no-fund
fi
