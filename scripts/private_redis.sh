# private_redis.sh - sourced (`. scripts/private_redis.sh`) by scripts/demo.sh and
# tests/check_examples.sh: starts a private redis-server for them and stops it.
#
#   start_redis DIR   starts redis-server with DIR as its working dir and log (DIR/redis.log),
#                     listening on 127.0.0.1 only, on a free port, without persistence; sets
#                     redis_pid and port. Returns 1 (with the log on stderr) if it cannot.
#   stop_redis        stops it, if started (safe to call twice: call it from the EXIT trap).
#
# A free loopback port, in pure shell: start redis-server on a candidate port and keep it if it
# answers as itself (INFO shows our pid); if the port is taken, redis-server exits at once and
# the next candidate is tried. Candidates start at a pid-dependent point above 20000 so that
# two runs at once rarely collide.
redis_pid=
port=

start_redis() {
    mkdir -p "$1"
    port=$((20000 + $$ % 20000))
    tries=0
    while [ "$tries" -lt 30 ]; do
        tries=$((tries + 1))
        port=$((port + 1))
        if command -v ss >/dev/null 2>&1 && ss -ltnH "sport = :$port" 2>/dev/null | grep -q .; then
            continue
        fi
        redis-server --port "$port" --bind 127.0.0.1 --dir "$1" --save "" \
            --appendonly no --daemonize no --logfile "$1/redis.log" &
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
        stop_redis
    done
    echo "could not start redis-server on a free port; its last log:" >&2
    cat "$1/redis.log" >&2 || true
    return 1
}

stop_redis() {
    if [ -n "$redis_pid" ]; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
        redis_pid=
    fi
}
