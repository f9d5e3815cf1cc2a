#!/usr/bin/env bash
# The `hpclock` command as job scripts use it, with real processes: two runs
# at once, kill -9 of the guard while its command runs, --once and reset,
# signals passed on, info and check; and what the command owes its users:
# COMMAND's signal mask and dispositions, --once after a signal, done under a
# race, files that are not lock files, bad --wait values, what info prints.
#
# Usage: test_cli.sh HPCLOCK_BINARY SIGNAL_CATCHER
# (SIGNAL_CATCHER: c-tests/signal_catcher.c, built; see the comment there.)
set -u
. "$(dirname "$0")/harness.sh"
hpclock=$(realpath "$1")
catcher=${2:+$(realpath "$2")}
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

# ---- what the command owes COMMAND, and the files it is given ----

# wait_within SECONDS FILE: waits up to SECONDS (whole) for FILE to appear.
wait_within() {
  local i
  for ((i = 0; i < $1 * 100; i++)); do [ -e "$2" ] && return 0; sleep 0.01; done
  echo "    $2 never appeared (waited $1 s)"
  return 1
}

# The signal catcher (second argument; the Makefile builds and passes it).
have_catcher() {
  [ -n "$catcher" ] && [ -x "$catcher" ] && return 0
  echo "    no signal catcher: usage is test_cli.sh HPCLOCK_BINARY SIGNAL_CATCHER"
  return 1
}

# python3 -c "$with_signals" IGNORED BLOCKED PROGRAM ARG...: execs PROGRAM
# (so $! of a background one is PROGRAM's pid) with exactly the signals named
# in IGNORED ignored (comma-separated, without SIG; "" for none), every other
# disposition at its default, and exactly those in BLOCKED blocked — whatever
# this shell passes on (a background job of a script ignores SIGINT and
# SIGQUIT; python3 itself ignores SIGPIPE and SIGXFSZ).
with_signals='
import os, signal, sys
ignored = {getattr(signal, "SIG" + name) for name in sys.argv[1].split(",") if name}
blocked = {getattr(signal, "SIG" + name) for name in sys.argv[2].split(",") if name}
for number in signal.valid_signals():
    try:
        signal.signal(number, signal.SIG_IGN if number in ignored else signal.SIG_DFL)
    except (OSError, ValueError):
        pass  # SIGKILL, SIGSTOP, and those the C library keeps for itself
signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
# What hpclock will start with: signals the C library keeps for itself (32
# and 33) cannot be reset from here, and may come ignored from our caller.
if os.environ.get("CALLER_STATUS"):
    with open("/proc/self/status") as status, open(os.environ["CALLER_STATUS"], "w") as out:
        out.writelines(line for line in status if line.startswith(("SigBlk:", "SigIgn:")))
os.execvp(sys.argv[3], sys.argv[3:])
'

# sig_line NAME FILE: the hex mask of line NAME (SigBlk, SigIgn) in a status file of the catcher.
sig_line() { sed -n "s/^$1:[[:space:]]*//p" "$2"; }

