"""What hpclock says about a lock, in the words of the `hpclock` command
(src/bin/hpclock/report.rs): the same sentences, the same escaping, the same
JSON. `python -m hpclock` and the exceptions' messages both use these.
"""

from __future__ import annotations

import base64
import time
from typing import Any, Dict


def shown(data: bytes) -> str:
    """Bytes as a terminal may show them: control characters (C0, DEL, C1),
    backslashes and bytes that are not UTF-8 become `\\n`, `\\t`, `\\\\`,
    `\\xNN`, `\\u{NN}` — what a record holds comes from whoever wrote the
    lock file, and an escape sequence in a label must not reach a terminal."""
    out = []
    for c in data.decode("utf-8", "surrogateescape"):
        o = ord(c)
        if c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif 0x80 <= o < 0xA0:
            out.append(f"\\u{{{o:02x}}}")
        elif 0xDC80 <= o <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        else:
            out.append(c)
    return "".join(out)


def raw(text: str) -> bytes:
    """The exact bytes behind a str that hpclock decoded (UTF-8, surrogateescape)."""
    return text.encode("utf-8", "surrogateescape")


def local_time(unix_ms: int) -> str:
    """"12:01:07" today, "2026-11-25 23:10:00" on another day, local time."""
    then = time.localtime(int(unix_ms / 1000))
    now = time.localtime()
    clock = f"{then.tm_hour:02}:{then.tm_min:02}:{then.tm_sec:02}"
    if (then.tm_year, then.tm_yday) == (now.tm_year, now.tm_yday):
        return clock
    return f"{then.tm_year:04}-{then.tm_mon:02}-{then.tm_mday:02} {clock}"


# The functions below take the raw values of a struct hpclock_holder:
# bytes for host, job_id and label, -1 for "no MPI rank" and "alive unknown".

def who(pid: int, host: bytes, job_id: bytes, mpi_rank: int, label: bytes) -> str:
    """"pid 4031 on c123, job 8812345_7, MPI rank 0 (label)": who, as far as known."""
    out = f"pid {pid}"
    if host:
        out += f" on {shown(host)}"
    if job_id:
        out += f", job {shown(job_id)}"
    if mpi_rank >= 0:
        out += f", MPI rank {mpi_rank}"
    if label:
        out += f" ({shown(label)})"
    return out


def since(unix_ms: int) -> str:
    return f", since {local_time(unix_ms)}" if unix_ms > 0 else ""


def done_words(r: Any) -> str:
    at = f" at {local_time(r.released_unix_ms)}" if r.released_unix_ms > 0 else ""
    return f"completed by {who(r.pid, r.host, r.job_id, r.mpi_rank, r.label)}{at}"


def holder_sentence(r: Any) -> str:
    """One line for people, as `hpclock info` prints it (r: a HolderStruct)."""
    generation = f"generation {r.generation}"
    w = who(r.pid, r.host, r.job_id, r.mpi_rank, r.label)
    if r.state == 0:  # free
        if r.generation == 0:
            return "free (never taken)"
        at = f" at {local_time(r.released_unix_ms)}" if r.released_unix_ms > 0 else ""
        return f"free (last released by {w}{at}; {generation})"
    if r.state == 1:  # held
        alive = {1: "running", 0: "gone"}.get(r.alive, "on another node, not checked from here")
        return f"held by {w}{since(r.acquired_unix_ms)} ({alive}; {generation})"
    if r.state == 2:  # stale
        return f"stale: {w} died holding it{since(r.acquired_unix_ms)}; the next run takes over ({generation})"
    if r.state == 3:  # done
        return f"done: {done_words(r)} ({generation})"
    return f"state {r.state}: {w} ({generation})"


def busy_line(r: Any, error: str = "") -> str:
    """The busy message: "held by pid 4031 on c123, job 8812345_7, since 12:01:07"."""
    if r is None:
        return f"held by another process (cannot read who: {error})"
    if r.pid > 0:
        return f"held by {who(r.pid, r.host, r.job_id, r.mpi_rank, r.label)}{since(r.acquired_unix_ms)}"
    return "held by another process, which left no record"


STATE_WORDS = {0: "free", 1: "held", 2: "stale", 3: "done"}
SCOPE_WORDS = {0: "unknown", 1: "node", 2: "cluster", 3: "split", 4: "none"}
PRIMITIVE_WORDS = {1: "flock", 2: "ofd", 3: "lease"}


def put_bytes(obj: Dict[str, Any], name: str, data: bytes) -> None:
    """`NAME` as UTF-8 text; where the bytes are not valid UTF-8, the text has
    U+FFFD in their place and `NAME_base64` beside it has the exact bytes."""
    obj[name] = data.decode("utf-8", "replace")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        obj[f"{name}_base64"] = base64.b64encode(data).decode("ascii")
