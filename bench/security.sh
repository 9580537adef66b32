#!/bin/bash
# security.sh - what security costs under the mixed load (issue 10): the same
# three nodes and load as bench/mixed.sh, once in clear and once with [tls]
# (HTTPS API, Raft over mutually authenticated TLS, node-to-node HTTPS), the
# two alternated so that both see the same machine (bench/README.md,
# "security.sh").
#
# Each round runs bench/mixed.sh twice with REPEAT=1, plain and TLS=1 (odd
# rounds plain first, even rounds TLS first: P T, T P, P T, ...). Every run
# starts its own PostgreSQL and three fresh nodes and measures mixed.sh's three
# phases (reads alone, writes alone, both together); the table shows, for
# plain and TLS, the median over the rounds and TLS / plain.
#
# Each loadgen run opens its connections (and, with TLS, completes their
# handshakes) before its clock starts, and starts it WARMUP seconds after it
# was launched (loadgen --warmup): dashboards on keep-alive connections pay
# the handshake once, so the figures are the steady state, and the together
# phase's writer does not measure the readers' handshakes either. The time
# the readers took to connect is a row of its own. WARMUP=0: the connections
# open inside each phase, as in mixed.sh.
#
# Environment:
#   REPEAT=3 DURATION=20   rounds (each: one plain run, one TLS run), seconds
#                          of each phase
#   WARMUP=1               seconds before each loadgen's clock (0: none)
#   SKIP_BUILD=0 BUILD=build FLOWD_BIN=$BUILD/flowd LOADGEN=$BUILD/loadgen
#   and everything bench/mixed.sh takes (CONNS, THREADS, RATE, WRITE_CONNS,
#   READ_RATE, FLOWD_NICE, NODE_ARGS, ports, ...), passed on to it
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
REPEAT=${REPEAT:-3}
DURATION=${DURATION:-20}
SKIP_BUILD=${SKIP_BUILD:-0}
WARMUP=${WARMUP:-1}
LOADGEN_ARGS=${LOADGEN_ARGS:-}
BUILD=${BUILD:-build}
FLOWD_BIN=$(realpath -m -- "${FLOWD_BIN:-$BUILD/flowd}")
LOADGEN=$(realpath -m -- "${LOADGEN:-$BUILD/loadgen}")
case $BUILD in
/*) B=$BUILD/bench-security ;;
*) B=$ROOT/$BUILD/bench-security ;;
esac
OUT=$B/out
BENCH_NAME=bench-security
. "$ROOT/bench/lib.sh" # say, die, field, record, median, fmt
# Each mixed.sh run is a session of its own (setsid), so that a Ctrl-C does
# not reach its nodes before it can stop them; on INT or TERM this script
# sends TERM to that session and waits for mixed.sh, which stops its nodes
# and its PostgreSQL, then exits 130.
CHILD=
on_signal() {
	if [ -n "$CHILD" ]; then
		say "interrupted: stopping the run in progress"
		kill -TERM -- "-$CHILD" 2>/dev/null || kill -TERM "$CHILD" 2>/dev/null || true
		wait "$CHILD" 2>/dev/null || true
	fi
	exit 130
}
trap on_signal INT TERM

[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer"
isnum "$DURATION" || die "DURATION must be a number of seconds"
isnum "$WARMUP" || die "WARMUP must be a number of seconds"
[ "$WARMUP" = 0 ] || LOADGEN_ARGS="--warmup $WARMUP $LOADGEN_ARGS"
command -v openssl >/dev/null || die "openssl is missing (scripts/make-certs.sh needs it)"
if [ "$SKIP_BUILD" != 1 ]; then
	"${MAKE:-make}" -s "$BUILD/flowd" "$BUILD/loadgen" >&2
fi
[ -x "$FLOWD_BIN" ] || die "no flowd binary at $FLOWD_BIN"
[ -x "$LOADGEN" ] || die "no loadgen binary at $LOADGEN"

rm -rf "$OUT" "$B/run" "$B/results.txt"
mkdir -p "$OUT"

# One mixed.sh run (REPEAT=1) in $B/run/bench-mixed, its files kept in
# $OUT/NAME; records its figures as <cfg>_<metric>.
FAILED_RUNS=
calc() { # value format times [per] -> value * times / per, or nothing
	awk -v v="$1" -v f="$2" -v m="$3" -v d="${4:-1}" \
		'BEGIN { if (v != "" && d + 0 > 0) printf f "\n", v * m / d }'
}
one_run() { # round cfg(plain|tls)
	local name="r$1-$2" cfg=$2 tls=0 rc=0 o d lc f cpu w failed=0
	[ "$cfg" = plain ] || tls=1
	o=$OUT/$name
	d=$B/run/bench-mixed
	mkdir -p "$o"
	say "--- round $1/$REPEAT, $cfg (log $o/mixed.log)"
	TLS=$tls REPEAT=1 DURATION=$DURATION SKIP_BUILD=1 BUILD="$B/run" \
		FLOWD_BIN="$FLOWD_BIN" LOADGEN="$LOADGEN" NODE_CPU_LOG="$o/cpu.txt" \
		LOADGEN_ARGS="$LOADGEN_ARGS" \
		setsid "$ROOT/bench/mixed.sh" >"$o/mixed.log" 2>&1 </dev/null &
	CHILD=$!
	wait "$CHILD" || rc=$?
	CHILD=
	cp -r "$d/out/." "$o/" 2>/dev/null || true
	cp "$d"/results.txt "$d"/node*.log "$d"/node*.conf "$o/" 2>/dev/null || true
	grep '^bench-mixed: r1-' "$o/mixed.log" | sed "s/^bench-mixed: r1-/  $cfg /" >&2 || true
	if [ "$rc" != 0 ]; then
		tail -n 15 "$o/mixed.log" >&2
		say "$name: mixed.sh failed (exit $rc), its figures are left out"
		FAILED_RUNS="$FAILED_RUNS $name"
		return 0
	fi
	for f in reads writes together-reads together-writes; do
		w=$(grep '^{' "$o/r1-$f.txt" 2>/dev/null | tail -n 1 || true)
		w=${w:-'{}'}
		cpu=$(awk -v n="r1-$f" '$1 == n { print $2 }' "$o/cpu.txt" 2>/dev/null || true)
		case $f in
		reads) record "${cfg}_ra_rps" "$(field "$w" rps)"
		       record "${cfg}_ra_p99" "$(field "$w" p99_ms)"
		       record "${cfg}_ra_conn" "$(calc "$(field "$w" connect_s)" '%.1f' 1000)"
		       record "${cfg}_cpu_reads" "$cpu"
		       record "${cfg}_cpu_per_read" "$(calc "$cpu" '%.1f' 1e6 "$(field "$w" ok)")" ;;
		writes) record "${cfg}_wa_p50" "$(field "$w" p50_ms)"
		        record "${cfg}_wa_p99" "$(field "$w" p99_ms)"
		        record "${cfg}_cpu_writes" "$cpu"
		        record "${cfg}_cpu_per_write" "$(calc "$cpu" '%.0f' 1e6 "$(field "$w" ok)")" ;;
		together-reads) record "${cfg}_rt_rps" "$(field "$w" rps)"
		                record "${cfg}_rt_p99" "$(field "$w" p99_ms)"
		                record "${cfg}_cpu_together" "$cpu" ;;
		together-writes) record "${cfg}_wt_rps" "$(field "$w" rps)"
		                 record "${cfg}_wt_p50" "$(field "$w" p50_ms)"
		                 record "${cfg}_wt_p99" "$(field "$w" p99_ms)" ;;
		esac
		# non-2xx, dropped, timed out, failed TLS handshakes (loadgen's errors)
		failed=$((failed + $(errors_of "$w")))
	done
	record "${cfg}_failed" "$failed"
	# leadership changes: mixed.sh's "alone" and "together" columns
	lc=$(awk '/^leadership changes/ { print $(NF - 2) + $(NF - 1) }' "$o/results.txt" 2>/dev/null || true)
	record "${cfg}_leader" "${lc:-}"
}

for r in $(seq "$REPEAT"); do
	if [ $((r % 2)) = 1 ]; then
		one_run "$r" plain
		one_run "$r" tls
	else
		one_run "$r" tls
		one_run "$r" plain
	fi
done

# --- report --------------------------------------------------------------------
med() { # metric
	local vals
	read -ra vals <<<"${VALS[$1]:-}"
	median "${vals[@]}"
}
sum() { # metric -> the sum over the runs ("-" if none)
	awk 'BEGIN { for (i = 1; i < ARGC; i++) { s += ARGV[i]; n++ }
		if (n) print s; else print "-" }' ${VALS[$1]:-}
}
ratio() { # tls plain
	awk -v t="$1" -v p="$2" 'BEGIN { if (p + 0 > 0 && t != "-") printf "%.2f\n", t / p; else print "-" }'
}
line() { # label metric [sum]: plain, TLS, TLS/plain, each run
	local p t
	if [ "${3:-}" = sum ]; then # counts, as they are
		p=$(sum "plain_$2")
		t=$(sum "tls_$2")
		printf '%-38s %10s %10s %9s   %s | %s\n' "$1" "$p" "$t" "$(ratio "$t" "$p")" \
			"$(echo ${VALS[plain_$2]:--} | tr ' ' ,)" "$(echo ${VALS[tls_$2]:--} | tr ' ' ,)"
		return
	fi
	p=$(med "plain_$2")
	t=$(med "tls_$2")
	printf '%-38s %10s %10s %9s   %s | %s\n' "$1" "$(fmt "$p")" "$(fmt "$t")" \
		"$(ratio "$t" "$p")" "$(fmt ${VALS[plain_$2]:--})" "$(fmt ${VALS[tls_$2]:--})"
}
READ_RATE=${READ_RATE:-30000}
{
	echo
	echo "flowd security cost under the mixed load (bench/mixed.sh): three nodes on 127.0.0.1, plain vs [tls], $REPEAT round(s) of one run each (alternated), ${DURATION}s phases, $(nproc) CPUs, $(date -u +%FT%TZ)"
	echo "readers: ${CONNS:-64} connections, alone closed loop, together $([ "$READ_RATE" = 0 ] && echo "closed loop" || echo "at $READ_RATE/s"); writer: ${RATE:-1000} runs/s open loop; connections opened $([ "$WARMUP" = 0 ] && echo "inside each phase" || echo "in a ${WARMUP}s warm-up before each phase's clock"); TLS: HTTPS API (keep-alive connections), Raft over mutual TLS, node-to-node HTTPS; ${NODE_ARGS:-default settings}"
	printf '%-38s %10s %10s %9s   %s\n' metric plain TLS TLS/plain "each run (plain | TLS)"
	line "reads/s alone" ra_rps
	line "reads/s together" rt_rps
	line "reads p99 alone (ms)" ra_p99
	line "reads p99 together (ms)" rt_p99
	line "writes/s together" wt_rps
	line "writes p50 alone (ms)" wa_p50
	line "writes p99 alone (ms)" wa_p99
	line "writes p50 together (ms)" wt_p50
	line "writes p99 together (ms)" wt_p99
	line "nodes' CPU s, reads alone" cpu_reads
	line "nodes' CPU s, writes alone" cpu_writes
	line "nodes' CPU s, together" cpu_together
	line "nodes' CPU us per read, alone" cpu_per_read
	line "nodes' CPU us per write, alone" cpu_per_write
	[ "$WARMUP" = 0 ] ||
		line "readers connecting, ${CONNS:-64} conns (ms)" ra_conn
	line "failed requests, all runs" failed sum
	line "leadership changes, all runs" leader sum
	echo "(medians over the runs; the last two rows are sums. CPU: the three flowd processes, every thread, user + system, over each phase's loadgen run, warm-up included; not the steps, PostgreSQL or loadgen, whose TLS shares the same cores. failed: non-2xx, dropped or timed-out requests and failed TLS handshakes, all phases)"
	[ -z "$FAILED_RUNS" ] || echo "runs that failed and are left out:$FAILED_RUNS (see $OUT/<run>/mixed.log)"
	echo "(details: $OUT/r<round>-<plain|tls>/: mixed.log, results.txt, loadgen outputs, cpu.txt, node logs and configs)"
} | tee "$B/results.txt"
[ -z "$FAILED_RUNS" ]