# stop PID...: ends what a failed test left running (kill -9 by pid), so nothing outlives it.
stop() {
  local pid
  for pid; do [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; done
  for pid; do [ -n "$pid" ] && wait "$pid" 2>/dev/null; done
  return 0
}

# json_field NAME LOCK: one field of `hpclock info --json LOCK`.
json_field() {
  "$hpclock" info --json "$2" | python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

command_starts_with_an_empty_mask_and_keeps_what_the_caller_ignored() {
  need python3 || return
  have_catcher || return 1
  local lock=$root/mask.lock p=$root/mask blocked ignored caller_ignored
  # Started with an empty mask and nothing ignored (but what no program can
  # reset: see with_signals): COMMAND has the same.
  CALLER_STATUS=$p.caller python3 -c "$with_signals" "" "" "$hpclock" run "$lock" -- "$catcher" -t 0 "$p" \
    || { echo "    hpclock run failed"; return 1; }
  blocked=$(sig_line SigBlk "$p.status") ignored=$(sig_line SigIgn "$p.status")
  caller_ignored=$(sig_line SigIgn "$p.caller")
  [ "$(sig_line SigBlk "$p.caller")" = 0000000000000000 ] || { echo "    the caller could not empty its mask"; return 1; }
  [ "$blocked" = 0000000000000000 ] || { echo "    COMMAND started with SigBlk $blocked (expected 0000000000000000, as hpclock was started)"; return 1; }
  [ "$ignored" = "$caller_ignored" ] || { echo "    COMMAND started with SigIgn $ignored (expected $caller_ignored, as hpclock was started)"; return 1; }
  # nohup-style, and as a background job of a script: SIGHUP, SIGINT and SIGQUIT
  # ignored by the caller stay ignored in COMMAND; SIGPIPE, the one exception,
  # is at its default (bits: HUP 1, INT 2, QUIT 4; PIPE would be 1000).
  p=$root/mask-nohup
  CALLER_STATUS=$p.caller python3 -c "$with_signals" HUP,INT,QUIT,PIPE "" "$hpclock" run "$lock" -- "$catcher" -t 0 "$p" \
    || { echo "    hpclock run failed"; return 1; }
  blocked=$(sig_line SigBlk "$p.status") ignored=$(sig_line SigIgn "$p.status")
  caller_ignored=$(sig_line SigIgn "$p.caller")
  local expected
  expected=$(printf '%016x' $((0x$caller_ignored & ~0x1000)))
  [ "$((0x$caller_ignored & 0x1007))" = $((0x1007)) ] || { echo "    the caller did not ignore HUP, INT, QUIT and PIPE"; return 1; }
  [ "$blocked" = 0000000000000000 ] || { echo "    COMMAND started with SigBlk $blocked (expected 0000000000000000, as hpclock was started)"; return 1; }
  [ "$ignored" = "$expected" ] || { echo "    COMMAND started with SigIgn $ignored; its caller ignored $caller_ignored (expected $expected: those but SIGPIPE)"; return 1; }
}

a_signal_mask_set_by_the_caller_is_kept_for_the_command() {
  need python3 || return
  have_catcher || return 1
  local p=$root/callermask blocked
  # SIGQUIT (bit 4) and SIGUSR2 (bit 800, one hpclock passes on) blocked by the caller.
  python3 -c "$with_signals" "" QUIT,USR2 "$hpclock" run "$root/callermask.lock" -- "$catcher" -t 0 "$p" || { echo "    hpclock run failed"; return 1; }
  blocked=$(sig_line SigBlk "$p.status")
  [ "$blocked" = 0000000000000804 ] || { echo "    COMMAND started with SigBlk $blocked; its caller blocked SIGQUIT and SIGUSR2 (expected 0000000000000804)"; return 1; }
}

each_passed_on_signal_reaches_a_c_command_sent_to_hpclock_or_to_it() {
  need python3 || return
  have_catcher || return 1
  local sig to lock p guard status
  for sig in TERM INT HUP USR1 USR2; do
    for to in hpclock COMMAND; do
      lock=$root/catch-$sig-$to.lock p=$root/catch-$sig-$to
      python3 -c "$with_signals" "" "" "$hpclock" run "$lock" -- "$catcher" -x 42 "$p" 2>"$p.hpclock.err" &
      guard=$!
      wait_for "$p.ready" || { stop "$guard"; return 1; }
      if [ "$to" = hpclock ]; then kill -"$sig" "$guard"; else kill -"$sig" "$(cat "$p.pid")"; fi
      wait_within 5 "$p.got" || {
        echo "    SIG$sig sent to $to never reached COMMAND, which started with $(grep SigBlk "$p.status")"
        stop "$(cat "$p.pid")" "$guard"; return 1; }
      wait "$guard"
      status=$?
      [ "$(cat "$p.got")" = "$sig" ] || { echo "    SIG$sig sent to $to: COMMAND got $(cat "$p.got")"; return 1; }
      [ "$status" = 42 ] || { echo "    SIG$sig sent to $to: hpclock exited $status (expected COMMAND's 42)"; return 1; }
    done
  done
}

a_python_command_with_a_sigterm_handler_sees_a_sigterm_sent_to_hpclock() {
  need python3 || return
  local p=$root/py
  # No shell in between: Python's own handler, as a Python job script has it.
  "$hpclock" run "$root/py.lock" -- python3 -c '
import signal, sys, time
prefix = sys.argv[1]
def on_term(number, frame):
    with open(prefix + ".got", "a") as got:
        got.write("TERM\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
open(prefix + ".ready", "w").close()
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    time.sleep(0.02)
sys.exit(3)' "$p" &
  local guard=$!
  wait_for "$p.ready" || { stop "$guard"; return 1; }
  kill -TERM "$guard"
  wait_within 5 "$p.got" || { echo "    the Python command never saw SIGTERM"; stop $(pgrep -P "$guard" 2>/dev/null) "$guard"; return 1; }
  wait "$guard"
  local status=$?
  [ "$status" = 0 ] || { echo "    hpclock exited $status (expected the Python command's 0)"; return 1; }
}

once_an_exit_0_after_a_passed_on_term_int_or_hup_is_not_done() {
  need python3 || return
  have_catcher || return 1
  local sig lock p guard status state
  for sig in TERM INT HUP; do
    lock=$root/ckpt-$sig.lock p=$root/ckpt-$sig
    # -u: the catcher unblocks signals itself, so this test does not depend on
    # the mask COMMAND inherits (tested above). It checkpoints and exits 0.
    python3 -c "$with_signals" "" "" "$hpclock" run --once "$lock" -- "$catcher" -u -x 0 "$p" 2>"$p.hpclock.err" &
    guard=$!
    wait_for "$p.ready" || { stop "$guard"; return 1; }
    kill -"$sig" "$guard"
    wait_within 5 "$p.got" || { echo "    SIG$sig never reached COMMAND"; stop "$(cat "$p.pid")" "$guard"; return 1; }
    wait "$guard"
    status=$?
    [ "$status" = 0 ] || { echo "    after SIG$sig: hpclock exited $status (expected COMMAND's 0)"; return 1; }
    state=$(json_field state "$lock") || return 1
    [ "$state" = free ] || { echo "    after SIG$sig and exit 0 the lock is $state (expected free: a checkpoint, not the end of the work)"; return 1; }
    "$hpclock" run --once "$lock" -- touch "$p.again" 2>"$p.err"
    status=$?
    [ "$status" = 0 ] && [ -e "$p.again" ] || {
      echo "    the next run --once after SIG$sig exited $status without running COMMAND"; sed 's/^/    /' "$p.err"; return 1; }
    # That run had no signal and exited 0: done.
    state=$(json_field state "$lock") || return 1
    [ "$state" = done ] || { echo "    after a run with no signal that exited 0 the lock is $state (expected done)"; return 1; }
  done
}

two_requeued_copies_of_a_finished_job_both_see_done_never_busy() {
  need python3 || return
  local lock=$root/race.lock marker=$root/race.marker i a b status_a status_b failed=0 first= pairs=500 status state looker
  "$hpclock" run --once "$lock" -- true || return 1
  # The race as it happens: two copies at once, where one may find the lock
  # held for a moment by the other, which is only looking at the done record.
  for ((i = 0; i < pairs; i++)); do
    "$hpclock" run --once --done-exit 0 "$lock" -- touch "$marker" 2>"$root/race.a.err" &
    a=$!
    "$hpclock" run --once --done-exit 0 "$lock" -- touch "$marker" 2>"$root/race.b.err" &
    b=$!
    wait "$a"; status_a=$?
    wait "$b"; status_b=$?
    if [ "$status_a" != 0 ] || [ "$status_b" != 0 ]; then
      failed=$((failed + 1))
      [ -n "$first" ] || first="exit statuses $status_a and $status_b; $(cat "$root/race.a.err" "$root/race.b.err" | grep -v 'already done' | head -1)"
    fi
  done
  [ ! -e "$marker" ] || { echo "    COMMAND ran on a finished lock"; return 1; }
  [ "$failed" = 0 ] || echo "    in $failed of $pairs pairs a copy did not exit 0; the first: $first"
  # The same, every time: another process holds the lock (flock, as a copy
  # looking at the record does) while hpclock runs, and while info looks.
  python3 -c '
import fcntl, sys, time
lock = open(sys.argv[1], "rb")
fcntl.flock(lock, fcntl.LOCK_EX)
open(sys.argv[1] + ".looking", "w").close()
time.sleep(10)' "$lock" &
  looker=$!
  wait_for "$lock.looking" || { stop "$looker"; return 1; }
  "$hpclock" run --once --done-exit 0 "$lock" -- touch "$marker" 2>"$root/race.err"
  status=$?
  state=$(json_field state "$lock")
  stop "$looker"
  [ ! -e "$marker" ] || { echo "    COMMAND ran on a finished lock"; return 1; }
  [ "$status" = 0 ] || { echo "    while another process held the lock of finished work, run --once --done-exit 0 exited $status (expected 0):"; sed 's/^/    /' "$root/race.err"; failed=1; }
  [ "$state" = done ] || { echo "    while another process held the lock of finished work, info said $state (expected done)"; failed=1; }
  [ "$failed" = 0 ]
}

# Size, modification and change times (ns), inode, and checksum of a file.
fingerprint() { stat -c '%s %y %z %i' "$1" && cksum < "$1"; }

a_file_that_is_not_a_lock_file_is_refused_and_left_untouched() {
  local dir=$root/foreign f name before status
  mkdir "$dir" || return 1
  seq 100000 > "$dir/results.csv"
  printf 'hello\n' > "$dir/hello.txt"
  printf '\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00\x3e\x00\xff\xfe\n' > "$dir/binary"
  seq 2000 | head -c 4100 > "$dir/text-of-4100-bytes"
  # Over 4 KiB, and only its first 4096 bytes are blank: not a lock file either.
  { head -c 4096 /dev/zero | tr '\0' ' '; printf 'results\n'; } > "$dir/blank-4096-then-text"
  touch -d '2020-01-02 03:04:05.123456789' "$dir"/*
  sleep 0.05 # a change now would show in the change time
  for name in results.csv hello.txt binary text-of-4100-bytes blank-4096-then-text; do
    f=$dir/$name
    before=$(fingerprint "$f")
    "$hpclock" run "$f" -- touch "$dir.ran" 2>"$dir.err"
    status=$?
    [ ! -e "$dir.ran" ] || { echo "    COMMAND ran with $name as its lock"; return 1; }
    [ "$(fingerprint "$f")" = "$before" ] || { echo "    run changed $name: $before -> $(fingerprint "$f")"; return 1; }
    [ "$status" = 70 ] || { echo "    run with $name as the lock exited $status (expected 70)"; return 1; }
    grep -q "is not a lock file" "$dir.err" || { echo "    run on $name did not say it is not a lock file:"; sed 's/^/    /' "$dir.err"; return 1; }

    "$hpclock" reset "$f" >"$dir.out" 2>"$dir.err"
    status=$?
    [ "$(fingerprint "$f")" = "$before" ] || { echo "    reset changed $name: $before -> $(fingerprint "$f")"; return 1; }
    [ "$status" = 70 ] || { echo "    reset of $name exited $status (expected 70)"; return 1; }
    grep -q "is not a lock file" "$dir.err" || { echo "    reset of $name did not say it is not a lock file:"; sed 's/^/    /' "$dir.err"; return 1; }
  done
}

# write_lock_files DIR: lock files that are not hpclock records but are lock
# files all the same (docs/record.md#what-a-reader-does-with-what-it-finds).
write_lock_files() {
  local gone
  gone=$(sh -c 'echo $$') # a pid that has just ended
  printf '%s\n%s\n' "$gone" "$(date +%s)" > "$1/python-two-lines.lock"
  : > "$1/empty.lock"
  printf '   \n\n  \n' > "$1/blank.lock"
  # A record cut short by a crash: it starts with the record's first line.
  "$hpclock" run "$root/whole.lock" -- true && head -c 30 "$root/whole.lock" > "$1/torn.lock"
}

old_format_empty_blank_and_torn_lock_files_are_taken() {
  local dir=$root/lockfiles f status
  mkdir "$dir" || return 1
  write_lock_files "$dir" || return 1
  for f in "$dir"/*.lock; do
    "$hpclock" run "$f" -- touch "$f.ran" 2>"$dir.err"
    status=$?
    [ "$status" = 0 ] && [ -e "$f.ran" ] || {
      echo "    run with ${f##*/} exited $status without running COMMAND:"; sed 's/^/    /' "$dir.err"; return 1; }
  done
  write_lock_files "$dir" || return 1
  for f in "$dir"/*.lock; do
    "$hpclock" reset "$f" >/dev/null 2>"$dir.err" || { echo "    reset of ${f##*/} failed:"; sed 's/^/    /' "$dir.err"; return 1; }
  done
}

reset_of_a_missing_file_is_an_error_and_creates_nothing() {
  local lock=$root/never-made.lock status
  "$hpclock" reset "$lock" >"$root/reset-missing.out" 2>"$root/reset-missing.err"
  status=$?
  [ ! -e "$lock" ] || { echo "    reset created $lock"; return 1; }
  [ "$status" != 0 ] || { echo "    reset of a missing file exited 0: $(cat "$root/reset-missing.out")"; return 1; }
  grep -qF "$lock" "$root/reset-missing.err" || { echo "    the message does not name the path:"; sed 's/^/    /' "$root/reset-missing.err"; return 1; }
}

wait_refuses_nan_and_infinities_and_minus_1_still_waits() {
  local lock=$root/wait.lock w form status holder
  for w in nan NaN inf -inf infinity; do
    for form in apart joined; do
      if [ "$form" = apart ]; then set -- --wait "$w"; else set -- "--wait=$w"; fi
      timeout 10 "$hpclock" run "$@" "$lock" -- touch "$root/wait.ran" 2>"$root/wait.err"
      status=$?
      [ "$status" = 2 ] || { echo "    run $* exited $status (expected 2, bad usage)"; return 1; }
      [ ! -e "$lock" ] && [ ! -e "$root/wait.ran" ] || { echo "    run $* created the lock or ran COMMAND"; return 1; }
    done
  done
  # A negative number waits without limit: the holder lets go after about a second.
  "$hpclock" run "$lock" -- sh -c "touch '$root/wait.held'; sleep 1; touch '$root/wait.released'" &
  holder=$!
  wait_for "$root/wait.held" || { stop "$holder"; return 1; }
  timeout 20 "$hpclock" run --wait -1 "$lock" -- touch "$root/wait.ran"
  status=$?
  wait "$holder"
  [ "$status" = 0 ] && [ -e "$root/wait.ran" ] || { echo "    run --wait -1 exited $status without running COMMAND"; return 1; }
  [ -e "$root/wait.released" ] || { echo "    run --wait -1 ran COMMAND while the lock was held"; return 1; }
}

info_escapes_control_characters_in_what_it_prints() {
  need python3 || return
  local lock=$root/escape.lock
  "$hpclock" run --label $'step\e[31m red\x07' "$lock" -- true || return 1
  "$hpclock" info "$lock" > "$root/escape.out" || return 1
  python3 - "$root/escape.out" <<'EOF'
import sys
sys.excepthook = lambda kind, value, tb: print(value if kind is AssertionError else "    %s: %s" % (kind.__name__, value))
out = open(sys.argv[1], "rb").read()
assert out.endswith(b"\n"), out
raw = sorted({"0x%02x" % b for b in out[:-1] if b < 0x20})
assert not raw, "    info printed the control bytes %s: %r" % (", ".join(raw), out)
assert b"step" in out and b"red" in out, "    the label is not recognisable: %r" % out
EOF
}

info_json_gives_bytes_that_are_not_utf8_as_name_base64() {
  need python3 || return
  local odd=$root/$'odd-\xfe'.lock
  # The default label is COMMAND's words; these end in bytes that are not UTF-8.
  "$hpclock" run "$root/bytes.lock" -- sh -c 'exit 0' $'\xff\xfe' || return 1
  "$hpclock" run "$odd" -- true || return 1
  "$hpclock" run --label 'étape 2 ✓' "$root/utf8.lock" -- true || return 1
  "$hpclock" info --json "$root/bytes.lock" > "$root/bytes.json" || return 1
  "$hpclock" info --json "$odd" > "$root/odd.json" || return 1
  "$hpclock" info --json "$root/utf8.lock" > "$root/utf8.json" || return 1
  python3 - "$root" "$odd" <<'EOF'
import base64, json, os, sys
sys.excepthook = lambda kind, value, tb: print(value if kind is AssertionError else "    %s: %s" % (kind.__name__, value))
root, odd = sys.argv[1], os.fsencode(sys.argv[2])
def load(name):
    raw = open(os.path.join(root, name), "rb").read()
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError as error:
        sys.exit("    %s is not JSON in UTF-8 (%s): %r" % (name, error, raw))
def check(name, expected):
    info = load(name)
    extra = sorted(k for k in info if k.endswith("_base64"))
    assert extra == sorted(expected), "    %s: _base64 keys %s, expected %s: %r" % (name, extra, sorted(expected), info)
    for key, value in expected.items():
        assert isinstance(info[key[:-len("_base64")]], str), info
        got = base64.b64decode(info[key], validate=True)
        assert got == value, "    %s: %s decodes to %r, expected %r" % (name, key, got, value)
    return info
check("bytes.json", {"label_base64": b"sh -c exit 0 \xff\xfe"})
check("odd.json", {"path_base64": odd})
utf8 = check("utf8.json", {})
assert utf8["label"] == "étape 2 ✓", utf8
EOF
}

run_tests two_runs_at_once_exactly_one_runs_the_other_names_the_holder \
  kill_9_of_the_guard_keeps_the_lock_until_the_command_ends \
  once_skips_done_work_retries_failed_work_and_reset_reenables \
  sigterm_reaches_the_command_and_the_status_says_so \
  info_json_names_the_holder_and_check_knows_tmpfs \
  rank0_runs_only_on_rank_0_and_touches_nothing_elsewhere \
  require_cluster_refuses_a_node_private_lock \
  help_shows_a_slurm_example_for_each_subcommand \
  a_command_that_cannot_start_is_127_and_frees_the_lock \
  command_starts_with_an_empty_mask_and_keeps_what_the_caller_ignored \
  a_signal_mask_set_by_the_caller_is_kept_for_the_command \
  each_passed_on_signal_reaches_a_c_command_sent_to_hpclock_or_to_it \
  a_python_command_with_a_sigterm_handler_sees_a_sigterm_sent_to_hpclock \
  once_an_exit_0_after_a_passed_on_term_int_or_hup_is_not_done \
  two_requeued_copies_of_a_finished_job_both_see_done_never_busy \
  a_file_that_is_not_a_lock_file_is_refused_and_left_untouched \
  old_format_empty_blank_and_torn_lock_files_are_taken \
  reset_of_a_missing_file_is_an_error_and_creates_nothing \
  wait_refuses_nan_and_infinities_and_minus_1_still_waits \
  info_escapes_control_characters_in_what_it_prints \
  info_json_gives_bytes_that_are_not_utf8_as_name_base64
