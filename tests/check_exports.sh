#!/bin/sh
# check_exports.sh SHLIB - the shared library exports only tc_* names and carries the right soname.
#   Every exported (global, defined) symbol must start with tc_; names starting with _ belong to
#   the toolchain (_init, _fini, __bss_start, _edata, _end) and are ignored.
#   The SONAME must be libtiercache.so.<TC_VERSION_MAJOR>, and the libtiercache.so.<major> and
#   libtiercache.so symlinks must sit beside SHLIB and lead to it.
set -eu

if [ $# -ne 1 ] || [ ! -f "$1" ]; then
    echo "usage: $0 build/libtiercache.so.X.Y.Z" >&2
    exit 2
fi
shlib=$1
top=$(cd "$(dirname "$0")/.." && pwd)
dir=$(dirname "$shlib")
fail=0

# nm -D prints "VALUE TYPE NAME"; upper-case types are global. A (absolute) marks symbol
# version nodes, not code or data. nm may append @VERSION or @@VERSION to a name.
syms=$(nm -D --defined-only "$shlib" | awk 'NF >= 3 && $2 ~ /^[BDGRSTVWiu]$/ { sub(/@.*/, "", $3); print $3 }' \
    | grep -v '^_' | sort -u || true)
ours=$(printf '%s\n' "$syms" | grep -c '^tc_' || true)
others=$(printf '%s\n' "$syms" | grep -v '^tc_' | grep -v '^$' || true)
n_others=$(printf '%s\n' "$others" | grep -c . || true)

if [ "$n_others" -ne 0 ]; then
    echo "exports: FAIL: $n_others exported symbol(s) outside tc_* (make them static, or tc__ and" \
         "not TC_API):" >&2
    printf '%s\n' "$others" | sed 's/^/  /' >&2
    fail=1
fi
if [ "$ours" -eq 0 ]; then
    echo "exports: FAIL: no tc_* symbol is exported (is TC_API on the definitions?)" >&2
    fail=1
fi

major=$(sed -n 's/^#define TC_VERSION_MAJOR \([0-9][0-9]*\).*/\1/p' "$top/include/tiercache.h")
if [ -z "$major" ]; then
    echo "exports: FAIL: no TC_VERSION_MAJOR in $top/include/tiercache.h" >&2
    exit 1
fi
want=libtiercache.so.$major
soname=$(readelf -d "$shlib" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
if [ "$soname" != "$want" ]; then
    echo "exports: FAIL: SONAME is '${soname:-none}', expected $want" >&2
    fail=1
fi

real=$(readlink -f "$shlib")
for link in "$dir/$want" "$dir/libtiercache.so"; do
    if [ ! -L "$link" ]; then
        echo "exports: FAIL: $link is missing or not a symlink" >&2
        fail=1
    elif [ "$(readlink -f "$link")" != "$real" ]; then
        echo "exports: FAIL: $link leads to $(readlink -f "$link"), not $real" >&2
        fail=1
    fi
done

[ "$fail" -eq 0 ] || exit 1
echo "exports: soname $soname, symlinks $want and libtiercache.so ok"
echo "exports: $ours tc_* symbols, 0 others"
