#!/usr/bin/env bash
# localize_archive.sh IN.a OUT.a
#
# Turns the staticlib cargo builds (the crate plus a copy of the Rust standard
# library and compiler-builtins: hundreds of members, ~400 global symbols,
# ~22 MB) into what a C or Fortran program may link without surprises
# (docs/abi.md#what-the-interface-is):
#
# 1. one relocatable object: `ld -r` of every member, keeping only what the
#    hpclock_* functions reach (--gc-sections with them as roots). The
#    .init_array sections are roots too, so the library's load-time
#    constructor (src/lifecycle.rs: fork handlers, panic hook) stays and runs
#    in a static link as it does in the shared library.
# 2. every global symbol but hpclock_* made local, weak and hidden ones
#    included: Rust's compiler-builtins (__divdc3, __muldc3, __popcountdi2, ...)
#    then can no longer replace libgcc's in the host program, and two Rust
#    libraries in one program no longer clash (rust_eh_personality). COMDAT
#    groups are dissolved, so the linker cannot discard our copy of a group in
#    favour of another library's and leave our local references dangling.
# 3. what no user needs removed: debug info, embedded LLVM bitcode, symbols no
#    relocation uses (and with them the unused undefined references, such as
#    getaddrinfo, that would make a static link warn).
# 4. strong references to the POSIX thread functions that libgcc, libgfortran
#    and libstdc++ call through weak references (gthr-posix.h). The standard
#    library inside pulls pthread_key_create into a static link, which tells
#    those runtimes that threads are in use; without the rest, a fully static
#    Fortran program calls pthread_mutex_destroy at address 0 on its first
#    CLOSE. (glibc 2.34+ has them in libc.a; -lpthread is an empty stub there,
#    so no link flag can pull them in.)
#
# The result is checked: only hpclock_* global symbols, the constructor kept.
# Needs binutils (ld, objcopy, nm, ar, readelf); runs in about a second.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 IN.a OUT.a" >&2
    exit 2
fi
in=$1
out=$2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/hpclock-archive-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# nm's stderr: members that carry LLVM bitcode make the linker plugin complain.
nm -g --defined-only "$in" 2>/dev/null | awk 'NF == 3 && $2 == "T" && $3 ~ /^hpclock_/ { print $3 }' \
    | sort -u > "$tmp/exported"
if [ ! -s "$tmp/exported" ]; then
    echo "$0: no hpclock_* function in $in" >&2
    exit 1
fi

# What GCC's gthr-posix.h reaches through weak references.
pthread_functions="pthread_once pthread_getspecific pthread_setspecific pthread_create pthread_join
    pthread_equal pthread_self pthread_detach sched_yield pthread_key_create pthread_key_delete
    pthread_mutex_init pthread_mutex_destroy pthread_mutex_lock pthread_mutex_trylock
    pthread_mutex_timedlock pthread_mutex_unlock pthread_mutexattr_init pthread_mutexattr_settype
    pthread_mutexattr_destroy pthread_cond_init pthread_cond_destroy pthread_cond_broadcast
    pthread_cond_signal pthread_cond_wait pthread_cond_timedwait"

roots=()
while read -r sym; do roots+=(-u "$sym"); done < "$tmp/exported"
keep=()
for sym in $pthread_functions; do
    roots+=(-u "$sym")
    keep+=(-K "$sym")
done

ld -r --whole-archive --gc-sections "${roots[@]}" -o "$tmp/whole.o" "$in"
objcopy --strip-unneeded "${keep[@]}" \
    --remove-section=.llvmbc --remove-section=.llvmcmd --remove-section=.group \
    --keep-global-symbols="$tmp/exported" --localize-hidden \
    "$tmp/whole.o" "$tmp/hpclock.o"

# Check what we promise before anyone links it.
nm -g --defined-only "$tmp/hpclock.o" | awk 'NF == 3 { print $3 }' | sort -u > "$tmp/global"
if ! cmp -s "$tmp/global" "$tmp/exported"; then
    echo "$0: the object's global symbols are not exactly the hpclock_* functions:" >&2
    diff "$tmp/exported" "$tmp/global" >&2 || true
    exit 1
fi
# (grep on a variable: with pipefail, grep -q ending a pipe early fails it.)
sections=$(readelf -S -W "$tmp/hpclock.o")
if ! grep -q ' \.init_array  *INIT_ARRAY ' <<<"$sections"; then
    echo "$0: the constructor's .init_array section was lost" >&2
    exit 1
fi
undefined=$(nm -u "$tmp/hpclock.o")
for sym in $pthread_functions; do
    grep -qx " *U $sym" <<<"$undefined" || { echo "$0: no reference to $sym kept" >&2; exit 1; }
done

rm -f "$tmp/out.a"
ar rcD "$tmp/out.a" "$tmp/hpclock.o"
mv -f "$tmp/out.a" "$out"
