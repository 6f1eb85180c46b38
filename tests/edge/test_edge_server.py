#!/usr/bin/env python3
"""HTTP conformance tests for tiercache-edge: real HTTP to a real tiercache-edge process in
front of a small origin written here, which serves whatever headers a test asks for (query
parameters h_NAME=VALUE) and counts the requests it got per target.

usage: test_edge_server.py PATH/TO/tiercache-edge [REDIS_SERVER]
TCT_EDGE_WRAP (e.g. "valgrind -q --error-exitcode=99") runs the server under a wrapper.
"""
import http.client
import http.server
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

EDGE = sys.argv[1]
REDIS = sys.argv[2] if len(sys.argv) > 2 else None
WRAP = shlex.split(os.environ.get("TCT_EDGE_WRAP", ""))
TOKEN = "t0ken-for-the-admin-tests"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    counts = {}
    seen = {}
    failing = set()
    lock = threading.Lock()

    def log_message(self, *a):
        pass

    def answer(self, body_wanted):
        with Origin.lock:
            Origin.counts[self.path] = Origin.counts.get(self.path, 0) + 1
            Origin.seen[self.path] = dict(self.headers)
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query)
        if u.path in Origin.failing:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if "delay" in q:
            time.sleep(float(q["delay"][0]))
        n = int(self.headers.get("Content-Length", "0"))
        if n:
            self.rfile.read(n)
        status = int(q.get("status", ["200"])[0])
        etag = q.get("h_ETag", [None])[0]
        if etag is not None and self.headers.get("If-None-Match") == etag:
            status = 304
        body = q.get("body", ["body of " + u.path])[0].encode()
        if "size" in q:
            body = b"x" * int(q["size"][0])
        self.send_response(status)
        for k, vs in q.items():
            if k.startswith("h_"):
                for v in vs:
                    self.send_header(k[2:], v)
        if status == 304:
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body_wanted:
            self.wfile.write(body)

    def do_GET(self):
        self.answer(True)

    def do_HEAD(self):
        self.answer(False)

    def do_POST(self):
        self.answer(True)

    do_PUT = do_DELETE = do_PATCH = do_POST


class Edge:
    def __init__(self, origin_port, extra=None, redis_port=None):
        self.port = free_port()
        self.admin = free_port()
        self.dir = tempfile.mkdtemp(prefix="tct-edge-")
        conf = {"edge_server": {"listen": "127.0.0.1:%d" % self.port,
                                "origin": "http://127.0.0.1:%d" % origin_port,
                                "timeout_ms": 1500, "max_body_bytes": 65536,
                                "max_request_body_bytes": 4096, "max_header_bytes": 8192,
                                "tag_header": "Cache-Tag",
                                "admin": {"listen": "127.0.0.1:%d" % self.admin,
                                          "token": TOKEN}}}
        if extra:
            conf["edge_server"].update(extra)
        if redis_port:
            conf["redis"] = {"host": "127.0.0.1", "port": redis_port}
        path = os.path.join(self.dir, "edge.json")
        with open(path, "w") as f:
            json.dump(conf, f)
        self.log = open(os.path.join(self.dir, "log"), "w+")
        self.proc = subprocess.Popen(WRAP + [EDGE, "-c", path], stderr=self.log)
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("tiercache-edge did not start")

    def log_lines(self, path):
        """The access log's lines for path so far: what a failed check prints."""
        with open(self.log.name) as f:
            return [line.rstrip() for line in f if path in line]

    def get(self, path, headers=None, method="GET", body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def invalidate(self, paths=None, tags=None, token=TOKEN):
        c = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=20)
        body = json.dumps({"paths": paths or [], "tags": tags or []})
        c.request("POST", "/invalidate", body=body,
                  headers={"Authorization": "Bearer " + token})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def stop(self):
        """Stops the server; its exit status and log. Its temp dir goes with it."""
        self.proc.terminate()
        rc = self.proc.wait(60)
        self.log.seek(0)
        log = self.log.read()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc, log


def count(path):
    with Origin.lock:
        return Origin.counts.get(path, 0)


RESULTS = []


def test(fn):
    RESULTS.append(fn)
    return fn


# ---- RFC 9111 4.2: freshness, Age -----------------------------------------------------------
@test
def max_age_hit(e):
    p = "/fresh?h_Cache-Control=max-age%3D60"
    s1, h1, b1 = e.get(p)
    s2, h2, b2 = e.get(p)
    assert (s1, s2) == (200, 200) and b1 == b2 == b"body of /fresh"
    assert h1["x-cache"] == "MISS" and h2["x-cache"] == "HIT", (h1, h2)
    assert h2["cache-status"] == "tiercache-edge; hit"
    assert int(h2["age"]) >= 0 and count(p) == 1


