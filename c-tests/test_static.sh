#!/usr/bin/env bash
# libhpclock.a as a static link gets it (docs/abi.md#what-the-interface-is): only hpclock_* global
# symbols, so that nothing of the Rust runtime replaces the host program's own
# (libgcc's complex division, for one); the load-time constructor kept; and
# link flags (pkg-config --static) that make fully static C and Fortran
# programs (-static) link and run.
#
# Usage: test_static.sh PREFIX   (an installed hpclock; test_install.sh runs it)
# Tools that are missing (pkg-config, gfortran) make their tests SKIPPED here,
# and failures with CI=true.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/harness.sh"
if [ $# -ne 1 ]; then
  echo "usage: $0 PREFIX" >&2
  exit 2
fi
prefix=$(cd "$1" && pwd)
archive=$prefix/lib/libhpclock.a
shared=$(ls "$prefix"/lib/libhpclock.so.*.*.* | head -n 1)
root=$(mktemp -d "${TMPDIR:-/tmp}/hpclock-static-XXXXXX")
trap 'rm -rf "$root"' EXIT
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig

# The flags a static link of hpclock takes: the archive and what it needs,
# the C library still shared unless -static is given as well.
static_libs() {
  pkg-config --static --libs hpclock | sed 's/-lhpclock/-Wl,-Bstatic -lhpclock -Wl,-Bdynamic/'
}

# Fully static: no program interpreter (ld.so), no shared library needed.
is_fully_static() {
  local headers dynamic
  headers=$(readelf -lW "$1") || return 1
  dynamic=$(readelf -dW "$1") || return 1
  if grep -q 'INTERP' <<<"$headers" || grep -q '(NEEDED)' <<<"$dynamic"; then
    echo "    $1 is not fully static:"
    grep -E 'interpreter|NEEDED' <<<"$headers$dynamic" | sed 's/^/      /'
    return 1
  fi
  if ldd "$1" >/dev/null 2>&1; then echo "    ldd lists libraries for $1:"; ldd "$1" | sed 's/^/      /'; return 1; fi
}

archive_has_only_hpclock_global_symbols() {
  local globals exported others complaints
  # Every global symbol the archive defines, weak (W, V) and unique (u) ones
  # included.
  globals=$(nm -g --defined-only "$archive" 2>"$root/nm.err" | awk 'NF == 3 { print $3 }' | sort -u)
  exported=$(nm -D --defined-only "$shared" | awk '$NF ~ /^hpclock_/ { print $NF }' | sort -u)
  others=$(grep -v '^hpclock_' <<<"$globals")
  if [ -n "$others" ]; then
    echo "    $(wc -l <<<"$others") global symbols besides hpclock_*, e.g.:"
    head -n 8 <<<"$others" | sed 's/^/      /'
    return 1
  fi
  # Members nm cannot read (LLVM bitcode) could hide symbols from it.
  complaints=$(sort -u "$root/nm.err")
  if [ -n "$complaints" ]; then
    echo "    nm cannot read all of the archive:"
    head -n 3 <<<"$complaints" | sed 's/^/      /'
    return 1
  fi
  if [ "$globals" != "$exported" ]; then
    echo "    the archive's hpclock_* symbols differ from the shared library's:"
    diff <(echo "$exported") <(echo "$globals") | sed 's/^/      /'
    return 1
  fi
  echo "    $(wc -l <<<"$globals") global symbols, all hpclock_*; $(du -k "$archive" | cut -f1) KiB"
}

complex_division_is_libgcc_s_bit_for_bit() {
  need pkg-config || return
  local src=$here/install/complex_division.c plain with trace
  quietly cc -std=c11 -O2 "$src" -o "$root/cdiv_plain" || return 1
  # The trace says where the linker found each of these: never in libhpclock.a.
  trace=$(cc -std=c11 -O2 -DWITH_HPCLOCK $(pkg-config --cflags hpclock) "$src" -o "$root/cdiv_hpclock" \
          $(static_libs) -Wl,-y,__divdc3 -Wl,-y,__muldc3 -Wl,-y,__popcountdi2 2>&1) || { echo "$trace" | sed 's/^/    /'; return 1; }
  if grep -q 'libhpclock' <<<"$trace"; then
    echo "    the link took a compiler-builtin from libhpclock.a:"
    grep 'libhpclock' <<<"$trace" | sed 's/^/      /'
    return 1
  fi
  plain=$("$root/cdiv_plain") || return 1
  with=$("$root/cdiv_hpclock") || return 1
  if [ "$plain" != "$with" ]; then
    echo "    1,000,000 complex divisions: checksum $with with libhpclock.a, $plain without"
    return 1
  fi
  echo "    1,000,000 complex divisions: checksum $plain with and without libhpclock.a"
}

constructor_runs_in_static_links() {
  need pkg-config || return
  local src=$here/install/constructor_runs.c sections
  quietly cc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags hpclock) "$src" -o "$root/ctor" $(static_libs) || return 1
  quietly "$root/ctor" "$root/ctor.lock" || return 1
  quietly cc -static -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags hpclock) "$src" -o "$root/ctor_static" \
    $(pkg-config --static --libs hpclock) || return 1
  is_fully_static "$root/ctor_static" || return 1
  "$root/ctor_static" "$root/ctor_static.lock" | sed 's/^/    /'
  [ "${PIPESTATUS[0]}" = 0 ] || return 1
  sections=$(readelf -S -W "$archive")
  grep -q ' \.init_array  *INIT_ARRAY ' <<<"$sections" || { echo "    no .init_array in $archive"; return 1; }
}

fully_static_c_program_runs() {
  need pkg-config || return
  quietly cc -static -std=c11 -Wall -Wextra -Werror "$here/install/use_hpclock.c" -o "$root/use_static_c" \
    $(pkg-config --cflags --static --libs hpclock) || return 1
  is_fully_static "$root/use_static_c" || return 1
  "$root/use_static_c" "$root/static_c.lock" | sed 's/^/    /'
  [ "${PIPESTATUS[0]}" = 0 ]
}

fully_static_fortran_program_runs() {
  need pkg-config gfortran || return
  mkdir -p "$root/fortran"
  quietly gfortran -std=f2008 -Wall -Wextra -Werror -J "$root/fortran" -c "$prefix/include/hpclock.f90" \
    -o "$root/fortran/hpclock.o" || return 1
  quietly gfortran -static -std=f2008 -Wall -Werror -I "$root/fortran" "$here/install/use_hpclock.f90" \
    "$root/fortran/hpclock.o" -o "$root/use_static_f" $(pkg-config --static --libs hpclock) || return 1
  is_fully_static "$root/use_static_f" || return 1
  "$root/use_static_f" "$root/static_f.lock" 2>&1 | sed 's/^/    /'
  [ "${PIPESTATUS[0]}" = 0 ]
}

run_tests archive_has_only_hpclock_global_symbols complex_division_is_libgcc_s_bit_for_bit \
          constructor_runs_in_static_links fully_static_c_program_runs fully_static_fortran_program_runs
