#!/usr/bin/env bash
# The `hpclock` command as job scripts use it, with real processes: two runs
# at once, kill -9 of the guard while its command runs, --once and reset,
# signals passed on, info and check.
#
# Usage: test_cli.sh HPCLOCK_BINARY
set -u
. "$(dirname "$0")/harness.sh"
hpclock=$(realpath "$1")
root=$(mktemp -d "${TMPDIR:-/tmp}/hpclock-cli-XXXXXX")
trap 'rm -rf "$root"' EXIT

# Waits up to 10 s for a file to appear.
wait_for() {
  local i
  for ((i = 0; i < 1000; i++)); do [ -e "$1" ] && return 0; sleep 0.01; done
  echo "    $1 never appeared"
  return 1
}

two_runs_at_once_exactly_one_runs_the_other_names_the_holder() {
  local lock=$root/two.lock
  "$hpclock" run "$lock" -- sh -c "echo ran >> '$root/two.count'; sleep 2" 2>"$root/two.1.err" &
  local first=$!
  "$hpclock" run "$lock" -- sh -c "echo ran >> '$root/two.count'; sleep 2" 2>"$root/two.2.err" &
  local second=$!
  wait "$first"; local status1=$?
  wait "$second"; local status2=$?
  [ "$(wc -l < "$root/two.count")" = 1 ] || { echo "    the command ran $(wc -l < "$root/two.count") times"; return 1; }
  local winner loser_err
  if [ "$status1" = 0 ] && [ "$status2" = 75 ]; then winner=$first loser_err=$root/two.2.err
  elif [ "$status1" = 75 ] && [ "$status2" = 0 ]; then winner=$second loser_err=$root/two.1.err
  else echo "    exit statuses $status1 and $status2 (expected 0 and 75)"; return 1
  fi
  grep -q "held by pid $winner on $(uname -n)" "$loser_err" || { sed 's/^/    /' "$loser_err"; return 1; }
}

kill_9_of_the_guard_keeps_the_lock_until_the_command_ends() {
  local lock=$root/kill.lock
  "$hpclock" run "$lock" -- sh -c "touch '$root/kill.started'; sleep 2; touch '$root/kill.ended'" &
  local guard=$!
  wait_for "$root/kill.started" || return 1
  kill -9 "$guard"
  wait "$guard" 2>/dev/null
  # The guard is gone, its command still runs and still holds the lock.
  [ ! -e "$root/kill.ended" ] || { echo "    the command ended too early for this test"; return 1; }
  "$hpclock" run "$lock" -- touch "$root/kill.second" 2>"$root/kill.err"
  local status=$?
  [ "$status" = 75 ] || { echo "    second run: status $status while the first command still ran"; return 1; }
  [ ! -e "$root/kill.second" ] || { echo "    a second copy ran"; return 1; }
  # Once the command ends, the lock is free and the next run is told its predecessor died.
  "$hpclock" run --wait 30 "$lock" -- touch "$root/kill.second" || return 1
  [ -e "$root/kill.ended" ] || { echo "    the second run started before the first command ended"; return 1; }
  [ -e "$root/kill.second" ]
}

once_skips_done_work_retries_failed_work_and_reset_reenables() {
  local lock=$root/once.lock
  "$hpclock" run --once "$lock" -- true || return 1
  "$hpclock" run --once "$lock" -- touch "$root/once.again" 2>"$root/once.err"
  local status=$?
  [ "$status" = 76 ] || { echo "    status $status after the work was done (expected 76)"; return 1; }
  [ ! -e "$root/once.again" ] || { echo "    the command ran although the work was done"; return 1; }
  grep -q "already done" "$root/once.err" || return 1
  "$hpclock" run --once --done-exit 0 "$lock" -- true 2>/dev/null || { echo "    --done-exit 0 ignored"; return 1; }

  local failing=$root/failing.lock
  "$hpclock" run --once "$failing" -- false
  [ $? = 1 ] || { echo "    a failing command's status was not passed on"; return 1; }
  "$hpclock" run --once "$failing" -- touch "$root/failing.retried" || return 1
  [ -e "$root/failing.retried" ] || { echo "    work that failed was not retried"; return 1; }

  "$hpclock" reset "$lock" >/dev/null || return 1
  "$hpclock" run --once "$lock" -- touch "$root/once.after-reset" || return 1
  [ -e "$root/once.after-reset" ] || { echo "    reset did not re-enable the work"; return 1; }
}

sigterm_reaches_the_command_and_the_status_says_so() {
  local lock=$root/term.lock
  # The command gives up by itself after 10 s, so a signal that never arrives
  # fails the test instead of hanging it.
  "$hpclock" run "$lock" -- sh -c "trap 'touch \"$root/term.got\"; exit 143' TERM; touch '$root/term.started'; i=0; while [ \$i -lt 200 ]; do sleep 0.05; i=\$((i + 1)); done" &
  local guard=$!
  wait_for "$root/term.started" || return 1
  kill -TERM "$guard"
  wait "$guard"
  local status=$?
  [ -e "$root/term.got" ] || { echo "    the command never saw SIGTERM"; return 1; }
  [ "$status" = 143 ] || { echo "    status $status (expected 143)"; return 1; }
  # A command that does not catch it dies of it: 128 + 15 again, and the lock is free.
  "$hpclock" run "$lock" -- sh -c "touch '$root/term.started2'; exec sleep 10" &
  guard=$!
  wait_for "$root/term.started2" || return 1
  kill -USR1 "$guard"
  wait "$guard"
  status=$?
  [ "$status" = 138 ] || { echo "    status $status after SIGUSR1 (expected 138)"; return 1; }
  "$hpclock" run "$lock" -- true || { echo "    the lock was not released"; return 1; }
}

