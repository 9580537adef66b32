#!/bin/bash
# lifecycle.sh - issue 11's figures on one node against a private PostgreSQL
# on 127.0.0.1 (bench/README.md, "lifecycle.sh"):
#
#   tag pages     GET /v1/runs?tag=load (a user tag every run of the load
#                 carries) against the same page without a tag
#                 (?flow=tagged), from memory (the newest page) and from
#                 PostgreSQL (a cursor below the runs kept in memory: the
#                 GIN index), closed loop over CONNS connections
#   resume        POST /v1/runs/{id}/resume of a failed run (a new run of a
#                 one-step flow each, each with its own key) against
#                 POST /v1/flows/{flow}/runs of the same flow, open loop at
#                 WRITE_RATE/s over WRITE_CONNS connections: the origin must
#                 stay in memory (limits.runs_in_memory = KEEP), so a phase
#                 makes fewer than KEEP runs
#   mixed         the tag page from memory while runs are created at RATE/s
#
# Each figure is the median over REPEAT rounds; each is shown next to its
# baseline measured in the same round, and their ratio.
#
# Environment:
#   RUNS=20000 REPEAT=3 DURATION=5 CONNS=16 WRITE_CONNS=8 THREADS=2 RATE=300
#   WRITE_RATE=300
#   KEEP=2000 (limits.runs_in_memory) SKIP_BUILD=0 DRAIN_TIMEOUT=600
#   NODE_ARGS="..."  BUILD=build  FLOWD_BIN LOADGEN  API_PORT=8820
#   RAFT_PORT=8821 PG_PORT=8822
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RUNS=${RUNS:-20000}
REPEAT=${REPEAT:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-16}
WRITE_CONNS=${WRITE_CONNS:-8}
THREADS=${THREADS:-2}
RATE=${RATE:-300}
WRITE_RATE=${WRITE_RATE:-300}
KEEP=${KEEP:-2000}
SKIP_BUILD=${SKIP_BUILD:-0}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-600}
READY_TIMEOUT=${READY_TIMEOUT:-60}
RAFT_HEARTBEAT_MS=${RAFT_HEARTBEAT_MS:-}
RAFT_ELECTION_MS=${RAFT_ELECTION_MS:-}
read -ra NODE_ARGS <<<"${NODE_ARGS:-}"
NODE_ARGS+=("--limits.runs_in_memory=$KEEP")
BUILD=${BUILD:-build}
FLOWD_BIN=$(realpath -m -- "${FLOWD_BIN:-$BUILD/flowd}")
LOADGEN=$(realpath -m -- "${LOADGEN:-$BUILD/loadgen}")
PYTHON=${PYTHON:-/usr/bin/python3}
HELPER=$ROOT/bench/failover.py
PG_SCRIPT=${PG_SCRIPT:-$ROOT/scripts/pg-private.sh}
API_PORT=${API_PORT:-8820}
RAFT_PORT=${RAFT_PORT:-8821}
PG_PORT=${PG_PORT:-8822}
NODES=1
case $BUILD in
/*) B=$BUILD/bench-lifecycle ;;
*) B=$ROOT/$BUILD/bench-lifecycle ;;
esac
PG_DIR=$B/pg
OUT=$B/out
BENCH_NAME=bench-lifecycle
ROW_WIDTH=40
. "$ROOT/bench/lib.sh"
. "$ROOT/bench/cluster_lib.sh"

[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer"
[ "$RUNS" -gt $((KEEP * 2)) ] || die "RUNS must be more than twice KEEP (runs in memory)"
awk -v r="$WRITE_RATE" -v d="$DURATION" -v k="$KEEP" 'BEGIN { exit !(r * d < k * 0.9) }' ||
	die "WRITE_RATE x DURATION must stay below KEEP: the resumed run must stay in memory"
if [ "$SKIP_BUILD" != 1 ]; then
	"${MAKE:-make}" -s "$BUILD/flowd" "$BUILD/loadgen" >&2
fi

cluster_up
TRUE_BIN=$(type -P true || echo /bin/true)
FALSE_BIN=$(type -P false || echo /bin/false)
deploy tagged "{\"tags\":[\"bench\"],\"steps\":[{\"name\":\"s\",\"command\":[\"$TRUE_BIN\"]}]}"
deploy failing "{\"steps\":[{\"name\":\"s\",\"command\":[\"$FALSE_BIN\"]}]}"

say "loading $RUNS tagged runs"
export LG_TIMEOUT=$((RUNS / 200 + 900))
lg load --url "${URL[1]}" --path /v1/flows/tagged/runs --body '{"tags":["load"]}' \
	--requests "$RUNS" --rate 1000 --connections 32 --threads "$THREADS" \
	--duration 86400 --timeout 60
unset LG_TIMEOUT
[ "$(field "$LG" ok)" = "$RUNS" ] || die "the load was cut short ($OUT/load.txt)"
drain
# a cursor well below the runs in memory: those pages come from PostgreSQL
CURSOR=$((RUNS / 2))

failed_run() { # -> the id of a failed run of "failing"
	local id
	id=$(curl -s -m 10 -X POST -H "$AUTH" -H 'Content-Type: application/json' -d '{}' \
		"${URL[1]}/v1/flows/failing/runs" | sed -n 's/.*"id":"\(r-[0-9]*\)".*/\1/p' | head -n 1)
	[ -n "$id" ] || die "no run of failing"
	drain
	echo "$id"
}

