"""tiercache - libtiercache from Python, through ctypes (no compiler, no extension module).

    import tiercache
    with tiercache.Cache({"redis": {"host": "127.0.0.1", "port": 6379}}) as cache:
        cache.put("user:42", b'{"name": "Ada"}')
        value = cache.get("user:42")            # bytes, or None when the key does not exist
        info = cache.get_ex("user:42")          # value, version, source ("edge", "redis", ...)

Installed as a package (pip install ./bindings/python), or used in place with
PYTHONPATH=bindings/python. The library is found in this order: the path in $TIERCACHE_LIB; the
build tree this file sits in (build/libtiercache.so, when used in place); the installed library
by its soname (libtiercache.so.0), then by ctypes.util.find_library.

Every function of the C API has its argtypes and restype set here, so ctypes converts and checks
arguments instead of guessing. Keys are str (UTF-8) or bytes; values are bytes (str is encoded
as UTF-8). A failure raises TierCacheError, which carries the code, its name and the library's
detailed message (tc_errmsg). Callbacks (a store written in Python, subscriptions) are kept
alive by the objects that registered them, as long as the library may call them.
"""
import ctypes
import ctypes.util
import json
import os
import threading

__all__ = ["Cache", "Config", "Invalidator", "TierCacheError", "load", "shared",
           "SOURCE_EDGE", "SOURCE_REDIS", "SOURCE_STORE", "INFO_STALE",
           "HTTP_FRESH", "HTTP_STALE", "HTTP_MUST_REVALIDATE", "HTTP_ONLY_IF_CACHED"]

# ---- constants (include/tiercache.h) --------------------------------------------------------
OK, ENOTFOUND, EINVAL, ENOMEM, ERANGE, EKEY, ETOOBIG, ECONFIG = 0, -1, -2, -3, -4, -5, -6, -7
EREDIS, EPROTO, ESTORE, EIO, ESTATE = -8, -9, -10, -11, -12
_NAMES = {OK: "TC_OK", ENOTFOUND: "TC_ENOTFOUND", EINVAL: "TC_EINVAL", ENOMEM: "TC_ENOMEM",
          ERANGE: "TC_ERANGE", EKEY: "TC_EKEY", ETOOBIG: "TC_ETOOBIG", ECONFIG: "TC_ECONFIG",
          EREDIS: "TC_EREDIS", EPROTO: "TC_EPROTO", ESTORE: "TC_ESTORE", EIO: "TC_EIO",
          ESTATE: "TC_ESTATE"}
SOURCE_EDGE, SOURCE_REDIS, SOURCE_STORE = 1, 2, 3
_SOURCES = {SOURCE_EDGE: "edge", SOURCE_REDIS: "redis", SOURCE_STORE: "store"}
INFO_STALE = 0x100
HTTP_FRESH, HTTP_STALE, HTTP_MUST_REVALIDATE = 1, 2, 3
HTTP_ONLY_IF_CACHED = 1


class TierCacheError(Exception):
    """A libtiercache failure: .code (negative int), .name ("TC_ESTORE"), .detail (tc_errmsg)."""

    def __init__(self, code, detail, what=""):
        self.code, self.name, self.detail = code, _NAMES.get(code, str(code)), detail
        text = "%s: %s" % (what, self.name) if what else self.name
        super().__init__("%s (%s)" % (text, detail) if detail else text)


# ---- loading and prototypes -------------------------------------------------------------------
c_char_pp = ctypes.POINTER(ctypes.c_char_p)
c_void_pp = ctypes.POINTER(ctypes.c_void_p)
c_size_p = ctypes.POINTER(ctypes.c_size_t)
c_int64_p = ctypes.POINTER(ctypes.c_int64)
c_uint_p = ctypes.POINTER(ctypes.c_uint)
c_int_p = ctypes.POINTER(ctypes.c_int)
c_double_p = ctypes.POINTER(ctypes.c_double)
_ptr, _sz, _i64, _int, _uint = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64, ctypes.c_int, \
    ctypes.c_uint

