"""The Pythonic layer over the C ABI: acquire() and the Lock it returns, the
outcomes that are not "you hold it" as exceptions (Busy, Done, NotRank0), and
the library's errors as OSError subclasses."""

from __future__ import annotations

import ctypes
import datetime
import enum
import errno as _errno
import math
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Type, Union

from . import _native as n
from . import _text

StrOrBytesPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

__all__ = [
    "Status", "State", "Scope", "Primitive", "Flag", "Holder", "FsInfo", "Lock",
    "NotAcquired", "Busy", "Done", "NotRank0",
    "Error", "InvalidError", "SystemCallError", "NotSupportedError", "UnsafeError", "InternalError", "LostError",
    "acquire", "holder_info", "fs_check", "mpi_rank", "status_name", "library_version", "library_path",
]


class Status(enum.IntEnum):
    """What a C call answers: >= 0 an outcome, < 0 an error (hpclock.h's HPCLOCK_*)."""
    OK = n.OK
    BUSY = n.BUSY
    DONE = n.DONE
    NOT_RANK0 = n.NOT_RANK0
    E_INVALID = n.E_INVALID
    E_OS = n.E_OS
    E_NOTSUP = n.E_NOTSUP
    E_UNSAFE = n.E_UNSAFE
    E_INTERNAL = n.E_INTERNAL
    E_LOST = n.E_LOST


class State(enum.IntEnum):
    """Holder.state (HPCLOCK_STATE_*)."""
    FREE = 0   # nobody holds it: no record yet, or the last holder released it
    HELD = 1   # held now (holder alive, or on another node and not disproven)
    STALE = 2  # the record says held, but the holder is gone: the next acquire takes over
    DONE = 3   # the work was completed (Lock.complete)


class Scope(enum.IntEnum):
    """FsInfo.scope: how far exclusion reaches on a filesystem (HPCLOCK_SCOPE_*)."""
    UNKNOWN = 0
    NODE = 1
    CLUSTER = 2
    SPLIT = 3
    NONE = 4


class Primitive(enum.IntEnum):
    """FsInfo.primitive: what acquire uses there (HPCLOCK_PRIMITIVE_*)."""
    FLOCK = 1
    OFD = 2
    LEASE = 3


class Flag(enum.IntFlag):
    """hpclock_options.flags; acquire()'s keyword arguments set the same bits."""
    RANK0_ONLY = n.RANK0_ONLY
    REQUIRE_CLUSTER = n.REQUIRE_CLUSTER
    SYNC = n.SYNC
    IGNORE_DONE = n.IGNORE_DONE
    LEASE = n.LEASE
    NO_LEASE = n.NO_LEASE


def _enum(cls: Any, value: int) -> Any:
    try:
        return cls(value)
    except ValueError:  # a newer library's value: keep the number
        return value


def _when(unix_ms: int) -> Optional[datetime.datetime]:
    return datetime.datetime.fromtimestamp(unix_ms / 1000, tz=datetime.timezone.utc) if unix_ms > 0 else None


def _decode(data: bytes) -> str:
    # Record text is bytes: surrogateescape keeps bytes that are not UTF-8, so
    # text.encode("utf-8", "surrogateescape") gives back the exact bytes.
    return data.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, or held it last: struct hpclock_holder, in Python terms.

    `alive` is None where this node cannot tell (a holder on another node),
    `mpi_rank` None when the holder was not an MPI rank, `pid` 0 when unknown.
    Strings that are not UTF-8 keep their bytes as surrogate escapes
    (`os.fsencode(holder.label)` gives them back)."""
    state: Union[State, int]
    alive: Optional[bool]
    pid: int
    uid: int
    mpi_rank: Optional[int]
    generation: int
    acquired_unix_ms: int
    released_unix_ms: int
    host: str
    job_id: str
    label: str
    note: Optional[str] = None  # holder_info: what the file holds when it has no readable record

    @property
    def acquired(self) -> Optional[datetime.datetime]:
        """When the lock was acquired (UTC), None when unknown."""
        return _when(self.acquired_unix_ms)

    @property
    def released(self) -> Optional[datetime.datetime]:
        """When it was released or completed (UTC), None while held or unknown."""
        return _when(self.released_unix_ms)

    @classmethod
    def _from(cls, s: n.HolderStruct, note: Optional[str] = None) -> "Holder":
        return cls(
            state=_enum(State, s.state),
            alive=None if s.alive < 0 else bool(s.alive),
            pid=s.pid,
            uid=s.uid,
            mpi_rank=None if s.mpi_rank < 0 else s.mpi_rank,
            generation=s.generation,
            acquired_unix_ms=s.acquired_unix_ms,
            released_unix_ms=s.released_unix_ms,
            host=_decode(s.host),
            job_id=_decode(s.job_id),
            label=_decode(s.label),
            note=note,
        )

    def _raw(self) -> Any:
        """Back to the C struct's values (for the sentences of _text)."""
        return _RawHolder(self)

    def __str__(self) -> str:
        return _text.holder_sentence(self._raw())


