#!/bin/sh
# check-deps.sh - fail when a layer includes a header of a layer it must not
# know (DESIGN.md: daemon -> api -> consensus, storage -> core), or when a
# file of the state machine in core/ includes the internal header of a file
# at its own layer or above (core/README.md, "Layers").
set -u
rc=0
check() { # layer, forbidden layers...
	layer=$1; shift
	for bad in "$@"; do
		hits=$(grep -nE "#include +\"($bad)/" "$layer"/*.c "$layer"/*.h 2>/dev/null)
		if [ -n "$hits" ]; then
			echo "check-deps: $layer must not include $bad/:"; echo "$hits"; rc=1
		fi
	done
}
check core consensus storage api daemon cli
check consensus storage api daemon cli
check storage consensus api daemon cli
check api daemon cli
check cli core consensus storage api daemon

# The state machine's files by layer, lowest first. X.c and its internal
# header X.h may include the internal header of a file of a lower rank
# only; fsm.h is public (every layer above core/ includes it), and no file
# outside this list may include an internal header.
fsm_ranks="fsm_changes:0 fsm_rows:1 fsm_cmd:2 fsm_runs:2 fsm_nodes:3
trigger_launch:3 fsm_lifecycle:3 trigger_schedule:4 trigger_event:4 trigger_finish:5
fsm_flows:6 fsm_state:7 fsm:8 fsm_snapshot:8"
rank() { # file name without folder and suffix -> its rank, or "-"
	for e in $fsm_ranks; do
		[ "${e%%:*}" = "$1" ] && { echo "${e#*:}"; return; }
	done
	echo -
}
for file in core/*.c core/*.h consensus/*.[ch] storage/*.[ch] api/*.[ch] \
	daemon/*.[ch] cli/*.[ch] tests/unit/*.c bench/*.c; do
	[ -f "$file" ] || continue
	name=$(basename "$file"); name=${name%.*}
	case $file in
	core/fsm.h | core/*/*) mine=- ;;
	core/*) mine=$(rank "$name") ;;
	*) mine=- ;;
	esac
	for inc in $(sed -n 's/^#include *"\(core\/\)\{0,1\}\([a-z_]*\)\.h".*/\2/p' "$file"); do
		[ "$inc" = fsm ] && continue
		r=$(rank "$inc")
		[ "$r" = - ] && continue
		[ "$inc" = "$name" ] && continue
		if [ "$mine" = - ] || [ "$r" -ge "$mine" ]; then
			echo "check-deps: $file must not include $inc.h (core/README.md, Layers)"; rc=1
		fi
	done
done
# core/ and storage/ say what went wrong in the domain's words (enum
# flowd_errc); only the api turns that into an HTTP status (api/README.md,
# "Errors").
hits=$(grep -nE '(flowd_error_set|fsm__result_error|fail)\([^,]*, *[1-5][0-9][0-9]\b' \
	core/*.c storage/*.c 2>/dev/null)
if [ -n "$hits" ]; then
	echo "check-deps: core/ and storage/ must give an enum flowd_errc, not an HTTP status:"
	echo "$hits"; rc=1
fi
[ $rc -eq 0 ] && echo "check-deps: ok"
exit $rc
