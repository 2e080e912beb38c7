#!/usr/bin/env bash
# Throwaway PostgreSQL 15 primary (with pg_cron) and a streaming standby built
# by pg_basebackup on a physical replication slot, for failover tests.
# Debian/Ubuntu, root. A sibling of scripts/pg15.sh, whose helpers it uses.
#
#   eval "$(scripts/pg15-ha.sh start [--sync] DIR)"  # prints export lines on stdout
#   scripts/pg15-ha.sh kill-primary DIR   # pg_ctl stop -m immediate on the primary
#   scripts/pg15-ha.sh promote DIR        # pg_ctl promote on the standby (waits)
#   scripts/pg15-ha.sh status DIR
#   scripts/pg15-ha.sh stop DIR           # stops both servers, removes DIR
#
# --sync makes the standby synchronous (synchronous_standby_names names it and
# synchronous_commit is on): a commit is acknowledged only once the standby
# has flushed its WAL. Without it replication is asynchronous.
#
# Exports: QMAINT_TEST_HA_PRIMARY_URL, QMAINT_TEST_HA_STANDBY_URL,
# QMAINT_TEST_HA_URL (both hosts, target_session_attrs=read-write),
# QMAINT_TEST_HA_CRON_URL, QMAINT_TEST_HA_DIR, QMAINT_TEST_HA_SYNC (1 or 0).
set -euo pipefail

# shellcheck source=scripts/pg15.sh
source "$(dirname "${BASH_SOURCE[0]}")/pg15.sh"

MARKER=.qmaint-pg15-ha
SLOT=qmaint_standby
STANDBY_NAME=qmaint_standby

log() { printf 'pg15-ha: %s\n' "$*" >&2; }
die() { printf 'pg15-ha: error: %s\n' "$*" >&2; exit 1; }
usage() { printf 'usage: %s {start [--sync]|kill-primary|promote|status|stop} DIR\n' "${0##*/}" >&2; exit 2; }

conf_port() { sed -n 's/^port = //p' "$1/postgresql.conf" | tail -1; }

psql_at() { # port db sql
  "$PG_BIN/psql" -X -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d "$2" -c "$3"
}

stop_server() { # datadir mode
  local data=$1 mode=$2 pid i
  [[ -f $data/postmaster.pid ]] || return 0
  as_pg "$PG_BIN/pg_ctl" -D "$data" -m "$mode" -w -t 30 stop >/dev/null 2>&1 || {
    pid=$(head -1 "$data/postmaster.pid" 2>/dev/null || true)
    if pid_alive "$pid"; then
      kill -QUIT "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do pid_alive "$pid" || break; sleep 0.1; done
    fi
  }
}

do_ha_stop() {
  local dir=$1
  check_dir_is_ours "$dir"
  [[ -d $dir ]] || return 0
  [[ -d $dir/standby ]] && { log "stopping standby"; stop_server "$dir/standby" fast; }
  [[ -d $dir/primary ]] && { log "stopping primary"; stop_server "$dir/primary" fast; }
  rm -rf -- "$dir"
}