class _RawHolder:
    def __init__(self, h: Holder) -> None:
        self.state = int(h.state)
        self.alive = -1 if h.alive is None else int(h.alive)
        self.pid, self.uid, self.generation = h.pid, h.uid, h.generation
        self.mpi_rank = -1 if h.mpi_rank is None else h.mpi_rank
        self.acquired_unix_ms, self.released_unix_ms = h.acquired_unix_ms, h.released_unix_ms
        self.host, self.job_id, self.label = _text.raw(h.host), _text.raw(h.job_id), _text.raw(h.label)


@dataclass(frozen=True)
class FsInfo:
    """What fs_check() says about where a lock file lives (struct hpclock_fs_info)."""
    scope: Union[Scope, int]
    primitive: Union[Primitive, int]
    magic: int
    fs_type: str
    detail: str

    @property
    def excludes_other_nodes(self) -> bool:
        """True where a lock there keeps out processes on other nodes: the
        kernel's locks are coherent (scope CLUSTER), or acquire uses the lease.
        `python -m hpclock check` exits 0 exactly then."""
        return self.scope == Scope.CLUSTER or self.primitive == Primitive.LEASE


# ---- errors: OSError subclasses, one per negative status ----

class Error(OSError):
    """An error from libhpclock. `errno` is the OS error behind it (None when
    there is none), `strerror` the library's message (hpclock_last_error(): it
    names the path and the OS error), `filename` the path as you passed it,
    `status` the C status (a Status)."""
    status: Union[Status, int] = 0

    def __str__(self) -> str:
        return str(self.strerror)


class InvalidError(Error):
    """HPCLOCK_E_INVALID: empty path, bad flag or label, a released lock, a
    file that is not a lock file (refused, left untouched), complete() in a
    forked child."""
    status = Status.E_INVALID


class SystemCallError(Error):
    """HPCLOCK_E_OS: a system call failed; errno says which error."""
    status = Status.E_OS


class NotSupportedError(Error):
    """HPCLOCK_E_NOTSUP: the filesystem refuses locks (ENOSYS, EOPNOTSUPP, ENOLCK)."""
    status = Status.E_NOTSUP


class UnsafeError(Error):
    """HPCLOCK_E_UNSAFE: require_cluster=True and exclusion is not known to hold across nodes."""
    status = Status.E_UNSAFE


class InternalError(Error):
    """HPCLOCK_E_INTERNAL: a bug caught at the library's boundary."""
    status = Status.E_INTERNAL


class LostError(Error):
    """HPCLOCK_E_LOST: the lock is no longer yours (taken over, lease lapsed, file replaced)."""
    status = Status.E_LOST


_ERRORS: Dict[int, Type[Error]] = {int(c.status): c for c in (InvalidError, SystemCallError, NotSupportedError, UnsafeError, InternalError, LostError)}


def _error(status: int, path: Any = None) -> Error:
    """The exception for a negative status, from this thread's last error."""
    message = n.last_error() or n.hpclock_status_name(status).decode("ascii")
    err: Optional[int] = n.hpclock_last_errno() or (_errno.EINVAL if status == n.E_INVALID else None)
    cls: Type[Error] = _ERRORS.get(status, Error)
    e: Error = cls(err, message) if path is None else cls(err, message, path)
    if cls is Error:
        e.status = status
    return e


