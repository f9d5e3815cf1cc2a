#!/usr/bin/env bash
# hpclock as its users get it: `make install` into a fresh prefix, then a C
# program built with pkg-config, one with CMake find_package(hpclock), one
# linked statically, and the Fortran test built against the installed module
# source — each run. Then DESTDIR staging and `make uninstall`.
#
# Usage: test_install.sh   (from the repository's top directory)
# Tools that are missing (pkg-config, cmake, gfortran) make their tests
# SKIPPED here, and failures with CI=true.
set -u
. "$(dirname "$0")/harness.sh"
repo=$(pwd)
root=$(mktemp -d "${TMPDIR:-/tmp}/hpclock-install-XXXXXX")
trap 'rm -rf "$root"' EXIT
prefix=$root/prefix
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig





install_lays_out_libraries_headers_and_packages() {
  quietly make -C "$repo" install PREFIX="$prefix" || return 1
  local version f
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)
  for f in bin/hpclock "lib/libhpclock.so.$version" lib/libhpclock.a include/hpclock.h include/hpclock.f90 \
           lib/pkgconfig/hpclock.pc lib/cmake/hpclock/hpclockConfig.cmake lib/cmake/hpclock/hpclockConfigVersion.cmake; do
    [ -f "$prefix/$f" ] || { echo "    missing $f"; return 1; }
  done
  [ "$(readlink "$prefix/lib/libhpclock.so.0")" = "libhpclock.so.$version" ] || { echo "    bad libhpclock.so.0 link"; return 1; }
  [ "$(readlink "$prefix/lib/libhpclock.so")" = libhpclock.so.0 ] || { echo "    bad libhpclock.so link"; return 1; }
  readelf -d "$prefix/lib/libhpclock.so.$version" | grep -q 'SONAME.*\[libhpclock\.so\.0\]' || { echo "    no soname"; return 1; }
  grep -q "^Libs.private: .*-lpthread" "$prefix/lib/pkgconfig/hpclock.pc" || { echo "    no Libs.private"; return 1; }
  "$prefix/bin/hpclock" --version | grep -q "^hpclock $version$" || { echo "    bin/hpclock does not run"; return 1; }
}

pkg_config_build_runs() {
  need pkg-config || return
  [ "$(pkg-config --modversion hpclock)" = "$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)" ] || return 1
  quietly cc -std=c11 -Wall -Wextra -Werror "$repo/c-tests/install/use_hpclock.c" -o "$root/use_pkgconfig" \
    $(pkg-config --cflags --libs hpclock) -Wl,-rpath,"$(pkg-config --variable=libdir hpclock)" || return 1
  quietly "$root/use_pkgconfig" "$root/pkgconfig.lock" || return 1
  ldd "$root/use_pkgconfig" | grep -q "libhpclock.so.0 => $prefix/lib/libhpclock.so.0" || { ldd "$root/use_pkgconfig"; return 1; }
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

cmake_find_package_build_runs() {
  need cmake || return
  quietly cmake -S "$repo/c-tests/install" -B "$root/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" || return 1
  quietly cmake --build "$root/cmake-build" || return 1
  quietly "$root/cmake-build/use_hpclock" "$root/cmake.lock" || return 1
  ldd "$root/cmake-build/use_hpclock" | grep -q "$prefix/lib/libhpclock.so.0" || { echo "    not linked to the installed library"; return 1; }
  quietly "$root/cmake-build/use_hpclock_static" "$root/cmake-static.lock" || return 1
  if ldd "$root/cmake-build/use_hpclock_static" | grep -q libhpclock; then echo "    static target is shared"; return 1; fi
  # an incompatible version is refused
  mkdir -p "$root/cmake-too-new" && sed 's/find_package(hpclock 0.1 REQUIRED)/find_package(hpclock 7.0 REQUIRED)/' \
    "$repo/c-tests/install/CMakeLists.txt" > "$root/cmake-too-new/CMakeLists.txt"
  cp "$repo/c-tests/install/use_hpclock.c" "$root/cmake-too-new/"
  if cmake -S "$root/cmake-too-new" -B "$root/cmake-too-new/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null 2>&1; then
    echo "    find_package(hpclock 7.0) accepted version 0.x"
    return 1
  fi
}

fortran_program_builds_against_the_installed_module() {
  need gfortran || return
  mkdir -p "$root/fortran"
  quietly gfortran -std=f2008 -Wall -Wextra -Werror -J "$root/fortran" -c "$prefix/include/hpclock.f90" \
    -o "$root/fortran/hpclock.o" || return 1
  quietly gfortran -std=f2008 -Wall -Wextra -Werror -I "$root/fortran" "$repo/f-tests/test_hpclock.f90" \
    "$root/fortran/hpclock.o" -o "$root/fortran/test_hpclock" -L"$prefix/lib" -lhpclock -Wl,-rpath,"$prefix/lib" || return 1
  mkdir -p "$root/fortran/run"
  "$root/fortran/test_hpclock" "$root/fortran/run" | tail -1 | sed 's/^/    fortran: /'
  [ "${PIPESTATUS[0]}" = 0 ]
}

destdir_stages_and_uninstall_removes() {
  local stage=$root/stage
  quietly make -C "$repo" install DESTDIR="$stage" PREFIX=/opt/hpclock || return 1
  [ -f "$stage/opt/hpclock/lib/pkgconfig/hpclock.pc" ] || { echo "    nothing staged"; return 1; }
  [ ! -e /opt/hpclock ] || { echo "    DESTDIR ignored: /opt/hpclock exists"; return 1; }
  grep -q '^prefix=/opt/hpclock$' "$stage/opt/hpclock/lib/pkgconfig/hpclock.pc" || return 1
  quietly make -C "$repo" uninstall DESTDIR="$stage" PREFIX=/opt/hpclock || return 1
  quietly make -C "$repo" uninstall PREFIX="$prefix" || return 1
  local left
  left=$(find "$stage" "$prefix" -type f -o -type l)
  [ -z "$left" ] || { echo "    left behind:"; echo "$left" | sed 's/^/      /'; return 1; }
}

run_tests install_lays_out_libraries_headers_and_packages pkg_config_build_runs \
            static_build_runs_without_the_shared_library cmake_find_package_build_runs \
            fortran_program_builds_against_the_installed_module destdir_stages_and_uninstall_removes
