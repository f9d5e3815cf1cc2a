#!/usr/bin/env bash
# `hpclock run` in lease mode (docs/lease.md#the-command-in-lease-mode), on the two-node rig
# of c-tests/fs_rig.sh: HPCLOCK_RIG_LEASE_A and _B are one directory through
# two mounts whose flock stays on its own mount, and each "node" is a process
# with its own hostname (unshare --uts). Lease 1 s.
#
# Usage: test_lease_cli.sh [HPCLOCK_BINARY]   (default: $HPCLOCK_BIN, or build/bin/hpclock)
# Run through the rig: bash c-tests/fs_rig.sh c-tests/test_lease_cli.sh
# Without the rig (or root and unshare) its tests say SKIPPED, or fail with CI=true.
set -u
here=$(dirname "$0")
. "$here/harness.sh"
hpclock=$(realpath "${1:-${HPCLOCK_BIN:-$here/../build/bin/hpclock}}")
root=$(mktemp -d "${TMPDIR:-/tmp}/hpclock-lease-cli-XXXXXX")
started_pids=()
cleanup() {
  local pid
  for pid in "${started_pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  rm -rf "$root"
}
trap cleanup EXIT

have_rig() {
  if [ -z "${HPCLOCK_RIG_LEASE_A:-}" ] || [ -z "${HPCLOCK_RIG_LEASE_B:-}" ]; then
    missing "the rig (run through c-tests/fs_rig.sh; missing: ${HPCLOCK_RIG_MISSING:-HPCLOCK_RIG_LEASE_A and _B})"
    return
  fi
  need unshare
}

# on_node HOST COMMAND...: COMMAND as a process of "node" HOST, in this
# process (exec all the way down: `on_node ... &` leaves COMMAND's pid in $!).
on_node() {
  local host=$1
  shift
  exec unshare --uts sh -c 'hostname "$1" && shift && exec "$@"' sh "$host" "$@"
}

# Waits up to SECONDS (default 10) for a file to appear.
wait_for() {
  local i limit=$((${2:-10} * 100))
  for ((i = 0; i < limit; i++)); do [ -e "$1" ] && return 0; sleep 0.01; done
  echo "    $1 never appeared"
  return 1
}

# wait_gone PID SECONDS: waits for a process to end; false if it has not.
wait_gone() {
  local i limit=$(($2 * 100))
  for ((i = 0; i < limit; i++)); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.01; done
  return 1
}

# wait_status PID SECONDS: the exit status of a background job of this shell,
# or 124 if it has not ended within SECONDS (then it is killed).
wait_status() {
  if ! wait_gone "$1" "$2"; then
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
    return 124
  fi
  wait "$1"
}

# A COMMAND that says it started (its pid in STARTED), writes TERM to MARKER
# when it gets SIGTERM and exits, and otherwise runs on.
command_with_term_marker() { # STARTED MARKER
  printf 'trap "echo TERM >> %s; exit 0" TERM; echo $$ > %s.tmp && mv %s.tmp %s; while :; do sleep 0.05; done' \
    "$2" "$1" "$1" "$1"
}

# hpclock run --lease 1 LOCK on node-a around a command that records its pid
# in STARTED and a SIGTERM in MARKER; once it runs, sets the caller's
# `wrapper` and `command_pid` (both killed at exit whatever happens).
start_guarded_on_node_a() { # LOCK STARTED MARKER ERRFILE
  (on_node node-a "$hpclock" run --lease 1 "$1" -- sh -c "$(command_with_term_marker "$2" "$3")") 2>"$4" &
  wrapper=$!
  started_pids+=("$wrapper")
  wait_for "$2" || return 1
  command_pid=$(cat "$2")
  started_pids+=("$command_pid")
}

