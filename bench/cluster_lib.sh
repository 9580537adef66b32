# cluster_lib.sh - a private PostgreSQL and three flowd nodes on 127.0.0.1 for
# the three-node benchmarks (cluster.sh, mixed.sh), and the helpers they share:
# start/stop/kill nodes, wait until healthy, find the leader, deploy, run
# loadgen, drain. Sourced after lib.sh; the sourcing script sets ROOT, B (its
# work dir), PG_DIR, OUT, FLOWD_BIN, LOADGEN, PYTHON, HELPER, PG_SCRIPT,
# READY_TIMEOUT, DRAIN_TIMEOUT, RAFT_HEARTBEAT_MS, RAFT_ELECTION_MS, and may
# set NODE_ARGS (extra flowd arguments, an array), MAX_PARALLEL_TASKS,
# NODES (3, or 1 for a single node) and FLOWD_NICE (the nice value the nodes
# start with, as systemd's Nice= gives them; root may give a negative one).
#
# TLS=1: the nodes get a [tls] section with certificates from
# scripts/make-certs.sh (a throwaway CA in $B/tls), so the API is HTTPS and
# Raft and node-to-node traffic are mutually authenticated TLS; URL[] and ALL
# are https://, and curl, loadgen (lg_run, lg) and failover.py (HELPER) are
# made to verify against that CA. Unset: nothing changes.
# LOADGEN_ARGS="...": extra arguments for every loadgen run (lg_run, lg),
# e.g. --warmup 1.
# NODE_CPU_LOG=FILE: lg appends "NAME SECONDS" to FILE, the CPU time (user +
# system, every thread) the nodes used while that loadgen ran.

