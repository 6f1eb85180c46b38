#!/usr/bin/env python3
"""check_layers.py - the layers of lib/ call down only (docs/architecture.md, "Layers").

    python3 tests/check_layers.py [LIB_DIR]      checks LIB_DIR (default lib); exit 1 on a fault
    python3 tests/check_layers.py --self-test    plants an upward include in a copy of lib/ and
                                                 a circle between two files: both must be caught

A file depends on another when it includes it, or when it uses a tc_/tc__ name (a function, or
a variable such as a test hook) that the other defines: in a .c file anywhere, in a header
inside the body of an inline function. A prototype in a header is the header's interface, not
a use (common/internal.h declares what error.c and process.c define), but a header may declare
only what its own layer or a lower one defines. A header and the .c file of the same name in
one folder are one unit. The rules:
  - a unit depends only on units of its own folder or of a lower layer:
        ext > core > {edge, redis, store, http} > common
    and never on a sibling of the tier row (edge, redis, store and http do not know each other);
  - no circle of units, inside a folder or across folders;
  - no .c file over MAX_FILE_LINES lines, and no function over MAX_FUNC_LINES lines but the
    parsers named in LONG_OK (fuzzed whole, and clearer as one state machine).
The scan reads text: comments and string literals are blanked first, so a name in a comment is
no dependency. It is meant for this tree's style (definitions start in column 0), not for any C.
"""
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

RANK = {"common": 0, "edge": 1, "redis": 1, "store": 1, "http": 1, "core": 2, "ext": 3}
MAX_FILE_LINES = 1000
MAX_FUNC_LINES = 80
# Pure parsers, each fuzzed as a whole (tests/fuzz): a long function there is one grammar.
LONG_OK = {"tc__cc_parse", "tc__http_date_parse", "tc__pattern_match", "tc__freshness_compute"}


def blank(text):
    """Comments and literals blanked, line breaks kept (so line numbers still hold)."""
    def keep_lines(m):
        return re.sub(r"[^\n]", " ", m.group(0))
    pattern = r"/\*.*?\*/|//[^\n]*|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'"
    return re.sub(pattern, keep_lines, text, flags=re.S)


def unit_of(path):
    """lib/x/name.c and lib/x/name.h are one unit: lib/x/name."""
    return os.path.splitext(path)[0]


def layer_of(root, path):
    return os.path.relpath(path, root).split(os.sep)[0]


# A definition: a line in column 0 that names a tc_ function followed by its body, or a
# tc__ variable defined at file scope (not extern, not static).
FUNC_DEF = re.compile(r"^(?![ \t#}])[^;{}()\n]*?\b(tc_\w+)\s*\([^;{#]*?\)\s*\{", re.M | re.S)
VAR_DEF = re.compile(r"^(?!extern\b|static\b|typedef\b|[ \t#}])[^;{}()\n]*?\b(tc__\w+)\s*(?:=[^;]*)?;",
                     re.M)
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
NAME = re.compile(r"\b(tc_{1,2}\w+)\b")
ANY_FUNC = re.compile(r"^(?![ \t#}])[^;{}()=\n]*?\b(\w+)\s*\([^;{#]*?\)\s*\{", re.M | re.S)


def body_end(text, open_brace):
    depth = 0
    for i in range(open_brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return len(text) - 1


def scan(root):
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
                   if f.endswith((".c", ".h")))
    raw = {f: open(f, encoding="utf-8", errors="replace").read() for f in files}
    text = {f: blank(raw[f]) for f in files}
    defined = collections.defaultdict(set)
    for f in files:
        for m in FUNC_DEF.finditer(text[f]):
            defined[m.group(1)].add(f)
        for m in VAR_DEF.finditer(text[f]):
            defined[m.group(1)].add(f)
    deps = collections.defaultdict(lambda: collections.defaultdict(set))  # unit -> unit -> why
    declares = collections.defaultdict(lambda: collections.defaultdict(set))
    for f in files:
        u = unit_of(f)
        for m in INCLUDE.finditer(raw[f]):  # the path is a literal: read before blanking
            inc = m.group(1)
            target = os.path.join(root, inc)
            if not os.path.exists(target):
                target = os.path.join(os.path.dirname(f), inc)
            if os.path.exists(target) and unit_of(target) != u:
                deps[u][unit_of(os.path.normpath(target))].add("#include \"%s\"" % inc)
        inside = brace_depths(text[f]) if f.endswith(".h") else None
        for m in NAME.finditer(text[f]):
            for d in defined.get(m.group(1), ()):
                if unit_of(d) == u:
                    continue
                if inside is None or inside[m.start()]:
                    deps[u][unit_of(d)].add(m.group(1))
                else:
                    declares[u][unit_of(d)].add(m.group(1))
    return files, text, deps, declares


def brace_depths(text):
    """For each offset: 1 if it lies inside braces (a body), else 0."""
    out, depth = bytearray(len(text)), 0
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        out[i] = depth > 0
    return out


