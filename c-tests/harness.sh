# The shell tests' harness, the C harness's twin (c-tests/harness.h): each test
# is a function that returns 0 (PASS), 2 (SKIPPED: a tool is missing) or
# anything else (FAIL); run_tests prints each with its time and ends with the
# line "N passed, M failed".

# A missing tool skips a test on a developer's machine, and fails it in CI,
# where nothing may be skipped.
missing() {
  if [ "${CI:-}" = true ]; then
    echo "    $1 is not installed, and CI=true: failing rather than skipping"
    return 1
  fi
  echo "    $1 is not installed"
  return 2
}

# need TOOL...: return like `missing` for the first tool not on PATH.
need() {
  local tool
  for tool; do command -v "$tool" >/dev/null 2>&1 || { missing "$tool"; return; }; done
}

# Runs a command, showing its output only if it fails.
quietly() {
  local out
  out=$("$@" 2>&1) || { echo "$out" | tail -20 | sed 's/^/    /'; return 1; }
}

# run_tests TEST...: runs each test function; the exit status says whether all passed.
run_tests() {
  local passed=0 failed=0 skipped=0 test start status word elapsed
  for test; do
    start=$EPOCHREALTIME
    "$test"
    status=$?
    elapsed=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
    case $status in
      0) word=PASS; passed=$((passed + 1)) ;;
      2) word=SKIPPED; skipped=$((skipped + 1)) ;;
      *) word=FAIL; failed=$((failed + 1)) ;;
    esac
    printf '%-64s %s (%ss)\n' "$test" "$word" "$elapsed"
  done
  if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
  else
    echo "$passed passed, $failed failed"
  fi
  [ "$failed" = 0 ]
}
