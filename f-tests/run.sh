#!/usr/bin/env bash
# The Fortran binding's tests: the Fortran test program, run in a fresh
# directory, and the check that the module binds every symbol the library
# exports (and nothing it does not).
#
# Usage: run.sh TEST_PROGRAM LIBRARY MODULE_SOURCE
set -u
. "$(dirname "$0")/../c-tests/harness.sh"
program=$1 library=$2 module=$3
here=$(dirname "$0")

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

run_tests fortran_program_checks_pass module_binds_every_exported_symbol