def _invalid(message: str, path: Any) -> InvalidError:
    return InvalidError(_errno.EINVAL, message, path)


# ---- outcomes that are not "you hold it": exceptions, but not errors ----

class NotAcquired(Exception):
    """The lock was not acquired, and nothing is wrong: someone else has it
    (Busy), the work was done earlier (Done), or this MPI rank is not 0
    (NotRank0). Deliberately not an OSError: `except OSError` keeps meaning
    "something is broken", while a busy lock is the normal answer for every
    racer but one."""
    status: Status = Status.OK

    def __init__(self, message: str, path: Any = None, holder: Optional[Holder] = None, note: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.holder = holder
        # Why the library judged it so, when it says more than the holder does
        # (in lease mode: the rule that judged), else "".
        self.note = note

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> Tuple[Any, ...]:  # survives multiprocessing (spawn pools pickle exceptions)
        return (type(self), (self.message, self.path, self.holder, self.note))

    # The holder's fields, at hand: `except hpclock.Busy as busy: busy.pid`.
    @property
    def pid(self) -> int:
        """The holder's pid (0 when unknown)."""
        return self.holder.pid if self.holder else 0

    @property
    def host(self) -> str:
        return self.holder.host if self.holder else ""

    @property
    def job(self) -> str:
        """The holder's scheduler job id ("8812345_7"), "" when none."""
        return self.holder.job_id if self.holder else ""

    @property
    def label(self) -> str:
        return self.holder.label if self.holder else ""

    @property
    def since(self) -> Optional[datetime.datetime]:
        """When the holder acquired it (UTC), None when unknown."""
        return self.holder.acquired if self.holder else None


class Busy(NotAcquired):
    """Another process holds the lock (or the timeout ran out). `pid`, `host`,
    `job`, `since`, `label` name the holder as holder_info() read it, right
    after; `holder` is the whole Holder (None if it could not be read)."""
    status = Status.BUSY


class Done(NotAcquired):
    """The work was completed earlier (Lock.complete); nothing to do.
    `holder` is the record of whoever completed it (`holder.released`: when).
    acquire(..., ignore_done=True) takes the lock anyway, to re-run."""
    status = Status.DONE


class NotRank0(NotAcquired):
    """rank0_only=True on an MPI rank other than 0: nothing was touched.
    `rank` is this process's rank, read from the launcher's environment."""
    status = Status.NOT_RANK0

    @property
    def rank(self) -> Optional[int]:
        return mpi_rank()


def _fspath(path: StrOrBytesPath) -> bytes:
    """A path as the bytes the kernel sees: str through os.fsencode (so a str
    that came from os.listdir or sys.argv names the same file, even when its
    bytes are not UTF-8), bytes unchanged, os.PathLike through __fspath__."""
    data = os.fsencode(path)
    if b"\0" in data:
        raise ValueError("embedded null byte in lock path")
    return data


def _holder_struct(path: bytes) -> Tuple[n.HolderStruct, str]:
    s = n.HolderStruct()
    rc = n.hpclock_holder_info(path, ctypes.byref(s))
    if rc != n.OK:
        raise _error(rc, os.fsdecode(path))
    return s, n.last_error()


def holder_info(path: StrOrBytesPath) -> Holder:
    """Who holds the lock at path, read without taking any lock (read access
    is enough). A lock file that does not exist is FREE with generation 0; a
    missing directory raises SystemCallError (ENOENT). If the file holds no
    readable record, the answer comes from the kernel's view alone and
    `note` says what the file holds."""
    data = _fspath(path)
    s = n.HolderStruct()
    rc = n.hpclock_holder_info(data, ctypes.byref(s))
    if rc != n.OK:
        raise _error(rc, path)
    return Holder._from(s, n.last_error() or None)


def fs_check(path: StrOrBytesPath) -> FsInfo:
    """Would a lock at path exclude other nodes? path is a lock file or where
    one would be created. Takes no lock and creates nothing."""
    data = _fspath(path)
    s = n.FsInfoStruct()
    rc = n.hpclock_fs_check(data, ctypes.byref(s))
    if rc != n.OK:
        raise _error(rc, path)
    return FsInfo(scope=_enum(Scope, s.scope), primitive=_enum(Primitive, s.primitive), magic=s.magic,
                  fs_type=s.fs_type.decode("utf-8", "replace"), detail=s.detail.decode("utf-8", "replace"))


def mpi_rank() -> Optional[int]:
    """The MPI rank this process was launched as (from the launcher's
    environment, so it works before MPI_Init), None when not an MPI rank."""
    rank = n.hpclock_mpi_rank()
    return None if rank < 0 else rank


def status_name(status: int) -> str:
    """"HPCLOCK_BUSY" for 1; "HPCLOCK_UNKNOWN_STATUS" for a number that is no status."""
    name: bytes = n.hpclock_status_name(int(status))
    return name.decode("ascii")


def library_version() -> str:
    """The bundled libhpclock's version, "MAJOR.MINOR.PATCH"."""
    return n.library_version()


def library_path() -> str:
    """The file the package loaded: the libhpclock inside the package, never a system copy."""
    return n.LIBRARY_PATH


# ---- the lock ----

def _release_quietly(handle: int) -> None:
    # The finalizer: a Lock collected (or still held at interpreter exit)
    # without release(). In a forked child this only closes the child's copy.
    n.hpclock_release(handle)


class Lock:
    """A held lock: what acquire() returns. Use it as a context manager
    (`with hpclock.acquire(path) as lock:`), which releases it on the way
    out, on success and on exception alike; complete() marks the work done.

    A Lock belongs to the process that acquired it. A child forked with the
    lock (os.fork, multiprocessing's fork start method) inherits the kernel
    lock with the descriptor: in the child, release() and leaving a `with`
    block close only the child's copy (the parent keeps the lock and its
    record), and complete() raises InvalidError. A Lock cannot be pickled.

    Dropping the last reference to a held Lock releases it, as for a file;
    one still held when the interpreter exits is released then."""

    __slots__ = ("_path", "_handle", "_mine", "_previous", "_finalizer", "_ended", "__weakref__")

    def __init__(self, path: Any, handle: int) -> None:
        self._path = path
        self._handle = handle
        self._ended: Optional[str] = None
        # Registered first: whatever happens next, the handle is released once.
        self._finalizer = weakref.finalize(self, _release_quietly, handle)
        self._mine = n.HolderStruct()
        self._previous = n.HolderStruct()
        rc = n.hpclock_handle_info(handle, ctypes.byref(self._mine), ctypes.byref(self._previous))
        if rc != n.OK:
            error = _error(rc, path)
            self._finalizer()
            raise error

    # -- what it is --
    @property
    def path(self) -> Any:
        """The path as passed to acquire()."""
        return self._path

    @property
    def handle(self) -> int:
        """The C handle (hpclock_handle), for code that calls the C ABI itself."""
        return self._handle

    @property
    def generation(self) -> int:
        """The fencing token: acquisitions of this lock file so far, this one
        included; never repeats. Stamp it on what you write."""
        return int(self._mine.generation)

    @property
    def mine(self) -> Holder:
        """The record this acquisition wrote."""
        return Holder._from(self._mine)

    @property
    def previous(self) -> Holder:
        """The record found when this lock was acquired: state STALE means
        the previous holder died holding it (resume from its checkpoint)."""
        return Holder._from(self._previous)

    @property
    def took_over(self) -> bool:
        """previous.state == STALE: the previous holder died holding the lock."""
        return bool(self._previous.state == State.STALE)

    @property
    def released(self) -> bool:
        """True once release() or complete() ended this Lock (here, in this process)."""
        return not self._finalizer.alive

    @property
    def completed(self) -> bool:
        return self._ended == "completed"

    # -- what it does --
    def check(self) -> bool:
        """True while the lock is still yours; raises LostError once it is
        not (lease taken over or lapsed; the lock file deleted or replaced).
        Call it before writing what the lock protects."""
        if not self._finalizer.alive:
            raise _invalid(f"the lock on {self._path!r} was already released", self._path)
        rc = n.hpclock_check(self._handle)
        if rc != n.OK:
            raise _error(rc, self._path)
        return True

    def release(self) -> None:
        """Release: the record says free, the lock is unlocked and closed, and
        the next acquire runs the work again. A second call does nothing. In a
        forked child: closes the child's copy only."""
        if self._finalizer.detach() is None:
            return
        self._ended = "released"
        rc = n.hpclock_release(self._handle)
        if rc != n.OK:
            raise _error(rc, self._path)

    def complete(self) -> None:
        """Release and record the work as done: later acquires raise Done
        (until one passes ignore_done=True)."""
        if not self._finalizer.alive:
            raise _invalid(f"the lock on {self._path!r} was already released", self._path)
        rc = n.hpclock_complete(self._handle)
        if rc == n.OK:
            self._finalizer.detach()
            self._ended = "completed"
            return
        error = _error(rc, self._path)
        # In a forked child the library keeps the handle (the child may still
        # release its copy); after any other failure the handle is gone.
        if n.hpclock_handle_info(self._handle, None, None) != n.OK:
            self._finalizer.detach()
            self._ended = "released"
        raise error

    def __enter__(self) -> "Lock":
        if not self._finalizer.alive:
            raise _invalid(f"the lock on {self._path!r} was already released", self._path)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __reduce__(self) -> Any:
        raise TypeError("an hpclock.Lock belongs to the process that acquired it and cannot be pickled "
                        "(send the path and let the other process acquire, or fork with the lock held)")

    def __repr__(self) -> str:
        state = self._ended or "held"
        return f"<hpclock.Lock {self._path!r} generation={self.generation} {state}>"


# A wait on the main thread is cut into slices of at most this long, so that
# Ctrl-C (KeyboardInterrupt) and other signal handlers run during a long wait:
# the library retries EINTR and would otherwise hold the interpreter until the
# wait ends. Not in lease mode, where a waiting call must watch the holder's
# rung for a whole lease period in one call (docs/lease.md, rule 4).
WAIT_SLICE_MS = 200


def _timeout_ms(timeout: Optional[float]) -> int:
    if timeout is None:
        return -1
    seconds = float(timeout)
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"timeout={timeout!r} is not a number of seconds (None waits without limit)")
    if seconds < 0:
        return -1
    return math.ceil(seconds * 1000)


