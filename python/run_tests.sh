#!/usr/bin/env bash
# `make python-test`: the Python package's tests. Builds the wheel once,
# installs it into a fresh virtual environment under build/python/, with
# pytest and mpi4py from PyPI, and runs pytest with that environment's
# interpreter, so that what the tests import is the installed wheel (with the
# library inside it), never python/src.
#
# Usage: python/run_tests.sh [PYTEST_ARGS...]
# Environment: PYTHON (default python3); HPCLOCK_LIBRARY, the libhpclock.so to
# put in the wheel (default: the wheel's build hook finds one, see
# python/setup.py); HPCLOCK_BIN, the hpclock command to compare
# `python -m hpclock` with. Without python3's venv module or PyPI the tests
# say SKIPPED; with CI=true they fail.
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
. "$repo/c-tests/harness.sh"
PYTHON=${PYTHON:-python3}
out=$repo/build/python
venv=$out/venv
dist=$out/dist
log=$out/pip.log
pip_quiet=(--quiet --disable-pip-version-check)

# A step that needs something missing: SKIPPED (exit 0) or, with CI=true, FAILED.
give_up() {
  missing "$1"
  local status=$?
  if [ "$status" = 2 ]; then echo "python-test SKIPPED"; exit 0; fi
  echo "python-test FAILED"; exit 1
}

# Did pip fail for want of PyPI (rather than because our build is broken)?
offline() {
  grep -q -E 'NewConnectionError|Temporary failure in name resolution|Network is unreachable|Could not find a version that satisfies|No matching distribution found|ConnectionError' "$log"
}

command -v "$PYTHON" >/dev/null 2>&1 || give_up "$PYTHON"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || give_up "the venv module with ensurepip (Debian: python3-venv)"

mkdir -p "$out"
start=$EPOCHREALTIME
rm -rf "$venv" "$dist"
"$PYTHON" -m venv "$venv" || { echo "python-test FAILED: $PYTHON -m venv $venv"; exit 1; }

# The wheel, as `pip install ./python` builds it (in an isolated build
# environment with setuptools and wheel from PyPI).
if ! "$venv/bin/pip" wheel "${pip_quiet[@]}" --no-deps -w "$dist" "$repo/python" >"$log" 2>&1; then
  cat "$log"
  offline && give_up "PyPI (pip could not fetch setuptools and wheel to build the wheel)"
  echo "python-test FAILED: the wheel did not build"; exit 1
fi
wheel=$(ls "$dist"/hpclock-*.whl)
echo "built $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB)"

# Into the fresh venv: the wheel alone (nothing else to install), then the
# test tools.
"$venv/bin/pip" install "${pip_quiet[@]}" --no-index "$wheel" || { echo "python-test FAILED: installing the wheel"; exit 1; }
if ! "$venv/bin/pip" install "${pip_quiet[@]}" pytest >"$log" 2>&1; then
  cat "$log"
  give_up "pytest (from PyPI)"
fi
# mpi4py for the MPI example; test_mpi.py reports it missing if this fails.
"$venv/bin/pip" install "${pip_quiet[@]}" mpi4py >"$log" 2>&1 || { echo "mpi4py did not install:"; tail -5 "$log"; }
awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "venv, wheel and installs: %.1fs\n", b - a }'

# From outside the source tree (build/python is no package's source); the
# tests directory is on sys.path for its helpers only (python/src is not).
cd "$out" || exit 1
HPCLOCK_REPO=$repo HPCLOCK_WHEEL=$wheel "$venv/bin/pytest" -c "$repo/python/pyproject.toml" \
  --rootdir "$repo/python" "$repo/python/tests" "$@"