def declare_faults(root, declares):
    faults = []
    for u in sorted(declares):
        for v in sorted(declares[u]):
            lu, lv = layer_of(root, u), layer_of(root, v)
            if lu != lv and lu in RANK and lv in RANK and RANK[lv] >= RANK[lu]:
                faults.append("%s declares what %s defines, a layer it may not call (%s)" %
                              (u, v, ", ".join(sorted(declares[u][v]))[:200]))
    return faults


def layer_faults(root, deps):
    faults = []
    for u in sorted(deps):
        for v in sorted(deps[u]):
            lu, lv = layer_of(root, u), layer_of(root, v)
            if lu == lv:
                continue
            if lu not in RANK or lv not in RANK:
                faults.append("%s -> %s: outside the layer folders" % (u, v))
            elif RANK[lv] > RANK[lu]:
                faults.append("%s -> %s: up from %s to %s (%s)" %
                              (u, v, lu, lv, ", ".join(sorted(deps[u][v]))[:200]))
            elif RANK[lv] == RANK[lu]:
                faults.append("%s -> %s: sideways between tiers %s and %s (%s)" %
                              (u, v, lu, lv, ", ".join(sorted(deps[u][v]))[:200]))
    return faults


def circles(deps):
    """Tarjan's strongly connected components of more than one unit."""
    index, low, stack, on, out = {}, {}, [], set(), []
    nodes = set(deps) | {v for u in deps for v in deps[u]}
    sys.setrecursionlimit(10000)

    def visit(u):
        index[u] = low[u] = len(index)
        stack.append(u)
        on.add(u)
        for v in deps.get(u, ()):
            if v not in index:
                visit(v)
                low[u] = min(low[u], low[v])
            elif v in on:
                low[u] = min(low[u], index[v])
        if low[u] == index[u]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == u:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for n in sorted(nodes):
        if n not in index:
            visit(n)
    return out


def size_faults(files, text):
    faults = []
    for f in files:
        lines = text[f].count("\n")
        if f.endswith(".c") and lines > MAX_FILE_LINES:
            faults.append("%s: %d lines (at most %d: split it along a seam)" %
                          (f, lines, MAX_FILE_LINES))
        for m in ANY_FUNC.finditer(text[f]):
            start = text[f].count("\n", 0, m.start()) + 1
            end = text[f].count("\n", 0, body_end(text[f], m.end() - 1)) + 1
            if end - start + 1 > MAX_FUNC_LINES and m.group(1) not in LONG_OK:
                faults.append("%s:%d: %s is %d lines (at most %d)" %
                              (f, start, m.group(1), end - start + 1, MAX_FUNC_LINES))
    return faults


def check(root):
    files, text, deps, declares = scan(root)
    faults = layer_faults(root, deps) + declare_faults(root, declares)
    for comp in circles(deps):
        ties = []
        for u in comp:
            for v in comp:
                if v in deps.get(u, ()):
                    ties.append("%s -> %s (%s)" % (u, v, ", ".join(sorted(deps[u][v]))[:120]))
        faults.append("circle: " + "; ".join(ties))
    faults += size_faults(files, text)
    n = sum(len(v) for v in deps.values())
    for f in faults:
        print("check-layers: " + f)
    print("check-layers: %d files, %d dependencies between units, %d faults" %
          (len(files), n, len(faults)))
    return 1 if faults else 0


def self_test(root):
    """The check must fail on an upward include and on a circle planted in a copy of lib/."""
    ok = True
    plants = [
        ("common/error.c", '#include "core/cache.h"\n', "up from common to core"),
        ("edge/edge.c", "void tc__plant_a(void);\nvoid tc__plant_b(void) { tc__plant_a(); }\n",
         None),
    ]
    for path, line, want in plants:
        tmp = tempfile.mkdtemp(prefix="tc-layers.")
        try:
            copy = os.path.join(tmp, "lib")
            shutil.copytree(root, copy)
            with open(os.path.join(copy, path), "a", encoding="utf-8") as fh:
                fh.write(line)
            if want is None:  # the other half of the circle, in the same folder
                with open(os.path.join(copy, "edge/edge_plant.c"), "w", encoding="utf-8") as fh:
                    fh.write("void tc__plant_b(void);\nvoid tc__plant_a(void) { tc__plant_b(); }\n")
                want = "circle:"
            run = subprocess.run([sys.executable, __file__, copy], capture_output=True, text=True)
            caught = run.returncode == 1 and want in run.stdout
            print("check-layers self-test: %s planted in %s: %s" %
                  ("a circle" if want == "circle:" else "an upward include", path,
                   "caught" if caught else "NOT CAUGHT"))
            ok = ok and caught
        finally:
            shutil.rmtree(tmp)
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--self-test":
        sys.exit(self_test(sys.argv[2] if len(sys.argv) > 2 else "lib"))
    sys.exit(check(sys.argv[1] if len(sys.argv) > 1 else "lib"))
