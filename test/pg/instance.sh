#!/usr/bin/env bash
# test/pg/instance.sh — a throwaway PostgreSQL cluster under one temporary
# directory, listening on 127.0.0.1 only, for the tests of internal/pgstore
# and internal/cli.
#
#   instance.sh start
#       creates a cluster (initdb -A trust -U mailgate --no-sync) in a new
#       temporary directory, starts it on a free loopback port with fsync
#       off, creates the database "mailgate" and prints shell assignments:
#         PG_DIR='…'  PG_PORT='…'  DATABASE_URL='postgres://mailgate@127.0.0.1:PORT/mailgate?sslmode=disable'
#   instance.sh pause DIR    stops the server (pg_ctl stop -m fast), keeps the data
#   instance.sh resume DIR   starts it again on the same port
#   instance.sh stop DIR     stops the server and removes DIR
#
# initdb and pg_ctl are taken from PATH, else from the newest
# /usr/lib/postgresql/*/bin (Debian's postgresql package does not put them on
# PATH). As root, the server runs as the system user postgres (created when
# missing), which owns DIR. Exit status 3 means PostgreSQL is not installed.
set -euo pipefail
die() { echo "pg/instance.sh: $*" >&2; exit 1; }
MARK=.mailgate-test-cluster

find_bin() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    BIN=$(dirname "$(readlink -f "$(command -v initdb)")")
    [ -x "$BIN/pg_ctl" ] && [ -x "$BIN/pg_isready" ] && [ -x "$BIN/createdb" ] && return
  fi
  BIN=
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V); do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && BIN=$d
  done
  if [ -z "$BIN" ]; then
    echo "pg/instance.sh: PostgreSQL is not installed (no initdb on PATH nor under /usr/lib/postgresql/*/bin; install the postgresql package)" >&2
    exit 3
  fi
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# as_pg runs a command as the cluster's owner.
as_pg() {
  if is_root; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u postgres -- "$@"
    else
      setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    fi
  else
    "$@"
  fi
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
  local p i
  for i in $(seq 50); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
    port_busy "$p" || { echo "$p"; return; }
  done
  die "no free port on 127.0.0.1 after 50 tries"
}

check_dir() {
  [ -n "${1:-}" ] || die "missing DIR"
  [ -f "$1/$MARK" ] || die "$1 is not a cluster made by instance.sh start (no $MARK)"
}

# server_start starts the cluster of DIR on PORT and waits until it accepts
# connections on it.
server_start() {
  local dir=$1 port=$2
  if ! as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/sock -c fsync=off -c full_page_writes=off -c synchronous_commit=off" \
      start >/dev/null; then
    echo "pg/instance.sh: pg_ctl start failed on port $port; server log:" >&2
    tail -20 "$dir/log" >&2 || true
    return 1
  fi
  local i
  for i in $(seq 100); do
    if as_pg "$BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U mailgate -d postgres -t 1; then return 0; fi
    sleep 0.1
  done
  echo "pg/instance.sh: the server on port $port is not ready after 10 s; server log:" >&2
  as_pg "$BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  tail -20 "$dir/log" >&2 || true
  return 1
}

cmd=${1:-}
case "$cmd" in
start)
  [ $# -eq 1 ] || die "usage: instance.sh start"
  find_bin
  if is_root && ! id postgres >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postgres \
      || die "cannot create the postgres system user"
  fi
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/mailgate-pg.XXXXXX") || die "mktemp failed"
  touch "$DIR/$MARK"
  mkdir "$DIR/sock"
  chmod 755 "$DIR"
  if is_root; then
    chown -R postgres: "$DIR"
    as_pg test -w "$DIR" || die "user postgres cannot write $DIR (is a parent directory of TMPDIR closed to others?)"
  fi
  if ! as_pg "$BIN/initdb" -D "$DIR/data" -A trust -U mailgate --no-sync -E UTF8 --locale=C >"$DIR/initdb.log" 2>&1; then
    cat "$DIR/initdb.log" >&2
    rm -rf "$DIR"
    die "initdb failed"
  fi
  started=
  for _ in 1 2 3 4 5; do
    PORT=$(free_port)
    if server_start "$DIR" "$PORT" 2>"$DIR/start.err"; then started=1; break; fi
    port_busy "$PORT" || { cat "$DIR/start.err" >&2; break; } # not a port race: give up
  done
  if [ -z "$started" ]; then
    rm -rf "$DIR"
    die "could not start the server"
  fi
  echo "$PORT" >"$DIR/port"
  if ! as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U mailgate mailgate; then
    as_pg "$BIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$DIR"
    die "createdb mailgate failed"
  fi
  printf "PG_DIR='%s'\nPG_PORT='%s'\nDATABASE_URL='postgres://mailgate@127.0.0.1:%s/mailgate?sslmode=disable'\n" "$DIR" "$PORT" "$PORT"
  ;;
pause)
  [ $# -eq 2 ] || die "usage: instance.sh pause DIR"
  check_dir "$2"; find_bin
  as_pg "$BIN/pg_ctl" -D "$2/data" -m fast -w -t 30 stop >/dev/null || die "pg_ctl stop failed (see $2/log)"
  ;;
resume)
  [ $# -eq 2 ] || die "usage: instance.sh resume DIR"
  check_dir "$2"; find_bin
  PORT=$(cat "$2/port") || die "no port file in $2"
  port_busy "$PORT" && die "port $PORT is taken by another process"
  server_start "$2" "$PORT" || die "could not restart the server on port $PORT"
  ;;
stop)
  [ $# -eq 2 ] || die "usage: instance.sh stop DIR"
  check_dir "$2"; find_bin
  as_pg "$BIN/pg_ctl" -D "$2/data" -m fast -w -t 30 stop >/dev/null 2>&1 || \
    as_pg "$BIN/pg_ctl" -D "$2/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$2"
  ;;
*)
  die "usage: instance.sh start | pause DIR | resume DIR | stop DIR" ;;
esac
