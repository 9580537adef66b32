# lib.sh - helpers bench/run.sh and bench/cluster.sh share (sourced, not run).
# The sourcing script sets BENCH_NAME (the log prefix) and OUT (where loadgen
# outputs go), and may set ROW_WIDTH (label column of the result table).

say() { echo "$BENCH_NAME: $*" >&2; }
die() { say "$*"; exit 1; }
isnum() { [[ "$1" =~ ^[0-9]+([.][0-9]+)?$ ]]; }

# Ports: the wanted one, or the next free one not yet handed out.
TAKEN=" "
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() { # wanted-port
	local p=$1
	while port_busy "$p" || [[ "$TAKEN" == *" $p "* ]]; do p=$((p + 7)); done
	[ "$p" = "$1" ] || say "port $1 is busy, using $p"
	TAKEN="$TAKEN$p "
	echo "$p"
}

# lg_run NAME ARGS...: run loadgen with the admin token, keep its output in
# $OUT/NAME.txt, and set LG to its JSON line ('{}' if it printed none).
LG=
lg_run() {
	local name=$1 line
	shift
	timeout --foreground "${LG_TIMEOUT:-900}" "$LOADGEN" --token "$TOKEN" "$@" \
		>"$OUT/$name.txt" 2>&1 || true
	LG=$(grep '^{' "$OUT/$name.txt" | tail -n 1 || true)
	line=$(grep '^loadgen:' "$OUT/$name.txt" | tail -n 1 || true)
	say "$name: ${line#loadgen: }"
	[ -n "$LG" ] || { cat "$OUT/$name.txt" >&2; LG='{}'; }
}
field() { # json key
	sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"
}
errors_of() { local e; e=$(field "$1" errors); echo "${e:-1}"; }

# Results: record values per metric across rounds, print medians.
declare -A VALS ERRS
record() { # metric value [errors]
	VALS[$1]="${VALS[$1]:-} $2"
	ERRS[$1]=$(( ${ERRS[$1]:-0} + ${3:-0} ))
}
median() {
	printf '%s\n' "$@" | sort -g | awk 'NF { a[++n] = $1 }
		END { if (!n) print "-"; else if (n % 2) print a[(n + 1) / 2];
		      else printf "%.3f\n", (a[n / 2] + a[n / 2 + 1]) / 2 }'
}
fmt() { # numbers... -> each with 0, 1 or 3 decimals by size, comma-separated
	awk 'BEGIN { for (i = 1; i < ARGC; i++) {
		v = ARGV[i]; if (v !~ /^[0-9.]+$/) s = v; else if (v >= 100) s = sprintf("%.0f", v);
		else if (v >= 10) s = sprintf("%.1f", v); else s = sprintf("%.3f", v);
		printf "%s%s", (i > 1 ? "," : ""), s } print "" }' "$@"
}
row() { # label metric target
	local vals
	read -ra vals <<<"${VALS[$2]:-}"
	printf "%-${ROW_WIDTH:-44}s %10s  %-6s %-30s %s\n" "$1" \
		"$(fmt "$(median "${vals[@]}")")" "${ERRS[$2]:-0}" \
		"$(fmt "${vals[@]}")" "$3"
}