# --- cleanup -----------------------------------------------------------------
NODES=${NODES:-3}
NODE_IDS=$(seq "$NODES")
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
	for i in $NODE_IDS; do
		[ -n "${PID[$i]}" ] && kill -0 "${PID[$i]}" 2>/dev/null &&
			say "stopping node $i (pid ${PID[$i]})"
		# all three at once: the last ones must not wait on a lost quorum
		kill -TERM "${PID[$i]}" 2>/dev/null || true
	done
	for i in $NODE_IDS; do stop_node "$i"; done
	if [ "$PG_STARTED" -eq 1 ]; then
		timeout 90 "$PG_SCRIPT" stop "$PG_DIR" || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_node() { # n: start it (same config, same data dir), log appended
	echo "=== start $(date -u +%FT%T.%3NZ)" >>"$B/node$1.log"
	nice -n "${FLOWD_NICE:-0}" \
		"$FLOWD_BIN" --config "$B/node$1.conf" "${RAFT_ARGS[@]}" "${NODE_ARGS[@]}" \
		>>"$B/node$1.log" 2>&1 &
	PID[$1]=$!
	say "node $1 pid ${PID[$1]} on ${URL[$1]} (log $B/node$1.log)"
}
nodes_alive() {
	local i
	for i in $NODE_IDS; do
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

# --- helpers -------------------------------------------------------------------
lg() { # NAME ARGS...: loadgen (lib.sh), then check the node(s) still run
	local name=$1 c0
	shift
	[ -z "${NODE_CPU_LOG:-}" ] || c0=$(nodes_cpu_ticks)
	lg_run "$name" "$@"
	[ -z "${NODE_CPU_LOG:-}" ] ||
		awk -v n="$name" -v a="$c0" -v b="$(nodes_cpu_ticks)" -v hz="$(getconf CLK_TCK)" \
			'BEGIN { printf "%s %.2f\n", n, (b - a) / hz }' >>"$NODE_CPU_LOG"
	nodes_alive
}
nodes_cpu_ticks() { # -> the nodes' CPU time (user + system) summed, clock ticks
	local i t=0 v
	for i in $NODE_IDS; do
		v=$(awk '{ print $14 + $15 }' "/proc/${PID[$i]}/stat" 2>/dev/null || echo 0)
		t=$((t + v))
	done
	echo "$t"
}
rss_mb() { # n -> VmRSS of node n in MB
	awk '$1 == "VmRSS:" { printf "%.1f\n", $2 / 1024 }' "/proc/${PID[$1]}/status" 2>/dev/null || echo -
}
record_rss() { # prefix
	local i
	for i in $NODE_IDS; do record "$1_n$i" "$(rss_mb "$i")"; done
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

# --- TLS=1, LOADGEN_ARGS --------------------------------------------------------
TLS=${TLS:-0}
if [ "$TLS" = 1 ]; then
	TLS_DIR=$B/tls
	TLS_CA=$TLS_DIR/ca.pem
	SCHEME=https
	curl() { command curl --cacert "$TLS_CA" "$@"; }
	# failover.py (standard library, plain HTTP) through a shim that gives
	# its connections TLS verified against the CA and reads https:// URLs
	export BENCH_FAILOVER_PY=$HELPER BENCH_TLS_CA=$TLS_CA
	HELPER=$TLS_DIR/failover_tls.py
elif [ "$TLS" = 0 ]; then
	SCHEME=http
else
	die "TLS must be 0 or 1"
fi
# lib.sh's lg_run, with LOADGEN_ARGS and the CA for https:// targets
read -ra LOADGEN_EXTRA <<<"${LOADGEN_ARGS:-}"
[ "$TLS" != 1 ] || LOADGEN_EXTRA+=(--tls-ca "$TLS_CA")
if [ ${#LOADGEN_EXTRA[@]} -gt 0 ]; then
	eval "lg_run_plain() $(declare -f lg_run | tail -n +2)"
	lg_run() { # NAME ARGS...
		local name=$1
		shift
		lg_run_plain "$name" "${LOADGEN_EXTRA[@]}" "$@"
	}
fi
tls_setup() { # certificates and the failover.py shim in $TLS_DIR
	local i
	command -v openssl >/dev/null || die "TLS=1 needs the openssl command"
	rm -rf "$TLS_DIR"
	"$ROOT/scripts/make-certs.sh" "$TLS_DIR" $(for i in $NODE_IDS; do echo "node-$i"; done) ||
		die "scripts/make-certs.sh failed"
	cat >"$HELPER" <<-'PY'
	import http.client, importlib.util, os, socket, ssl, sys
	spec = importlib.util.spec_from_file_location("failover", os.environ["BENCH_FAILOVER_PY"])
	m = importlib.util.module_from_spec(spec)
	spec.loader.exec_module(m)
	ctx = ssl.create_default_context(cafile=os.environ["BENCH_TLS_CA"])
	class Conn(http.client.HTTPSConnection):
	    def __init__(self, host, port=None, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, **kw):
	        super().__init__(host, port, timeout=timeout, context=ctx)
	http.client.HTTPConnection = Conn
	split_url = m.split_url
	m.split_url = lambda u: split_url(u.strip().replace("https://", "http://", 1))
	sys.exit(m.main())
	PY
	say "TLS: certificates in $TLS_DIR, the API on https"
}

# cluster_up: PostgreSQL, the three nodes' configs, start them, wait until
# they agree on a leader, deploy "noop" (one /usr/bin/true step).
cluster_up() {
	local i
	if [ -d "$PG_DIR/data" ]; then
		timeout 90 "$PG_SCRIPT" stop "$PG_DIR" || true
	fi
	rm -rf "$PG_DIR" "$B"/node[0-9] "$OUT" "$B"/node*.conf \
		"$B"/node*.log "$B/results.txt"
	mkdir -p "$OUT"
	for i in $NODE_IDS; do mkdir -p "$B/node$i"; done
	[ "$TLS" != 1 ] || tls_setup

	declare -ga APIP=(-) RAFTP=(-) URL=(-)
	for i in $NODE_IDS; do
		APIP[$i]=$(pick_port $((${API_PORT:-8790} + i - 1)))
		RAFTP[$i]=$(pick_port $((${RAFT_PORT:-8793} + i - 1)))
		URL[$i]=$SCHEME://127.0.0.1:${APIP[$i]}
	done
	PG_PORT=$(pick_port "${PG_PORT:-8796}")
	ALL=$(for i in $NODE_IDS; do printf '%s,' "${URL[$i]}"; done)
	ALL=${ALL%,}
	TOKEN=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
	AUTH="Authorization: Bearer $TOKEN"

	RAFT_ARGS=()
	[ -z "$RAFT_HEARTBEAT_MS" ] || RAFT_ARGS+=("--raft.heartbeat_ms=$RAFT_HEARTBEAT_MS")
	[ -z "$RAFT_ELECTION_MS" ] || RAFT_ARGS+=("--raft.election_ms=$RAFT_ELECTION_MS")
	RAFT_DESC="heartbeat ${RAFT_HEARTBEAT_MS:-default (50)} ms, election ${RAFT_ELECTION_MS:-default (200)} ms"
	say "raft timeouts: $RAFT_DESC"

	PG_STARTED=1
	timeout 120 "$PG_SCRIPT" start "$PG_DIR" "$PG_PORT" || die "PostgreSQL did not start"

	for i in $NODE_IDS; do
		cat >"$B/node$i.conf" <<-CONF
	[node]
	id = $i
	raft_address = 127.0.0.1:${RAFTP[$i]}
	api_address = 127.0.0.1:${APIP[$i]}
	data_dir = ${DATA_ROOT:-$B}/node$i

	[peers]
	$(for p in $NODE_IDS; do echo "$p = 127.0.0.1:${RAFTP[$p]} 127.0.0.1:${APIP[$p]}"; done)

	[database]
	conninfo = host=127.0.0.1 port=$PG_PORT dbname=flowd user=postgres connect_timeout=2

	[auth]
	admin_tokens = $TOKEN

	[cluster]
	secret = bench-cluster-secret-0123456789

	[executor]
	allow_root = true

	[limits]
	max_parallel_tasks = ${MAX_PARALLEL_TASKS:-64}
	CONF
		[ "$TLS" != 1 ] || cat >>"$B/node$i.conf" <<-CONF

	[tls]
	cert_file = $TLS_DIR/node-$i.pem
	key_file = $TLS_DIR/node-$i.key
	ca_file = $TLS_CA
	CONF
		# fail fast on a config flowd rejects (e.g. election < 3 x heartbeat)
		"$FLOWD_BIN" --config "$B/node$i.conf" "${RAFT_ARGS[@]}" --check >"$OUT/check$i.txt" 2>&1 ||
			{ cat "$OUT/check$i.txt" >&2; die "flowd --check rejected node $i's config"; }
	done
	for i in $NODE_IDS; do start_node "$i"; done
	wait_healthy "start"
	find_leader
	say "cluster ready, leader node $LEADER"
	TRUE_BIN=$(type -P true || echo /bin/true)
	deploy noop "{\"steps\":[{\"name\":\"s\",\"command\":[\"$TRUE_BIN\"]}]}"
}