STORE_GET = ctypes.CFUNCTYPE(_int, _ptr, ctypes.c_char_p, _sz, _ptr)
STORE_PUT = ctypes.CFUNCTYPE(_int, _ptr, ctypes.c_char_p, _sz, _ptr, _sz, c_int64_p)
STORE_DEL = ctypes.CFUNCTYPE(_int, _ptr, ctypes.c_char_p, _sz, c_int64_p)
STORE_FREE = ctypes.CFUNCTYPE(None, _ptr)
MESSAGE_FN = ctypes.CFUNCTYPE(None, _ptr, ctypes.POINTER(ctypes.c_char), _sz,
                              ctypes.POINTER(ctypes.c_char), _sz)

# name: (restype, argtypes), for every function of include/tiercache.h
_PROTOTYPES = {
    "tc_version_number": (_int, []),
    "tc_version_string": (ctypes.c_char_p, []),
    "tc_strerror": (ctypes.c_char_p, [_int]),
    "tc_free": (None, [_ptr]),
    "tc_config_new": (_int, [c_void_pp]),
    "tc_config_free": (None, [_ptr]),
    "tc_config_load_json": (_int, [_ptr, ctypes.c_char_p, _sz]),
    "tc_config_load_file": (_int, [_ptr, ctypes.c_char_p]),
    "tc_config_set_int": (_int, [_ptr, ctypes.c_char_p, _i64]),
    "tc_config_set_string": (_int, [_ptr, ctypes.c_char_p, ctypes.c_char_p]),
    "tc_config_set_bool": (_int, [_ptr, ctypes.c_char_p, _int]),
    "tc_config_errmsg": (ctypes.c_char_p, [_ptr]),
    "tc_store_result_set": (_int, [_ptr, ctypes.c_char_p, _sz, _i64]),
    "tc_config_set_store": (_int, [_ptr, STORE_GET, STORE_PUT, STORE_DEL, _ptr, STORE_FREE]),
    "tc_open": (_int, [c_void_pp, _ptr]),
    "tc_close": (None, [_ptr]),
    "tc_shared": (_int, [c_void_pp]),
    "tc_shared_reset": (None, []),
    "tc_errmsg": (ctypes.c_char_p, [_ptr]),
    "tc_get": (_int, [c_void_pp, c_size_p, _ptr, ctypes.c_char_p, _sz]),
    "tc_get_into": (_int, [c_size_p, _ptr, ctypes.c_char_p, _sz, _ptr, _sz]),
    "tc_get_ex": (_int, [c_void_pp, c_size_p, c_uint_p, c_int64_p, _ptr, ctypes.c_char_p, _sz]),
    "tc_put": (_int, [_ptr, ctypes.c_char_p, _sz, ctypes.c_char_p, _sz, _i64]),
    "tc_del": (_int, [_ptr, ctypes.c_char_p, _sz]),
    "tc_invalidate": (_int, [_ptr, ctypes.c_char_p, _sz]),
    "tc_invalidate_pattern": (_int, [c_int64_p, _ptr, ctypes.c_char_p, _sz]),
    "tc_invalidate_tag": (_int, [c_int64_p, _ptr, ctypes.c_char_p, _sz]),
    "tc_put_http": (_int, [c_uint_p, _ptr, ctypes.c_char_p, _sz, ctypes.c_char_p, _sz, c_char_pp,
                           _sz]),
    "tc_get_http": (_int, [c_void_pp, c_size_p, c_uint_p, c_int64_p, c_char_pp, _ptr,
                           ctypes.c_char_p, _sz, _uint]),
    "tc_items_count": (_sz, [_ptr]),
    "tc_items_name": (ctypes.POINTER(ctypes.c_char), [_ptr, _sz, c_size_p]),
    "tc_items_value": (ctypes.POINTER(ctypes.c_char), [_ptr, _sz, c_size_p]),
    "tc_items_score": (ctypes.c_double, [_ptr, _sz]),
    "tc_items_free": (None, [_ptr]),
    "tc_get_many": (_int, [c_void_pp, _ptr, c_char_pp, c_size_p, _sz]),
    "tc_zadd": (_int, [_ptr, ctypes.c_char_p, _sz, ctypes.c_char_p, _sz, ctypes.c_double]),
    "tc_zincrby": (_int, [c_double_p, _ptr, ctypes.c_char_p, _sz, ctypes.c_char_p, _sz,
                          ctypes.c_double]),
    "tc_ztop": (_int, [c_void_pp, _ptr, ctypes.c_char_p, _sz, _sz]),
    "tc_zrank": (_int, [c_int64_p, c_double_p, _ptr, ctypes.c_char_p, _sz, ctypes.c_char_p,
                        _sz]),
    "tc_zrem": (_int, [c_int_p, _ptr, ctypes.c_char_p, _sz, ctypes.c_char_p, _sz]),
    "tc_hset": (_int, [_ptr, ctypes.c_char_p, _sz, ctypes.c_char_p, _sz, ctypes.c_char_p, _sz]),
    "tc_hget": (_int, [c_void_pp, c_size_p, _ptr, ctypes.c_char_p, _sz, ctypes.c_char_p, _sz]),
    "tc_hdel": (_int, [c_int_p, _ptr, ctypes.c_char_p, _sz, ctypes.c_char_p, _sz]),
    "tc_hgetall": (_int, [c_void_pp, _ptr, ctypes.c_char_p, _sz]),
    "tc_struct_expire": (_int, [_ptr, ctypes.c_char_p, _sz, _i64]),
    "tc_struct_del": (_int, [c_int_p, _ptr, ctypes.c_char_p, _sz]),
    "tc_publish": (_int, [c_int64_p, _ptr, ctypes.c_char_p, _sz, ctypes.c_char_p, _sz]),
    "tc_subscribe": (_int, [c_void_pp, _ptr, ctypes.c_char_p, _sz, MESSAGE_FN, _ptr]),
    "tc_unsubscribe": (None, [_ptr]),
    "tc_invalidator_new": (_int, [c_void_pp, _ptr]),
    "tc_invalidator_step": (_int, [c_int64_p, c_int64_p, _ptr]),
    "tc_invalidator_wait": (_int, [_ptr]),
    "tc_invalidator_start": (_int, [_ptr]),
    "tc_invalidator_free": (None, [_ptr]),
    "tc_stats_json": (_int, [c_char_pp, _ptr]),
}