run_stopped_past_three_leases_stops_its_command_and_exits_79() {
  have_rig || return
  local a=$HPCLOCK_RIG_LEASE_A/stopped.lock b=$HPCLOCK_RIG_LEASE_B/stopped.lock
  local started=$root/stopped.started marker=$root/stopped.term took=$root/stopped.took
  local wrapper command_pid
  start_guarded_on_node_a "$a" "$started" "$marker" "$root/stopped.a.err" || return 1
  kill -STOP "$wrapper"
  local stopped_at=$EPOCHREALTIME
  # Node B waits for the lease: after about a lease, within three.
  (on_node node-b "$hpclock" run --lease 1 --wait 10 "$b" -- sh -c "echo took > '$took'; sleep 4") \
    2>"$root/stopped.b.err" &
  local taker=$!
  started_pids+=("$taker")
  wait_for "$took" 10 || { kill -CONT "$wrapper"; sed 's/^/    node-b: /' "$root/stopped.b.err"; return 1; }
  local took_after
  took_after=$(awk -v a="$stopped_at" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
  echo "    node-b took over $took_after s after node-a's wrapper was stopped"
  awk -v t="$took_after" 'BEGIN { exit !(t >= 0.9 && t <= 3.0) }' || { kill -CONT "$wrapper"; return 1; }
  # Past three leases, then wake it: it finds its lease lost.
  local now
  now=$(awk -v a="$stopped_at" -v b="$EPOCHREALTIME" 'BEGIN { s = 3.2 - (b - a); print (s > 0 ? s : 0) }')
  sleep "$now"
  kill -CONT "$wrapper"
  local woke_at=$EPOCHREALTIME status
  wait_status "$wrapper" 15
  status=$?
  local ended_after
  ended_after=$(awk -v a="$woke_at" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
  echo "    node-a's wrapper exited $status $ended_after s after SIGCONT"
  sed 's/^/    node-a: /' "$root/stopped.a.err"
  [ "$status" = 79 ] || { echo "    expected 79 (lease lost)"; return 1; }
  grep -q "lost" "$root/stopped.a.err" || { echo "    the wrapper did not say the lease was lost"; return 1; }
  [ "$(cat "$marker" 2>/dev/null)" = TERM ] || { echo "    COMMAND did not get SIGTERM"; return 1; }
  wait_gone "$command_pid" 5 || { echo "    COMMAND (pid $command_pid) still runs"; return 1; }
  # The taker was not disturbed: it runs its command to the end, status 0.
  wait_status "$taker" 15
  status=$?
  [ "$status" = 0 ] || { echo "    node-b's run exited $status"; sed 's/^/    node-b: /' "$root/stopped.b.err"; return 1; }
}

kill_9_of_the_wrapper_in_lease_mode_kills_its_command_and_frees_the_lease_after_a_lease() {
  have_rig || return
  local a=$HPCLOCK_RIG_LEASE_A/killed.lock b=$HPCLOCK_RIG_LEASE_B/killed.lock
  local started=$root/killed.started marker=$root/killed.term
  local wrapper command_pid
  start_guarded_on_node_a "$a" "$started" "$marker" /dev/null || return 1
  # While it runs, node B is kept out.
  (on_node node-b "$hpclock" run --lease 1 "$b" -- true) 2>"$root/killed.busy.err"
  local status=$?
  [ "$status" = 75 ] || { echo "    node-b's one try exited $status while node-a ran (expected 75)"; return 1; }
  kill -KILL "$wrapper"
  wait "$wrapper" 2>/dev/null
  # PR_SET_PDEATHSIG: COMMAND must not run on unguarded (the lease is not renewed any more).
  wait_gone "$command_pid" 2 || { echo "    COMMAND (pid $command_pid) outlived its killed wrapper"; return 1; }
  [ ! -e "$marker" ] || { echo "    COMMAND got SIGTERM (expected SIGKILL)"; return 1; }
  local before=$EPOCHREALTIME
  (on_node node-b "$hpclock" run --lease 1 --wait 10 "$b" -- true) 2>"$root/killed.b.err"
  status=$?
  local after
  after=$(awk -v a="$before" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
  echo "    node-b ran after $after s"
  [ "$status" = 0 ] || { echo "    node-b exited $status"; sed 's/^/    /' "$root/killed.b.err"; return 1; }
  awk -v t="$after" 'BEGIN { exit !(t >= 0.9 && t <= 3.0) }'
}

lease_options_are_checked() {
  local lock=$root/options.lock
  "$hpclock" run --lease 1 --no-lease "$lock" -- true 2>/dev/null
  [ $? = 2 ] || { echo "    --lease with --no-lease was not a usage error"; return 1; }
  "$hpclock" run --lease 0.05 "$lock" -- true 2>/dev/null
  [ $? = 2 ] || { echo "    --lease 0.05 was not a usage error"; return 1; }
  "$hpclock" run --lease nan "$lock" -- true 2>/dev/null
  [ $? = 2 ] || { echo "    --lease nan was not a usage error"; return 1; }
  "$hpclock" run --lease 0.1 "$lock" -- true || { echo "    --lease 0.1 (the shortest) was refused"; return 1; }
  [ -d "$lock.hpclock" ] || { echo "    --lease made no ladder"; return 1; }
  "$hpclock" run --no-lease "$root/no-lease.lock" -- true || return 1
  [ ! -e "$root/no-lease.lock.hpclock" ] || { echo "    --no-lease made a ladder"; return 1; }
}

run_tests run_stopped_past_three_leases_stops_its_command_and_exits_79 \
  kill_9_of_the_wrapper_in_lease_mode_kills_its_command_and_frees_the_lease_after_a_lease \
  lease_options_are_checked
