#!/usr/bin/env bash
# hpclock as its users get it: `make install` into a fresh prefix (with no
# cargo or rustc to be found: it installs what `make` built), then a C program
# built with pkg-config, one with CMake find_package(hpclock), one linked
# statically, a Fortran program with CMake's hpclock::hpclock_fortran, and the
# Fortran test built against the installed module source — each run. Zeroed
# options make a lock file the next run of a non-root user can lock. The
# prefix still works after it is moved. c-tests/test_static.sh checks the
# static archive and fully static programs. Then DESTDIR staging and
# `make uninstall`.
#
# Usage: test_install.sh   (from the repository's top directory, after `make`)
# Tools that are missing (pkg-config, cmake, gfortran, setpriv) make their
# tests SKIPPED here, and failures with CI=true.
set -u
. "$(dirname "$0")/harness.sh"
repo=$(pwd)
root=$(mktemp -d "${TMPDIR:-/tmp}/hpclock-install-XXXXXX")
trap 'rm -rf "$root"' EXIT
# Another user runs programs from here (zeroed_options_...).
chmod 755 "$root"
prefix=$root/prefix
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)
# The soname: libhpclock.so.0.MINOR before 1.0, libhpclock.so.MAJOR after.
soname=libhpclock.so.$(awk -F. '{ print ($1 == 0) ? $1 "." $2 : $1 }' <<<"$version")

# `sudo make install` on a login node: after `make`, installing must need no
# toolchain. cargo and rustc here fail and leave a trace if anything calls them.
install_needs_no_cargo_after_make() {
  mkdir -p "$root/no-toolchain"
  local tool
  for tool in cargo rustc rustup; do
    printf '#!/bin/sh\necho "%s $*" >> "%s/called"\nexit 127\n' "$tool" "$root/no-toolchain" > "$root/no-toolchain/$tool"
    chmod +x "$root/no-toolchain/$tool"
  done
  PATH=$root/no-toolchain:$PATH quietly make -C "$repo" install PREFIX="$prefix" || return 1
  if [ -e "$root/no-toolchain/called" ]; then
    echo "    make install ran the toolchain:"
    sed 's/^/      /' "$root/no-toolchain/called"
    return 1
  fi
  cmp -s "$repo/build/lib/libhpclock.a" "$prefix/lib/libhpclock.a" || { echo "    installed another libhpclock.a than make built"; return 1; }
}

install_lays_out_libraries_headers_and_packages() {
  [ -f "$prefix/lib/pkgconfig/hpclock.pc" ] || quietly make -C "$repo" install PREFIX="$prefix" || return 1
  local f
  for f in bin/hpclock "lib/libhpclock.so.$version" lib/libhpclock.a include/hpclock.h include/hpclock.f90 \
           lib/pkgconfig/hpclock.pc lib/cmake/hpclock/hpclockConfig.cmake lib/cmake/hpclock/hpclockConfigVersion.cmake; do
    [ -f "$prefix/$f" ] || { echo "    missing $f"; return 1; }
  done
  [ "$(readlink "$prefix/lib/$soname")" = "libhpclock.so.$version" ] || { echo "    bad $soname link"; return 1; }
  [ "$(readlink "$prefix/lib/libhpclock.so")" = "$soname" ] || { echo "    bad libhpclock.so link"; return 1; }
  readelf -d "$prefix/lib/libhpclock.so.$version" | grep -qF "[$soname]" || { echo "    no soname"; return 1; }
  # A static link gets libgcc's unwinder from gcc_eh: -static has no libgcc_s.
  grep -q "^Libs.private: .*-lgcc_eh.*-lpthread" "$prefix/lib/pkgconfig/hpclock.pc" || { echo "    Libs.private without -lgcc_eh"; return 1; }
  if grep -q "^Libs.private:.*gcc_s" "$prefix/lib/pkgconfig/hpclock.pc" ||
     grep -q "INTERFACE_LINK_LIBRARIES.*gcc_s" "$prefix/lib/cmake/hpclock/hpclockConfig.cmake"; then
    echo "    gcc_s in the static link flags"; return 1
  fi
  "$prefix/bin/hpclock" --version | grep -q "^hpclock $version$" || { echo "    bin/hpclock does not run"; return 1; }
}

