#!/usr/bin/env bash
# The Fortran binding's tests: the Fortran test program, run in a fresh
# directory; the check that the module binds every symbol the library exports
# (and nothing it does not); a program using default integers and reals,
# built with and without -fdefault-integer-8 -fdefault-real-8 (the module
# too); and options never initialised, run twice as a non-root user.
#
# Usage: run.sh TEST_PROGRAM LIBRARY MODULE_SOURCE
# FC (default gfortran) compiles the programs this script builds itself.
set -u
. "$(dirname "$0")/../c-tests/harness.sh"
program=$1 library=$2 module=$3
here=$(cd "$(dirname "$0")" && pwd)
libdir=$(cd "$(dirname "$library")" && pwd)
FC=${FC:-gfortran}
FFLAGS="-std=f2008 -Wall -Wextra -Werror -pedantic -O2 -g"
work=$(mktemp -d "${TMPDIR:-/tmp}/hpclock-f-tests-XXXXXX")
trap 'rm -rf "$work"' EXIT
# Another user runs a program from here (options_never_initialised_...).
chmod 755 "$work"

fortran_program_checks_pass() {
  [ -x "$program" ] || { missing "gfortran (to build $program)"; return; }
  local dir status
  dir=$(mktemp -d "${TMPDIR:-/tmp}/hpclock-fortran-XXXXXX")
  "$program" "$dir" | sed 's/^/    /'
  status=${PIPESTATUS[0]}
  rm -rf "$dir"
  return "$status"
}

module_binds_every_exported_symbol() {
  bash "$here/check_interfaces.sh" "$library" "$module" | sed 's/^/    /'
  return "${PIPESTATUS[0]}"
}

# build_kinds NAME MODULE_FLAGS PROGRAM_FLAGS: the module and test_kinds.f90,
# each compiled with its own flags, into $work/NAME/test_kinds.
build_kinds() {
  local name=$1 module_flags=$2 program_flags=$3
  mkdir -p "$work/$name"
  quietly "$FC" $FFLAGS $module_flags -J "$work/$name" -c "$module" -o "$work/$name/hpclock.o" || return 1
  quietly "$FC" $FFLAGS $program_flags -I "$work/$name" "$here/test_kinds.f90" "$work/$name/hpclock.o" \
    -o "$work/$name/test_kinds" -L"$libdir" -lhpclock -Wl,-rpath,"$libdir"
}

run_kinds() {
  local name=$1 expected_kind=$2 out
  mkdir -p "$work/$name/run"
  out=$("$work/$name/test_kinds" "$work/$name/run" 2>&1) || { echo "$out" | sed "s/^/    $name: /"; return 1; }
  echo "$out" | sed "s/^/    $name: /"
  grep -q "^default integer kind $expected_kind, default real kind $expected_kind$" <<<"$out" || {
    echo "    $name: expected default kinds $expected_kind"; return 1; }
}

# An application's own flags: its default integers and reals are 8 bytes,
# and it compiles the module with the same flags, or without them.
default_integer_8_program_builds_and_round_trips() {
  need "$FC" || return
  local i8="-fdefault-integer-8 -fdefault-real-8"
  build_kinds default "" "" || return 1
  build_kinds i8 "$i8" "$i8" || return 1
  build_kinds i8_program_only "" "$i8" || return 1
  run_kinds default 4 && run_kinds i8 8 && run_kinds i8_program_only 8
}

as_user() {
  if [ "$(id -u)" = 0 ]; then
    setpriv --reuid="$(id -u nobody)" --regid="$(id -g nobody)" --clear-groups -- "$@"
  else
    "$@"
  fi
}

# type(hpclock_options) never given hpclock_options_init, as declared and
# with mode 0: the lock file gets 0644 less the umask, and the same
# (non-root) user's next run can lock it.
options_never_initialised_make_a_file_the_next_run_can_lock() {
  need "$FC" || return
  if [ "$(id -u)" = 0 ]; then need setpriv || return; fi
  mkdir -p "$work/zero"
  quietly "$FC" $FFLAGS -J "$work/zero" -c "$module" -o "$work/zero/hpclock.o" || return 1
  quietly "$FC" $FFLAGS -I "$work/zero" "$here/zero_options.f90" "$work/zero/hpclock.o" \
    -o "$work/zero/zero_options" -L"$libdir" -lhpclock -Wl,-rpath,"$libdir" || return 1
  local locks=$work/zero/locks how mode
  mkdir -m 1777 "$locks" || return 1
  for how in declared zero; do
    (umask 022 && as_user "$work/zero/zero_options" "$locks/$how.lock" "$how") | sed "s/^/    $how: /"
    [ "${PIPESTATUS[0]}" = 0 ] || { echo "    $how: the first run failed"; return 1; }
    mode=$(stat -c %a "$locks/$how.lock")
    [ "$mode" = 644 ] || { echo "    $how: the lock file has mode $mode, expected 644 (umask 022)"; return 1; }
    as_user "$work/zero/zero_options" "$locks/$how.lock" "$how" | sed "s/^/    $how: /"
    [ "${PIPESTATUS[0]}" = 0 ] || { echo "    $how: the second run could not lock the file the first created"; return 1; }
  done
  echo "    both files have mode 644 (umask 022); the second runs locked them"
}

run_tests fortran_program_checks_pass module_binds_every_exported_symbol \
          default_integer_8_program_builds_and_round_trips \
          options_never_initialised_make_a_file_the_next_run_can_lock
