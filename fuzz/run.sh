#!/usr/bin/env bash
# fuzz/run.sh SECONDS TARGET... - run each libFuzzer target for SECONDS,
# one after the other, over a copy of its committed corpus (fuzz/README.md).
#
# New inputs go to a scratch copy and are dropped, unless FUZZ_SAVE=1: then
# those that add coverage are merged into fuzz/corpus/<target>/. Reproducers
# listed in fuzz/known-crashes (open findings in code this folder does not
# own) are left out of the run and replayed alone: still crashing is
# reported, not failed; no longer crashing says to delete the line.
#
# Prints one line per target (executions, coverage, corpus size) and exits
# non-zero when a target found a crash, a leak or a timeout; the input is
# kept under $FUZZ_BUILD/crashes/<target>/ and the report is printed.
set -u

secs=$1
shift
build=${FUZZ_BUILD:-build-fuzz}
known_file=fuzz/known-crashes
failed=0

is_known() { # target file
	[ -f "$known_file" ] && grep -q "^$1/$2\( \|$\)" "$known_file"
}

for t in "$@"; do
	bin=$build/fuzz_$t
	work=$(mktemp -d "${TMPDIR:-/tmp}/flowd-fuzz-$t.XXXXXX")
	mkdir -p "$work/corpus" "$build/crashes/$t"
	known=()
	for f in fuzz/corpus/"$t"/*; do
		[ -f "$f" ] || continue
		if is_known "$t" "$(basename "$f")"; then
			known+=("$f")
		else
			cp "$f" "$work/corpus/"
		fi
	done
	seeds=$(ls "$work/corpus" | wc -l)
	opts=()
	[ -f "fuzz/fuzz_$t.options" ] && read -r -a opts <"fuzz/fuzz_$t.options"
	"$bin" "${opts[@]}" -max_total_time="$secs" -timeout=25 \
		-print_final_stats=1 -artifact_prefix="$build/crashes/$t/" \
		"$work/corpus" >"$work/log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
	cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -1 | cut -d' ' -f2)
	now=$(ls "$work/corpus" | wc -l)
	if [ $rc -eq 0 ]; then
		printf 'fuzz %-12s %9s executions in %s s, cov %s, corpus %s (+%s new)\n' \
			"$t" "${execs:-?}" "$secs" "${cov:-?}" "$seeds" \
			"$((now - seeds))"
		if [ "${FUZZ_SAVE:-}" = 1 ] && [ "$now" -gt "$seeds" ]; then
			"$bin" "${opts[@]}" -merge=1 "fuzz/corpus/$t" \
				"$work/corpus" >"$work/merge.log" 2>&1 &&
				echo "fuzz $t: merged into fuzz/corpus/$t:" \
					"$(grep -o 'added [0-9]* new files' "$work/merge.log")"
		fi
	else
		failed=1
		echo "fuzz $t: FAILED (exit $rc) after ${execs:-?} executions:"
		# the report: from its first line, without libFuzzer's frames
		sed -n '/ERROR: \|fuzz check failed\|runtime error\|^==[0-9]*==/,$p' \
			"$work/log" | grep -v 'in fuzzer::\|libc_start\|in main \|in _start' |
			head -80
		echo "fuzz $t: the input is in $build/crashes/$t/;" \
			"reproduce with $bin <file>"
	fi
	for f in ${known[@]+"${known[@]}"}; do
		if "$bin" "${opts[@]}" "$f" >"$work/known.log" 2>&1; then
			echo "fuzz $t: known crash $(basename "$f") no longer" \
				"crashes: delete its line in $known_file"
		else
			echo "fuzz $t: known open crash $(basename "$f") still" \
				"crashes ($known_file)"
		fi
	done
	rm -rf "$work"
done
exit $failed