phase() { # prefix name loadgen-args...
	local p=$1 n=$2
	shift 2
	lg "$n" "$@"
	record "${p}_rps" "$(field "$LG" rps)" "$(errors_of "$LG")"
	record "${p}_p50" "$(field "$LG" p50_ms)"
	record "${p}_p99" "$(field "$LG" p99_ms)"
}
READ=(--url "${URL[1]}" --connections "$CONNS" --threads "$THREADS" --duration "$DURATION")
WRITE=(--url "${URL[1]}" --connections "$WRITE_CONNS" --threads 1 --duration "$DURATION"
	--rate "$WRITE_RATE" --body '{}' --unique-key)

for r in $(seq "$REPEAT"); do
	say "--- round $r/$REPEAT"
	phase mem_plain "r$r-mem-plain" "${READ[@]}" --path "/v1/runs?flow=tagged&limit=50"
	phase mem_tag "r$r-mem-tag" "${READ[@]}" --path "/v1/runs?tag=load&limit=50"
	phase pg_plain "r$r-pg-plain" "${READ[@]}" --path "/v1/runs?flow=tagged&limit=50&cursor=$CURSOR"
	phase pg_tag "r$r-pg-tag" "${READ[@]}" --path "/v1/runs?tag=load&limit=50&cursor=$CURSOR"
	drain
	phase create "r$r-create" "${WRITE[@]}" --path /v1/flows/failing/runs
	drain
	F=$(failed_run)
	phase resume "r$r-resume" "${WRITE[@]}" --path "/v1/runs/$F/resume"
	drain
	# the tag page while runs pour in
	lg "r$r-writer" --url "${URL[1]}" --path /v1/flows/tagged/runs --body '{"tags":["load"]}' \
		--rate "$RATE" --connections 8 --threads 1 --duration "$DURATION" &
	writer=$!
	phase mixed_tag "r$r-mixed-tag" "${READ[@]}" --path "/v1/runs?tag=load&limit=50"
	wait "$writer" || true
	LG=$(grep '^{' "$OUT/r$r-writer.txt" | tail -n 1 || echo '{}')
	record mixed_writes "$(field "$LG" rps)" "$(errors_of "$LG")"
	record mixed_writes_p50 "$(field "$LG" p50_ms)"
	drain
	# the same with the page by flow: what the tag filter adds under load
	lg "r$r-writer-plain" --url "${URL[1]}" --path /v1/flows/tagged/runs \
		--body '{"tags":["load"]}' --rate "$RATE" --connections 8 --threads 1 \
		--duration "$DURATION" &
	writer=$!
	phase mixed_plain "r$r-mixed-plain" "${READ[@]}" --path "/v1/runs?flow=tagged&limit=50"
	wait "$writer" || true
	LG=$(grep '^{' "$OUT/r$r-writer-plain.txt" | tail -n 1 || echo '{}')
	record mixed_plain_writes "$(field "$LG" rps)" "$(errors_of "$LG")"
	record mixed_plain_writes_p50 "$(field "$LG" p50_ms)"
	drain
done

ratio() { # metric baseline -> median(metric) / median(baseline)
	local a b
	read -ra a <<<"${VALS[$1]:-}"
	read -ra b <<<"${VALS[$2]:-}"
	awk -v x="$(median "${a[@]}")" -v y="$(median "${b[@]}")" \
		'BEGIN { if (y > 0) printf "%.2f", x / y; else print "-" }'
}
{
	echo
	echo "flowd lifecycle: one node, $RUNS tagged runs ($KEEP in memory), $REPEAT rounds of ${DURATION}s, $CONNS read and $WRITE_CONNS write connections, $(date -u +%FT%TZ)"
	printf "%-${ROW_WIDTH}s %10s  %-6s %-30s %s\n" metric median errors rounds "ratio"
	row "page from memory, no tag (req/s)" mem_plain_rps ""
	row "page from memory, ?tag= (req/s)" mem_tag_rps "x$(ratio mem_tag_rps mem_plain_rps) of no tag"
	row "  p99 no tag / ?tag= (ms)" mem_plain_p99 ""
	row "" mem_tag_p99 ""
	row "page from PostgreSQL, no tag (req/s)" pg_plain_rps ""
	row "page from PostgreSQL, ?tag= (req/s)" pg_tag_rps "x$(ratio pg_tag_rps pg_plain_rps) of no tag"
	row "  p99 no tag / ?tag= (ms)" pg_plain_p99 ""
	row "" pg_tag_p99 ""
	row "run_create (runs/s)" create_rps ""
	row "resume (runs/s)" resume_rps "x$(ratio resume_rps create_rps) of run_create, offered $WRITE_RATE/s"
	row "  p50 run_create / resume (ms)" create_p50 ""
	row "" resume_p50 "x$(ratio resume_p50 create_p50)"
	row "  p99 run_create / resume (ms)" create_p99 ""
	row "" resume_p99 "x$(ratio resume_p99 create_p99)"
	row "page by flow while runs pour in (req/s)" mixed_plain_rps "x$(ratio mixed_plain_rps mem_plain_rps) of alone"
	row "  runs created meanwhile (runs/s)" mixed_plain_writes "offered $RATE/s"
	row "  their p50 (ms)" mixed_plain_writes_p50 ""
	row "?tag= page while runs pour in (req/s)" mixed_tag_rps "x$(ratio mixed_tag_rps mem_tag_rps) of alone, x$(ratio mixed_tag_rps mixed_plain_rps) of by flow"
	row "  runs created meanwhile (runs/s)" mixed_writes "offered $RATE/s"
	row "  their p50 (ms)" mixed_writes_p50 "x$(ratio mixed_writes_p50 mixed_plain_writes_p50) of by flow"
	echo "(details: $OUT, node log: $B/node1.log)"
} | tee "$B/results.txt"
