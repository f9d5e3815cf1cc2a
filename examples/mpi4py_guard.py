#!/usr/bin/env python3
"""The MPI guard in Python (mpi4py), the twin of mpi_guard.c: only rank 0
touches the lock file (rank0_only: the other ranks make no filesystem call,
so 4,000 ranks cost the metadata server one open, not 4,000), rank 0
broadcasts its answer, and all ranks go on or stop together. Rank 0
completes the lock at the end, so a requeued job finds the work done.

Usage: mpirun -np N python mpi4py_guard.py LOCKFILE [WORK_MS]
Exit: 0 worked or already done, 75 another job holds it (EX_TEMPFAIL), 1 error.
"""

import contextlib
import sys
import time

from mpi4py import MPI

import hpclock


def say(line: str) -> None:
    # One write per line: under mpirun the lines of all ranks meet in one
    # stream, and print() may write the text and its newline separately.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    if len(sys.argv) < 2:
        if rank == 0:
            print("usage: mpi4py_guard.py LOCKFILE [WORK_MS]", file=sys.stderr)
        return 1
    path = sys.argv[1]
    work_ms = int(sys.argv[2]) if len(sys.argv) > 2 else 100

    # Every rank calls acquire; with rank0_only, ranks other than 0 get
    # NotRank0 at once (their rank comes from the launcher's environment, so
    # this works before MPI_Init too). `if rank == 0:` around the call does
    # the same with mpi4py's own rank.
    lock = None
    try:
        lock = hpclock.acquire(path, label="mpi4py_guard", rank0_only=True)
        mine = ("OK", "")
    except hpclock.NotRank0:
        mine = ("NOT_RANK0", "")
    except hpclock.Busy as busy:
        mine = ("BUSY", f"held by pid {busy.pid} on {busy.host} (job {busy.job or 'none'}, label {busy.label})")
    except hpclock.Done as done:
        mine = ("DONE", f"completed by pid {done.pid} on {done.host} (job {done.job or 'none'}, label {done.label})")
    except hpclock.Error as error:
        mine = ("ERROR", f"{hpclock.status_name(error.status)}: {error}")
    say(f"rank {rank} of {size} (hpclock.mpi_rank {hpclock.mpi_rank()}): {mine[0]}")

    # Rank 0's answer is the job's answer.
    decision, why = comm.bcast(mine if rank == 0 else None, root=0)
    if decision != "OK":
        if rank == 0:
            say(f"rank 0: {decision}: {why}; all {size} ranks stop")
        return {"BUSY": 75, "DONE": 0}.get(decision, 1)

    # Rank 0 holds the lock for the whole job: released if anything below
    # raises on rank 0 (not completed: a requeue runs the work again).
    with lock if lock is not None else contextlib.nullcontext():
        if rank == 0:
            say(f"rank 0: holding {path} (generation {lock.generation}); all {size} ranks proceed")
        time.sleep(work_ms / 1000)  # the simulation
        comm.Barrier()
        if rank == 0:
            lock.complete()
    return 0


if __name__ == "__main__":
    sys.exit(main())