info_json_names_the_holder_and_check_knows_tmpfs() {
  need python3 || return
  local lock=$root/info.lock
  SLURM_JOB_ID=8812345 "$hpclock" run --label "step 2" "$lock" -- sh -c "touch '$root/info.started'; sleep 3" &
  local guard=$!
  wait_for "$root/info.started" || return 1
  "$hpclock" info --json "$lock" > "$root/info.json" || return 1
  "$hpclock" info "$lock" > "$root/info.txt" || return 1
  kill "$guard"; wait "$guard" 2>/dev/null
  python3 - "$root/info.json" "$guard" <<'EOF' || { sed 's/^/    /' "$root/info.json"; return 1; }
import json, sys
info = json.load(open(sys.argv[1]))
assert info["state"] == "held", info
assert info["pid"] == int(sys.argv[2]), info
assert info["alive"] == 1 and info["job_id"] == "8812345" and info["label"] == "step 2", info
assert info["generation"] == 1 and info["acquired_unix_ms"] > 0, info
EOF
  grep -q "held by pid $guard on $(uname -n), job 8812345" "$root/info.txt" || { sed 's/^/    /' "$root/info.txt"; return 1; }

  [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] || { echo "    /dev/shm is not a tmpfs here"; return 1; }
  "$hpclock" check --json /dev/shm/hpclock-check.lock > "$root/check.json"
  local status=$?
  [ "$status" = 1 ] || { echo "    check of a tmpfs exited $status (expected 1: not cluster-wide)"; return 1; }
  python3 - "$root/check.json" <<'EOF' || { sed 's/^/    /' "$root/check.json"; return 1; }
import json, sys
check = json.load(open(sys.argv[1]))
assert check["scope"] == "node" and check["fs_type"] == "tmpfs", check
assert "private to this node" in check["detail"], check
EOF
}

rank0_runs_only_on_rank_0_and_touches_nothing_elsewhere() {
  local lock=$root/rank.lock
  OMPI_COMM_WORLD_RANK=2 "$hpclock" run --rank0 "$lock" -- touch "$root/rank.ran"
  local status=$?
  [ "$status" = 77 ] || { echo "    rank 2 exited $status (expected 77)"; return 1; }
  [ ! -e "$root/rank.ran" ] && [ ! -e "$lock" ] || { echo "    rank 2 ran or created the lock"; return 1; }
  OMPI_COMM_WORLD_RANK=2 "$hpclock" run --rank0 --not-rank0-exit 0 "$lock" -- true || return 1
  OMPI_COMM_WORLD_RANK=0 "$hpclock" run --rank0 "$lock" -- touch "$root/rank.ran" || return 1
  [ -e "$root/rank.ran" ]
}

require_cluster_refuses_a_node_private_lock() {
  "$hpclock" run --require-cluster "$root/cluster.lock" -- touch "$root/cluster.ran" 2>"$root/cluster.err"
  local status=$?
  [ "$status" = 78 ] || { echo "    exited $status (expected 78)"; return 1; }
  [ ! -e "$root/cluster.ran" ] || return 1
  grep -q "private to this node" "$root/cluster.err" || { sed 's/^/    /' "$root/cluster.err"; return 1; }
}

help_shows_a_slurm_example_for_each_subcommand() {
  local sub
  for sub in run info check reset; do
    "$hpclock" "$sub" --help | grep -q 'hpclock '"$sub" || { echo "    no example in $sub --help"; return 1; }
  done
  "$hpclock" run --help | grep -q '#SBATCH' || return 1
}

a_command_that_cannot_start_is_127_and_frees_the_lock() {
  "$hpclock" run "$root/missing.lock" -- /no/such/program 2>"$root/missing.err"
  local status=$?
  [ "$status" = 127 ] || { echo "    exited $status (expected 127)"; return 1; }
  grep -q "cannot run /no/such/program" "$root/missing.err" || return 1
  "$hpclock" run "$root/missing.lock" -- true
}

run_tests two_runs_at_once_exactly_one_runs_the_other_names_the_holder \
  kill_9_of_the_guard_keeps_the_lock_until_the_command_ends \
  once_skips_done_work_retries_failed_work_and_reset_reenables \
  sigterm_reaches_the_command_and_the_status_says_so \
  info_json_names_the_holder_and_check_knows_tmpfs \
  rank0_runs_only_on_rank_0_and_touches_nothing_elsewhere \
  require_cluster_refuses_a_node_private_lock \
  help_shows_a_slurm_example_for_each_subcommand \
  a_command_that_cannot_start_is_127_and_frees_the_lock
