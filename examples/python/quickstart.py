#!/usr/bin/env python3
"""quickstart.py - the quick start story from Python: a put, then reads that show which tier
answered, on the embedded default (an edge in this process, a SQLite file; no server).

    pip install ./bindings/python      (or PYTHONPATH=bindings/python)
    python3 examples/python/quickstart.py
"""
import os
import sys
import tempfile

try:
    import tiercache
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "bindings", "python"))
    import tiercache

with tempfile.TemporaryDirectory() as tmp:
    with tiercache.Cache({"store": {"path": os.path.join(tmp, "app.db")}}) as cache:
        cache.put("user:42", b'{"name": "Ada"}')
        value, version, source = cache.get_ex("user:42")[:3]
        print("get user:42 -> %s (version %d, from the %s)" % (value.decode(), version, source))
        cache.invalidate("user:42")
        value, version, source = cache.get_ex("user:42")[:3]
        print("after invalidate -> %s (from the %s, which fills the edge again)" %
              (value.decode(), source))
        print("missing key -> %r" % cache.get("nobody"))
