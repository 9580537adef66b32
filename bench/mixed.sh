#!/bin/bash
# mixed.sh - the load flowd exists for, on three nodes against a private
# PostgreSQL, all on 127.0.0.1: dashboards polling run status while runs pour
# in (bench/README.md, "mixed.sh").
#
# Each round measures three phases of DURATION seconds:
#   reads alone     CONNS connections over the three nodes, closed loop (as
#                   fast as they can), taking GET /v1/runs/{id} and
#                   GET /v1/runs?limit=20 in turn
#   writes alone    POST /v1/flows/noop/runs (one /usr/bin/true step), open
#                   loop at RATE runs/s over the three nodes
#   together        both at once, the readers at READ_RATE (the target:
#                   30,000/s) unless READ_RATE=0
# and, for each phase, the leadership changes (the term before and after, on
# every node). The table shows medians over REPEAT rounds, each "together"
# figure next to its "alone" figure, and their ratio.
#
# Environment:
#   REPEAT=3 DURATION=30 CONNS=64 THREADS=2 RATE=1000 WRITE_CONNS=64
#   READ_RATE=30000   the readers' rate while the writer runs (open loop, the
#                     target); 0: as fast as they can (closed loop), as alone
#   SKIP_BUILD=0 DRAIN_TIMEOUT=120 READY_TIMEOUT=60
#   NODE_ARGS="..."   extra flowd arguments for every node (e.g.
#                     "--limits.max_parallel_tasks=1" or "--executor.step_nice=10")
#   FLOWD_NICE=-10    the nodes' nice value, as the systemd unit's Nice=-10
#                     gives them (0 when not root)
#   BUILD=build  FLOWD_BIN=$BUILD/flowd  LOADGEN=$BUILD/loadgen  PYTHON=/usr/bin/python3
#   API_PORT=8800 RAFT_PORT=8803 PG_PORT=8806
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
REPEAT=${REPEAT:-3}
if [ "$(id -u)" = 0 ]; then FLOWD_NICE=${FLOWD_NICE:--10}; else FLOWD_NICE=${FLOWD_NICE:-0}; fi
DURATION=${DURATION:-30}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
RATE=${RATE:-1000}
READ_RATE=${READ_RATE:-30000}
WRITE_CONNS=${WRITE_CONNS:-64}
SKIP_BUILD=${SKIP_BUILD:-0}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-120}
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
API_PORT=${API_PORT:-8800}
RAFT_PORT=${RAFT_PORT:-8803}
PG_PORT=${PG_PORT:-8806}
case $BUILD in
/*) B=$BUILD/bench-mixed ;;
*) B=$ROOT/$BUILD/bench-mixed ;;
esac
PG_DIR=$B/pg
OUT=$B/out
BENCH_NAME=bench-mixed
ROW_WIDTH=40
. "$ROOT/bench/lib.sh"         # say, die, ports, loadgen runs, medians
. "$ROOT/bench/cluster_lib.sh" # PostgreSQL, three nodes, helpers

[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer"
isnum "$DURATION" || die "DURATION must be a number of seconds"
isnum "$RATE" || die "RATE must be a number of runs per second"
command -v curl >/dev/null || die "curl is missing (scripts/install-deps.sh)"
if [ "$SKIP_BUILD" != 1 ]; then
	"${MAKE:-make}" -s "$BUILD/flowd" "$BUILD/loadgen" >&2
fi
[ -x "$FLOWD_BIN" ] || die "no flowd binary at $FLOWD_BIN"
[ -x "$LOADGEN" ] || die "no loadgen binary at $LOADGEN"

cluster_up

# The run the pollers ask for: a recent one, made before each phase with
# readers (a dashboard polls the runs it shows; an old run that left memory
# is read from PostgreSQL instead, and is not what this measures).
RUN_ID=
seed_run() {
	local code
	code=$(curl -s -m 10 -o "$OUT/seed.json" -w '%{http_code}' -X POST -H "$AUTH" \
		-H 'Content-Type: application/json' -d '{}' "${URL[$LEADER]}/v1/flows/noop/runs")
	[ "$code" = 201 ] || die "seeding a run answered '$code'"
	RUN_ID=$(sed -n 's/.*"id":"\(r-[0-9]*\)".*/\1/p' "$OUT/seed.json" | head -n 1)
	[ -n "$RUN_ID" ] || die "no run id in $(cat "$OUT/seed.json")"
	READS=(--targets "$ALL" --path "/v1/runs/$RUN_ID" --also-path "/v1/runs?limit=20"
		--connections "$CONNS" --threads "$THREADS" --duration "$DURATION")
	READS_TOGETHER=("${READS[@]}")
	[ "$READ_RATE" = 0 ] || READS_TOGETHER+=(--rate "$READ_RATE")
}
seed_run
drain

# The term of every node (the largest) and who they say leads.
terms() {
	local i c t
	for i in 1 2 3; do
		c=$(curl -s -m 2 -H "$AUTH" "${URL[$i]}/v1/cluster" || true)
		t=$(sed -n 's/.*"term":\([0-9]*\).*/\1/p' <<<"$c")
		echo "${t:-0}"
	done | sort -g | tail -n 1
}
WRITES=(--targets "$ALL" --path /v1/flows/noop/runs --body '{"parameters":{}}'
	--rate "$RATE" --connections "$WRITE_CONNS" --threads 1 --duration "$DURATION")