def _find_library():
    env = os.environ.get("TIERCACHE_LIB")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    built = os.path.join(here, "..", "..", "..", "build", "libtiercache.so")
    if os.path.exists(built):
        return built
    for soname in ("libtiercache.so.%d" % _MAJOR, "libtiercache.so"):
        try:
            ctypes.CDLL(soname)
            return soname
        except OSError:
            pass
    found = ctypes.util.find_library("tiercache")
    if found:
        return found
    raise OSError("libtiercache not found: set TIERCACHE_LIB, build it (make), or install it")


_lib = None
# The library's ABI is the same within a major version (include/tiercache.h): this module is
# written against major 0.
_MAJOR = 0
__version__ = "0.1.0"


def load(path=None):
    """Loads the library (once) and declares every function; returns the ctypes.CDLL."""
    global _lib
    if _lib is None or path is not None:
        lib = ctypes.CDLL(path or _find_library())
        for name, (restype, argtypes) in _PROTOTYPES.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        _lib = lib
    return _lib


def _b(s):
    """A key, name or value as bytes (str is UTF-8)."""
    if isinstance(s, (bytes, bytearray, memoryview)):
        return bytes(s)
    if isinstance(s, str):
        return s.encode("utf-8")
    raise TypeError("expected str or bytes, got %s" % type(s).__name__)


def _check(rc, handle, what):
    if rc != OK:
        detail = load().tc_errmsg(handle)
        raise TierCacheError(rc, detail.decode("utf-8", "replace") if detail else "", what)


def _take(ptr, length):
    """The bytes of a library allocation, which is then freed."""
    try:
        return ctypes.string_at(ptr, length) if length else b""
    finally:
        load().tc_free(ptr)


def _items(items, scores=False):
    lib = load()
    try:
        out = []
        for i in range(lib.tc_items_count(items)):
            n = ctypes.c_size_t()
            name = ctypes.string_at(lib.tc_items_name(items, i, ctypes.byref(n)), n.value)
            v = lib.tc_items_value(items, i, ctypes.byref(n))
            value = ctypes.string_at(v, n.value) if v else None
            out.append((name, lib.tc_items_score(items, i)) if scores else (name, value))
        return out
    finally:
        lib.tc_items_free(items)


