#!/bin/bash
# demo.sh - `make run`: a local flowd cluster with its own PostgreSQL, a flow
# deployed, a run started and watched to the end, then curl commands to try.
#
# Everything lives under build/demo/ and is recreated on every start (a fresh
# PostgreSQL under build/demo/pg and fresh Raft data dirs), so the demo never
# depends on what ran before. Ctrl-C stops flowd (SIGTERM) and PostgreSQL.
#
# Environment:
#   NODES=3             nodes in the cluster (ids 1..NODES)
#   DEMO_ONESHOT=1      exit 0 once the first run succeeded (the README check)
#   BUILD=build         build directory holding flowd
#   FLOWD_BIN=...       the flowd binary (default $BUILD/flowd)
#   API_PORT=8480       first node's API port (node i uses API_PORT+i-1)
#   RAFT_PORT=8580      first node's Raft port
#   PG_PORT=8680        PostgreSQL's port
#   (a busy port is replaced by a free one, and said so)
#   FLOWD_ADMIN_TOKEN   the admin token (default: 32 random hex digits)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
NODES=${NODES:-3}
BUILD=${BUILD:-build}
FLOWD_BIN=${FLOWD_BIN:-$ROOT/$BUILD/flowd}
DEMO_DIR=$ROOT/$BUILD/demo
PG_DIR=$DEMO_DIR/pg
FLOW_FILE=$ROOT/deploy/examples/hello.json
TICKER_FILE=$ROOT/deploy/examples/ticker.json
READY_TIMEOUT=${READY_TIMEOUT:-30}
RUN_TIMEOUT=${RUN_TIMEOUT:-60}

say() { echo "demo: $*" >&2; }
die() { say "$*"; exit 1; }

