#!/usr/bin/env python3
"""python_store.py LIBTIERCACHE_SO - a store written in Python, behind the caches, through ctypes.

The three callbacks of tc_config_set_store are Python functions (ctypes.CFUNCTYPE): the library
reads through and writes through them as through its built-in stores. Checks that values (NUL
bytes included) go through byte-exact, that hits never reach Python, that a Python exception in
a callback is a store error and not a crash, and that userdata's destructor runs once.
Prints "python_store: ok" and exits 0 on success.
"""
import ctypes
import sys
import threading

TC_OK, TC_ENOTFOUND, TC_ESTORE = 0, -1, -10

lib = ctypes.CDLL(sys.argv[1])
c_int64_p = ctypes.POINTER(ctypes.c_int64)
GET = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                       ctypes.c_void_p)
PUT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                       ctypes.c_void_p, ctypes.c_size_t, c_int64_p)
DEL = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                       c_int64_p)
FREE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)

lib.tc_strerror.restype = ctypes.c_char_p
lib.tc_strerror.argtypes = [ctypes.c_int]
lib.tc_errmsg.restype = ctypes.c_char_p
lib.tc_errmsg.argtypes = [ctypes.c_void_p]
lib.tc_config_new.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
lib.tc_config_free.argtypes = [ctypes.c_void_p]
lib.tc_config_set_store.argtypes = [ctypes.c_void_p, GET, PUT, DEL, ctypes.c_void_p, FREE]
lib.tc_store_result_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                    ctypes.c_int64]
lib.tc_open.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p]
lib.tc_close.argtypes = [ctypes.c_void_p]
lib.tc_put.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                       ctypes.c_size_t, ctypes.c_int64]
lib.tc_get.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t),
                       ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
lib.tc_del.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
lib.tc_free.argtypes = [ctypes.c_void_p]


class DictStore:
    """The user's database: a dict of key -> (value, version), versions from one clock."""

    def __init__(self):
        self.rows, self.clock, self.reads, self.freed = {}, 0, 0, 0
        self.lock = threading.Lock()
        self.fail = False

    def get(self, _ud, key, key_len, result):
        with self.lock:
            self.reads += 1
            if self.fail:
                raise RuntimeError("the database is down")
            row = self.rows.get(key[:key_len])
        if row is None:
            return TC_ENOTFOUND
        return lib.tc_store_result_set(result, row[0], len(row[0]), row[1])

    def put(self, _ud, key, key_len, value, length, out_version):
        with self.lock:
            self.clock += 1
            self.rows[key[:key_len]] = (ctypes.string_at(value, length), self.clock)
            out_version[0] = self.clock
        return TC_OK

    def delete(self, _ud, key, key_len, out_version):
        with self.lock:
            self.clock += 1
            self.rows.pop(key[:key_len], None)
            out_version[0] = self.clock
        return TC_OK

    def free(self, _ud):
        self.freed += 1


def guarded(fn, failure):
    """A callback that turns a Python exception into a store error (ctypes would only print it
    and return 0, which is TC_OK)."""
    def call(*args):
        try:
            return fn(*args)
        except Exception:  # noqa: BLE001 - any failure of the user's code is a store error
            return failure
    return call


def check(rc, what, handle=None):
    if rc != TC_OK:
        raise SystemExit("python_store: %s: %s (%s)" % (
            what, lib.tc_strerror(rc).decode(), lib.tc_errmsg(handle).decode()))


def get(handle, key):
    out, n = ctypes.c_void_p(), ctypes.c_size_t()
    rc = lib.tc_get(ctypes.byref(out), ctypes.byref(n), handle, key, len(key))
    if rc != TC_OK:
        return rc, None
    data = ctypes.string_at(out, n.value)
    lib.tc_free(out)
    return rc, data


def main():
    db = DictStore()
    # The CFUNCTYPE objects must outlive every use by the library: kept here until the end.
    callbacks = (GET(guarded(db.get, TC_ESTORE)), PUT(guarded(db.put, TC_ESTORE)),
                 DEL(guarded(db.delete, TC_ESTORE)), FREE(db.free))
    cfg = ctypes.c_void_p()
    check(lib.tc_config_new(ctypes.byref(cfg)), "config")
    check(lib.tc_config_set_store(cfg, *callbacks[:3], None, callbacks[3]), "set_store")
    handle = ctypes.c_void_p()
    check(lib.tc_open(ctypes.byref(handle), cfg), "open")
    lib.tc_config_free(cfg)

    value = b"bytes\x00with\x00NULs"
    check(lib.tc_put(handle, b"k", 1, value, len(value), 0), "put", handle)
    assert db.rows[b"k"] == (value, 1), db.rows
    for _ in range(100):
        rc, got = get(handle, b"k")
        assert rc == TC_OK and got == value, (rc, got)
    assert db.reads == 0, db.reads  # every read was a hit

    db.rows[b"other"] = (b"from the database", 99)
    assert get(handle, b"other") == (TC_OK, b"from the database")
    assert get(handle, b"absent") == (TC_ENOTFOUND, None)
    db.fail = True
    assert get(handle, b"down")[0] == TC_ESTORE
    db.fail = False
    check(lib.tc_del(handle, b"k", 1), "del", handle)
    assert get(handle, b"k") == (TC_ENOTFOUND, None)
    assert db.reads == 4, db.reads

    lib.tc_close(handle)
    assert db.freed == 1, db.freed
    print("python_store: ok")


if __name__ == "__main__":
    main()
