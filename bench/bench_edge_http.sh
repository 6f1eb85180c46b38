#!/bin/sh
# bench_edge_http.sh - BENCH edge-http: tiercache-edge against nginx's proxy_cache, both in front
# of the same origin (an nginx serving static files with Cache-Control: max-age=3600), on the
# same object set (100 objects of 1 KiB, 100 of 100 KiB), loaded by wrk in the same run.
#   hits:   both caches warmed, then wrk over the 100 objects: hits/s and p99; ratio = ours
#           over nginx's hits/s (goal >= 1.0), p99 ratio = ours over nginx's.
#   misses: every request a new URL (a query string counter): the cost of a miss, as
#           nginx's requests/s over ours (goal <= 1.2).
# usage: bench_edge_http.sh PATH/TO/tiercache-edge [SECONDS]
set -eu
EDGE=$1
SECS=${2:-5}
for t in wrk nginx; do
    command -v $t >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
    command -v $t >/dev/null 2>&1 || { echo "# edge-http: $t not installed (apt-get install wrk nginx-light); skipped"; exit 0; }
done
d=$(mktemp -d /tmp/tc-bench-http.XXXXXX)
pids=
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; sleep 0.2; rm -rf "$d"; }
trap cleanup EXIT INT TERM

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
O=$(port); N=$(port); E=$(port)
mkdir -p "$d/www" "$d/cache" "$d/tmp"
i=0
while [ $i -lt 100 ]; do
    head -c 1024 /dev/urandom | base64 -w0 | head -c 1024 > "$d/www/s$i"
    head -c 102400 /dev/urandom | base64 -w0 | head -c 102400 > "$d/www/l$i"
    i=$((i + 1))
done

common="daemon off; worker_processes 2; error_log $d/error.log; pid PIDFILE;
events { worker_connections 1024; }"
cat > "$d/origin.conf" <<EOF
$(echo "$common" | sed "s|PIDFILE|$d/origin.pid|") user root;
http { access_log off; client_body_temp_path $d/tmp; proxy_temp_path $d/tmp;
  fastcgi_temp_path $d/tmp; uwsgi_temp_path $d/tmp; scgi_temp_path $d/tmp;
  server { listen 127.0.0.1:$O; root $d/www; add_header Cache-Control "max-age=3600"; } }
EOF
cat > "$d/proxy.conf" <<EOF
$(echo "$common" | sed "s|PIDFILE|$d/proxy.pid|") user root;
http { access_log off; client_body_temp_path $d/tmp; proxy_temp_path $d/tmp;
  fastcgi_temp_path $d/tmp; uwsgi_temp_path $d/tmp; scgi_temp_path $d/tmp;
  proxy_cache_path $d/cache levels=1:2 keys_zone=c:64m max_size=1g inactive=1h;
  upstream o { server 127.0.0.1:$O; keepalive 64; }
  server { listen 127.0.0.1:$N;
    location / { proxy_pass http://o; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_cache c; proxy_cache_lock on; add_header X-Cache \$upstream_cache_status; } } }
EOF
cat > "$d/edge.json" <<EOF
{"edge_server": {"listen": "127.0.0.1:$E", "origin": "http://127.0.0.1:$O",
                 "access_log": false, "max_body_bytes": 1048576},
 "edge": {"max_bytes": 268435456}}
EOF
nginx -p "$d" -c "$d/origin.conf" 2>>"$d/error.log" & pids="$pids $!"
nginx -p "$d" -c "$d/proxy.conf" 2>>"$d/error.log" & pids="$pids $!"
"$EDGE" -c "$d/edge.json" 2>>"$d/edge.log" & pids="$pids $!"
for p in $O $N $E; do
    for _ in $(seq 100); do
        python3 -c "import socket;socket.create_connection(('127.0.0.1',$p),0.2)" 2>/dev/null && break
        sleep 0.05
    done
done

# wrk scripts: round-robin over the objects, or a new URL each time.
for k in s l; do
    cat > "$d/hit_$k.lua" <<EOF
local i = 0
request = function() i = (i + 1) % 100; return wrk.format("GET", "/$k" .. i) end
EOF
    cat > "$d/miss_$k.lua" <<EOF
local i = 0
local id = tostring(math.random(1, 1000000000))
request = function() i = i + 1; return wrk.format("GET", "/${k}1?" .. id .. "-" .. i) end
EOF
done

# wrk's "Requests/sec:" and its 99% latency in ms.
measure() {
    out=$(wrk -t2 -c32 -d"${SECS}s" --latency -s "$2" "http://127.0.0.1:$1/" 2>&1)
    rps=$(echo "$out" | awk '/Requests\/sec:/ {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000}
        else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}')
    echo "$rps ${p99:-0}"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4g", (b > 0 ? a / b : 0) }'; }

for k in s l; do
    name=$([ $k = s ] && echo 1k || echo 100k)
    # Warm both caches: each object twice.
    for p in $N $E; do
        wrk -t1 -c1 -d1s -s "$d/hit_$k.lua" "http://127.0.0.1:$p/" >/dev/null 2>&1
    done
    set -- $(measure $N "$d/hit_$k.lua"); nr=$1; np=$2
    set -- $(measure $E "$d/hit_$k.lua"); er=$1; ep=$2
    echo "BENCH edge-http-hit-$name hits_per_s value=$er baseline=$nr ratio=$(ratio "$er" "$nr")"
    echo "BENCH edge-http-hit-$name p99_ms value=$ep baseline=$np ratio=$(ratio "$ep" "$np")"
    set -- $(measure $N "$d/miss_$k.lua"); nr=$1
    set -- $(measure $E "$d/miss_$k.lua"); er=$1
    echo "BENCH edge-http-miss-$name cost_vs_nginx value=$er baseline=$nr ratio=$(ratio "$nr" "$er")"
done
echo "# edge-http: value = tiercache-edge, baseline = nginx $(nginx -v 2>&1 | sed 's/.*\///')" \
     "proxy_cache, same origin and objects, wrk -t2 -c32 ${SECS}s; miss ratio = nginx req/s over ours"