[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "NODES must be a positive integer (got '$NODES')"
[ -x "$FLOWD_BIN" ] || die "no flowd binary at $FLOWD_BIN (run make first)"
command -v curl >/dev/null || die "curl is missing (scripts/install-deps.sh)"
command -v python3 >/dev/null || die "python3 is missing (scripts/install-deps.sh)"

# --- ports -----------------------------------------------------------------
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pick_port() { # wanted-port name
	if port_busy "$1"; then
		local p; p=$(free_port)
		say "port $1 ($2) is busy, using $p"
		echo "$p"
	else
		echo "$1"
	fi
}

# --- state for cleanup -----------------------------------------------------
declare -a PIDS=()
PG_STARTED=0
CLEANED=0
cleanup() {
	[ "$CLEANED" -eq 1 ] && return 0
	CLEANED=1
	local pid
	for pid in "${PIDS[@]}"; do
		if kill -0 "$pid" 2>/dev/null; then
			say "stopping flowd (pid $pid)"
			kill -TERM "$pid" 2>/dev/null || true
		fi
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [ "$PG_STARTED" -eq 1 ]; then
		"$ROOT/scripts/pg-private.sh" stop "$PG_DIR" || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- a fresh directory and PostgreSQL ----------------------------------------
if [ -d "$PG_DIR/data" ]; then
	"$ROOT/scripts/pg-private.sh" stop "$PG_DIR" || true
fi
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"

PG_PORT=$(pick_port "${PG_PORT:-8680}" postgresql)
"$ROOT/scripts/pg-private.sh" start "$PG_DIR" "$PG_PORT"
PG_STARTED=1
CONNINFO="host=127.0.0.1 port=$PG_PORT dbname=flowd user=postgres"

# --- tokens and configs ------------------------------------------------------
ADMIN_TOKEN=${FLOWD_ADMIN_TOKEN:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
READER_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
[ ${#ADMIN_TOKEN} -ge 16 ] || die "FLOWD_ADMIN_TOKEN must have at least 16 characters"

declare -a API RAFT
api_base=${API_PORT:-8480}
raft_base=${RAFT_PORT:-8580}
for ((i = 1; i <= NODES; i++)); do
	API[i]=127.0.0.1:$(pick_port $((api_base + i - 1)) "node $i api")
	RAFT[i]=127.0.0.1:$(pick_port $((raft_base + i - 1)) "node $i raft")
done

# the nodes' credential between them (docs/security.md), readable by no one else
(umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$DEMO_DIR/cluster.secret")

for ((i = 1; i <= NODES; i++)); do
	dir=$DEMO_DIR/node$i
	mkdir -p "$dir/data"
	{
		echo "# flowd demo node $i (written by scripts/demo.sh)"
		echo "[node]"
		echo "id = $i"
		echo "raft_address = ${RAFT[i]}"
		echo "api_address = ${API[i]}"
		echo "data_dir = $dir/data"
		echo
		echo "[peers]"
		for ((j = 1; j <= NODES; j++)); do
			echo "$j = ${RAFT[j]} ${API[j]}"
		done
		echo
		echo "[database]"
		echo "conninfo = $CONNINFO"
		echo
		echo "[auth]"
		echo "admin_tokens = $ADMIN_TOKEN"
		echo "reader_tokens = $READER_TOKEN"
		echo
		echo "[cluster]"
		echo "secret_file = $DEMO_DIR/cluster.secret"
		echo
		echo "[executor]"
		# steps never run as root: as nobody when the demo runs as root
		if [ "$(id -u)" -eq 0 ]; then echo "run_as = nobody"; fi
	} >"$dir/flowd.conf"
done

# --- start the nodes -------------------------------------------------------------
for ((i = 1; i <= NODES; i++)); do
	dir=$DEMO_DIR/node$i
	say "starting node $i: api http://${API[i]}  log $dir/flowd.log"
	"$FLOWD_BIN" --config "$dir/flowd.conf" </dev/null >>"$dir/flowd.log" 2>&1 &
	PIDS[i]=$!
done

wait_ready() { # node
	local i=$1 deadline=$((SECONDS + READY_TIMEOUT))
	until curl -fsS -o /dev/null "http://${API[i]}/readyz" 2>/dev/null; do
		if ! kill -0 "${PIDS[i]}" 2>/dev/null; then
			tail -n 30 "$DEMO_DIR/node$i/flowd.log" >&2 || true
			die "node $i exited before it was ready"
		fi
		if [ $SECONDS -ge $deadline ]; then
			tail -n 30 "$DEMO_DIR/node$i/flowd.log" >&2 || true
			die "node $i not ready after ${READY_TIMEOUT}s"
		fi
		sleep 0.1
	done
}
for ((i = 1; i <= NODES; i++)); do
	wait_ready "$i"
done
say "cluster ready"

API1=http://${API[1]}
AUTH="Authorization: Bearer $ADMIN_TOKEN"
JSON="Content-Type: application/json"
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# --- deploy, run, watch -------------------------------------------------------------
say "deploying $FLOW_FILE as flow 'hello'"
curl -fsS -X PUT -H "$AUTH" -H "$JSON" --data-binary "@$FLOW_FILE" "$API1/v1/flows/hello" >/dev/null

say "starting a run with who=flowd"
RUN_ID=$(curl -fsS -X POST -H "$AUTH" -H "$JSON" -d '{"parameters": {"who": "flowd"}}' \
	"$API1/v1/flows/hello/runs" | json_field id)
say "run $RUN_ID started"

deadline=$((SECONDS + RUN_TIMEOUT))
while :; do
	RUN=$(curl -fsS -H "$AUTH" "$API1/v1/runs/$RUN_ID?consistent=true")
	STATUS=$(printf '%s' "$RUN" | json_field status)
	case $STATUS in
	succeeded) break ;;
	failed | cancelled)
		printf '%s\n' "$RUN" | python3 -m json.tool
		die "run $RUN_ID $STATUS" ;;
	esac
	[ $SECONDS -lt $deadline ] || die "run $RUN_ID still $STATUS after ${RUN_TIMEOUT}s"
	sleep 0.1
done

echo
echo "run $RUN_ID succeeded:"
printf '%s\n' "$RUN" | python3 -m json.tool

say "deploying $TICKER_FILE as flow 'ticker' (a schedule every 5 s)"
curl -fsS -X PUT -H "$AUTH" -H "$JSON" --data-binary "@$TICKER_FILE" "$API1/v1/flows/ticker" >/dev/null
deadline=$((SECONDS + RUN_TIMEOUT))
while :; do
	FIRED=$(curl -fsS -H "$AUTH" "$API1/v1/flows/ticker/schedule?consistent=true" |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["schedules"][0]["counters"]["fired"])')
	[ "$FIRED" -ge 1 ] && break
	[ $SECONDS -lt $deadline ] || die "the ticker schedule did not fire within ${RUN_TIMEOUT}s"
	sleep 0.2
done
say "the schedule fired:"
curl -fsS -H "$AUTH" "$API1/v1/flows/ticker/schedule" | python3 -m json.tool
# the dashboard is served by every node
CT=$(curl -fsS -o /dev/null -w '%{content_type}' "$API1/") ||
	die "the dashboard at $API1/ did not answer"
case $CT in text/html*) ;; *) die "the dashboard at $API1/ answered $CT" ;; esac
cat <<EOF

flowd is running: $NODES node(s), API $API1, PostgreSQL at "$CONNINFO".
  dashboard:    $API1/   (any node's API address; paste a token when it asks)
  admin token:  $ADMIN_TOKEN
  reader token: $READER_TOKEN

Try:
  export TOKEN=$ADMIN_TOKEN
  curl -s -H "Authorization: Bearer \$TOKEN" $API1/v1/cluster
  curl -s -H "Authorization: Bearer \$TOKEN" $API1/v1/flows
  curl -s -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
       -d '{"parameters": {"who": "you"}}' $API1/v1/flows/hello/runs
  curl -s -H "Authorization: Bearer \$TOKEN" '$API1/v1/runs?limit=5'
  curl -s -H "Authorization: Bearer \$TOKEN" $API1/v1/runs/$RUN_ID
  curl -s -H "Authorization: Bearer \$TOKEN" $API1/v1/runs/$RUN_ID/steps/greet/logs
  curl -sN -H "Authorization: Bearer \$TOKEN" $API1/v1/watch     # changes as they happen
  curl -s -H "Authorization: Bearer \$TOKEN" $API1/v1/flows/ticker/schedule
  curl -s -H "Authorization: Bearer \$TOKEN" "$API1/v1/cron/preview?expr=30+2+*+*+*&tz=Europe/Berlin"
  curl -s -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
       -d '{"name": "data_ready", "id": "load-1", "payload": {"table": "sales"}}' $API1/v1/events
  psql "$CONNINFO" -c 'SELECT id, flow, status FROM runs'
Logs: $DEMO_DIR/node*/flowd.log
EOF

if [ "${DEMO_ONESHOT:-0}" = 1 ]; then
	say "DEMO_ONESHOT=1: stopping"
	exit 0
fi

echo
echo "Press Ctrl-C to stop flowd and PostgreSQL."
# Wait until interrupted, or until a node exits on its own (then stop the rest).
while :; do
	for ((i = 1; i <= NODES; i++)); do
		if ! kill -0 "${PIDS[i]}" 2>/dev/null; then
			wait "${PIDS[i]}" && rc=0 || rc=$?
			die "node $i exited (status $rc); see $DEMO_DIR/node$i/flowd.log"
		fi
	done
	sleep 1
done
