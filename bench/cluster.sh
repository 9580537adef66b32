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

# --- cleanup -----------------------------------------------------------------
declare -a PID=(- "" "" "")
PG_STARTED=0
CLEANED=0
stop_node() { # n: SIGTERM, then SIGKILL after 10 s
	local p=${PID[$1]} n=0
	[ -n "$p" ] || return 0
	if kill -0 "$p" 2>/dev/null; then
		kill -TERM "$p" 2>/dev/null || true
		while kill -0 "$p" 2>/dev/null && [ $n -lt 100 ]; do
			sleep 0.1
			n=$((n + 1))
		done
		kill -KILL "$p" 2>/dev/null || true
	fi
	wait "$p" 2>/dev/null || true
	PID[$1]=
}
cleanup() {
	[ "$CLEANED" -eq 1 ] && return 0
	CLEANED=1
	local i
	for i in 1 2 3; do
		[ -n "${PID[$i]}" ] && kill -0 "${PID[$i]}" 2>/dev/null &&
			say "stopping node $i (pid ${PID[$i]})"
		# all three at once: the last ones must not wait on a lost quorum
		kill -TERM "${PID[$i]}" 2>/dev/null || true
	done
	for i in 1 2 3; do stop_node "$i"; done
	if [ "$PG_STARTED" -eq 1 ]; then
		timeout 90 "$PG_SCRIPT" stop "$PG_DIR" || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- PostgreSQL and the three nodes ----------------------------------------------
if [ -d "$PG_DIR/data" ]; then
	timeout 90 "$PG_SCRIPT" stop "$PG_DIR" || true
fi
rm -rf "$PG_DIR" "$B/node1" "$B/node2" "$B/node3" "$OUT" "$B"/node*.conf \
	"$B"/node*.log "$B/results.txt"
mkdir -p "$B/node1" "$B/node2" "$B/node3" "$OUT"

declare -a APIP=(-) RAFTP=(-) URL=(-)
for i in 1 2 3; do
	APIP[$i]=$(pick_port $((${API_PORT:-8790} + i - 1)))
	RAFTP[$i]=$(pick_port $((${RAFT_PORT:-8793} + i - 1)))
	URL[$i]=http://127.0.0.1:${APIP[$i]}
done
PG_PORT=$(pick_port "${PG_PORT:-8796}")
ALL="${URL[1]},${URL[2]},${URL[3]}"
TOKEN=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
AUTH="Authorization: Bearer $TOKEN"

RAFT_ARGS=()
[ -z "$RAFT_HEARTBEAT_MS" ] || RAFT_ARGS+=("--raft.heartbeat_ms=$RAFT_HEARTBEAT_MS")
[ -z "$RAFT_ELECTION_MS" ] || RAFT_ARGS+=("--raft.election_ms=$RAFT_ELECTION_MS")
RAFT_DESC="heartbeat ${RAFT_HEARTBEAT_MS:-default (50)} ms, election ${RAFT_ELECTION_MS:-default (200)} ms"
say "raft timeouts: $RAFT_DESC"

PG_STARTED=1
timeout 120 "$PG_SCRIPT" start "$PG_DIR" "$PG_PORT" || die "PostgreSQL did not start"

for i in 1 2 3; do
	cat >"$B/node$i.conf" <<CONF
[node]
id = $i
raft_address = 127.0.0.1:${RAFTP[$i]}
api_address = 127.0.0.1:${APIP[$i]}
data_dir = $B/node$i

[peers]
1 = 127.0.0.1:${RAFTP[1]} 127.0.0.1:${APIP[1]}
2 = 127.0.0.1:${RAFTP[2]} 127.0.0.1:${APIP[2]}
3 = 127.0.0.1:${RAFTP[3]} 127.0.0.1:${APIP[3]}

[database]
conninfo = host=127.0.0.1 port=$PG_PORT dbname=flowd user=postgres connect_timeout=2

[auth]
admin_tokens = $TOKEN

[limits]
max_parallel_tasks = 64
CONF
	# fail fast on a config flowd rejects (e.g. election < 3 x heartbeat)
	"$FLOWD_BIN" --config "$B/node$i.conf" "${RAFT_ARGS[@]}" --check >"$OUT/check$i.txt" 2>&1 ||
		{ cat "$OUT/check$i.txt" >&2; die "flowd --check rejected node $i's config"; }
done

start_node() { # n: start it (same config, same data dir), log appended
	echo "=== start $(date -u +%FT%T.%3NZ)" >>"$B/node$1.log"
	"$FLOWD_BIN" --config "$B/node$1.conf" "${RAFT_ARGS[@]}" >>"$B/node$1.log" 2>&1 &
	PID[$1]=$!
	say "node $1 pid ${PID[$1]} on ${URL[$1]} (log $B/node$1.log)"
}
nodes_alive() {
	local i
	for i in 1 2 3; do
		[ -n "${PID[$i]}" ] || continue
		kill -0 "${PID[$i]}" 2>/dev/null && continue
		tail -n 30 "$B/node$i.log" >&2 || true
		die "node $i exited"
	done
}
helper() { # leader|healthy [args]: failover.py on the three nodes
	local cmd=$1
	shift
	timeout 20 "$PYTHON" "$HELPER" "$cmd" --nodes "$ALL" --token "$TOKEN" "$@"
}
# Wait until every node answers /readyz 200 and all name the same leader.
wait_healthy() { # what
	local deadline=$((SECONDS + READY_TIMEOUT)) why
	until why=$(helper healthy); do
		nodes_alive
		[ $SECONDS -lt $deadline ] || die "$1: cluster not healthy after ${READY_TIMEOUT}s: $why"
		sleep 0.1
	done
}
LEADER=
find_leader() { # sets LEADER (1..3)
	local deadline=$((SECONDS + READY_TIMEOUT))
	until LEADER=$(helper leader); do
		nodes_alive
		[ $SECONDS -lt $deadline ] || die "no leader after ${READY_TIMEOUT}s"
		sleep 0.1
	done
}

for i in 1 2 3; do start_node "$i"; done
wait_healthy "start"
find_leader
say "cluster ready, leader node $LEADER"

deploy() { # flow spec-json
	local code
	code=$(curl -s -m 10 -o "$OUT/deploy-$1.json" -w '%{http_code}' -X PUT \
		-H "$AUTH" -H 'Content-Type: application/json' \
		--data "$2" "${URL[$LEADER]}/v1/flows/$1" || true)
	case $code in
	200 | 201) ;;
	*) cat "$OUT/deploy-$1.json" >&2 2>/dev/null || true
	   die "PUT /v1/flows/$1 answered '$code'" ;;
	esac
}
TRUE_BIN=$(type -P true || echo /bin/true)
deploy noop "{\"steps\":[{\"name\":\"s\",\"command\":[\"$TRUE_BIN\"]}]}"