def _label_bytes(label: Union[str, bytes]) -> bytes:
    data = label.encode("utf-8", "surrogateescape") if isinstance(label, str) else bytes(label)
    if b"\0" in data:
        raise ValueError("embedded null byte in label")
    return data


def _slices(path: bytes, flags: int) -> bool:
    """Whether a wait may be cut into slices: on the main thread (the only one
    Python runs signal handlers on), and not where acquire uses the lease."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if flags & n.LEASE:
        return False
    if flags & n.NO_LEASE:
        return True
    info = n.FsInfoStruct()
    if n.hpclock_fs_check(path, ctypes.byref(info)) != n.OK:
        return False  # let the one call report the error
    return bool(info.primitive != n.PRIMITIVE_LEASE)


def acquire(
    path: StrOrBytesPath,
    timeout: Optional[float] = 0,
    label: Optional[Union[str, bytes]] = None,
    *,
    ignore_done: bool = False,
    require_cluster: bool = False,
    rank0_only: bool = False,
    sync: bool = False,
    lease: Union[None, bool, float] = None,
    mode: int = 0,
    flags: int = 0,
) -> Lock:
    """Take the lock at path (creating the file, never truncating it) and
    return the held Lock; raise Busy, Done or NotRank0 when it is not yours,
    an Error subclass (an OSError) when something is wrong.

    timeout: 0 (the default) one try; > 0 wait up to that many seconds;
      None (or < 0) wait without limit. A wait polls (the library retries
      every few ms); on the main thread Ctrl-C interrupts it.
    label: text kept in the holder record, at most 127 bytes (longer is an
      InvalidError, never cut short); str or bytes.
    ignore_done: take a lock whose work is done (to re-run it).
    require_cluster: refuse (UnsafeError) unless the lock is known to
      exclude processes on other nodes.
    rank0_only: only MPI rank 0 touches the file; other ranks get NotRank0.
    sync: flush the record to stable storage on every change.
    lease: None (the library decides: the lease where the filesystem's locks
      stop at the node), True (the lease, default period), a number of
      seconds (the lease with that period, at least 0.1), False (never).
    mode: permission bits of a new lock file (0: the default, 0644; the
      umask applies).
    flags: further Flag bits, or'ed with those above.
    """
    data = _fspath(path)
    bits = int(flags)
    if ignore_done:
        bits |= n.IGNORE_DONE
    if require_cluster:
        bits |= n.REQUIRE_CLUSTER
    if rank0_only:
        bits |= n.RANK0_ONLY
    if sync:
        bits |= n.SYNC
    lease_ms = 0
    if lease is True:
        bits |= n.LEASE
    elif lease is False:
        bits |= n.NO_LEASE
    elif lease is not None:
        seconds = float(lease)
        if not math.isfinite(seconds) or seconds < 0.1:
            raise ValueError(f"lease={lease!r}: a lease is a number of seconds, at least 0.1")
        bits |= n.LEASE
        lease_ms = round(seconds * 1000)
    timeout_ms = _timeout_ms(timeout)
    if not 0 <= int(mode) <= 0o7777:
        raise ValueError(f"mode={mode!r} is not a permission mode")

    label_bytes = None if label is None else _label_bytes(label)
    options = None
    if bits or mode or label_bytes is not None or timeout_ms:
        options = n.Options(bits, int(mode), timeout_ms, label_bytes, lease_ms)
    handle = ctypes.c_uint64(0)
    try:
        if timeout_ms != 0 and options is not None and _slices(data, bits):
            rc = _wait_in_slices(data, options, timeout_ms, handle)
        else:
            rc = n.hpclock_acquire(data, None if options is None else ctypes.byref(options), ctypes.byref(handle))
        if rc == n.OK:
            return Lock(path, handle.value)
    except BaseException:
        # Interrupted (KeyboardInterrupt) between getting the lock and
        # wrapping it: never leave a lock held with nobody to release it.
        if handle.value:
            n.hpclock_release(handle.value)
        raise
    note = n.last_error()
    if rc == n.BUSY:
        raise _busy(Busy, path, data, note)
    if rc == n.DONE:
        raise _busy(Done, path, data, note)
    if rc == n.NOT_RANK0:
        rank = n.hpclock_mpi_rank()
        raise NotRank0(f"{_text.shown(data)}: not taken: this process is MPI rank {rank}, and only rank 0 "
                       f"takes the lock (rank0_only)", path, None, note)
    raise _error(rc, path)


def _wait_in_slices(data: bytes, options: n.Options, timeout_ms: int, handle: ctypes.c_uint64) -> int:
    deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000
    while True:
        if deadline is None:
            options.timeout_ms = WAIT_SLICE_MS
        else:
            left = math.ceil((deadline - time.monotonic()) * 1000)
            options.timeout_ms = max(0, min(WAIT_SLICE_MS, left))
        rc: int = n.hpclock_acquire(data, ctypes.byref(options), ctypes.byref(handle))
        if rc != n.BUSY or (deadline is not None and time.monotonic() >= deadline):
            return rc


def _busy(cls: Type[NotAcquired], path: Any, data: bytes, note: str) -> NotAcquired:
    try:
        s: Optional[n.HolderStruct] = _holder_struct(data)[0]
        holder: Optional[Holder] = Holder._from(s) if s is not None else None
        error = ""
    except Error as e:
        s, holder, error = None, None, str(e)
    if cls is Done and s is not None:
        message = f"{_text.shown(data)}: already done ({_text.done_words(s)})"
    else:
        message = f"{_text.shown(data)}: {_text.busy_line(s, error)}"
    return cls(message, path, holder, note)


# Public classes say they are hpclock's (in reprs, tracebacks and pickles).
for _cls in (Status, State, Scope, Primitive, Flag, Holder, FsInfo, Lock, NotAcquired, Busy, Done, NotRank0,
             Error, InvalidError, SystemCallError, NotSupportedError, UnsafeError, InternalError, LostError):
    _cls.__module__ = "hpclock"
del _cls