pkg_config_build_runs() {
  need pkg-config || return
  [ "$(pkg-config --modversion hpclock)" = "$version" ] || return 1
  [ -f "$(pkg-config --variable=fortran_module hpclock)" ] || { echo "    no fortran_module variable"; return 1; }
  quietly cc -std=c11 -Wall -Wextra -Werror "$repo/c-tests/install/use_hpclock.c" -o "$root/use_pkgconfig" \
    $(pkg-config --cflags --libs hpclock) -Wl,-rpath,"$(pkg-config --variable=libdir hpclock)" || return 1
  quietly "$root/use_pkgconfig" "$root/pkgconfig.lock" || return 1
  # The .pc gives paths through ${pcfiledir}: PREFIX/lib/pkgconfig/../../lib.
  local found
  found=$(ldd "$root/use_pkgconfig" | sed -n "s/^[[:space:]]*${soname//./\\.} => \\(.*\\) (0x.*/\\1/p")
  [ -n "$found" ] && [ "$(readlink -f "$found")" = "$(readlink -f "$prefix/lib/$soname")" ] || { ldd "$root/use_pkgconfig"; return 1; }
}

static_build_runs_without_the_shared_library() {
  need pkg-config || return
  # Libs.private supplies what the Rust standard library inside the archive needs.
  local libs
  libs=$(pkg-config --static --libs hpclock | sed 's/-lhpclock/-Wl,-Bstatic -lhpclock -Wl,-Bdynamic/')
  quietly cc -std=c11 -Wall -Wextra -Werror "$repo/c-tests/install/use_hpclock.c" -o "$root/use_static" \
    $(pkg-config --cflags hpclock) $libs || return 1
  if ldd "$root/use_static" | grep -q libhpclock; then echo "    still linked to the shared library"; return 1; fi
  quietly "$root/use_static" "$root/static.lock"
}

# The archive's symbols, its constructor, complex division, fully static C
# and Fortran programs.
static_archive_and_fully_static_programs() {
  bash "$repo/c-tests/test_static.sh" "$prefix" | sed 's/^/    /'
  return "${PIPESTATUS[0]}"
}

# No program interpreter (ld.so): nothing is loaded at run time.
fully_static() {
  local headers
  headers=$(readelf -lW "$1") || return 1
  ! grep -q 'INTERP' <<<"$headers"
}

cmake_find_package_build_runs() {
  need cmake || return
  quietly cmake -S "$repo/c-tests/install" -B "$root/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" || return 1
  quietly cmake --build "$root/cmake-build" || return 1
  quietly "$root/cmake-build/use_hpclock" "$root/cmake.lock" || return 1
  ldd "$root/cmake-build/use_hpclock" | grep -q "$prefix/lib/$soname" || { echo "    not linked to the installed library"; return 1; }
  quietly "$root/cmake-build/use_hpclock_static" "$root/cmake-static.lock" || return 1
  if ldd "$root/cmake-build/use_hpclock_static" | grep -q libhpclock; then echo "    static target is shared"; return 1; fi
  quietly "$root/cmake-build/use_hpclock_fully_static" "$root/cmake-fully-static.lock" || return 1
  fully_static "$root/cmake-build/use_hpclock_fully_static" || { echo "    -static with hpclock::hpclock_static is not static"; return 1; }
  # an incompatible version is refused
  mkdir -p "$root/cmake-too-new" && sed 's/find_package(hpclock 0.2 REQUIRED)/find_package(hpclock 7.0 REQUIRED)/' \
    "$repo/c-tests/install/CMakeLists.txt" > "$root/cmake-too-new/CMakeLists.txt"
  cp "$repo/c-tests/install/use_hpclock.c" "$root/cmake-too-new/"
  if cmake -S "$root/cmake-too-new" -B "$root/cmake-too-new/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null 2>&1; then
    echo "    find_package(hpclock 7.0) accepted version 0.x"
    return 1
  fi
}

