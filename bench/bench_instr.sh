#!/bin/sh
# bench_instr.sh BENCH_EDGE_BIN - instructions per edge hit, counted by callgrind (deterministic,
# unlike time on a shared machine): the edge's own read and the user's calls (tc_get_into, and
# tc_get with its tc_free) against the bare open-addressing lookup and copy (with a malloc and
# free for tc_get), 100k Zipf 0.99 reads over 10k keys, only the read loop counted.
#   BENCH <id>-instr instructions_per_hit value=<v> baseline=<b> ratio=<v/b>
set -eu
bin=${1:?usage: bench_instr.sh BENCH_EDGE_BIN}
if ! command -v valgrind >/dev/null 2>&1; then
    echo "# bench_instr: skipped (no valgrind)"
    exit 0
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/tc-instr.XXXXXX")
trap 'rm -rf "$dir"' EXIT

# count KIND: the instructions per read of that kind's loop.
count() {
    out="$dir/$1.out"
    BENCH_EDGE_INSTR=$1 valgrind -q --tool=callgrind --toggle-collect='instr_reads*' \
        --callgrind-out-file="$out" "$bin" > "$dir/$1.txt"
    reads=$(sed -n 's/^reads=//p' "$dir/$1.txt")
    total=$(sed -n 's/^summary: *//p' "$out" | awk '{print $1}')
    awk -v t="$total" -v n="$reads" 'BEGIN { printf "%.1f", t / n }'
}

report() {
    awk -v id="$1" -v v="$2" -v b="$3" 'BEGIN {
        printf "BENCH %s instructions_per_hit value=%s baseline=%s ratio=%.4g\n", id, v, b, v / b
    }'
}

bare=$(count bare)
edge=$(count edge)
into=$(count api-into)
get=$(count api-get)
bare_malloc=$(count bare-malloc)
report edge-hit-instr "$edge" "$bare"
report api-hit-into-instr "$into" "$bare"
report api-hit-get-instr "$get" "$bare_malloc"
