#!/bin/sh
# plots.sh BUILD_DIR RESULTS - draws docs/img/*.png with gnuplot (package gnuplot-nox) from the
# benchmarks' output: `make bench 2>&1 | tee RESULTS` (docs/bench-results.txt is the run the
# docs quote).
#   missratio.png   miss ratio against cache size (0.1%, 1%, 10% of the keys) per policy
#                   (LRU, FIFO, SIEVE, S3-FIFO, the edge tier), one panel per trace; from the
#                   "# missratio" lines of bench_edge (a deterministic simulation: rerun here
#                   when RESULTS lacks them)
#   tiers.png       the cost of one read answered by each tier (edge hit, Redis GET round trip,
#                   SQLite point read, PostgreSQL read), log scale, from the BENCH lines
set -eu

if [ $# -ne 2 ] || [ ! -f "$2" ]; then
    echo "usage: $0 BUILD_DIR RESULTS (the output of make bench)" >&2
    exit 2
fi
command -v gnuplot > /dev/null || { echo "plots: gnuplot is not installed (gnuplot-nox)" >&2; exit 1; }
build=$1
results=$2
top=$(cd "$(dirname "$0")/.." && pwd)
out=$top/docs/img
mkdir -p "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tc-plots.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# ---- miss ratios ------------------------------------------------------------------------------
grep '^# missratio' "$results" > "$tmp/mr" || true
if [ ! -s "$tmp/mr" ]; then
    BENCH_EDGE_ONLY=missratio "$build/bench/bench_edge" | grep '^# missratio' > "$tmp/mr"
fi
# "# missratio zipf0.99  1pct   lru=0.4339 fifo=0.4689 sieve=0.3583 s3fifo=0.3538 edge=0.3540"
# -> one file per trace: size lru fifo sieve s3fifo edge
awk -v dir="$tmp" '{
    size = $4; sub(/pct$/, "", size)
    line = size
    for (i = 5; i <= NF; i++) { split($i, kv, "="); line = line " " kv[2] }
    print line > (dir "/trace_" $3)
}' "$tmp/mr"
traces=$(cd "$tmp" && ls trace_* | sed 's/^trace_//')
n=$(echo "$traces" | wc -w)
cols=3
rows=$(( (n + cols - 1) / cols ))
{
    echo "set terminal pngcairo size 1200,$((330 * rows)) font 'sans,10'"
    echo "set output '$out/missratio.png'"
    echo "set multiplot layout $rows,$cols title 'Miss ratio by cache size (share of the key space), lower is better'"
    echo "set logscale x; set xtics ('0.1%%' 0.1, '1%%' 1, '10%%' 10); set xrange [0.07:14]"
    echo "set yrange [0:*]; set key top right; set grid ytics"
    for t in $traces; do
        echo "set title '$t'"
        echo "plot '$tmp/trace_$t' u 1:2 w lp t 'LRU', '' u 1:3 w lp t 'FIFO', '' u 1:4 w lp t 'SIEVE', '' u 1:5 w lp t 'S3-FIFO', '' u 1:6 w lp lw 2 t 'edge tier'"
    done
    echo "unset multiplot"
} > "$tmp/mr.gp"
gnuplot "$tmp/mr.gp"

# ---- the cost of a read per tier --------------------------------------------------------------
# value= and baseline= of a BENCH line, by id.
field() { awk -v id="$1" -v f="$2" '$1 == "BENCH" && $2 == id {
    for (i = 4; i <= NF; i++) if (index($i, f "=") == 1) { print substr($i, length(f) + 2); exit } }' "$results"; }
edge_ns=$(field edge-vs-redis-same value)
redis_ns=$(field edge-vs-redis-same baseline)
sqlite_ns=$(field edge-hit baseline)
pg_ops=$(field pg-conn-reuse value)
: "${edge_ns:=$(field edge-hit value)}"
{
    [ -n "$edge_ns" ] && echo "\"edge hit\" $edge_ns"
    [ -n "$redis_ns" ] && echo "\"Redis GET\" $redis_ns"
    [ -n "$sqlite_ns" ] && echo "\"SQLite read\" $sqlite_ns"
    [ -n "$pg_ops" ] && awk -v o="$pg_ops" 'BEGIN { printf "\"PostgreSQL read\" %.0f\n", 1e9 / o }'
} > "$tmp/tiers"
if [ -s "$tmp/tiers" ]; then
    cat > "$tmp/tiers.gp" << EOF
set terminal pngcairo size 800,420 font 'sans,10'
set output '$out/tiers.png'
set title 'Time to answer one read, by the tier that answers (ns, log scale)'
set logscale y; set yrange [10:*]; set grid ytics
set style fill solid 0.6; set boxwidth 0.6; unset key
plot '$tmp/tiers' u 0:2:xtic(1) w boxes, '' u 0:2:(sprintf("%.0f ns", \$2)) w labels offset 0,1
EOF
    gnuplot "$tmp/tiers.gp"
fi
ls -l "$out"
