#!/bin/bash
# run.sh - `make bench`: one-node flowd benchmarks against a private PostgreSQL; medians of REPEAT rounds (bench/README.md).
#
# Environment:
#   REPEAT=3          rounds; the table shows the median of each figure
#   DURATION=5        seconds of each closed- or open-loop phase
#   SKIP_BUILD=0      1: do not run make for flowd and loadgen first
#   CONNS=64 THREADS=2  the concurrent phase's connections and loadgen threads
#   STEP_RUNS=300 STEP_RATE=100  runs (and their rate per second) of the
#                     trigger -> first step phase
#   DRAIN_TIMEOUT=120 seconds to wait for queued runs to finish between phases
#   READY_TIMEOUT=60  seconds to wait for GET /readyz == 200
#   BUILD=build  FLOWD_BIN=$BUILD/flowd  LOADGEN=$BUILD/loadgen
#   API_PORT=8780 RAFT_PORT=8781 PG_PORT=8782  (a busy port is replaced)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
REPEAT=${REPEAT:-3}
DURATION=${DURATION:-5}
SKIP_BUILD=${SKIP_BUILD:-0}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
STEP_RUNS=${STEP_RUNS:-300}
STEP_RATE=${STEP_RATE:-100}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-120}
READY_TIMEOUT=${READY_TIMEOUT:-60}
BUILD=${BUILD:-build}
FLOWD_BIN=${FLOWD_BIN:-$BUILD/flowd}
LOADGEN=${LOADGEN:-$BUILD/loadgen}
FLOWD_BIN=$(realpath -m -- "$FLOWD_BIN")
LOADGEN=$(realpath -m -- "$LOADGEN")
PG_SCRIPT=${PG_SCRIPT:-$ROOT/scripts/pg-private.sh}
case $BUILD in
/*) B=$BUILD/bench ;;
*) B=$ROOT/$BUILD/bench ;;
esac
PG_DIR=$B/pg
STAMPS=$B/stamps
OUT=$B/out
BENCH_NAME=bench
. "$ROOT/bench/lib.sh" # say, die, ports, loadgen runs, medians, the table

[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer"
isnum "$DURATION" || die "DURATION must be a number of seconds"
command -v curl >/dev/null || die "curl is missing (scripts/install-deps.sh)"

if [ "$SKIP_BUILD" != 1 ]; then
	"${MAKE:-make}" -s "$BUILD/flowd" "$BUILD/loadgen" >&2
fi
[ -x "$FLOWD_BIN" ] || die "no flowd binary at $FLOWD_BIN"
[ -x "$LOADGEN" ] || die "no loadgen binary at $LOADGEN"

# --- cleanup -----------------------------------------------------------------
FLOWD_PID=
PG_STARTED=0
CLEANED=0
cleanup() {
	[ "$CLEANED" -eq 1 ] && return 0
	CLEANED=1
	if [ -n "$FLOWD_PID" ] && kill -0 "$FLOWD_PID" 2>/dev/null; then
		say "stopping flowd (pid $FLOWD_PID)"
		kill -TERM "$FLOWD_PID" 2>/dev/null || true
		local n=0
		while kill -0 "$FLOWD_PID" 2>/dev/null && [ $n -lt 100 ]; do
			sleep 0.1
			n=$((n + 1))
		done
		kill -KILL "$FLOWD_PID" 2>/dev/null || true
		wait "$FLOWD_PID" 2>/dev/null || true
	fi
	if [ "$PG_STARTED" -eq 1 ]; then
		timeout 90 "$PG_SCRIPT" stop "$PG_DIR" || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- PostgreSQL and flowd ------------------------------------------------------
if [ -d "$PG_DIR/data" ]; then
	timeout 90 "$PG_SCRIPT" stop "$PG_DIR" || true
fi
# build/bench also holds make's bench/loadgen.o: remove only what this makes
rm -rf "$PG_DIR" "$B/node1" "$STAMPS" "$OUT" "$B/flowd.conf" "$B/flowd.log" \
	"$B/results.txt"
mkdir -p "$B/node1" "$STAMPS" "$OUT"
chmod 0777 "$STAMPS" # the step may run as another user

API_PORT=$(pick_port "${API_PORT:-8780}")
RAFT_PORT=$(pick_port "${RAFT_PORT:-8781}")
PG_PORT=$(pick_port "${PG_PORT:-8782}")
API=http://127.0.0.1:$API_PORT
TOKEN=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
AUTH="Authorization: Bearer $TOKEN"

PG_STARTED=1
timeout 120 "$PG_SCRIPT" start "$PG_DIR" "$PG_PORT" || die "PostgreSQL did not start"

CONF=$B/flowd.conf
cat >"$CONF" <<CONF
[node]
id=1
raft_address=127.0.0.1:$RAFT_PORT
api_address=127.0.0.1:$API_PORT
data_dir=$B/node1

[database]
conninfo=host=127.0.0.1 port=$PG_PORT dbname=flowd user=postgres

[auth]
admin_tokens=$TOKEN

[cluster]
secret=bench-cluster-secret-0123456789

[executor]
allow_root=true

[limits]
max_parallel_tasks=64
CONF

"$FLOWD_BIN" --config "$CONF" >"$B/flowd.log" 2>&1 &
FLOWD_PID=$!
say "flowd pid $FLOWD_PID on $API (log $B/flowd.log)"

flowd_alive() {
	kill -0 "$FLOWD_PID" 2>/dev/null && return 0
	tail -n 30 "$B/flowd.log" >&2 || true
	die "flowd exited"
}

deadline=$((SECONDS + READY_TIMEOUT))
until [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$API/readyz" || true)" = 200 ]; do
	flowd_alive
	[ $SECONDS -lt $deadline ] || die "GET /readyz not 200 after ${READY_TIMEOUT}s"
	sleep 0.1
done

deploy() { # flow spec-json
	local code
	code=$(curl -s -m 10 -o "$OUT/deploy-$1.json" -w '%{http_code}' -X PUT \
		-H "$AUTH" -H 'Content-Type: application/json' \
		--data "$2" "$API/v1/flows/$1" || true)
	case $code in
	200 | 201) ;;
	*) cat "$OUT/deploy-$1.json" >&2 2>/dev/null || true
	   die "PUT /v1/flows/$1 answered '$code'" ;;
	esac
}
TRUE_BIN=$(type -P true || echo /bin/true)
deploy bench "{\"steps\":[{\"name\":\"s\",\"command\":[\"$LOADGEN\",\"--stamp\",\"$STAMPS\"]}]}"
deploy noop "{\"steps\":[{\"name\":\"s\",\"command\":[\"$TRUE_BIN\"]}]}"

# --- helpers -------------------------------------------------------------------
lg() { # NAME ARGS...: loadgen (lib.sh), then check the node(s) still run
	local name=$1
	shift
	lg_run "$name" --url "$API" "$@"
	flowd_alive
}
rss_mb() { # VmRSS or VmHWM
	awk -v k="$1:" '$1 == k { printf "%.1f\n", $2 / 1024 }' "/proc/$FLOWD_PID/status"
}
runs_body='{"parameters":{}}'

# Wait until flowd has no queued or running run and nothing left for
# PostgreSQL, so one phase's leftovers do not load the next. Routes that do
# not answer are taken as "nothing to wait for".
drain() {
	local start=$SECONDS c q r backlog
	while :; do
		flowd_alive
		c=$(curl -s -m 2 -H "$AUTH" "$API/v1/cluster" || true)
		backlog=$(sed -n 's/.*"db_backlog": *\([0-9]*\).*/\1/p' <<<"$c")
		q=$(curl -s -m 2 -H "$AUTH" "$API/v1/runs?status=queued&limit=1" || true)
		r=$(curl -s -m 2 -H "$AUTH" "$API/v1/runs?status=running&limit=1" || true)
		if [ "${backlog:-0}" = 0 ] && ! grep -q '"id"' <<<"$q$r"; then
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