# ---- configuration ----------------------------------------------------------------------------
class Config:
    """A tc_config: Config({"redis": {...}}) or Config(path="tiercache.json"); .set(name, v)."""

    def __init__(self, options=None, path=None):
        lib = load()
        self._ptr = ctypes.c_void_p()
        self._store = None  # a Python store's callbacks, kept alive while the library may call
        _check(lib.tc_config_new(ctypes.byref(self._ptr)), None, "config")
        if path is not None:
            self._apply(lib.tc_config_load_file(self._ptr, _b(path)))
        if options:
            text = json.dumps(options).encode()
            self._apply(lib.tc_config_load_json(self._ptr, text, len(text)))

    def _apply(self, rc):
        if rc != OK:
            raise TierCacheError(rc, load().tc_config_errmsg(self._ptr).decode(), "config")

    def set(self, name, value):
        lib = load()
        if isinstance(value, bool):
            rc = lib.tc_config_set_bool(self._ptr, _b(name), int(value))
        elif isinstance(value, int):
            rc = lib.tc_config_set_int(self._ptr, _b(name), value)
        else:
            rc = lib.tc_config_set_string(self._ptr, _b(name), _b(value))
        self._apply(rc)
        return self

    def set_store(self, store):
        """A store written in Python: an object with get(key) -> (bytes, version) or None,
        put(key, value) -> version and delete(key) -> version (keys are bytes). An exception in
        a method is a store error (TC_ESTORE) for the caller, never a crash."""
        lib = load()

        def get(_ud, key, key_len, result):
            try:
                row = store.get(key[:key_len])
                if row is None:
                    return ENOTFOUND
                value, version = row
                return lib.tc_store_result_set(result, _b(value), len(value), version)
            except Exception:  # noqa: BLE001 - the user's failure is a store error
                return ESTORE

        def put(_ud, key, key_len, value, length, out_version):
            try:
                out_version[0] = store.put(key[:key_len], ctypes.string_at(value, length))
                return OK
            except Exception:  # noqa: BLE001
                return ESTORE

        def delete(_ud, key, key_len, out_version):
            try:
                out_version[0] = store.delete(key[:key_len])
                return OK
            except Exception:  # noqa: BLE001
                return ESTORE

        callbacks = (STORE_GET(get), STORE_PUT(put), STORE_DEL(delete), STORE_FREE(lambda _: None))
        _check(lib.tc_config_set_store(self._ptr, *callbacks[:3], None, callbacks[3]), None,
               "set_store")
        self._store = callbacks
        return self

    def close(self):
        if self._ptr:
            load().tc_config_free(self._ptr)
            self._ptr = ctypes.c_void_p()

    def __del__(self):
        self.close()


