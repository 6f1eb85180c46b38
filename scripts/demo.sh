#!/bin/sh
# demo.sh BUILD_DIR - shows examples/quickstart working, first on the embedded defaults (edge
# tier and a SQLite file, no Redis), then, if redis-server is installed, with a private Redis as
# the middle tier. Everything happens in temp dirs that are removed afterwards; the Redis server
# listens on 127.0.0.1 only, on a free port, without persistence, and is stopped at the end.
# Used by `make demo` (which installs what is missing and builds first).
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 BUILD_DIR" >&2
    exit 2
fi
bin=$(cd "$1" 2>/dev/null && pwd)/examples/quickstart
if [ ! -x "$bin" ]; then
    echo "demo: $1/examples/quickstart is not built: run 'make examples' first" >&2
    exit 1
fi
unset TIERCACHE_CONFIG

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tc-demo.XXXXXX")
redis_pid=
cleanup() {
    if [ -n "$redis_pid" ]; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' HUP INT TERM

# quickstart DIR: runs the example with DIR as its cwd (it writes tiercache.db there).
quickstart() {
    mkdir -p "$1"
    (cd "$1" && "$bin")
}

echo "== demo 1: embedded defaults (edge tier + SQLite file, no Redis)"
quickstart "$tmp/embedded"
echo

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "== demo 2 skipped: Redis is not installed."
    echo "   Install it with 'sudo apt-get install redis-server' (Debian/Ubuntu), or run"
    echo "   'make deps' as root, then 'make demo' again."
    exit 0
fi

# A free loopback port, in pure shell: start redis-server on a candidate port and keep it if it
# answers as itself (INFO shows our pid); if the port is taken, redis-server exits at once and
# the next candidate is tried. Candidates start at a pid-dependent point above 20000 so that
# two demos at once rarely collide.
start_redis() {
    port=$((20000 + $$ % 20000))
    tries=0
    while [ "$tries" -lt 30 ]; do
        tries=$((tries + 1))
        port=$((port + 1))
        if command -v ss >/dev/null 2>&1 && ss -ltnH "sport = :$port" 2>/dev/null | grep -q .; then
            continue
        fi
        redis-server --port "$port" --bind 127.0.0.1 --dir "$tmp/redis" --save "" \
            --appendonly no --daemonize no --logfile "$tmp/redis/redis.log" &
        redis_pid=$!
        i=0
        while [ "$i" -lt 50 ]; do
            if ! kill -0 "$redis_pid" 2>/dev/null; then
                break
            fi
            if redis-cli -h 127.0.0.1 -p "$port" info server 2>/dev/null |
                grep -q "^process_id:$redis_pid"; then
                return 0
            fi
            sleep 0.1
            i=$((i + 1))
        done
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
        redis_pid=
    done
    echo "demo: could not start redis-server on a free port; its last log:" >&2
    cat "$tmp/redis/redis.log" >&2 || true
    return 1
}

mkdir -p "$tmp/redis"
start_redis
echo "== demo 2: with a private Redis on 127.0.0.1:$port (pid $redis_pid, no persistence)"
before=$(redis-cli -p "$port" info stats | sed -n 's/^total_commands_processed:\([0-9]*\).*/\1/p')
TIERCACHE_CONFIG=$(printf '{"redis":{"host":"127.0.0.1","port":%d}}' "$port")
export TIERCACHE_CONFIG
echo "   TIERCACHE_CONFIG=$TIERCACHE_CONFIG"
quickstart "$tmp/with-redis"
after=$(redis-cli -p "$port" info stats | sed -n 's/^total_commands_processed:\([0-9]*\).*/\1/p')
# Our own INFO call counts as one command.
echo "   Redis served $((after - before - 1)) commands for the quickstart"
echo
echo "demo: done; the Redis server is stopped and the temp dirs removed"