# Trigger -> first step: stamp (step process start) minus send time, per run.
step_latency() { # ids-file -> "p50 p99 missing"
	local ids=$1 n deadline missing id ns s
	n=$(wc -l <"$ids")
	deadline=$((SECONDS + 60))
	while :; do
		missing=0
		while read -r id ns; do
			[ -f "$STAMPS/$id" ] || missing=$((missing + 1))
		done <"$ids"
		if [ "$missing" -eq 0 ] || [ $SECONDS -ge $deadline ]; then
			break
		fi
		sleep 0.2
	done
	while read -r id ns; do
		[ -f "$STAMPS/$id" ] || continue
		read -r s <"$STAMPS/$id" || continue
		[[ "$s$ns" =~ ^[0-9]+$ ]] && echo $((s - ns))
	done <"$ids" | sort -n | awk -v miss="$missing" -v n="$n" '
		{ a[++k] = $1 }
		function pct(p,  i) { i = int(p * k); if (i < p * k) i++; if (i < 1) i = 1; return a[i] / 1e6 }
		END { if (!k) print "- -", miss; else printf "%.3f %.3f %d\n", pct(0.5), pct(0.99), miss }'
}

# --- rounds --------------------------------------------------------------------
sleep 1
RSS_IDLE=$(rss_mb VmRSS)
say "idle VmRSS ${RSS_IDLE} MB"
record rss_idle "$RSS_IDLE"
STEP_DURATION=$(( STEP_RUNS / STEP_RATE + 30 ))

