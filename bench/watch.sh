#!/bin/bash
# watch.sh - change streams under the load flowd exists for (issue 9): three
# nodes on 127.0.0.1 with a private PostgreSQL; WATCHERS GET /v1/watch
# streams per node and CONNS pollers while RATE runs/s are submitted for
# DURATION seconds (bench/README.md, "watch.sh").
#
# Each round measures two phases with the same writer and pollers:
#   baseline   no watcher connected (the mixed load alone)
#   watchers   WATCHERS streams per node connected first; of them ALL_WATCHERS
#              watch everything (a runs page), the others one run each
#              (?run=, a run page open on a run about to start), spread over
#              the runs the writer creates in the phase
# and reports: delivery latency (the node applied the entry -> the event read
# by the client, same clock) p50/p99/max, events received, resets, the RSS
# each node gained per connected watcher, and the pollers' and the writer's
# figures in both phases with their ratio.
#
# Environment:
#   REPEAT=3 DURATION=30 RATE=500 WATCHERS=1000 ALL_WATCHERS=10
#   CONNS=64 THREADS=2 READ_RATE=5000 WRITE_CONNS=64 NODES=3
#   SKIP_BUILD=0 DRAIN_TIMEOUT=120 READY_TIMEOUT=60 FLOWD_NICE=-10 (root)
#   BUILD=build FLOWD_BIN LOADGEN WATCHGEN PYTHON
#   API_PORT=8820 RAFT_PORT=8823 PG_PORT=8826
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
REPEAT=${REPEAT:-3}
if [ "$(id -u)" = 0 ]; then FLOWD_NICE=${FLOWD_NICE:--10}; else FLOWD_NICE=${FLOWD_NICE:-0}; fi
DURATION=${DURATION:-30}
RATE=${RATE:-500}
WATCHERS=${WATCHERS:-1000}
ALL_WATCHERS=${ALL_WATCHERS:-10}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
READ_RATE=${READ_RATE:-5000}
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
WATCHGEN=$(realpath -m -- "${WATCHGEN:-$BUILD/watchgen}")
PYTHON=${PYTHON:-/usr/bin/python3}
HELPER=$ROOT/bench/failover.py
PG_SCRIPT=${PG_SCRIPT:-$ROOT/scripts/pg-private.sh}
API_PORT=${API_PORT:-8820}
RAFT_PORT=${RAFT_PORT:-8823}
PG_PORT=${PG_PORT:-8826}
case $BUILD in
/*) B=$BUILD/bench-watch ;;
*) B=$ROOT/$BUILD/bench-watch ;;
esac
PG_DIR=$B/pg
OUT=$B/out
BENCH_NAME=bench-watch
. "$ROOT/bench/lib.sh"
. "$ROOT/bench/cluster_lib.sh"

[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer"
isnum "$DURATION" || die "DURATION must be a number of seconds"
[[ "$WATCHERS" =~ ^[1-9][0-9]*$ ]] || die "WATCHERS must be a positive integer"
[ "$ALL_WATCHERS" -le "$WATCHERS" ] || die "ALL_WATCHERS must be at most WATCHERS"
if [ "$SKIP_BUILD" != 1 ]; then
	"${MAKE:-make}" -s "$BUILD/flowd" "$BUILD/loadgen" "$BUILD/watchgen" >&2
fi
for b in "$FLOWD_BIN" "$LOADGEN" "$WATCHGEN"; do [ -x "$b" ] || die "no binary at $b"; done

cluster_up

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
	[ "$READ_RATE" = 0 ] || READS+=(--rate "$READ_RATE")
}
WRITES=(--targets "$ALL" --path /v1/flows/noop/runs --body '{"parameters":{}}'
	--rate "$RATE" --connections "$WRITE_CONNS" --threads 1 --duration "$DURATION")

# The watchers' paths, node by node (watchgen deals connection j to node
# j mod 3): ALL_WATCHERS unfiltered per node, the rest one future run each.
write_paths() { # file first-seq
	awk -v n=$((WATCHERS * NODES)) -v all=$((ALL_WATCHERS * NODES)) \
		-v first="$2" -v runs="$(awk -v r="$RATE" -v d="$DURATION" 'BEGIN { printf "%d", r * d }')" '
		BEGIN { step = (n > all) ? runs / (n - all) : 1; if (step < 1) step = 1
			for (j = 0; j < n; j++)
				if (j < all) print "/v1/watch"
				else printf "/v1/watch?run=r-%012d\n", first + int((j - all) * step) }' >"$1"
}

record_phase() { # prefix loadgen-json
	record "$1_rps" "$(field "$2" rps)" "$(errors_of "$2")"
	record "$1_p50" "$(field "$2" p50_ms)"
	record "$1_p99" "$(field "$2" p99_ms)"
}
cpu_s() { # -> the nodes' CPU time (user + system) summed, seconds
	local i t=0 v
	for i in $NODE_IDS; do
		v=$(awk '{ print $14 + $15 }' "/proc/${PID[$i]}/stat" 2>/dev/null || echo 0)
		t=$((t + v))
	done
	awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz }'
}
rss_kb_sum() { # -> the nodes' VmRSS summed, kB
	local i s=0 v
	for i in $NODE_IDS; do
		v=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/${PID[$i]}/status" 2>/dev/null || echo 0)
		s=$((s + v))
	done
	echo "$s"
}

# One phase: the writer in the background, the pollers here; records the
# pollers' figures as <r>_*, the writer's as <w>_*, the nodes' CPU as <cpu>.
mixed_phase() { # name r-prefix w-prefix cpu-metric
	local c0 wpid
	c0=$(cpu_s)
	( lg_run "$1-writes" "${WRITES[@]}"; echo "$LG" >"$OUT/$1-w.json" ) &
	wpid=$!
	lg "$1-reads" "${READS[@]}"
	record_phase "$2" "$LG"
	wait "$wpid" || true
	record "$4" "$(awk -v a="$c0" -v b="$(cpu_s)" 'BEGIN { printf "%.1f", b - a }')"
	record_phase "$3" "$(cat "$OUT/$1-w.json" 2>/dev/null || echo '{}')"
}

find_leader
drain
for r in $(seq "$REPEAT"); do
	say "--- round $r/$REPEAT"
	find_leader
	seed_run
	mixed_phase "r$r-base" rb wb cpu_b
	drain

	find_leader
	seed_run
	seq0=$((10#${RUN_ID#r-}))
	write_paths "$OUT/r$r-paths.txt" $((seq0 + 2))
	rss0=$(rss_kb_sum)
	rm -f "$OUT/r$r-ready"
	"$WATCHGEN" --targets "$(sed 's|http://||g' <<<"$ALL")" --paths "$OUT/r$r-paths.txt" \
		--token "$TOKEN" --duration $((DURATION + 5)) --ready-file "$OUT/r$r-ready" \
		>"$OUT/r$r-watch.json" 2>"$OUT/r$r-watch.err" &
	gpid=$!
	n=0
	while [ ! -s "$OUT/r$r-ready" ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
	[ -s "$OUT/r$r-ready" ] || die "watchers did not connect in 60 s"
	sleep 1 # let the nodes settle their allocations
	rss1=$(rss_kb_sum)
	say "watchers connected: $(cat "$OUT/r$r-ready") of $((WATCHERS * NODES)); RSS +$(( (rss1 - rss0) / 1024 )) MB over the three nodes"
	# the first round only: later ones reuse memory the allocator kept
	[ "$r" != 1 ] || record rss_per_watcher_kb "$(awk -v a="$rss0" -v b="$rss1" -v n=$((WATCHERS * NODES)) 'BEGIN { printf "%.1f", (b - a) / n }')"
	mixed_phase "r$r-watch" rw ww cpu_w
	wait "$gpid" || true
	G=$(grep '^{' "$OUT/r$r-watch.json" | tail -n 1 || echo '{}')
	say "watchers: $G"
	record d_p50 "$(field "$G" p50_ms)"
	record d_p99 "$(field "$G" p99_ms)"
	record d_max "$(field "$G" max_ms)"
	record d_events "$(field "$G" measured)"
	record d_connected "$(field "$G" connected)"
	record d_resets "$(field "$G" resets)"
	record d_closed "$(field "$G" closed)" "$(field "$G" errors)"
	nodes_alive
	drain
done

med() { local vals; read -ra vals <<<"${VALS[$1]:-}"; median "${vals[@]}"; }
ratio() { awk -v t="$1" -v a="$2" 'BEGIN { if (a + 0 > 0 && t != "-") printf "%.2f\n", t / a; else print "-" }'; }
line() { # label base-metric watch-metric target
	local a t
	a=$(med "$2")
	t=$(med "$3")
	printf '%-36s %12s %12s %8s   %s\n' "$1" "$(fmt "$a")" "$(fmt "$t")" "$(ratio "$t" "$a")" "$4"
}
one() { # label metric target
	local vals
	read -ra vals <<<"${VALS[$2]:-}"
	printf '%-36s %12s   %-24s %s\n' "$1" "$(fmt "$(med "$2")")" "$(fmt "${vals[@]}")" "$3"
}
{
	echo
	echo "flowd change streams under mixed load: $NODES node(s) on 127.0.0.1, $REPEAT round(s) of ${DURATION}s, $(nproc) CPUs, $(date -u +%FT%TZ)"
	echo "watchers: $WATCHERS per node ($ALL_WATCHERS unfiltered, the rest ?run= one run each); pollers: $CONNS connections at $([ "$READ_RATE" = 0 ] && echo "closed loop" || echo "$READ_RATE/s"); writer: $RATE runs/s open loop; nice ${FLOWD_NICE:-0}"
	echo "delivery (applied on the node -> read by the client)  median   each round"
	one "  delivery p50 (ms)" d_p50 ""
	one "  delivery p99 (ms)" d_p99 "target ≤50 ms"
	one "  delivery max (ms)" d_max ""
	one "  events received in the phase" d_events ""
	one "  watchers connected (of $((WATCHERS * NODES)))" d_connected ""
	one "  resets" d_resets "0"
	one "  RSS per watcher (kB, first round)" rss_per_watcher_kb ""
	echo "mixed load                              baseline  with watchers  ratio"
	line "reads/s" rb_rps rw_rps "$READ_RATE offered"
	line "reads p50 (ms)" rb_p50 rw_p50 ""
	line "reads p99 (ms)" rb_p99 rw_p99 ""
	line "writes/s" wb_rps ww_rps "$RATE offered"
	line "writes p50 (ms)" wb_p50 ww_p50 ""
	line "writes p99 (ms)" wb_p99 ww_p99 ""
	line "nodes' CPU seconds in the phase" cpu_b cpu_w ""
	printf '%-36s %12s %12s\n' "non-2xx and failed requests" \
		"$(( ${ERRS[rb_rps]:-0} + ${ERRS[wb_rps]:-0} ))" "$(( ${ERRS[rw_rps]:-0} + ${ERRS[ww_rps]:-0} ))"
	echo "(details: $OUT, node logs: $B/node{1,2,3}.log)"
} | tee "$B/results.txt"