# ---- the cache handle -------------------------------------------------------------------------
class Cache:
    """A tc_cache. Cache(options_dict | Config | None); use as a context manager or close()."""

    def __init__(self, config=None, _handle=None, _owned=True):
        lib = load()
        self._callbacks = []  # kept alive: a Python store, subscriptions
        self._owned = _owned
        if _handle is not None:
            self._h = _handle
            return
        cfg = config if isinstance(config, Config) else Config(config)
        self._h = ctypes.c_void_p()
        try:
            _check(lib.tc_open(ctypes.byref(self._h), cfg._ptr), None, "open")
        finally:
            if cfg._store is not None:
                self._callbacks.append(cfg._store)  # the handle calls them from now on
            if cfg is not config:
                cfg.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._owned and self._h:
            load().tc_close(self._h)
        self._h = ctypes.c_void_p()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -- reads and writes
    def get(self, key):
        """The value (bytes), or None when the key does not exist."""
        return self.get_ex(key)[0]

    def get_ex(self, key):
        """(value or None, version, source name, stale flag)."""
        lib, k = load(), _b(key)
        out, n, info, ver = ctypes.c_void_p(), ctypes.c_size_t(), ctypes.c_uint(), ctypes.c_int64()
        rc = lib.tc_get_ex(ctypes.byref(out), ctypes.byref(n), ctypes.byref(info),
                           ctypes.byref(ver), self._h, k, len(k))
        if rc == ENOTFOUND:
            return None, 0, None, False
        _check(rc, self._h, "get")
        return (_take(out, n.value), ver.value, _SOURCES.get(info.value & 0xff),
                bool(info.value & INFO_STALE))

    def put(self, key, value, ttl_ms=0):
        k, v = _b(key), _b(value)
        _check(load().tc_put(self._h, k, len(k), v, len(v), ttl_ms), self._h, "put")

    def delete(self, key):
        k = _b(key)
        _check(load().tc_del(self._h, k, len(k)), self._h, "del")

    def invalidate(self, key):
        k = _b(key)
        _check(load().tc_invalidate(self._h, k, len(k)), self._h, "invalidate")

    def invalidate_pattern(self, pattern):
        p, removed = _b(pattern), ctypes.c_int64()
        _check(load().tc_invalidate_pattern(ctypes.byref(removed), self._h, p, len(p)), self._h,
               "invalidate_pattern")
        return removed.value

    def invalidate_tag(self, tag):
        t, removed = _b(tag), ctypes.c_int64()
        _check(load().tc_invalidate_tag(ctypes.byref(removed), self._h, t, len(t)), self._h,
               "invalidate_tag")
        return removed.value

    def get_many(self, keys):
        """{key: value or None} for the keys (bytes keys)."""
        ks = [_b(k) for k in keys]
        arr = (ctypes.c_char_p * len(ks))(*ks)
        lens = (ctypes.c_size_t * len(ks))(*[len(k) for k in ks])
        items = ctypes.c_void_p()
        _check(load().tc_get_many(ctypes.byref(items), self._h, arr, lens, len(ks)), self._h,
               "get_many")
        return dict(_items(items))

    # -- HTTP
    def put_http(self, key, value, headers):
        """Stores value with its response headers (a list of "Name: value" lines); returns
        whether a shared cache may store it."""
        k, v = _b(key), _b(value)
        hs = [_b(h) for h in headers]
        arr = (ctypes.c_char_p * max(1, len(hs)))(*hs)
        stored = ctypes.c_uint()
        _check(load().tc_put_http(ctypes.byref(stored), self._h, k, len(k), v, len(v), arr,
                                  len(hs)), self._h, "put_http")
        return bool(stored.value)

    def get_http(self, key, only_if_cached=False):
        """(value, state, age in s, headers text) or None when not found."""
        lib, k = load(), _b(key)
        out, n, state, age = ctypes.c_void_p(), ctypes.c_size_t(), ctypes.c_uint(), \
            ctypes.c_int64()
        headers = ctypes.c_char_p()
        rc = lib.tc_get_http(ctypes.byref(out), ctypes.byref(n), ctypes.byref(state),
                             ctypes.byref(age), ctypes.byref(headers), self._h, k, len(k),
                             HTTP_ONLY_IF_CACHED if only_if_cached else 0)
        if rc == ENOTFOUND:
            return None
        _check(rc, self._h, "get_http")
        text = headers.value.decode("latin-1") if headers.value else ""
        lib.tc_free(ctypes.cast(headers, ctypes.c_void_p))
        return _take(out, n.value), state.value, age.value, text

    # -- Redis structures
    def zadd(self, zset, member, score):
        s, m = _b(zset), _b(member)
        _check(load().tc_zadd(self._h, s, len(s), m, len(m), score), self._h, "zadd")

    def zincrby(self, zset, member, delta):
        s, m, out = _b(zset), _b(member), ctypes.c_double()
        _check(load().tc_zincrby(ctypes.byref(out), self._h, s, len(s), m, len(m), delta),
               self._h, "zincrby")
        return out.value

    def ztop(self, zset, n):
        """[(member, score)], highest first."""
        s, items = _b(zset), ctypes.c_void_p()
        _check(load().tc_ztop(ctypes.byref(items), self._h, s, len(s), n), self._h, "ztop")
        return _items(items, scores=True)

    def zrank(self, zset, member):
        """(rank from the top, 0-based; score) or None when the member is absent."""
        s, m, rank, score = _b(zset), _b(member), ctypes.c_int64(), ctypes.c_double()
        rc = load().tc_zrank(ctypes.byref(rank), ctypes.byref(score), self._h, s, len(s), m,
                             len(m))
        if rc == ENOTFOUND:
            return None
        _check(rc, self._h, "zrank")
        return rank.value, score.value

    def zrem(self, zset, member):
        s, m, removed = _b(zset), _b(member), ctypes.c_int()
        _check(load().tc_zrem(ctypes.byref(removed), self._h, s, len(s), m, len(m)), self._h,
               "zrem")
        return bool(removed.value)

    def hset(self, h, field, value):
        hh, f, v = _b(h), _b(field), _b(value)
        _check(load().tc_hset(self._h, hh, len(hh), f, len(f), v, len(v)), self._h, "hset")

    def hget(self, h, field):
        hh, f = _b(h), _b(field)
        out, n = ctypes.c_void_p(), ctypes.c_size_t()
        rc = load().tc_hget(ctypes.byref(out), ctypes.byref(n), self._h, hh, len(hh), f, len(f))
        if rc == ENOTFOUND:
            return None
        _check(rc, self._h, "hget")
        return _take(out, n.value)

    def hdel(self, h, field):
        hh, f, removed = _b(h), _b(field), ctypes.c_int()
        _check(load().tc_hdel(ctypes.byref(removed), self._h, hh, len(hh), f, len(f)), self._h,
               "hdel")
        return bool(removed.value)

    def hgetall(self, h):
        hh, items = _b(h), ctypes.c_void_p()
        _check(load().tc_hgetall(ctypes.byref(items), self._h, hh, len(hh)), self._h, "hgetall")
        return dict(_items(items))

    def struct_expire(self, name, ttl_ms):
        n = _b(name)
        _check(load().tc_struct_expire(self._h, n, len(n), ttl_ms), self._h, "struct_expire")

    def struct_del(self, name):
        n, removed = _b(name), ctypes.c_int()
        _check(load().tc_struct_del(ctypes.byref(removed), self._h, n, len(n)), self._h,
               "struct_del")
        return bool(removed.value)

    # -- pub/sub
    def publish(self, channel, message):
        c, m, receivers = _b(channel), _b(message), ctypes.c_int64()
        _check(load().tc_publish(ctypes.byref(receivers), self._h, c, len(c), m, len(m)),
               self._h, "publish")
        return receivers.value

    def subscribe(self, channel, callback):
        """callback(channel: bytes, message: bytes) runs on a library thread. Returns the
        subscription; end it with .close()."""
        return _Subscription(self, _b(channel), callback)

    def stats(self):
        out = ctypes.c_char_p()
        _check(load().tc_stats_json(ctypes.byref(out), self._h), self._h, "stats")
        try:
            return json.loads(out.value.decode())
        finally:
            load().tc_free(ctypes.cast(out, ctypes.c_void_p))


