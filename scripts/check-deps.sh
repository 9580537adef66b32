#!/bin/sh
# check-deps.sh - fail when a layer includes a header of a layer it must not
# know (DESIGN.md: daemon -> api -> consensus, storage -> core).
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
[ $rc -eq 0 ] && echo "check-deps: ok"
exit $rc
