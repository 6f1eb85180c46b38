#!/usr/bin/env python3
"""check_python.py [LIBTIERCACHE_SO] - the Python binding (bindings/python, the tiercache package)
against the library: the build tree's by default, or the one given (an installed one, say).
make check-python runs it with the python of a venv the package was installed into, so the
package tested is the installed copy; run by hand, it falls back to bindings/python in place.

Runs in a temp dir on the default SQLite store, then with a private redis-server on a free
loopback port (started here, stopped at the end) for the Redis tier, structures and pub/sub.
Covers: values with NUL bytes, versions and sources, errors as exceptions with the library's
message, HTTP records, invalidation, get_many, a store written in Python (its exceptions become
store errors), the invalidator on a plain-SQL change, sorted sets, hashes, pub/sub with a
Python callback, the shared handle. Prints "python: N checks passed" and exits 0 on success.
"""
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import tiercache
except ImportError:
    sys.path.insert(0, os.path.join(HERE, "..", "bindings", "python"))
    import tiercache  # noqa: E402

checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        raise SystemExit("python: FAIL: " + what)


def raises(code, fn, *args):
    try:
        fn(*args)
    except tiercache.TierCacheError as e:
        check(e.code == code, "%s raised %s, not %s" % (fn.__name__, e.name, code))
        return e
    check(False, "%s did not raise" % fn.__name__)
    return None


class DictStore:
    """A store written in Python: rows with versions from one clock."""

    def __init__(self):
        self.rows, self.clock, self.reads, self.down = {}, 0, 0, False
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            self.reads += 1
            if self.down:
                raise RuntimeError("the database is down")
            return self.rows.get(key)

    def put(self, key, value):
        with self.lock:
            self.clock += 1
            self.rows[key] = (value, self.clock)
            return self.clock

    def delete(self, key):
        with self.lock:
            self.clock += 1
            self.rows.pop(key, None)
            return self.clock


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_redis(tmp):
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("python: FAIL: redis-server is not installed (package redis-server)")
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", tmp],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                return proc, port
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.05)
        proc.kill()
        proc.wait()
    raise SystemExit("python: FAIL: could not start redis-server")


def embedded(tmp):
    with tiercache.Cache({"store": {"path": os.path.join(tmp, "t.db")}}) as c:
        value = b"bytes\x00with\x00NULs"
        c.put("k", value)
        v, version, source, stale = c.get_ex("k")
        check(v == value and version > 0 and source == "edge" and not stale, "get_ex after put")
        check(c.get("absent") is None, "a missing key is None")
        c.delete("k")
        check(c.get("k") is None, "deleted")
        e = raises(tiercache.EKEY, c.put, "", b"v")
        check("key" in str(e).lower(), "the message names the key: %s" % e)
        raises(tiercache.EKEY, c.get, "a\x00b")
        check(c.put_http("/logo.png", b"PNG", ["Cache-Control: public, max-age=3600"]),
              "put_http stored")
        value, state, age, headers = c.get_http("/logo.png")
        check(value == b"PNG" and state == tiercache.HTTP_FRESH, "get_http fresh")
        check("max-age=3600" in headers, "headers: %r" % headers)
        check(not c.put_http("/private", b"x", ["Cache-Control: private"]), "private not stored")
        check(c.invalidate_pattern("/logo*") == 1, "pattern invalidation removed 1")
        c.put("a", "1")
        c.put("b", "2")
        check(c.get_many(["a", "b", "c"]) == {b"a": b"1", b"b": b"2", b"c": None}, "get_many")
        check(c.stats()["store"]["sets"] >= 3, "stats")
        # The invalidator sees a change made in plain SQL.
        with tiercache.Invalidator(c) as inv:
            db = sqlite3.connect(os.path.join(tmp, "t.db"), timeout=10)
            db.execute("UPDATE tiercache SET value = X'6e6577' WHERE key = 'a'")
            db.commit()
            db.close()
            inv.wait()
            applied, seq = inv.step()
            check(applied >= 1 and seq > 0, "invalidator step applied %d" % applied)
            check(c.get("a") == b"new", "the plain-SQL change is read after invalidation")
    try:
        tiercache.Config({"edge": {"max_entries": "many"}})
        check(False, "a bad config raised")
    except tiercache.TierCacheError as e:
        check(e.code == tiercache.ECONFIG and "edge.max_entries" in str(e), "config error: %s" % e)