@test
def age_from_origin(e):
    p = "/aged?h_Cache-Control=max-age%3D600&h_Age=100"
    e.get(p)
    s, h, _ = e.get(p)
    assert h["x-cache"] == "HIT" and 100 <= int(h["age"]) < 200, h


@test
def s_maxage_over_max_age(e):
    p = "/smax?h_Cache-Control=max-age%3D0%2C%20s-maxage%3D60"
    e.get(p)
    s, h, _ = e.get(p)
    assert h["x-cache"] == "HIT" and count(p) == 1


@test
def expires(e):
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    p = "/exp?h_Expires=" + urllib.parse.quote(when)
    e.get(p)
    s, h, _ = e.get(p)
    assert h["x-cache"] == "HIT" and count(p) == 1


@test
def heuristic_from_last_modified(e):
    lm = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() - 86400))
    p = "/lm?h_Last-Modified=" + urllib.parse.quote(lm)
    e.get(p)
    s, h, _ = e.get(p)
    assert h["x-cache"] == "HIT" and count(p) == 1, h


@test
def no_explicit_freshness_not_stored(e):
    p = "/plain"
    e.get(p)
    e.get(p)
    assert count(p) == 2


# ---- RFC 9111 3, 3.5, 5.2: what may be stored -----------------------------------------------
@test
def no_store_and_private(e):
    for cc in ("no-store", "private", "private%2C%20max-age%3D60"):
        p = "/ns-%s?h_Cache-Control=%s" % (cc[:4], cc)
        e.get(p)
        s, h, _ = e.get(p)
        assert h["x-cache"] == "MISS" and count(p) == 2, (cc, h)


@test
def request_no_store(e):
    p = "/rqns?h_Cache-Control=max-age%3D60"
    e.get(p, {"Cache-Control": "no-store"})
    e.get(p)
    assert count(p) == 2


@test
def authorization(e):
    p = "/auth?h_Cache-Control=max-age%3D60"
    e.get(p, {"Authorization": "Basic eDp5"})
    e.get(p, {"Authorization": "Basic eDp5"})
    assert count(p) == 2
    p = "/authpub?h_Cache-Control=public%2C%20max-age%3D60"
    e.get(p, {"Authorization": "Basic eDp5"})
    s, h, _ = e.get(p, {"Authorization": "Basic eDp5"})
    assert count(p) == 1 and h["x-cache"] == "HIT"


@test
def status_codes(e):
    p = "/gone?status=404&h_Last-Modified=" + urllib.parse.quote(
        time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() - 86400)))
    e.get(p)
    s, h, _ = e.get(p)
    assert s == 404 and h["x-cache"] == "HIT", (s, h)
    p = "/err?status=500&h_Last-Modified=Mon%2C%2001%20Jan%202001%2000%3A00%3A00%20GMT"
    e.get(p)
    e.get(p)
    assert count(p) == 2  # 500 is not heuristically cacheable
    p = "/err2?status=500&h_Cache-Control=max-age%3D60"
    e.get(p)
    s, h, _ = e.get(p)
    assert s == 500 and count(p) == 1  # with explicit freshness it is


@test
def hop_by_hop_never_stored(e):
    p = ("/hop?h_Cache-Control=max-age%3D60&h_Connection=X-Private&h_X-Private=secret"
         "&h_Keep-Alive=timeout%3D5&h_X-Kept=yes")
    e.get(p)
    s, h, _ = e.get(p)
    assert h["x-cache"] == "HIT" and h.get("x-kept") == "yes"
    assert "x-private" not in h and "keep-alive" not in h, h


# ---- RFC 9111 4.3: validation ---------------------------------------------------------------
@test
def no_cache_revalidates_with_304(e):
    p = "/nc?h_Cache-Control=no-cache&h_ETag=%22v1%22&h_X-Stored=first"
    s1, h1, b1 = e.get(p)
    s2, h2, b2 = e.get(p)
    assert count(p) == 2 and Origin.seen[p].get("If-None-Match") == '"v1"'
    assert s2 == 200 and b2 == b1 and h2["x-cache"] == "REVALIDATED", h2
    assert h2.get("x-stored") == "first"


@test
def conditional_client_gets_304(e):
    p = "/cond?h_Cache-Control=max-age%3D60&h_ETag=%22c1%22"
    e.get(p)
    s, h, b = e.get(p, {"If-None-Match": 'W/"c1"'})
    assert s == 304 and b == b"" and h["etag"] == '"c1"' and count(p) == 1, (s, h)
    s, h, b = e.get(p, {"If-None-Match": '"other"'})
    assert s == 200 and b