for r in $(seq "$REPEAT"); do
	say "--- round $r/$REPEAT"
	drain
	lg "r$r-healthz-serial" --path /healthz --connections 1 --duration "$DURATION"
	record healthz_serial "$(field "$LG" rps)" "$(errors_of "$LG")"
	lg "r$r-healthz-conc" --path /healthz --connections "$CONNS" --threads "$THREADS" \
		--duration "$DURATION"
	record healthz_conc "$(field "$LG" rps)" "$(errors_of "$LG")"

	lg "r$r-serial" --path /v1/flows/noop/runs --body "$runs_body" --connections 1 \
		--duration "$DURATION"
	record serial "$(field "$LG" rps)" "$(errors_of "$LG")"
	record serial_p50 "$(field "$LG" p50_ms)"
	drain

	lg "r$r-conc" --path /v1/flows/noop/runs --body "$runs_body" --connections "$CONNS" \
		--threads "$THREADS" --duration "$DURATION"
	top=$(field "$LG" rps)
	record conc "$top" "$(errors_of "$LG")"
	record conc_p99 "$(field "$LG" p99_ms)"
	record rss_load "$(rss_mb VmRSS)"
	drain

	half=$(awk -v t="${top:-0}" 'BEGIN { printf "%.0f", t / 2 }')
	if [ "$half" -ge 1 ]; then
		lg "r$r-latency" --path /v1/flows/noop/runs --body "$runs_body" \
			--connections "$CONNS" --threads "$THREADS" --rate "$half" \
			--duration "$DURATION"
		record lat_rate "$half"
		record lat_p50 "$(field "$LG" p50_ms)" "$(errors_of "$LG")"
		record lat_p99 "$(field "$LG" p99_ms)" "$(field "$LG" unsent)"
		drain
	else
		say "no top rate measured: accept-latency phase skipped"
	fi

	ids=$OUT/r$r-ids.txt
	lg "r$r-step" --path /v1/flows/bench/runs --body "$runs_body" --connections 4 \
		--rate "$STEP_RATE" --requests "$STEP_RUNS" --duration "$STEP_DURATION" \
		--print-ids "$ids"
	read -r sp50 sp99 smiss < <(step_latency "$ids")
	say "r$r-step: trigger -> step started p50 $sp50 ms, p99 $sp99 ms, $smiss stamps missing"
	record step_p50 "$sp50" "$(( $(errors_of "$LG") + smiss ))"
	record step_p99 "$sp99"
	record rss_after "$(rss_mb VmRSS)"
done
RSS_PEAK=$(rss_mb VmHWM)

# --- report --------------------------------------------------------------------
ratio() { # numerator-metric denominator-metric
	local a b va vb
	read -ra va <<<"${VALS[$1]:-}"
	read -ra vb <<<"${VALS[$2]:-}"
	a=$(median "${va[@]}")
	b=$(median "${vb[@]}")
	awk -v a="$a" -v b="$b" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.3f\n", a / b }'
}
{
	echo
	echo "flowd benchmarks: one node, $REPEAT round(s) of ${DURATION}s phases, $(nproc) CPUs, $(date -u +%FT%TZ)"
	printf '%-44s %10s  %-6s %-30s %s\n' metric median errors rounds target
	row "runs accepted, 1 serial client (runs/s)" serial "≥1,000/s"
	row "  its p50 latency (ms)" serial_p50 ""
	row "runs accepted, $CONNS connections (runs/s)" conc "≥5,000/s (3 nodes)"
	row "  its p99 latency (ms)" conc_p99 ""
	row "accept latency p50 at half top rate (ms)" lat_p50 "≤2 ms"
	row "accept latency p99 at half top rate (ms)" lat_p99 "≤10 ms (errors: unsent)"
	row "  the rate used (runs/s)" lat_rate ""
	row "trigger -> first step started p50 (ms)" step_p50 "≤5 ms"
	row "trigger -> first step started p99 (ms)" step_p99 "≤18 ms"
	row "GET /healthz, 1 serial client (req/s)" healthz_serial "baseline"
	row "GET /healthz, $CONNS connections (req/s)" healthz_conc "baseline"
	printf '%-44s %10s\n' "runs/s ÷ healthz/s, serial" "$(ratio serial healthz_serial)"
	printf '%-44s %10s\n' "runs/s ÷ healthz/s, $CONNS connections" "$(ratio conc healthz_conc)"
	row "VmRSS idle (MB)" rss_idle "≤32 MB"
	row "VmRSS right after $CONNS-connection load (MB)" rss_load ""
	row "VmRSS after each round (MB)" rss_after ""
	printf '%-44s %10s\n' "VmHWM, peak over the whole bench (MB)" "$RSS_PEAK"
	echo "(details: $OUT, flowd log: $B/flowd.log)"
} | tee "$B/results.txt"