# --- helpers -------------------------------------------------------------------
lg() { # NAME ARGS...: loadgen (lib.sh), then check the node(s) still run
	local name=$1
	shift
	lg_run "$name" "$@"
	nodes_alive
}
rss_mb() { # n -> VmRSS of node n in MB
	awk '$1 == "VmRSS:" { printf "%.1f\n", $2 / 1024 }' "/proc/${PID[$1]}/status" 2>/dev/null || echo -
}
record_rss() { # prefix
	local i
	for i in 1 2 3; do record "$1_n$i" "$(rss_mb "$i")"; done
}
runs_body='{"parameters":{}}'

# Wait until the leader has no queued or running run and no PostgreSQL
# backlog (asked of the leader: ?consistent=true), at most DRAIN_TIMEOUT.
drain() {
	local start=$SECONDS c q r backlog u
	while :; do
		nodes_alive
		find_leader
		u=${URL[$LEADER]}
		c=$(curl -s -m 2 -H "$AUTH" "$u/v1/cluster" || true)
		backlog=$(sed -n 's/.*"db_backlog": *\([0-9]*\).*/\1/p' <<<"$c")
		q=$(curl -s -m 2 -H "$AUTH" "$u/v1/runs?status=queued&limit=1&consistent=true" || true)
		r=$(curl -s -m 2 -H "$AUTH" "$u/v1/runs?status=running&limit=1&consistent=true" || true)
		if [ "${backlog:-0}" = 0 ] && [[ "$q" == *'"runs"'* && "$r" == *'"runs"'* ]] &&
			! grep -q '"id"' <<<"$q$r"; then
			[ $((SECONDS - start)) -lt 2 ] || say "drained in $((SECONDS - start)) s"
			return 0
		fi
		if [ $((SECONDS - start)) -ge "$DRAIN_TIMEOUT" ]; then
			say "still busy after ${DRAIN_TIMEOUT}s (db_backlog ${backlog:-?}), going on"
			return 0
		fi
		sleep 0.5
	done
}

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
