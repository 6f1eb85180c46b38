#!/bin/sh
# check_examples.sh BUILD_DIR - runs each built example as a smoke test and asserts its output.
#   Each example runs from a fresh temp cwd (the defaults put tiercache.db in the cwd) with
#   TIERCACHE_CONFIG unset, under a time limit; it must exit 0 and print its expected line.
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
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' HUP INT TERM

passed=0
failed=0
skipped=0
listed=" "

# example NAME [EXPECTED_LINE]: runs BUILD_DIR/examples/NAME; EXPECTED_LINE must be one whole line
# of its output (stdout or stderr).
example() {
    name=$1
    listed="$listed$name "
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
    wd=$tmp/$name
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
        echo "examples: $name FAILED: $why; its output:"
        sed 's/^/  | /' "$wd.out"
        failed=$((failed + 1))
    elif [ $# -ge 2 ]; then
        echo "examples: $name ok"
        passed=$((passed + 1))
    else
        echo "examples: $name ok (exit status only: add its expected line to $0)"
        passed=$((passed + 1))
    fi
}

# ---- the examples and what each must print ----------------------------------------------------
example quickstart 'quickstart: ok'
example custom_store 'custom_store: ok'
example catalog 'catalog: ok'
example profile 'profile: ok'

# ---- examples with no line above: exit status only --------------------------------------------
for src in "$top"/examples/*.c; do
    [ -f "$src" ] || continue
    name=$(basename "$src" .c)
    case $listed in *" $name "*) continue ;; esac
    example "$name"
done

if [ "$skipped" -ne 0 ]; then
    echo "examples: $passed passed, $failed failed, $skipped skipped"
else
    echo "examples: $passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
