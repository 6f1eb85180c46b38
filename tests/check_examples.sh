#!/bin/sh
# check_examples.sh BUILD_DIR - runs each built example as a smoke test and asserts its output.
#   Each example runs from a fresh temp cwd (the defaults put tiercache.db in the cwd) under a
#   time limit; it must exit 0 and print its expected line. Two passes: the embedded default
#   (TIERCACHE_CONFIG unset), then, if redis-server is installed, with a private Redis started
#   here (scripts/private_redis.sh) and TIERCACHE_CONFIG pointing at it. An example that needs
#   Redis prints "NAME: skipped (needs Redis)" in the first pass and its ok line in the second.
#   To add an example, add one `example` line at the bottom. An examples/*.c with no line there
#   is still run, checked on its exit status alone, with a note.
set -eu

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 BUILD_DIR" >&2
    exit 2
fi
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$1" && pwd)
limit=${TC_EXAMPLE_TIMEOUT:-120}
unset TIERCACHE_CONFIG

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tc-examples.XXXXXX")
. "$top/scripts/private_redis.sh"
. "$top/scripts/private_ddb.sh"
trap 'stop_redis; stop_ddb; rm -rf "$tmp"' EXIT
trap 'exit 130' HUP INT TERM

passed=0
failed=0
skipped=0
listed=" "

# example NAME [EXPECTED_LINE [EXPECTED_LINE_WITH_REDIS]]: runs BUILD_DIR/examples/NAME; the
# expected line of the pass (the first one when the second is not given) must be one whole line
# of its output (stdout or stderr).
example() {
    name=$1
    listed="$listed$name "
    if [ "$pass" = redis ] && [ $# -ge 3 ]; then
        set -- "$1" "$3"
    fi
    bin=$build/examples/$name
    if [ ! -f "$top/examples/$name.c" ]; then
        echo "examples: $name skipped (no examples/$name.c yet)"
        skipped=$((skipped + 1))
        return 0
    fi
    if [ ! -x "$bin" ]; then
        echo "examples: $name FAILED: $bin is not built (make examples)"
        failed=$((failed + 1))
        return 0
    fi
    wd=$tmp/$pass/$name
    mkdir "$wd"
    st=0
    (cd "$wd" && exec timeout "$limit" "$bin") > "$wd.out" 2>&1 || st=$?
    why=
    if [ "$st" -eq 124 ]; then
        why="did not finish in ${limit}s"
    elif [ "$st" -ne 0 ]; then
        why="exited with status $st"
    elif [ $# -ge 2 ] && ! grep -qxF "$2" "$wd.out"; then
        why="did not print the line '$2'"
    fi
    if [ -n "$why" ]; then
        echo "examples: $name ($pass) FAILED: $why; its output:"
        sed 's/^/  | /' "$wd.out"
        failed=$((failed + 1))
    elif [ $# -ge 2 ]; then
        echo "examples: $name ($pass) ok"
        passed=$((passed + 1))
    else
        echo "examples: $name ($pass) ok (exit status only: add its expected line to $0)"
        passed=$((passed + 1))
    fi
}

# ---- the examples and what each must print ----------------------------------------------------
all_examples() {
    listed=" "
    example quickstart 'quickstart: ok'
    example custom_store 'custom_store: ok'
    example catalog 'catalog: ok'
    example profile 'profile: ok'
    example lambda 'lambda: ok'
    example leaderboard 'leaderboard: skipped (needs Redis)' 'leaderboard: ok'
    example cart 'cart: skipped (needs Redis)' 'cart: ok'
    if [ -n "${TC_DDB_ENDPOINT:-}" ]; then
        example dynamodb 'dynamodb: ok'
    else
        example dynamodb "dynamodb: skipped (set TC_DDB_ENDPOINT to a DynamoDB endpoint, e.g. \
DynamoDB Local's http://127.0.0.1:8000; make demo starts one)"
    fi

    # ---- examples with no line above: exit status only ----------------------------------------
    for src in "$top"/examples/*.c; do
        [ -f "$src" ] || continue
        name=$(basename "$src" .c)
        case $listed in *" $name "*) continue ;; esac
        example "$name"
    done
}

pass=embedded
mkdir "$tmp/$pass"
all_examples
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    start_redis "$tmp/redis-server"
    pass=redis
    mkdir "$tmp/$pass"
    TIERCACHE_CONFIG=$(printf '{"redis":{"host":"127.0.0.1","port":%d}}' "$port")
    export TIERCACHE_CONFIG
    echo "examples: again with a private Redis: TIERCACHE_CONFIG=$TIERCACHE_CONFIG"
    all_examples
    # Once more with DynamoDB Local, for the example that needs it (and Redis).
    if ddb_available && start_ddb "$tmp/ddb"; then
        TC_DDB_ENDPOINT=$ddb_endpoint
        export TC_DDB_ENDPOINT
        pass=dynamodb
        mkdir "$tmp/$pass"
        echo "examples: dynamodb with DynamoDB Local at $TC_DDB_ENDPOINT"
        example dynamodb 'dynamodb: ok'
        stop_ddb
        unset TC_DDB_ENDPOINT
    else
        echo "examples: the DynamoDB pass skipped: no DynamoDB Local (scripts/deps.sh installs it)"
    fi
    stop_redis
else
    echo "examples: the Redis pass skipped: redis-server and redis-cli are not installed"
fi

if [ "$skipped" -ne 0 ]; then
    echo "examples: $passed passed, $failed failed, $skipped skipped"
else
    echo "examples: $passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
