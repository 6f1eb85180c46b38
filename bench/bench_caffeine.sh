#!/bin/sh
# bench_caffeine.sh BENCH_EDGE - runs bench_edge with Debian's libcaffeine-java (W-TinyLFU)
# replaying its miss-ratio traces in the same run (bench/java/CaffeineReplay.java), for the
# edge-vs-caffeine-<trace>-<size> lines. Without javac or the jar (packages
# openjdk-17-jdk-headless and libcaffeine-java) bench_edge runs alone, and this says so.
set -eu
bench=$1
jar=/usr/share/java/caffeine.jar
if ! command -v javac >/dev/null 2>&1 || [ ! -f "$jar" ]; then
    echo "bench_caffeine: no Caffeine replay (needs javac and $jar:" \
         "apt-get install openjdk-17-jdk-headless libcaffeine-java)"
    exec "$bench"
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
javac -cp "$jar" -d "$dir" "$(dirname "$0")/java/CaffeineReplay.java"
BENCH_CAFFEINE="java -Xmx2g -cp $jar:$dir CaffeineReplay" "$bench"
