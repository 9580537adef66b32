#!/bin/bash
# pg-private.sh - a private PostgreSQL 15 for flowd's tests, demo and benchmarks.
#
#   scripts/pg-private.sh start  DIR PORT   create (first time) and start; creates database "flowd"
#   scripts/pg-private.sh stop   DIR        stop (fast mode); a stopped instance is not an error
#   scripts/pg-private.sh status DIR        exit 0 and print the port if running, else exit 3
#
# Layout: DIR/data (the cluster), DIR/sock (its unix socket), DIR/postgres.log,
# DIR/port (the port of the last start). It listens on 127.0.0.1 only, with
# trust authentication for the user "postgres": connect with
# "host=127.0.0.1 port=PORT dbname=flowd user=postgres". fsync stays on, so
# durability tests mean something.
#
# As root, initdb and the server run as the "postgres" user (initdb refuses
# root): DIR is chowned to postgres, and every parent directory of DIR that
# postgres cannot search gets o+x (search only, never read), which is what a
# DIR under the build tree (e.g. /work/main/build/it/pg) needs. As any other
# user, everything runs as that user.
#
# Environment: PG_BIN (default /usr/lib/postgresql/15/bin),
# PG_START_TIMEOUT (seconds, default 60).
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_START_TIMEOUT=${PG_START_TIMEOUT:-60}
unset PGHOST PGPORT PGDATABASE PGUSER PGDATA PGSERVICE PGOPTIONS

usage() {
	echo "usage: $0 start DIR PORT | stop DIR | status DIR" >&2
	exit 2
}
say() { echo "pg-private: $*" >&2; }
die() { say "$*"; exit 1; }

[ $# -ge 2 ] || usage
cmd=$1
dir=$(realpath -m -- "$2")
data=$dir/data
sock=$dir/sock
log=$dir/postgres.log

if [ "$(id -u)" -eq 0 ]; then
	id postgres >/dev/null 2>&1 || die "no 'postgres' user (install postgresql-15: scripts/install-deps.sh)"
	as_pg=(runuser -u postgres --)
else
	as_pg=()
fi
pg() { "${as_pg[@]}" "$@"; }

[ -x "$PG_BIN/pg_ctl" ] || die "no $PG_BIN/pg_ctl (install postgresql-15: scripts/install-deps.sh)"

is_running() {
	[ -f "$data/PG_VERSION" ] && pg "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1
}

running_port() { # the port of the running postmaster (line 4 of postmaster.pid)
	sed -n 4p "$data/postmaster.pid" 2>/dev/null
}

# Give the postgres user search permission on every parent of $dir.
open_parents() {
	[ "$(id -u)" -eq 0 ] || return 0
	local d=$dir
	while [ "$d" != / ]; do
		d=$(dirname -- "$d")
		if ! runuser -u postgres -- test -x "$d" 2>/dev/null; then
			say "chmod o+x $d (the postgres user must be able to reach $dir)"
			chmod o+x -- "$d"
		fi
	done
}

do_init() {
	mkdir -p -- "$dir"
	open_parents
	if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres -- "$dir"; fi
	pg mkdir -p -- "$sock"
	if [ -f "$data/PG_VERSION" ]; then
		return 0
	fi
	say "initdb $data"
	pg "$PG_BIN/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; die "initdb failed"; }
	pg tee -a "$data/postgresql.conf" >/dev/null <<CONF

# --- pg-private.sh ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sock'
fsync = on
synchronous_commit = on
full_page_writes = on
shared_buffers = 64MB
max_connections = 200
max_wal_size = 1GB
logging_collector = off
log_min_messages = warning
log_line_prefix = '%m [%p] '
CONF
}

wait_ready() { # port
	local deadline=$((SECONDS + PG_START_TIMEOUT))
	while ! "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$1" -U postgres -d postgres; do
		if [ $SECONDS -ge $deadline ]; then
			tail -n 30 "$log" >&2 || true
			die "not accepting connections on 127.0.0.1:$1 after ${PG_START_TIMEOUT}s"
		fi
		sleep 0.1
	done
}

do_start() { # port
	local port=$1
	[[ "$port" =~ ^[0-9]+$ ]] || die "bad port '$port'"
	do_init
	if is_running; then
		if [ "$(running_port)" = "$port" ]; then
			say "already running on 127.0.0.1:$port"
		else
			say "running on port $(running_port), restarting on $port"
			do_stop
		fi
	fi
	if ! is_running; then
		say "starting on 127.0.0.1:$port ($data, log $log)"
		pg touch "$log"
		pg "$PG_BIN/pg_ctl" -D "$data" -l "$log" -o "-p $port" -w -t "$PG_START_TIMEOUT" start >/dev/null ||
			{ tail -n 30 "$log" >&2 || true; die "pg_ctl start failed"; }
	fi
	echo "$port" >"$dir/port"
	wait_ready "$port"
	local psql=("$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d postgres)
	if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'flowd'")" != 1 ]; then
		say "creating database flowd"
		"${psql[@]}" -c "CREATE DATABASE flowd" >/dev/null
	fi
	say "ready: host=127.0.0.1 port=$port dbname=flowd user=postgres"
}

do_stop() {
	if ! is_running; then
		say "not running ($data)"
		return 0
	fi
	say "stopping ($data)"
	pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t "$PG_START_TIMEOUT" stop >/dev/null
}

do_status() {
	if is_running; then
		echo "running port=$(running_port) data=$data"
		return 0
	fi
	echo "stopped data=$data"
	return 3
}

case $cmd in
start)  [ $# -eq 3 ] || usage; do_start "$3" ;;
stop)   [ $# -eq 2 ] || usage; do_stop ;;
status) [ $# -eq 2 ] || usage; do_status ;;
*)      usage ;;
esac
