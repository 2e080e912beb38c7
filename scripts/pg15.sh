#!/usr/bin/env bash
# Throwaway PostgreSQL 15 cluster with pg_cron, plus PgBouncer (transaction
# pooling) in front of it, for CI and local development. Debian/Ubuntu, root.
#
#   eval "$(scripts/pg15.sh start [DIR])"   # prints export lines on stdout
#   scripts/pg15.sh status [DIR]
#   scripts/pg15.sh stop [DIR]              # stops everything, removes DIR
#
# DIR defaults to ${QMAINT_PG15_DIR:-/tmp/qmaint-pg15}. Only the export lines
# go to stdout; progress goes to stderr. The system cluster (5432) and the
# packaged pgbouncer port (6432) are never used: ports are picked at random.
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin
PG_CRON_CONTROL=/usr/share/postgresql/15/extension/pg_cron.control
PG_CRON_SO=/usr/lib/postgresql/15/lib/pg_cron.so
PLPGSQL_CHECK_CONTROL=/usr/share/postgresql/15/extension/plpgsql_check.control
PG_USER=postgres
MARKER=.qmaint-pg15
CRON_DB=qmaint_cron

log() { printf 'pg15: %s\n' "$*" >&2; }
die() { printf 'pg15: error: %s\n' "$*" >&2; exit 1; }
usage() { printf 'usage: %s {start|stop|status} [DIR]\n' "${0##*/}" >&2; exit 2; }

as_pg() { runuser -u "$PG_USER" -- "$@"; }

free_port() {
  local p
  if command -v python3 >/dev/null 2>&1 &&
    p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null); then
    :
  elif command -v node >/dev/null 2>&1; then
    p=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
  else
    die "need python3 or node to find a free port"
  fi
  case $p in 5432 | 6432) free_port ;; *) printf '%s\n' "$p" ;; esac
}

# Version as an integer, e.g. "1.18.0" -> 1018000.
vnum() { awk -F. '{ printf "%d\n", $1*1000000 + $2*1000 + $3 }' <<<"$1"; }

