#!/bin/bash
# cluster.sh - three-node flowd benchmarks against a private PostgreSQL, all on
# 127.0.0.1: runs accepted over three nodes, serial through a follower and the
# leader, accept latency, leader failover, memory (bench/README.md).
#
# Environment:
#   REPEAT=3          rounds of the load phases; the table shows medians
#   DURATION=5        seconds of each closed- or open-loop phase
#   KILLS=10          leader kill -9 / restart cycles of the failover phase
#   RAFT_HEARTBEAT_MS RAFT_ELECTION_MS   passed as --raft.heartbeat_ms=...
#                     --raft.election_ms=... when set (else flowd's defaults)
#   SKIP_BUILD=0      1: do not run make for flowd and loadgen first
#   CONNS=64 THREADS=2  the concurrent phases' connections and loadgen threads
#   DRAIN_TIMEOUT=120 seconds to wait for queued runs to finish between phases
#   READY_TIMEOUT=60  seconds to wait for the cluster to be ready (each restart too)
#   FAILOVER_LIMIT=30 seconds one failover may take before it counts as failed
#   FAILOVER_INTERVAL_MS=5 FAILOVER_TIMEOUT_MS=250  the write poller's period
#                     and per-request timeout
#   BUILD=build  FLOWD_BIN=$BUILD/flowd  LOADGEN=$BUILD/loadgen  PYTHON=/usr/bin/python3
#   API_PORT=8790 RAFT_PORT=8793 PG_PORT=8796  node N uses API_PORT+N-1 and
#                     RAFT_PORT+N-1 (a busy port is replaced)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
REPEAT=${REPEAT:-3}
DURATION=${DURATION:-5}
KILLS=${KILLS:-10}
RAFT_HEARTBEAT_MS=${RAFT_HEARTBEAT_MS:-}
RAFT_ELECTION_MS=${RAFT_ELECTION_MS:-}
SKIP_BUILD=${SKIP_BUILD:-0}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-120}
READY_TIMEOUT=${READY_TIMEOUT:-60}
FAILOVER_LIMIT=${FAILOVER_LIMIT:-30}
FAILOVER_INTERVAL_MS=${FAILOVER_INTERVAL_MS:-5}
FAILOVER_TIMEOUT_MS=${FAILOVER_TIMEOUT_MS:-250}
BUILD=${BUILD:-build}
FLOWD_BIN=${FLOWD_BIN:-$BUILD/flowd}
LOADGEN=${LOADGEN:-$BUILD/loadgen}
FLOWD_BIN=$(realpath -m -- "$FLOWD_BIN")
LOADGEN=$(realpath -m -- "$LOADGEN")
PYTHON=${PYTHON:-/usr/bin/python3}
HELPER=$ROOT/bench/failover.py
PG_SCRIPT=${PG_SCRIPT:-$ROOT/scripts/pg-private.sh}
case $BUILD in
/*) B=$BUILD/bench-cluster ;;
*) B=$ROOT/$BUILD/bench-cluster ;;
esac
PG_DIR=$B/pg
OUT=$B/out
BENCH_NAME=bench-cluster
ROW_WIDTH=46
. "$ROOT/bench/lib.sh" # say, die, ports, loadgen runs, medians, the table

[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer"
[[ "$KILLS" =~ ^[0-9]+$ ]] || die "KILLS must be a non-negative integer"
isnum "$DURATION" || die "DURATION must be a number of seconds"
for v in RAFT_HEARTBEAT_MS RAFT_ELECTION_MS; do
	[ -z "${!v}" ] || [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be an integer (ms)"
done
command -v curl >/dev/null || die "curl is missing (scripts/install-deps.sh)"
[ -x "$PYTHON" ] || die "no $PYTHON (the failover poller needs it)"

if [ "$SKIP_BUILD" != 1 ]; then
	"${MAKE:-make}" -s "$BUILD/flowd" "$BUILD/loadgen" >&2
fi
[ -x "$FLOWD_BIN" ] || die "no flowd binary at $FLOWD_BIN"
[ -x "$LOADGEN" ] || die "no loadgen binary at $LOADGEN"

. "$ROOT/bench/cluster_lib.sh" # the private PostgreSQL, three nodes, helpers
cluster_up

# --- load rounds -----------------------------------------------------------------
sleep 1
record_rss rss_idle
say "idle VmRSS (MB): node1 $(rss_mb 1), node2 $(rss_mb 2), node3 $(rss_mb 3)"

for r in $(seq "$REPEAT"); do
	say "--- round $r/$REPEAT"
	drain
	lg "r$r-conc" --targets "$ALL" --path /v1/flows/noop/runs --body "$runs_body" \
		--connections "$CONNS" --threads "$THREADS" --duration "$DURATION"
	top=$(field "$LG" rps)
	record conc "$top" "$(errors_of "$LG")"
	record conc_p50 "$(field "$LG" p50_ms)"
	record conc_p99 "$(field "$LG" p99_ms)"
	record_rss rss_load
	drain

	find_leader
	F=$(( LEADER % 3 + 1 ))
	lg "r$r-serial-follower" --url "${URL[$F]}" --path /v1/flows/noop/runs \
		--body "$runs_body" --connections 1 --duration "$DURATION"
	record serial_f "$(field "$LG" rps)" "$(errors_of "$LG")"
	record serial_f_p50 "$(field "$LG" p50_ms)"
	record serial_f_p99 "$(field "$LG" p99_ms)"
	drain

	find_leader
	lg "r$r-serial-leader" --url "${URL[$LEADER]}" --path /v1/flows/noop/runs \
		--body "$runs_body" --connections 1 --duration "$DURATION"
	record serial_l "$(field "$LG" rps)" "$(errors_of "$LG")"
	record serial_l_p50 "$(field "$LG" p50_ms)"
	record serial_l_p99 "$(field "$LG" p99_ms)"
	drain

	half=$(awk -v t="${top:-0}" 'BEGIN { printf "%.0f", t / 2 }')
	if [ "$half" -ge 1 ]; then
		lg "r$r-latency" --targets "$ALL" --path /v1/flows/noop/runs --body "$runs_body" \
			--connections "$CONNS" --threads "$THREADS" --rate "$half" \
			--duration "$DURATION"
		record lat_rate "$half"
		record lat_p50 "$(field "$LG" p50_ms)" "$(errors_of "$LG")"
		record lat_p99 "$(field "$LG" p99_ms)" "$(field "$LG" unsent)"
		drain
	else
		say "no top rate measured: accept-latency phase skipped"
	fi
	record_rss rss_after
done

# --- failover ----------------------------------------------------------------------
# Each cycle: find the leader, let failover.py kill -9 it and poll POST
# /v1/flows/noop/runs on both survivors until one answers 201, then restart the
# killed node and wait until the three are ready and agree on a leader.
declare -a FO=() FL=()
FO_FAIL=0
FO_DETAIL=$OUT/failover.txt
: >"$FO_DETAIL"
for k in $(seq "$KILLS"); do
	wait_healthy "before kill $k"
	find_leader
	victim=$LEADER
	surv=()
	for i in 1 2 3; do [ "$i" = "$victim" ] || surv+=("${URL[$i]}"); done
	res=$(timeout $((FAILOVER_LIMIT + 20)) "$PYTHON" "$HELPER" measure \
		--pid "${PID[$victim]}" --nodes "${surv[0]},${surv[1]}" --token "$TOKEN" \
		--interval-ms "$FAILOVER_INTERVAL_MS" --timeout-ms "$FAILOVER_TIMEOUT_MS" \
		--limit-s "$FAILOVER_LIMIT" || true)
	kill -KILL "${PID[$victim]}" 2>/dev/null || true # if the helper died first
	wait "${PID[$victim]}" 2>/dev/null || true
	echo "=== killed (kill -9) by bench/cluster.sh, failover: $res" \
		>>"$B/node$victim.log"
	PID[$victim]=
	echo "kill $k: node $victim $res" >>"$FO_DETAIL"
	ms=$(sed -n 's/.*"failover_ms": *\([0-9.]*\).*/\1/p' <<<"$res")
	lms=$(sed -n 's/.*"leader_seen_ms": *\([0-9.]*\).*/\1/p' <<<"$res")
	[ -z "$lms" ] || FL+=("$lms")
	if [ -n "$ms" ]; then
		FO+=("$ms")
		say "kill $k: leader node $victim, first write after $ms ms ($res)"
	else
		FO_FAIL=$((FO_FAIL + 1))
		say "kill $k: leader node $victim, NO write within ${FAILOVER_LIMIT}s ($res)"
	fi
	start_node "$victim"
	t=$SECONDS
	wait_healthy "after restarting node $victim"
	say "node $victim back and cluster healthy in $((SECONDS - t)) s"