do_ha_start() {
  local dir=$1 sync=$2
  ensure_packages
  ensure_pg_user
  do_ha_stop "$dir"
  mkdir -p "$dir/run1" "$dir/run2"
  : >"$dir/$MARKER"
  chown -R "$PG_USER:" "$dir"
  chmod 700 "$dir"
  as_pg test -w "$dir" || die "$PG_USER cannot write $dir (is a parent directory closed to it?)"

  log "initdb $dir/primary"
  as_pg "$PG_BIN/initdb" -D "$dir/primary" --auth=trust -U postgres --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  as_pg "$PG_BIN/postgres" --single -D "$dir/primary" -j postgres >>"$dir/initdb.log" 2>&1 <<<"CREATE DATABASE $CRON_DB;" ||
    { cat "$dir/initdb.log" >&2; die "creating $CRON_DB failed"; }

  local p1 p2
  p1=$(free_port)
  p2=$(free_port)
  while [[ $p2 == "$p1" ]]; do p2=$(free_port); done
  {
    echo
    echo "# --- qmaint scripts/pg15-ha.sh (throwaway primary) ---"
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $p1"
    echo "unix_socket_directories = '$dir/run1'"
    echo "shared_preload_libraries = 'pg_cron'"
    echo "cron.database_name = '$CRON_DB'"
    echo "cron.use_background_workers = on"
    if grep -aq 'cron.timezone' "$PG_CRON_SO" 2>/dev/null; then echo "cron.timezone = 'UTC'"; fi
    echo "max_worker_processes = 32"
    echo "max_connections = 200"
    echo "wal_level = replica"
    echo "max_wal_senders = 5"
    echo "max_replication_slots = 5"
    echo "hot_standby = on"
    echo "hot_standby_feedback = on"
    # The servers are killed (-m immediate), never the machine: the OS keeps
    # what PostgreSQL wrote, so skipping fsync loses nothing these tests measure.
    echo "fsync = off"
    echo "full_page_writes = off"
    echo "synchronous_commit = on"
  } >>"$dir/primary/postgresql.conf"

  log "starting primary on 127.0.0.1:$p1"
  as_pg "$PG_BIN/pg_ctl" -D "$dir/primary" -l "$dir/primary.log" -w -t 60 start >/dev/null 2>&1 ||
    { tail -n 30 "$dir/primary.log" >&2 || true; die "primary failed to start"; }
  psql_at "$p1" "$CRON_DB" "CREATE EXTENSION IF NOT EXISTS pg_cron" >/dev/null
  psql_at "$p1" postgres "SELECT pg_create_physical_replication_slot('$SLOT')" >/dev/null

  log "pg_basebackup into $dir/standby (slot $SLOT)"
  as_pg "$PG_BIN/pg_basebackup" -D "$dir/standby" -h 127.0.0.1 -p "$p1" -U postgres -X stream -S "$SLOT" \
    -d "application_name=$STANDBY_NAME" -R >"$dir/basebackup.log" 2>&1 ||
    { cat "$dir/basebackup.log" >&2; die "pg_basebackup failed"; }
  {
    echo
    echo "# --- qmaint scripts/pg15-ha.sh (throwaway standby) ---"
    echo "port = $p2"
    echo "unix_socket_directories = '$dir/run2'"
    echo "primary_slot_name = '$SLOT'"
  } >>"$dir/standby/postgresql.conf"

  log "starting standby on 127.0.0.1:$p2"
  as_pg "$PG_BIN/pg_ctl" -D "$dir/standby" -l "$dir/standby.log" -w -t 60 start >/dev/null 2>&1 ||
    { tail -n 30 "$dir/standby.log" >&2 || true; die "standby failed to start"; }

  # Only now: with a synchronous standby named and none connected, every commit waits.
  if [[ $sync == 1 ]]; then
    psql_at "$p1" postgres "ALTER SYSTEM SET synchronous_standby_names = '$STANDBY_NAME'" >/dev/null
    psql_at "$p1" postgres "SELECT pg_reload_conf()" >/dev/null
  fi
  local i state=''
  for ((i = 0; i < 100; i++)); do
    state=$(psql_at "$p1" postgres "SELECT state || '/' || sync_state FROM pg_stat_replication WHERE application_name = '$STANDBY_NAME'" || true)
    if [[ $state == streaming/* ]] && { [[ $sync == 0 ]] || [[ $state == streaming/sync ]]; }; then break; fi
    sleep 0.2
  done
  [[ $state == streaming/* ]] || { tail -n 30 "$dir/standby.log" >&2 || true; die "standby is not streaming (state '$state')"; }

  {
    echo "export QMAINT_TEST_HA_DIR=$dir"
    echo "export QMAINT_TEST_HA_SYNC=$sync"
    echo "export QMAINT_TEST_HA_PRIMARY_URL=postgres://postgres@127.0.0.1:$p1/postgres"
    echo "export QMAINT_TEST_HA_STANDBY_URL=postgres://postgres@127.0.0.1:$p2/postgres"
    echo "export QMAINT_TEST_HA_URL='postgres://postgres@127.0.0.1:$p1,127.0.0.1:$p2/postgres?target_session_attrs=read-write'"
    echo "export QMAINT_TEST_HA_CRON_URL='postgres://postgres@127.0.0.1:$p1,127.0.0.1:$p2/$CRON_DB?target_session_attrs=read-write'"
  } >"$dir/env"
  log "ready: primary $p1, standby $p2 ($state); env in $dir/env"
  cat "$dir/env"
}

do_kill_primary() {
  local dir=$1
  [[ -e $dir/$MARKER ]] || die "$dir is not a pg15-ha rig"
  log "stopping the primary with -m immediate"
  stop_server "$dir/primary" immediate
}

do_promote() {
  local dir=$1
  [[ -e $dir/$MARKER ]] || die "$dir is not a pg15-ha rig"
  log "promoting the standby"
  as_pg "$PG_BIN/pg_ctl" -D "$dir/standby" -w -t 60 promote >/dev/null 2>&1 || die "promote failed (see $dir/standby.log)"
}

do_ha_status() {
  local dir=$1 node rc=0 port
  for node in primary standby; do
    if [[ -d $dir/$node ]] && as_pg "$PG_BIN/pg_ctl" -D "$dir/$node" status >/dev/null 2>&1; then
      port=$(sed -n 4p "$dir/$node/postmaster.pid")
      echo "$node: running (port $port, in recovery: $(psql_at "$port" postgres 'SELECT pg_is_in_recovery()'))"
    else
      echo "$node: stopped"
      rc=3
    fi
  done
  [[ -f $dir/env ]] && cat "$dir/env"
  return $rc
}

cmd=${1:-}
shift || true
sync=0
if [[ $cmd == start && ${1:-} == --sync ]]; then sync=1; shift; fi
(($# == 1)) || usage
DIR=$1
[[ $DIR == /* ]] || DIR=$PWD/$DIR
DIR=${DIR%/}
case $cmd in
  start) do_ha_start "$DIR" "$sync" ;;
  kill-primary) do_kill_primary "$DIR" ;;
  promote) do_promote "$DIR" ;;
  status) do_ha_status "$DIR" ;;
  stop) do_ha_stop "$DIR" ;;
  *) usage ;;
esac