@test
def if_modified_since(e):
    lm = "Mon, 01 Jan 2001 00:00:00 GMT"
    p = "/ims?h_Cache-Control=max-age%3D60&h_Last-Modified=" + urllib.parse.quote(lm)
    e.get(p)
    s, _, _ = e.get(p, {"If-Modified-Since": "Tue, 02 Jan 2001 00:00:00 GMT"})
    assert s == 304
    s, _, _ = e.get(p, {"If-Modified-Since": "Sun, 31 Dec 2000 00:00:00 GMT"})
    assert s == 200


@test
def request_no_cache_revalidates(e):
    p = "/rnc?h_Cache-Control=max-age%3D60&h_ETag=%22r1%22"
    e.get(p)
    s, h, _ = e.get(p, {"Cache-Control": "no-cache"})
    assert count(p) == 2 and h["x-cache"] == "REVALIDATED", h


@test
def only_if_cached(e):
    p = "/oic?h_Cache-Control=max-age%3D60"
    s, _, _ = e.get(p, {"Cache-Control": "only-if-cached"})
    assert s == 504 and count(p) == 0
    e.get(p)
    s, h, _ = e.get(p, {"Cache-Control": "only-if-cached"})
    assert s == 200 and h["x-cache"] == "HIT" and count(p) == 1


# ---- RFC 9111 4.1: Vary ---------------------------------------------------------------------
@test
def vary(e):
    p = "/vary?h_Cache-Control=max-age%3D60&h_Vary=Accept-Language"
    for lang in ("en", "fr", "en", "fr"):
        e.get(p, {"Accept-Language": lang})
    assert count(p) == 2
    s, h, _ = e.get(p, {"Accept-Language": "en"})
    assert h["x-cache"] == "HIT"


@test
def vary_star_never_served(e):
    p = "/vstar?h_Cache-Control=max-age%3D60&h_Vary=*"
    e.get(p)
    e.get(p)
    assert count(p) == 2


# ---- HEAD, unsafe methods (4.4) -------------------------------------------------------------
@test
def head_from_stored_get(e):
    p = "/head?h_Cache-Control=max-age%3D60"
    e.get(p)
    s, h, b = e.get(p, method="HEAD")
    assert s == 200 and b == b"" and h["x-cache"] == "HIT" and count(p) == 1
    assert h["content-length"] == str(len("body of /head")), h


@test
def unsafe_methods_invalidate(e):
    p = "/item?h_Cache-Control=max-age%3D60"
    other = "/other?h_Cache-Control=max-age%3D60"
    e.get(p)
    e.get(other)
    s, _, _ = e.get(p, method="POST", body=b"x")
    assert s == 200
    s, h, _ = e.get(p)
    assert h["x-cache"] == "MISS" and count(p) == 3  # GET, POST, GET
    # Location of the same origin goes too.
    e.get(other)
    assert count(other) == 1
    s, _, _ = e.get("/make?h_Location=" + urllib.parse.quote(other), method="PUT", body=b"y")
    s, h, _ = e.get(other)
    assert h["x-cache"] == "MISS" and count(other) == 2
    # A failed POST does not.
    e.get(p)
    e.get(p + "&status=500", method="DELETE")
    s, h, _ = e.get(p)
    assert h["x-cache"] == "HIT", h


# ---- RFC 5861 -------------------------------------------------------------------------------
@test
def stale_while_revalidate(e):
    # max-age=3: Date has whole seconds, so a copy may be up to a second old when it arrives,
    # and the refreshed one must still be fresh when it is asked for.
    p = "/swr?h_Cache-Control=max-age%3D3%2C%20stale-while-revalidate%3D60"
    e.get(p)
    time.sleep(3.2)
    s, h, _ = e.get(p)
    assert h["x-cache"] == "STALE", h
    for _ in range(250):
        s, h, _ = e.get(p)
        if h["x-cache"] == "HIT":
            break
        time.sleep(0.02)
    # one background fetch
    assert h["x-cache"] == "HIT" and count(p) == 2, (h, count(p), e.log_lines("/swr"))


@test
def stale_if_error(e):
    p = "/sie?h_Cache-Control=max-age%3D1%2C%20stale-if-error%3D60"
    e.get(p)
    time.sleep(2.1)
    Origin.failing.add("/sie")
    try:
        s, h, b = e.get(p)
        assert s == 200 and h["x-cache"] == "STALE" and b == b"body of /sie", (s, h)
    finally:
        Origin.failing.discard("/sie")


