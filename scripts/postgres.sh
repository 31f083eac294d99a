#!/usr/bin/env bash
# A throwaway PostgreSQL for the fleet's multi-host checks.
#
#   bash scripts/postgres.sh start        → starts one in a new temp dir, prints
#                                           PGDIR=<dir> and DATABASE_URL=<url>
#   bash scripts/postgres.sh stop <dir>   → stops it and removes the dir (database included)
#
# PostgreSQL comes from Debian (`postgresql`): installed with apt when missing
# and we are root; otherwise the command to run is printed. As root the server
# runs as the unprivileged user `nobody`; its socket lives in the temp dir and it
# listens on 127.0.0.1 on a free port, trusting local connections only.
set -euo pipefail

find_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done
  return 1
}

# The exact command, for a user who is not root (or has no apt-get).
INSTALL_HINT="apt-get install -y postgresql"

ensure_installed() {
  if find_bindir >/dev/null; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "PostgreSQL is missing: $INSTALL_HINT" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 \
      || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
    if find_bindir >/dev/null; then stop_default_clusters; return 0; fi
  fi
  if [ "$(id -u)" = 0 ]; then
    echo "PostgreSQL is not installed. Install it with: $INSTALL_HINT" >&2
  else
    echo "PostgreSQL is not installed. Install it with: sudo $INSTALL_HINT" >&2
  fi
  exit 1
}

# Debian's package creates and, where services may start (systemd, no
# policy-rc.d), starts a default cluster. We only need the binaries: a server
# that our install started is stopped again, so that the check leaves nothing running.
stop_default_clusters() {
  command -v pg_lsclusters >/dev/null || return 0
  local ver name port status rest
  pg_lsclusters -h 2>/dev/null | while read -r ver name port status rest; do
    case "$status" in online*)
      echo "stopping the default cluster $ver/$name that the install started" >&2
      pg_ctlcluster "$ver" "$name" stop >&2 || true ;;
    esac
  done
}

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi
}

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

start() {
  ensure_installed
  local bin dir port parent
  bin=$(find_bindir)
  parent=${TMPDIR:-/tmp}
  # as root the server runs as nobody, who must be able to reach the dir
  if [ "$(id -u)" = 0 ] && ! runuser -u nobody -- test -x "$parent"; then parent=/tmp; fi
  dir=$(mktemp -d "$parent/effect-qemu-pg-XXXXXX")
  chmod 0700 "$dir"
  [ "$(id -u)" = 0 ] && chown nobody:nogroup "$dir"
  if ! as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2; rm -rf "$dir"; exit 1
  fi
  mkdir -p "$dir/sock"; [ "$(id -u)" = 0 ] && chown nobody:nogroup "$dir/sock"
  for attempt in 1 2 3; do
    port=$(free_port)
    if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null 2>&1; then
      echo "PGDIR=$dir"
      echo "DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres"
      return 0
    fi
  done
  cat "$dir/server.log" >&2 || true
  rm -rf "$dir"
  exit 1
}

stop() {
  local dir=${1:?usage: postgres.sh stop <dir>} bin
  case "$dir" in *effect-qemu-pg-*) ;; *) echo "not a dir of ours: $dir" >&2; exit 1 ;; esac
  bin=$(find_bindir)
  if [ -d "$dir/data" ]; then as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true; fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 start | stop <dir>" >&2; exit 2 ;;
esac