class _Subscription:
    def __init__(self, cache, channel, callback):
        def on_message(_ctx, ch, ch_len, msg, msg_len):
            try:
                callback(ctypes.string_at(ch, ch_len), ctypes.string_at(msg, msg_len))
            except Exception:  # noqa: BLE001 - an exception must not cross into C
                pass

        self._fn = MESSAGE_FN(on_message)  # alive until close()
        self._sub = ctypes.c_void_p()
        self._lock = threading.Lock()
        _check(load().tc_subscribe(ctypes.byref(self._sub), cache._h, channel, len(channel),
                                   self._fn, None), cache._h, "subscribe")

    def close(self):
        with self._lock:
            if self._sub:
                load().tc_unsubscribe(self._sub)  # the callback is not called after this
                self._sub = ctypes.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Invalidator:
    """Applies the store's change feed to the caches (tc_invalidator_*): .step() or .start()."""

    def __init__(self, cache):
        self._cache = cache  # must outlive the invalidator
        self._p = ctypes.c_void_p()
        _check(load().tc_invalidator_new(ctypes.byref(self._p), cache._h), cache._h,
               "invalidator")

    def step(self):
        """(changes applied, checkpoint seq); raises TierCacheError (TC_ESTATE: a standby)."""
        applied, seq = ctypes.c_int64(), ctypes.c_int64()
        _check(load().tc_invalidator_step(ctypes.byref(applied), ctypes.byref(seq), self._p),
               self._cache._h, "invalidator step")
        return applied.value, seq.value

    def wait(self):
        """Returns when a change may be there, or after feed.poll_ms."""
        _check(load().tc_invalidator_wait(self._p), self._cache._h, "invalidator wait")

    def start(self):
        _check(load().tc_invalidator_start(self._p), self._cache._h, "invalidator start")

    def close(self):
        if self._p:
            load().tc_invalidator_free(self._p)
            self._p = ctypes.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def shared():
    """The process-wide handle (tc_shared: built from $TIERCACHE_CONFIG on first use)."""
    h = ctypes.c_void_p()
    _check(load().tc_shared(ctypes.byref(h)), None, "shared")
    return Cache(_handle=h, _owned=False)


def version():
    return load().tc_version_string().decode()
