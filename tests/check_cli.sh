#!/bin/sh
# check_cli.sh BUILD_DIR - the tiercache command-line tool as a script would use it: every
# command, its exit codes, values from arguments and stdin (NUL bytes included), and the
# invalidator (--once) applying a change made in plain SQL. Runs in a temp dir on the default
# SQLite store, without Redis.
set -eu

if [ $# -ne 1 ] || [ ! -x "$1/bin/tiercache" ]; then
    echo "usage: $0 BUILD_DIR (with BUILD_DIR/bin/tiercache built: make tools)" >&2
    exit 2
fi
bin=$(cd "$1/bin" && pwd)
tc=$bin/tiercache
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tc-cli.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' HUP INT TERM
cd "$tmp"
unset TIERCACHE_CONFIG
fails=0
checks=0

fail() {
    echo "cli: FAIL: $*" >&2
    fails=$((fails + 1))
}

# status WANT CMD...: CMD must exit with WANT.
status() {
    want=$1
    shift
    checks=$((checks + 1))
    st=0
    "$@" > out 2> err || st=$?
    [ "$st" -eq "$want" ] || fail "'$*' exited $st, not $want; stderr: $(cat err)"
}

status 0 "$tc" put greeting hello
status 0 "$tc" get greeting
[ "$(cat out)" = hello ] || fail "get printed '$(cat out)', not hello"
printf 'a\000b' | "$tc" put binary
status 0 "$tc" get binary
[ "$(od -An -c out | tr -d ' \n')" = 'a\0b' ] || fail "a value with a NUL byte came back as $(od -An -c out)"
status 1 "$tc" get missing
grep -q 'not found' err || fail "get of a missing key said: $(cat err)"
status 0 "$tc" put --ttl 60000 t v
status 2 "$tc" put --ttl soon t v
status 2 "$tc" get
status 2 "$tc" frobnicate
status 2 "$tc" --bogus
status 0 "$tc" del greeting
status 1 "$tc" get greeting
status 0 "$tc" invalidate '/images/*' '#logo'
grep -q '^/images/\*	0$' out || fail "invalidate printed: $(cat out)"
status 0 "$tc" stats
grep -q '"store":{' out || fail "stats printed: $(cat out)"
status 0 "$tc" --help
grep -q 'invalidator' out || fail "--help does not list the invalidator"
for cmd in get put del invalidate stats invalidator; do
    status 0 "$tc" "$cmd" --help
    grep -q "^usage: tiercache $cmd" out || fail "$cmd --help printed: $(head -n 1 out)"
done
status 3 "$tc" -c "$tmp/no-such-file.json" stats
echo '{"edge": {"max_entries": "many"}}' > bad.json
status 3 "$tc" -c bad.json stats
grep -q 'edge.max_entries' err || fail "a bad config's message does not name the option: $(cat err)"
TIERCACHE_CONFIG='{"store": {"path": "other.db"}}' status 0 "$tc" put elsewhere x
[ -f other.db ] || fail "TIERCACHE_CONFIG (inline JSON) was not used"

# The invalidator applies a plain-SQL change and logs it. (Each command is a process of its own,
# with an empty edge: this checks the tool's wiring; tests/check_feed.c checks the caches.)
status 0 "$tc" put user:123 'Software Engineer'
python3 -c "
import sqlite3
db = sqlite3.connect('tiercache.db', timeout=10)
db.execute(\"UPDATE tiercache SET value = 'Principal Engineer' WHERE key = 'user:123'\")
db.commit()
"
status 0 "$bin/tiercache-invalidator" --once
grep -q 'applied [0-9]* changes' err || fail "the invalidator did not log its work: $(cat err)"
status 0 "$tc" get user:123
[ "$(cat out)" = 'Principal Engineer' ] || fail "after the invalidator, get printed '$(cat out)'"

if [ "$fails" -ne 0 ]; then
    echo "cli: $fails of $checks checks failed"
    exit 1
fi
echo "cli: $checks checks passed"