# find_package(hpclock) in a Fortran project: hpclock::hpclock_fortran
# compiles the module with the project's compiler and links the library;
# hpclock::hpclock_fortran_static does so fully statically (-static).
cmake_fortran_target_builds_and_runs() {
  need cmake gfortran || return
  quietly cmake -S "$repo/c-tests/install/fortran" -B "$root/cmake-fortran" -DCMAKE_PREFIX_PATH="$prefix" || return 1
  quietly cmake --build "$root/cmake-fortran" || return 1
  "$root/cmake-fortran/use_hpclock_f" "$root/cmake-fortran.lock" | sed 's/^/    /'
  [ "${PIPESTATUS[0]}" = 0 ] || return 1
  ldd "$root/cmake-fortran/use_hpclock_f" | grep -q "$prefix/lib/$soname" || { echo "    not linked to the installed library"; return 1; }
  quietly "$root/cmake-fortran/use_hpclock_f_static" "$root/cmake-fortran-static.lock" || return 1
  fully_static "$root/cmake-fortran/use_hpclock_f_static" || { echo "    hpclock::hpclock_fortran_static with -static is not static"; return 1; }
}

fortran_program_builds_against_the_installed_module() {
  need gfortran || return
  mkdir -p "$root/fortran"
  quietly gfortran -std=f2008 -Wall -Wextra -Werror -J "$root/fortran" -c "$prefix/include/hpclock.f90" \
    -o "$root/fortran/hpclock.o" || return 1
  quietly cc -std=c11 -Wall -Wextra -Werror -I"$prefix/include" -c "$repo/f-tests/layout.c" -o "$root/fortran/layout.o" || return 1
  quietly gfortran -std=f2008 -Wall -Wextra -Werror -I "$root/fortran" "$repo/f-tests/test_hpclock.f90" \
    "$root/fortran/hpclock.o" "$root/fortran/layout.o" -o "$root/fortran/test_hpclock" \
    -L"$prefix/lib" -lhpclock -Wl,-rpath,"$prefix/lib" || return 1
  mkdir -p "$root/fortran/run"
  "$root/fortran/test_hpclock" "$root/fortran/run" | tail -1 | sed 's/^/    fortran: /'
  [ "${PIPESTATUS[0]}" = 0 ]
}

# Runs a command as a user who is not root: nobody when we are root, else
# ourselves (a mode-0000 file stops its owner as well, unless root).
as_user() {
  if [ "$(id -u)" = 0 ]; then
    setpriv --reuid="$(id -u nobody)" --regid="$(id -g nobody)" --clear-groups -- "$@"
  else
    "$@"
  fi
}

# hpclock_options o = {0}: mode 0 is the default 0644, less the umask. The
# first run creates the file, the second (a requeue, same user) locks it.
zeroed_options_make_a_lock_file_the_next_run_can_lock() {
  need pkg-config || return
  if [ "$(id -u)" = 0 ]; then need setpriv || return; fi
  quietly cc -std=c11 -Wall -Wextra -Werror "$repo/c-tests/install/zero_options.c" -o "$root/zero_options" \
    $(pkg-config --cflags --libs hpclock) -Wl,-rpath,"$prefix/lib" || return 1
  local dir=$root/zeroed um mode expected
  mkdir -m 1777 "$dir" || return 1
  for um in 022 027; do
    expected=$(printf '%o' $((0644 & ~0$um)))
    (umask "$um" && as_user "$root/zero_options" "$dir/umask$um.lock") | sed 's/^/    /'
    [ "${PIPESTATUS[0]}" = 0 ] || { echo "    the first run (umask $um) failed"; return 1; }
    mode=$(stat -c %a "$dir/umask$um.lock")
    [ "$mode" = "$expected" ] || { echo "    umask $um: the lock file has mode $mode, expected $expected"; return 1; }
    as_user "$root/zero_options" "$dir/umask$um.lock" | sed 's/^/    /'
    [ "${PIPESTATUS[0]}" = 0 ] || { echo "    the second run (umask $um) could not lock the file the first created"; return 1; }
  done
  local who=$(id -un)
  [ "$(id -u)" = 0 ] && who=nobody
  echo "    mode 0 gave 644 under umask 022 and 640 under 027; $who's second run locked the file again"
}

