#!/bin/sh
# install-deps.sh - install every Debian 12 package flowd's build, tests, demo
# and benchmarks need. Idempotent; run as root. It never starts or enables the
# system PostgreSQL service: flowd's scripts and tests run their own private
# instance (scripts/pg-private.sh) and do not depend on the system one.
set -eu

PACKAGES="
build-essential pkg-config
libraft-dev libuv1-dev libmicrohttpd-dev libjansson-dev libpq-dev libinih-dev
libsystemd-dev libcurl4-openssl-dev libcmocka-dev libgnutls28-dev
clang libclang-rt-14-dev openssl
postgresql-15 postgresql-client-15
python3 python3-pytest python3-croniter python3-jsonschema
tzdata faketime
curl ca-certificates iproute2 iptables procps util-linux coreutils
prometheus
chromium chromium-driver python3-selenium
"

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: must be run as root (try: sudo $0)" >&2
	exit 1
fi

# While we install, forbid maintainer scripts from starting services
# (policy-rc.d exit 101 = "action forbidden", see invoke-rc.d(8)), unless the
# machine already has a policy of its own, which we leave untouched.
policy=/usr/sbin/policy-rc.d
our_policy=0
if [ ! -e "$policy" ]; then
	echo "install-deps: installing a temporary $policy so no service is started"
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 0755 "$policy"
	our_policy=1
fi
cleanup() {
	if [ "$our_policy" -eq 1 ]; then
		echo "install-deps: removing the temporary $policy"
		rm -f "$policy"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "install-deps: apt-get update"
apt-get update

# shellcheck disable=SC2086
echo "install-deps: apt-get install" $PACKAGES
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $PACKAGES

# Node.js runs the API document's validator in the tests; a machine that has
# its own (another distribution of it) keeps it.
if ! command -v npm >/dev/null 2>&1; then
	echo "install-deps: apt-get install nodejs npm"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm
fi

# npm packages for the tests only, under the build tree (never in the repo,
# never global): the OpenAPI validator (tests/integration/test_openapi.py).
root=$(cd "$(dirname "$0")/.." && pwd)
npm_dir=${FLOWD_NPM_DIR:-$root/build/npm}
echo "install-deps: npm install under $npm_dir"
mkdir -p "$npm_dir"
npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error \
	@apidevtools/swagger-parser@10.1.0

echo "install-deps: done"