def python_store():
    db = DictStore()
    cfg = tiercache.Config().set_store(db)
    with tiercache.Cache(cfg) as c:
        cfg.close()
        c.put(b"k", b"v\x00")
        check(db.rows[b"k"] == (b"v\x00", 1), "the put reached the Python store")
        for _ in range(100):
            check(c.get(b"k") == b"v\x00", "hit")
        check(db.reads == 0, "hits never reach Python")
        db.rows[b"other"] = (b"from the database", 99)
        check(c.get_ex(b"other")[:3] == (b"from the database", 99, "store"), "read-through")
        db.down = True
        raises(tiercache.ESTORE, c.get, b"down")
        db.down = False
        c.delete(b"k")
        check(c.get(b"k") is None, "deleted through the Python store")


def with_redis(port):
    conf = {"redis": {"host": "127.0.0.1", "port": port}, "store": {"path": "r.db"}}
    with tiercache.Cache(conf) as a, tiercache.Cache(conf) as b:
        a.put("shared", b"v1")
        check(b.get_ex("shared")[2] == "redis", "the other handle reads Redis")
        a.zadd("board", "ada", 10)
        check(a.zincrby("board", "bob", 15) == 15.0, "zincrby")
        check(a.ztop("board", 10) == [(b"bob", 15.0), (b"ada", 10.0)], "ztop")
        check(a.zrank("board", "ada") == (1, 10.0), "zrank")
        check(a.zrank("board", "nobody") is None, "zrank of a stranger")
        check(a.zrem("board", "ada"), "zrem")
        a.hset("cart:1", "apple", b"3")
        check(a.hget("cart:1", "apple") == b"3" and a.hgetall("cart:1") == {b"apple": b"3"},
              "hash")
        check(a.hdel("cart:1", "apple") and a.hget("cart:1", "apple") is None, "hdel")
        got = []
        arrived = threading.Event()

        def on_message(channel, message):
            got.append((channel, message))
            arrived.set()

        with b.subscribe("scores", on_message):
            for _ in range(100):  # the subscription is asynchronous: publish until it is heard
                a.publish("scores", b"player1 just scored!")
                if arrived.wait(0.05):
                    break
        check(got and got[0][1] == b"player1 just scored!", "pub/sub: %r" % got[:1])


def every_function_declared(path):
    """Every tc_ function the library exports has its prototype in the binding."""
    out = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True)
    exported = {line.split()[-1].split("@")[0] for line in out.stdout.splitlines()
                if line.split()[-1].startswith("tc_")}
    missing = exported - set(tiercache._PROTOTYPES)
    check(exported and not missing, "functions without a prototype: %s" % sorted(missing))


def main():
    if len(sys.argv) > 1:
        tiercache.load(sys.argv[1])
        every_function_declared(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix="tc-python.")
    old = os.getcwd()
    os.chdir(tmp)
    redis = None
    try:
        os.environ.pop("TIERCACHE_CONFIG", None)
        check(tiercache.version().count(".") == 2, "version")
        check(tiercache.__version__ == tiercache.version(),
              "the package's version %s is the library's %s" % (tiercache.__version__,
                                                                tiercache.version()))
        want_venv = os.environ.get("TCT_PYTHON_VENV")
        if want_venv:
            where = os.path.realpath(tiercache.__file__)
            check(where.startswith(os.path.realpath(want_venv) + os.sep),
                  "the package tested is the installed copy (%s)" % where)
        embedded(tmp)
        python_store()
        shared = tiercache.shared()
        shared.put("warm", b"start")
        check(tiercache.shared().get("warm") == b"start", "the shared handle is reused")
        redis, port = start_redis(tmp)
        with_redis(port)
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait()
        os.chdir(old)
        shutil.rmtree(tmp, ignore_errors=True)
    print("python: %d checks passed" % checks)


if __name__ == "__main__":
    main()
