#!/usr/bin/env bash
# check_interfaces.sh LIBRARY MODULE_SOURCE
#
# Every hpclock_* symbol the shared library exports must be bound in the
# Fortran module (bind(C, name="SYMBOL")), and the module must bind no
# hpclock_* name the library lacks: a symbol added to or renamed in the C API
# otherwise goes unnoticed until a Fortran user links.
# Binding labels of other libraries (strlen) are not the library's business.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 LIBRARY MODULE_SOURCE" >&2
    exit 2
fi
lib=$1
src=$2
for f in "$lib" "$src"; do
    if [ ! -r "$f" ]; then
        echo "$0: cannot read $f" >&2
        exit 2
    fi
done

# nm's own failure must stop us, not read as "no symbols". Its stderr is kept
# out of the way: on a static archive it has a line for every member.
if ! nm_out=$(nm -D --defined-only -- "$lib" 2>/dev/null); then
    echo "$0: nm -D --defined-only failed on $lib:" >&2
    nm -D --defined-only -- "$lib" 2>&1 >/dev/null | head -n 3 >&2 || true
    exit 2
fi
exported=$(awk '$NF ~ /^hpclock_/ { print $NF }' <<<"$nm_out" | sort -u)
if [ -z "$exported" ]; then
    echo "$0: $lib exports no dynamic hpclock_* symbol (is it the shared library?)" >&2
    exit 2
fi

# Drop comments (a commented-out binding does not bind), join continuation
# lines (a binding split with & still binds), then collect the labels. The
# keyword part is case-insensitive like Fortran; the label is case-sensitive
# like the linker.
bound=$(awk '
    { sub(/!.*/, "") }
    cont { sub(/^[ \t]*&/, "") }
    { line = line $0 }
    line ~ /&[ \t]*$/ { sub(/&[ \t]*$/, "", line); cont = 1; next }
    { print line; line = ""; cont = 0 }
    END { if (line != "") print line }
' "$src" |
    grep -oiE "bind[[:space:]]*\([[:space:]]*c[[:space:]]*,[[:space:]]*name[[:space:]]*=[[:space:]]*[\"'][^\"']*[\"']" |
    sed -E "s/.*[\"']([^\"']*)[\"']$/\1/" |
    grep -E '^hpclock_' | sort -u || true)

missing=$(comm -23 <(printf '%s\n' "$exported") <(printf '%s\n' "$bound"))
unknown=$(comm -13 <(printf '%s\n' "$exported") <(printf '%s\n' "$bound") | sed '/^$/d')
n_bound=$(comm -12 <(printf '%s\n' "$exported") <(printf '%s\n' "$bound") | sed '/^$/d' | wc -l)
n_missing=0
n_unknown=0

for sym in $missing; do
    echo "MISSING $sym: exported by $lib, no bind(C, name=\"$sym\") in $src"
    n_missing=$((n_missing + 1))
done
for sym in $unknown; do
    echo "UNKNOWN $sym: bound in $src, not exported by $lib"
    n_unknown=$((n_unknown + 1))
done

echo "$n_bound symbols bound, $n_missing missing, $n_unknown not exported"
[ "$n_missing" -eq 0 ] && [ "$n_unknown" -eq 0 ]
