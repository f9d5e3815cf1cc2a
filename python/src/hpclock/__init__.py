"""hpclock: an exactly-once guard over the kernel's file locks, for HPC codes.

    import hpclock

    try:
        with hpclock.acquire("/scratch/run42/run.lock", label="step 3") as lock:
            if lock.took_over:
                print("pid", lock.previous.pid, "died holding it: resuming")
            ...                  # the work; stamp outputs with lock.generation
            lock.complete()      # later runs get hpclock.Done
    except hpclock.Busy as busy:
        print("already running:", busy.pid, "on", busy.host, "job", busy.job, "since", busy.since)
    except hpclock.Done:
        pass                     # finished by an earlier run

The package calls libhpclock's C ABI (through ctypes) from the copy of the
library inside the package: the same boundary, and the same lock, as C,
Fortran and the `hpclock` command. It excludes `fcntl.flock` users of the same
file, and reads the `PID\\nTIME\\n` files the classic Python pattern writes.
"""

from ._api import (
    Busy,
    Done,
    Error,
    Flag,
    FsInfo,
    Holder,
    InternalError,
    InvalidError,
    Lock,
    LostError,
    NotAcquired,
    NotRank0,
    NotSupportedError,
    Primitive,
    Scope,
    State,
    Status,
    SystemCallError,
    UnsafeError,
    acquire,
    fs_check,
    holder_info,
    library_path,
    library_version,
    mpi_rank,
    status_name,
)

# The package is built from the same tree as the library it carries: one version.
__version__ = library_version()

FREE = State.FREE
HELD = State.HELD
STALE = State.STALE
DONE = State.DONE

RANK0_ONLY = Flag.RANK0_ONLY
REQUIRE_CLUSTER = Flag.REQUIRE_CLUSTER
SYNC = Flag.SYNC
IGNORE_DONE = Flag.IGNORE_DONE
LEASE = Flag.LEASE
NO_LEASE = Flag.NO_LEASE

__all__ = [
    "acquire", "holder_info", "fs_check", "mpi_rank", "status_name", "library_version", "library_path",
    "Lock", "Holder", "FsInfo", "Status", "State", "Scope", "Primitive", "Flag",
    "NotAcquired", "Busy", "Done", "NotRank0",
    "Error", "InvalidError", "SystemCallError", "NotSupportedError", "UnsafeError", "InternalError", "LostError",
    "FREE", "HELD", "STALE", "DONE", "RANK0_ONLY", "REQUIRE_CLUSTER", "SYNC", "IGNORE_DONE", "LEASE", "NO_LEASE",
]