# The installed tree moved elsewhere (copied to another machine, renamed):
# pkg-config (${pcfiledir}) and CMake still find everything in its new place.
moved_prefix_still_builds_with_pkg_config_and_cmake() {
  need pkg-config cmake || return
  local before=$root/before-move after=$root/after-move
  quietly make -C "$repo" install PREFIX="$before" || return 1
  mv "$before" "$after" || return 1
  PKG_CONFIG_PATH=$after/lib/pkgconfig quietly cc -std=c11 -Wall -Wextra -Werror "$repo/c-tests/install/use_hpclock.c" \
    -o "$root/use_moved" $(PKG_CONFIG_PATH=$after/lib/pkgconfig pkg-config --cflags --libs hpclock) -Wl,-rpath,"$after/lib" || return 1
  quietly "$root/use_moved" "$root/moved.lock" || return 1
  ldd "$root/use_moved" | grep -q "$after/lib/$soname" || { echo "    pkg-config: not linked to the moved library"; return 1; }
  # Static, from the moved place: Libs.private's -L must follow too.
  quietly cc -std=c11 "$repo/c-tests/install/use_hpclock.c" -o "$root/use_moved_static" \
    $(PKG_CONFIG_PATH=$after/lib/pkgconfig pkg-config --cflags hpclock) \
    $(PKG_CONFIG_PATH=$after/lib/pkgconfig pkg-config --static --libs hpclock | sed 's/-lhpclock/-Wl,-Bstatic -lhpclock -Wl,-Bdynamic/') || return 1
  quietly "$root/use_moved_static" "$root/moved-static.lock" || return 1
  quietly cmake -S "$repo/c-tests/install" -B "$root/cmake-moved" -DCMAKE_PREFIX_PATH="$after" || return 1
  quietly cmake --build "$root/cmake-moved" || return 1
  quietly "$root/cmake-moved/use_hpclock" "$root/cmake-moved.lock" || return 1
  ldd "$root/cmake-moved/use_hpclock" | grep -q "$after/lib/$soname" || { echo "    CMake: not linked to the moved library"; return 1; }
  rm -rf "$after"
}

destdir_stages_and_uninstall_removes() {
  local stage=$root/stage
  quietly make -C "$repo" install DESTDIR="$stage" PREFIX=/opt/hpclock || return 1
  [ -f "$stage/opt/hpclock/lib/pkgconfig/hpclock.pc" ] || { echo "    nothing staged"; return 1; }
  [ ! -e /opt/hpclock ] || { echo "    DESTDIR ignored: /opt/hpclock exists"; return 1; }
  # Relocatable: no path of the build machine (nor the staging area) in it.
  grep -q '^prefix=${pcfiledir}/../..$' "$stage/opt/hpclock/lib/pkgconfig/hpclock.pc" || return 1
  if grep -rq "$stage" "$stage/opt/hpclock/lib/pkgconfig" "$stage/opt/hpclock/lib/cmake"; then
    echo "    the staging directory is written into the packages"; return 1
  fi
  quietly make -C "$repo" uninstall DESTDIR="$stage" PREFIX=/opt/hpclock || return 1
  quietly make -C "$repo" uninstall PREFIX="$prefix" || return 1
  local left
  left=$(find "$stage" "$prefix" -type f -o -type l)
  [ -z "$left" ] || { echo "    left behind:"; echo "$left" | sed 's/^/      /'; return 1; }
}

run_tests install_needs_no_cargo_after_make install_lays_out_libraries_headers_and_packages \
            pkg_config_build_runs static_build_runs_without_the_shared_library \
            static_archive_and_fully_static_programs cmake_find_package_build_runs \
            cmake_fortran_target_builds_and_runs fortran_program_builds_against_the_installed_module \
            zeroed_options_make_a_lock_file_the_next_run_can_lock \
            moved_prefix_still_builds_with_pkg_config_and_cmake destdir_stages_and_uninstall_removes