# ---- single flight --------------------------------------------------------------------------
@test
def concurrent_misses_collapse(e):
    p = "/slow?delay=0.5&h_Cache-Control=max-age%3D60"
    out = []
    ts = [threading.Thread(target=lambda: out.append(e.get(p)[0])) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert out == [200] * 8 and count(p) == 1, (out, count(p))


# ---- invalidation like create-invalidation --------------------------------------------------
@test
def admin_invalidation(e):
    a = "/images/a.png?h_Cache-Control=max-age%3D60&h_Cache-Tag=pics%20a"
    b = "/images/b.png?h_Cache-Control=max-age%3D60&h_Cache-Tag=pics"
    c = "/css/c.css?h_Cache-Control=max-age%3D60"
    for p in (a, b, c):
        e.get(p)
    s, body = e.invalidate(token="wrong-token-wrong-token")
    assert s == 401
    s, body = e.invalidate(paths=["/images/a*"])
    r = json.loads(body)
    assert s == 200 and r["removed"] >= 1 and r["id"], body
    assert e.get(a)[1]["x-cache"] == "MISS" and e.get(b)[1]["x-cache"] == "HIT"
    s, body = e.invalidate(tags=["pics"])
    assert json.loads(body)["removed"] >= 2, body
    assert e.get(a)[1]["x-cache"] == "MISS" and e.get(b)[1]["x-cache"] == "MISS"
    assert e.get(c)[1]["x-cache"] == "HIT"


# ---- bad input ------------------------------------------------------------------------------
def raw(e, data):
    s = socket.create_connection(("127.0.0.1", e.port), 10)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out:
                break
    except socket.timeout:
        pass
    s.close()
    return out


@test
def bad_requests(e):
    r = raw(e, b"NONSENSE\r\n\r\n")  # libmicrohttpd closes without an answer
    assert r == b"" or r.startswith(b"HTTP/1.1 400"), r[:40]
    assert raw(e, b"GET x HTTP/1.1\r\nHost: a\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(e, b"GET /x HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400"), "no Host"
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    r = raw(e, big)
    assert r.startswith(b"HTTP/1.1 431") or r.startswith(b"HTTP/1.1 400"), r[:40]
    s, _, _ = e.get("/upload", method="POST", body=b"z" * 10000)
    assert s == 413


@test
def large_response_served_not_stored(e):
    p = "/large?size=100000&h_Cache-Control=max-age%3D60"
    s1, _, b1 = e.get(p)
    s2, h2, b2 = e.get(p)
    assert s1 == s2 == 200 and len(b1) == len(b2) == 100000 and count(p) == 2


@test
def origin_timeout_is_504(e):
    s, h, _ = e.get("/hang?delay=3")
    assert s == 504, s


def origin_down_is_502(origin_port):
    dead = free_port()
    e = Edge(dead)
    try:
        s, _, _ = e.get("/x")
        assert s == 502, s
    finally:
        rc, log = e.stop()
        assert rc == 0, log


def shared_through_redis(origin_port):
    d = tempfile.mkdtemp(prefix="tct-edge-redis-")
    rp = free_port()
    rs = subprocess.Popen([REDIS, "--port", str(rp), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", d], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", rp), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        one, two = Edge(origin_port, redis_port=rp), Edge(origin_port, redis_port=rp)
        try:
            p = "/shared?h_Cache-Control=max-age%3D60"
            assert one.get(p)[1]["x-cache"] == "MISS"
            s, h, _ = two.get(p)
            assert h["x-cache"] == "HIT" and count(p) == 1, h  # from Redis
            one.invalidate(paths=["/shared*"])
            for _ in range(250):  # the bus: until two has heard of it (HITs cost no fetch)
                if two.get(p)[1]["x-cache"] == "MISS":
                    break
                time.sleep(0.02)
            assert count(p) == 2, count(p)
        finally:
            for e in (one, two):
                rc, log = e.stop()
                assert rc == 0, log
    finally:
        rs.terminate()
        rs.wait()
        shutil.rmtree(d, ignore_errors=True)


class OriginServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client gone mid-answer (the timeout test) is expected


def main():
    srv = OriginServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    oport = srv.server_address[1]
    e = Edge(oport)
    failed = 0
    extra = [("origin_down_is_502", lambda: origin_down_is_502(oport))]
    if REDIS:
        extra.append(("shared_through_redis", lambda: shared_through_redis(oport)))
    cases = [(fn.__name__, (lambda f=fn: f(e))) for fn in RESULTS] + extra
    for name, run in cases:
        try:
            run()
            print("ok   %s" % name)
        except Exception as ex:  # a failed check, or the server gone
            failed += 1
            print("FAIL %s: %r" % (name, ex))
    rc, log = e.stop()
    if rc != 0:
        failed += 1
        print("FAIL tiercache-edge exited %d:\n%s" % (rc, log[-4000:]))
    print("edge-server: %d tests, %d failed" % (len(cases) + 1, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