ensure_packages() {
  local pkgs=()
  [[ -x $PG_BIN/initdb ]] || pkgs+=(postgresql-15)
  [[ -f $PG_CRON_CONTROL ]] || pkgs+=(postgresql-15-cron)
  [[ -f $PLPGSQL_CHECK_CONTROL ]] || pkgs+=(postgresql-15-plpgsql-check)
  command -v pgbouncer >/dev/null 2>&1 || pkgs+=(pgbouncer)
  ((${#pkgs[@]})) || return 0
  [[ $(id -u) -eq 0 ]] || die "missing ${pkgs[*]} and not root"

  local aptlog policy=/usr/sbin/policy-rc.d made_policy=0 p need_update=0 rc=0
  aptlog=$(mktemp /tmp/qmaint-pg15-apt.XXXXXX)
  # Keep the packages' own services (pgbouncer on 6432, a new 15/main cluster)
  # from being started by the install.
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
  fi
  for p in "${pkgs[@]}"; do
    apt-cache show "$p" >/dev/null 2>&1 || need_update=1
  done
  log "installing ${pkgs[*]} (log: $aptlog)"
  {
    if ((need_update)); then apt-get update >>"$aptlog" 2>&1 || rc=$?; fi
    if ((rc == 0)); then
      DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}" >>"$aptlog" 2>&1 || rc=$?
      if ((rc != 0 && need_update == 0)); then
        # stale package lists (404s): refresh once and retry
        rc=0
        apt-get update >>"$aptlog" 2>&1 &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}" >>"$aptlog" 2>&1 || rc=$?
      fi
    fi
  }
  ((made_policy)) && rm -f "$policy"
  if ((rc != 0)); then
    cat "$aptlog" >&2
    die "apt-get failed (exit $rc)"
  fi
  rm -f "$aptlog"
  [[ -x $PG_BIN/initdb && -f $PG_CRON_CONTROL && -f $PLPGSQL_CHECK_CONTROL ]] && command -v pgbouncer >/dev/null 2>&1 ||
    die "packages installed but initdb/pg_cron/plpgsql_check/pgbouncer still missing"
}

ensure_pg_user() {
  id -u "$PG_USER" >/dev/null 2>&1 && return 0
  log "creating OS user $PG_USER"
  useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash "$PG_USER"
}

# Refuse to rm -rf anything that we did not create.
check_dir_is_ours() {
  local dir=$1
  [[ -n $dir && $dir != / ]] || die "refusing to use DIR '$dir'"
  [[ -e $dir ]] || return 0
  [[ -d $dir ]] || die "$dir exists and is not a directory"
  [[ -e $dir/$MARKER ]] && return 0
  [[ -z $(ls -A "$dir") ]] && return 0
  die "$dir is not empty and was not created by $0; refusing to touch it"
}

pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

bouncer_pid() { [[ -f $1/pgbouncer.pid ]] && tr -d '[:space:]' <"$1/pgbouncer.pid" || true; }

do_stop() {
  local dir=$1 pid i
  check_dir_is_ours "$dir"
  [[ -d $dir ]] || return 0
  pid=$(bouncer_pid "$dir")
  if pid_alive "$pid"; then
    log "stopping pgbouncer (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do pid_alive "$pid" || break; sleep 0.1; done
    pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
  fi
  if [[ -f $dir/data/postmaster.pid && -x $PG_BIN/pg_ctl ]]; then
    log "stopping postgres"
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || {
      pid=$(head -1 "$dir/data/postmaster.pid" 2>/dev/null || true)
      if pid_alive "$pid"; then
        log "pg_ctl stop failed; sending SIGQUIT to $pid"
        kill -QUIT "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do pid_alive "$pid" || break; sleep 0.1; done
      fi
    }
  fi
  rm -rf -- "$dir"
}

do_status() {
  local dir=$1 pid rc=0
  if [[ -d $dir/data ]] && as_pg "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    echo "postgres: running (pid $(head -1 "$dir/data/postmaster.pid"), port $(sed -n 4p "$dir/data/postmaster.pid"))"
  else
    echo "postgres: stopped"; rc=3
  fi
  pid=$(bouncer_pid "$dir")
  if pid_alive "$pid"; then
    echo "pgbouncer: running (pid $pid, port $(sed -n 's/^listen_port *= *//p' "$dir/pgbouncer.ini"))"
  else
    echo "pgbouncer: stopped"; rc=3
  fi
  [[ -f $dir/env ]] && cat "$dir/env"
  return $rc
}

do_start() {
  local dir=$1
  ensure_packages
  ensure_pg_user
  do_stop "$dir" # idempotent restart

  mkdir -p "$dir/run"
  : >"$dir/$MARKER"
  chown -R "$PG_USER:" "$dir"
  chmod 700 "$dir"
  as_pg test -w "$dir" || die "$PG_USER cannot write $dir (is a parent directory closed to it?)"

  log "initdb $dir/data"
  local locale=C.UTF-8
  if ! as_pg "$PG_BIN/initdb" -D "$dir/data" --auth=trust -U postgres --encoding=UTF8 \
    --locale="$locale" >"$dir/initdb.log" 2>&1; then
    log "initdb with C.UTF-8 failed; retrying with locale C"
    rm -rf -- "$dir/data"
    locale=C
    as_pg "$PG_BIN/initdb" -D "$dir/data" --auth=trust -U postgres --encoding=UTF8 \
      --locale=C >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  fi

  # Create the pg_cron database before the first real start, so the pg_cron
  # launcher does not log "database does not exist" and restart once.
  as_pg "$PG_BIN/postgres" --single -D "$dir/data" -j postgres >>"$dir/initdb.log" 2>&1 \
    <<<"CREATE DATABASE $CRON_DB;" || { cat "$dir/initdb.log" >&2; die "creating $CRON_DB failed"; }

  local pgport bport
  pgport=$(free_port)
  {
    echo
    echo "# --- qmaint scripts/pg15.sh (throwaway cluster) ---"
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $pgport"
    echo "unix_socket_directories = '$dir/run'"
    echo "shared_preload_libraries = 'pg_cron'"
    echo "cron.database_name = '$CRON_DB'"
    echo "cron.use_background_workers = on"
    # cron.timezone exists from pg_cron 1.5; older versions run in GMT anyway.
    if grep -aq 'cron.timezone' "$PG_CRON_SO" 2>/dev/null; then echo "cron.timezone = 'UTC'"; fi
    echo "max_worker_processes = 32"
    echo "max_connections = 300"
    echo "fsync = off"
    echo "synchronous_commit = off"
    echo "full_page_writes = off"
  } >>"$dir/data/postgresql.conf"

  # A German locale of the cluster's own (LOCPATH), so a test can SET lc_messages
  # and check that nothing depends on English server messages. Optional.
  if command -v localedef >/dev/null 2>&1 && [[ -f /usr/share/i18n/locales/de_DE ]]; then
    mkdir -p "$dir/locale"
    localedef -i de_DE -f UTF-8 "$dir/locale/de_DE.UTF-8" >/dev/null 2>&1 || log "localedef de_DE failed; lc_messages stays English"
  fi

  log "starting postgres on 127.0.0.1:$pgport"
  as_pg env LOCPATH="$dir/locale" "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null 2>&1 ||
    { tail -n 30 "$dir/postgres.log" >&2 || true; die "postgres failed to start"; }

  local psql=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pgport" -U postgres)
  "${psql[@]}" -d "$CRON_DB" -c "CREATE EXTENSION IF NOT EXISTS pg_cron" >/dev/null

  # PgBouncer
  local bver bnum
  bver=$(pgbouncer --version 2>/dev/null | sed -n 's/^[Pp]g[Bb]ouncer \([0-9.]*\).*/\1/p' | head -1)
  bnum=$(vnum "${bver:-0.0.0}")
  bport=$(free_port)
  while [[ $bport == "$pgport" ]]; do bport=$(free_port); done
  printf '"postgres" ""\n' >"$dir/userlist.txt"
  {
    echo "[databases]"
    echo "* = host=127.0.0.1 port=$pgport"
    echo
    echo "[pgbouncer]"
    echo "listen_addr = 127.0.0.1"
    echo "listen_port = $bport"
    echo "unix_socket_dir ="
    echo "pool_mode = transaction"
    echo "auth_type = trust"
    echo "auth_file = $dir/userlist.txt"
    echo "admin_users = postgres"
    echo "max_client_conn = 500"
    echo "default_pool_size = 40"
    echo "ignore_startup_parameters = extra_float_digits,options,search_path"
    # protocol-level prepared statements in transaction mode: pgbouncer >= 1.21
    if ((bnum >= 1021000)); then echo "max_prepared_statements = 200"; fi
    echo "logfile = $dir/pgbouncer.log"
    echo "pidfile = $dir/pgbouncer.pid"
  } >"$dir/pgbouncer.ini"
  : >"$dir/pgbouncer.log" # must be writable by $PG_USER, or pgbouncer dies after forking
  chown "$PG_USER:" "$dir/userlist.txt" "$dir/pgbouncer.ini" "$dir/pgbouncer.log"

  log "starting pgbouncer ${bver:-?} on 127.0.0.1:$bport"
  as_pg pgbouncer -d "$dir/pgbouncer.ini" >"$dir/pgbouncer.stderr" 2>&1 ||
    { cat "$dir/pgbouncer.stderr" >&2; die "pgbouncer failed to start"; }
  local i ok=0
  for ((i = 0; i < 50; i++)); do
    if PGCONNECT_TIMEOUT=2 "$PG_BIN/psql" -X -qAt -h 127.0.0.1 -p "$bport" -U postgres -d postgres \
      -c 'select 1' >/dev/null 2>&1; then
      ok=1; break
    fi
    sleep 0.2
  done
  ((ok)) || { cat "$dir/pgbouncer.stderr" >&2; tail -n 30 "$dir/pgbouncer.log" >&2 || true; die "pgbouncer not accepting connections"; }

  {
    echo "export QMAINT_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$pgport/postgres"
    echo "export QMAINT_TEST_PGCRON_URL=postgres://postgres@127.0.0.1:$pgport/$CRON_DB"
    echo "export QMAINT_TEST_PGBOUNCER_URL=postgres://postgres@127.0.0.1:$bport/postgres"
  } >"$dir/env"
  log "ready (pg_cron $("${psql[@]}" -At -d "$CRON_DB" -c "select extversion from pg_extension where extname='pg_cron'"), pgbouncer ${bver:-?}); env in $dir/env"
  cat "$dir/env"
}

# Sourced (by scripts/pg15-ha.sh): define the functions only.
[[ ${BASH_SOURCE[0]} == "$0" ]] || return 0

(($# >= 1 && $# <= 2)) || usage
cmd=$1
DIR=${2:-${QMAINT_PG15_DIR:-/tmp/qmaint-pg15}}
[[ $DIR == /* ]] || DIR=$PWD/$DIR
DIR=${DIR%/}
case $cmd in
  start) do_start "$DIR" ;;
  stop) do_stop "$DIR" ;;
  status) do_status "$DIR" ;;
  *) usage ;;
esac