done
if [ "$KILLS" -gt 0 ]; then
	wait_healthy "after the failover phase"
	record_rss rss_end
fi

# --- report --------------------------------------------------------------------
rss_row() { # label prefix target: the largest node in the median column
	local a b c
	a=$(median ${VALS[$2_n1]:-}) b=$(median ${VALS[$2_n2]:-}) c=$(median ${VALS[$2_n3]:-})
	printf '%-46s %10s  %-6s %-30s %s\n' "$1" \
		"$(printf '%s\n' "$a" "$b" "$c" | grep -v '^-$' | sort -g | tail -n 1)" "" \
		"nodes $(fmt "$a" "$b" "$c")" "$3"
}
{
	echo
	echo "flowd benchmarks: three nodes on 127.0.0.1, $REPEAT round(s) of ${DURATION}s phases, $KILLS leader kills, $(nproc) CPUs, $(date -u +%FT%TZ)"
	echo "raft timeouts: $RAFT_DESC"
	printf '%-46s %10s  %-6s %-30s %s\n' metric median errors rounds target
	row "runs accepted, $CONNS conns over 3 nodes (runs/s)" conc "≥5,000/s"
	row "  its p50 latency (ms)" conc_p50 ""
	row "  its p99 latency (ms)" conc_p99 ""
	row "runs accepted, 1 serial client, follower (/s)" serial_f "≥750/s"
	row "  its p50 latency (ms)" serial_f_p50 ""
	row "  its p99 latency (ms)" serial_f_p99 ""
	row "runs accepted, 1 serial client, leader (/s)" serial_l "≥750/s"
	row "  its p50 latency (ms)" serial_l_p50 ""
	row "  its p99 latency (ms)" serial_l_p99 ""
	row "accept latency p50 at half top rate (ms)" lat_p50 "≤2 ms"
	row "accept latency p99 at half top rate (ms)" lat_p99 "≤10 ms (errors: unsent)"
	row "  the rate used, over 3 nodes (runs/s)" lat_rate ""
	if [ "$KILLS" -gt 0 ]; then
		fo_med=$(median "${FO[@]}")
		fo_max=$(printf '%s\n' "${FO[@]}" | sort -g | tail -n 1)
		printf '%-46s %10s  %-6s %-30s %s\n' "failover, kill -9 leader -> first 201 (ms)" \
			"$(fmt "$fo_med")" "$FO_FAIL" "max $(fmt "${fo_max:--}")" "median ≤400 ms, max ≤1 s"
		printf '  each (ms): %s\n' "$(fmt "${FO[@]}")"
		printf '%-46s %10s  %-6s %-30s %s\n' "  kill -> a survivor says leader (ms)" \
			"$(fmt "$(median "${FL[@]}")")" "" "$(fmt "${FL[@]}")" "diagnostic"
	fi
	rss_row "VmRSS idle, largest node (MB)" rss_idle "≤32 MB"
	rss_row "VmRSS right after $CONNS-conn load (MB)" rss_load ""
	rss_row "VmRSS after each round's load (MB)" rss_after ""
	[ "$KILLS" -eq 0 ] || rss_row "VmRSS after the failover phase (MB)" rss_end "(restarted nodes)"
	echo "(details: $OUT, node logs: $B/node{1,2,3}.log)"
} | tee "$B/results.txt"