record_phase() { # prefix loadgen-json
	record "$1_rps" "$(field "$2" rps)" "$(errors_of "$2")"
	record "$1_p50" "$(field "$2" p50_ms)"
	record "$1_p99" "$(field "$2" p99_ms)"
	record "$1_max" "$(field "$2" max_ms)"
	record "$1_err" "$(errors_of "$2")"
	record "$1_unsent" "$(field "$2" unsent)"
}

for r in $(seq "$REPEAT"); do
	say "--- round $r/$REPEAT"
	find_leader
	seed_run
	t0=$(terms)
	lg "r$r-reads" "${READS[@]}"
	record_phase ra "$LG"
	t1=$(terms)
	record ra_terms $((t1 - t0))
	drain

	t0=$(terms)
	lg "r$r-writes" "${WRITES[@]}"
	record_phase wa "$LG"
	t1=$(terms)
	record wa_terms $((t1 - t0))
	drain

	find_leader
	seed_run
	t0=$(terms)
	# both at once: the writer in the background, the readers here
	( lg_run "r$r-together-writes" "${WRITES[@]}"; echo "$LG" >"$OUT/r$r-tw.json" ) &
	wpid=$!
	lg "r$r-together-reads" "${READS_TOGETHER[@]}"
	record_phase rt "$LG"
	wait "$wpid" || true
	record_phase wt "$(cat "$OUT/r$r-tw.json" 2>/dev/null || echo '{}')"
	t1=$(terms)
	record t_terms $((t1 - t0))
	nodes_alive
	drain
done

# --- report --------------------------------------------------------------------
med() { # metric
	local vals
	read -ra vals <<<"${VALS[$1]:-}"
	median "${vals[@]}"
}
ratio() { # together alone
	awk -v t="$1" -v a="$2" 'BEGIN { if (a + 0 > 0 && t != "-") printf "%.2f\n", t / a; else print "-" }'
}
line() { # label alone-metric together-metric target
	local a t
	a=$(med "$2")
	t=$(med "$3")
	printf '%-34s %12s %12s %8s   %s\n' "$1" "$(fmt "$a")" "$(fmt "$t")" \
		"$(ratio "$t" "$a")" "$4"
}
sum_errs() { echo $(( ${ERRS[$1]:-0} )); }
{
	echo
	echo "flowd mixed load: three nodes on 127.0.0.1, $REPEAT round(s) of ${DURATION}s phases, $(nproc) CPUs, $(date -u +%FT%TZ)"
	echo "readers: $CONNS connections (GET /v1/runs/{id}, GET /v1/runs?limit=20), alone closed loop, together $([ "$READ_RATE" = 0 ] && echo "closed loop" || echo "at $READ_RATE/s"); writer: $RATE runs/s open loop; nice ${FLOWD_NICE:-0}; ${NODE_ARGS[*]:-default settings}"
	printf '%-34s %12s %12s %8s   %s\n' metric alone together ratio "target (together)"
	line "reads/s" ra_rps rt_rps "≥30,000/s"
	line "reads p50 (ms)" ra_p50 rt_p50 ""
	line "reads p99 (ms)" ra_p99 rt_p99 "≤5 ms"
	line "writes/s" wa_rps wt_rps "$RATE offered"
	line "writes p50 (ms)" wa_p50 wt_p50 ""
	line "writes p99 (ms)" wa_p99 wt_p99 "≤25 ms"
	line "writes max (ms)" wa_max wt_max ""
	printf '%-34s %12s %12s %8s   %s\n' "non-2xx and failed requests, all rounds" \
		"$(( $(sum_errs ra_rps) + $(sum_errs wa_rps) ))" \
		"$(( $(sum_errs rt_rps) + $(sum_errs wt_rps) ))" "" "0"
	printf '%-34s %12s %12s %8s   %s\n' "requests not sent in time (unsent)" \
		"$(med wa_unsent)" "$(med wt_unsent)" "" "writes"
	printf '%-34s %12s %12s %8s   %s\n' "" \
		"$(med ra_unsent)" "$(med rt_unsent)" "" "reads"
	printf '%-34s %12s %12s %8s   %s\n' "leadership changes, all rounds" \
		"$(( $(printf '%s+' ${VALS[ra_terms]} ${VALS[wa_terms]}) 0 ))" \
		"$(( $(printf '%s+' ${VALS[t_terms]}) 0 ))" "" "0"
	echo "each round (alone | together):"
	for m in rps p50 p99; do
		printf '  reads %-4s %-28s | %s\n' "$m" "$(fmt ${VALS[ra_$m]})" "$(fmt ${VALS[rt_$m]})"
	done
	for m in rps p50 p99 max; do
		printf '  writes %-3s %-28s | %s\n' "$m" "$(fmt ${VALS[wa_$m]})" "$(fmt ${VALS[wt_$m]})"
	done
	echo "(details: $OUT, node logs: $B/node{1,2,3}.log)"
} | tee "$B/results.txt"
