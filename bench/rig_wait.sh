#!/usr/bin/env bash
# Run by bench/bench.py through c-tests/fs_rig.sh (`bash c-tests/fs_rig.sh
# bench/rig_wait.sh`), inside the rig's private mounts: one waiter's tries
# under strace on the FUSE mounts that stand in for shared filesystems.
#   - flock mode on HPCLOCK_RIG_SPLIT_A (bindfs: not node-private, so the
#     waiter polls gently): its lock attempts, flock(2) calls;
#   - lease mode across the pair HPCLOCK_RIG_LEASE_A/B (two "nodes" whose
#     kernel locks do not meet): a holder through A, the waiter through B, lease
#     1 s as in the tests: its looks at the ladder, one listing (getdents64) each.
# The waiter waits HPCLOCK_BENCH_WAIT_MS and must be told BUSY at its deadline.
# Writes its traces to HPCLOCK_BENCH_OUT; says why not in rig-missing there
# when the rig could not be mounted.
set -u
out=${HPCLOCK_BENCH_OUT:?}
bench_c=${HPCLOCK_BENCH_C:?}
ms=${HPCLOCK_BENCH_WAIT_MS:-6000}
if [ -z "${HPCLOCK_RIG_SPLIT_A:-}" ]; then
  echo "${HPCLOCK_RIG_MISSING:-no rig variables}" > "$out/rig-missing"
  exit 0
fi
status=0
mkdir -p "$HPCLOCK_RIG_SPLIT_A/bench-wait" "$HPCLOCK_RIG_LEASE_A/bench-lease"
strace -qq -ttt -e trace=flock,fcntl -o "$out/fuse-wait.trace" \
  "$bench_c" waitbusy "$HPCLOCK_RIG_SPLIT_A/bench-wait" "$ms" > "$out/fuse-wait.out" || status=1
strace -qq -ttt -e trace=%file,getdents64,flock -o "$out/lease-wait.trace" \
  "$bench_c" waitbusy "$HPCLOCK_RIG_LEASE_B/bench-lease" "$ms" 1000 "$HPCLOCK_RIG_LEASE_A/bench-lease" \
  > "$out/lease-wait.out" || status=1
exit $status
