#!/usr/bin/env bash
# The MPI rank-0 guard under real Open MPI (examples/mpi_guard.c): only rank 0
# touches the lock file, two jobs started together on one lock let exactly one
# proceed, and the loser's rank 0 names the holder.
#
# Usage: test_mpi.sh MPI_GUARD_BINARY [FORTRAN_MPI_GUARD_BINARY]
# Without mpirun or strace the tests say SKIPPED, and fail with CI=true.
set -u
. "$(dirname "$0")/harness.sh"
guard=$(realpath -m "$1")
guard_f=$(realpath -m "${2:-/nonexistent}")
root=$(mktemp -d "${TMPDIR:-/tmp}/hpclock-mpi-XXXXXX")
trap 'rm -rf "$root"' EXIT

mpirun_args=(--oversubscribe -np 4)
[ "$(id -u)" = 0 ] && mpirun_args+=(--allow-run-as-root)
# One machine: start ranks locally without ssh (plm isolated), talk through
# shared memory only, and skip the single-copy mechanism, which strace's
# ptrace would otherwise disturb.
export OMPI_MCA_plm=isolated OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none




need_guard() { # need_guard TOOL...: the guard program (built with mpicc) and these tools
  [ -x "$guard" ] || { missing "mpicc (to build $guard)"; return; }
  need "$@"
}

only_rank_0_acquires_and_the_others_know_their_rank() {
  need_guard mpirun || return
  local out=$root/one.out
  mpirun "${mpirun_args[@]}" "$guard" "$root/one.lock" 100 >"$out" 2>&1 || { cat "$out"; return 1; }
  grep -q '^rank 0 of 4 (hpclock_mpi_rank 0): HPCLOCK_OK$' "$out" || { cat "$out"; return 1; }
  local r
  for r in 1 2 3; do
    grep -q "^rank $r of 4 (hpclock_mpi_rank $r): HPCLOCK_NOT_RANK0\$" "$out" || { cat "$out"; return 1; }
  done
  [ "$(grep -c ': HPCLOCK_OK$' "$out")" = 1 ] || { cat "$out"; return 1; }
  grep -q '^state=done$' "$root/one.lock" || { cat "$root/one.lock"; return 1; }
}

a_requeued_job_finds_the_work_done() {
  need_guard mpirun || return
  local out=$root/again.out
  mpirun "${mpirun_args[@]}" "$guard" "$root/again.lock" 50 >/dev/null 2>&1 || return 1
  mpirun "${mpirun_args[@]}" "$guard" "$root/again.lock" 50 >"$out" 2>&1 || { cat "$out"; return 1; }
  grep -q '^rank 0: HPCLOCK_DONE: completed by pid' "$out" || { cat "$out"; return 1; }
  ! grep -q 'ranks proceed' "$out" || { cat "$out"; return 1; }
}

two_jobs_started_together_exactly_one_proceeds() {
  need_guard mpirun || return
  local lock=$root/two.lock
  # Each works 8 s: ample overlap even when one mpirun starts slowly.
  # Each job its own TMPDIR: two mpiruns started at once race to create
  # Open MPI's session directory there (/tmp/ompi.HOST.UID), and the loser
  # dies with "mkdir ... File exists" (Open MPI 4.1).
  mkdir -p "$root/tmp1" "$root/tmp2"
  TMPDIR=$root/tmp1 mpirun "${mpirun_args[@]}" "$guard" "$lock" 8000 >"$root/job1.out" 2>&1 &
  local job1=$!
  TMPDIR=$root/tmp2 mpirun "${mpirun_args[@]}" "$guard" "$lock" 8000 >"$root/job2.out" 2>&1 &
  local job2=$!
  wait "$job1"; local status1=$?
  wait "$job2"; local status2=$?
  local winner loser
  if [ "$status1" = 0 ] && [ "$status2" = 75 ]; then
    winner=$root/job1.out loser=$root/job2.out
  elif [ "$status1" = 75 ] && [ "$status2" = 0 ]; then
    winner=$root/job2.out loser=$root/job1.out
  else
    echo "    exit statuses $status1 and $status2 (expected 0 and 75)"
    cat "$root/job1.out" "$root/job2.out"
    return 1
  fi
  grep -q 'all 4 ranks proceed' "$winner" || { cat "$winner"; return 1; }
  ! grep -q 'ranks proceed' "$loser" || { cat "$loser"; return 1; }
  # The loser's rank 0 names the holder: the winner's rank 0, whose pid the
  # record in the lock file still shows.
  local holder_pid
  holder_pid=$(sed -n 's/^pid=//p' "$lock")
  grep -q "^rank 0: HPCLOCK_BUSY: held by pid $holder_pid on $(uname -n) (job [^,]*, label mpi_guard); all 4 ranks stop\$" "$loser" \
    || { echo "    holder pid $holder_pid"; cat "$loser"; return 1; }
}

fortran_guard_acquires_on_rank_0_only() {
  [ -x "$guard_f" ] || { missing "mpifort (to build $guard_f)"; return; }
  need mpirun || return
  local out=$root/fortran.out
  mpirun "${mpirun_args[@]}" "$guard_f" "$root/fortran.lock" >"$out" 2>&1 || { cat "$out"; return 1; }
  grep -q '^rank 0 of 4: HPCLOCK_OK$' "$out" || { cat "$out"; return 1; }
  [ "$(grep -c ': HPCLOCK_NOT_RANK0$' "$out")" = 3 ] || { cat "$out"; return 1; }
  grep -q '^state=done$' "$root/fortran.lock" || return 1
  mpirun "${mpirun_args[@]}" "$guard_f" "$root/fortran.lock" >"$out" 2>&1 || { cat "$out"; return 1; }
  grep -q '^rank 0: HPCLOCK_DONE: completed by pid' "$out" || { cat "$out"; return 1; }
}

ranks_other_than_0_make_no_filesystem_call_on_the_lock() {
  need_guard mpirun strace || return
  local lock=$root/traced.lock
  # Each rank runs under its own strace, writing every path-taking system
  # call (%file) to trace.RANK.
  mpirun "${mpirun_args[@]}" sh -c 'exec strace -f -qq -e trace=%file -o "$0.$OMPI_COMM_WORLD_RANK" "$1" "$2" 50' \
    "$root/trace" "$guard" "$lock" >"$root/traced.out" 2>&1 || { cat "$root/traced.out"; return 1; }
  grep -q "\"$lock\"" "$root/trace.0" || { echo "    rank 0 never opened the lock file?"; return 1; }
  local r
  for r in 1 2 3; do
    [ -s "$root/trace.$r" ] || { echo "    no trace for rank $r"; return 1; }
    if grep "$lock" "$root/trace.$r"; then
      echo "    rank $r touched the lock path"
      return 1
    fi
  done
}

run_tests only_rank_0_acquires_and_the_others_know_their_rank a_requeued_job_finds_the_work_done \
            two_jobs_started_together_exactly_one_proceeds fortran_guard_acquires_on_rank_0_only \
            ranks_other_than_0_make_no_filesystem_call_on_the_lock
