#!/bin/bash
# retention.sh - memory and snapshot size of one node after RUNS keyed runs
# (every run with its own idempotency key), against a private PostgreSQL on
# 127.0.0.1 (bench/README.md, "retention.sh"). What the state machine keeps
# is bounded by limits.runs_in_memory, limits.idempotency_keys and
# limits.idempotency_ttl_s; this shows what that costs at RUNS.
#
# Environment:
#   RUNS=1000000 RATE=1000 CONNS=64 THREADS=2 SKIP_BUILD=0 DRAIN_TIMEOUT=1800
#   RATE: runs per second offered (open loop): what one node executes with
#   its steps, so that the queue of runs waiting for a slot stays short and
#   what is measured is the retention, not a backlog (0: as fast as it can)
#   NODE_ARGS="..."  extra flowd arguments (e.g. --limits.idempotency_keys=100000)
#   BUILD=build  FLOWD_BIN=$BUILD/flowd  LOADGEN=$BUILD/loadgen
#   API_PORT=8810 RAFT_PORT=8811 PG_PORT=8812
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RUNS=${RUNS:-1000000}
RATE=${RATE:-1000}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
SKIP_BUILD=${SKIP_BUILD:-0}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-1800}
READY_TIMEOUT=${READY_TIMEOUT:-60}
RAFT_HEARTBEAT_MS=${RAFT_HEARTBEAT_MS:-}
RAFT_ELECTION_MS=${RAFT_ELECTION_MS:-}
read -ra NODE_ARGS <<<"${NODE_ARGS:-}"
BUILD=${BUILD:-build}
FLOWD_BIN=$(realpath -m -- "${FLOWD_BIN:-$BUILD/flowd}")
LOADGEN=$(realpath -m -- "${LOADGEN:-$BUILD/loadgen}")
PYTHON=${PYTHON:-/usr/bin/python3}
HELPER=$ROOT/bench/failover.py
PG_SCRIPT=${PG_SCRIPT:-$ROOT/scripts/pg-private.sh}
API_PORT=${API_PORT:-8810}
RAFT_PORT=${RAFT_PORT:-8811}
PG_PORT=${PG_PORT:-8812}
NODES=1
case $BUILD in
/*) B=$BUILD/bench-retention ;;
*) B=$ROOT/$BUILD/bench-retention ;;
esac
PG_DIR=$B/pg
OUT=$B/out
BENCH_NAME=bench-retention
. "$ROOT/bench/lib.sh"
. "$ROOT/bench/cluster_lib.sh"

[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
if [ "$SKIP_BUILD" != 1 ]; then
	"${MAKE:-make}" -s "$BUILD/flowd" "$BUILD/loadgen" >&2
fi

cluster_up
sleep 1
rss0=$(rss_mb 1)
snapshot_bytes() { # the newest snapshot file of node 1 (0 if none)
	local f
	f=$(ls -t "$B"/node1/snapshot-* 2>/dev/null | grep -v '\.meta$' | head -n 1 || true)
	[ -n "$f" ] && stat -c %s "$f" || echo 0
}
t0=$SECONDS
# the load takes RUNS / RATE seconds: loadgen's cap (900 s) must not cut it
[ "$RATE" = 0 ] || export LG_TIMEOUT=$(( RUNS / RATE * 2 + 900 ))
RATE_ARGS=()
[ "$RATE" = 0 ] || RATE_ARGS=(--rate "$RATE")
lg load --url "${URL[1]}" --path /v1/flows/noop/runs --body '{"parameters":{}}' \
	--unique-key --requests "$RUNS" --connections "$CONNS" --threads "$THREADS" \
	--duration 86400 --timeout 60 "${RATE_ARGS[@]}"
accepted=$(field "$LG" ok)
unset LG_TIMEOUT
[ "${accepted:-0}" = "$RUNS" ] || die "the load was cut short: ${accepted:-no} runs of $RUNS accepted ($OUT/load.txt)"
drain
took=$((SECONDS - t0))
# one more round of entries so that raft takes a snapshot with all of it
lg tail --url "${URL[1]}" --path /v1/flows/noop/runs --body '{"parameters":{}}' \
	--unique-key --requests 20000 --connections 8 --duration 600
drain
rss=$(rss_mb 1)
hwm=$(awk '$1 == "VmHWM:" { printf "%.1f\n", $2 / 1024 }' "/proc/${PID[1]}/status")
snap=$(snapshot_bytes)
c=$(curl -s -m 5 -H "$AUTH" "${URL[1]}/v1/cluster")
{
	echo
	echo "flowd retention: one node, $RUNS keyed runs ($accepted accepted at ${RATE}/s offered, $CONNS connections, $took s with their steps), $(date -u +%FT%TZ)"
	echo "settings: ${NODE_ARGS[*]:-defaults (runs_in_memory 10000, idempotency_keys 1000000, idempotency_ttl_s 86400)}"
	printf '%-44s %12s   %s\n' metric value target
	printf '%-44s %12s   %s\n' "VmRSS before (MB)" "$rss0" ""
	printf '%-44s %12s   %s\n' "VmRSS after (MB)" "$rss" "≤256 MB"
	printf '%-44s %12s   %s\n' "VmHWM, the peak (MB)" "$hwm" ""
	printf '%-44s %12s   %s\n' "newest snapshot (MB)" "$(awk -v b="$snap" 'BEGIN { printf "%.1f", b / 1048576 }')" ""
	printf '%-44s %12s   %s\n' "applied index" "$(sed -n 's/.*"applied_index":\([0-9]*\).*/\1/p' <<<"$c")" ""
	echo "(details: $OUT, node log: $B/node1.log)"
} | tee "$B/results.txt"
