"""`python -m hpclock info [--json] LOCK` and `python -m hpclock check [--json] PATH`:
the `hpclock` command's `info` and `check`, with its output and exit statuses
(0; check: 1 when a lock there does not exclude other nodes; 70 an error; 2
bad usage), for machines where only the Python package is installed. `run`
and `reset` are the compiled command's."""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
from typing import Any, Dict, List, Optional

from . import _native as n
from . import _text
from ._api import Error, UnsafeError, _fspath

EXIT_ERROR = 70
EXIT_UNSAFE = 78


def _out(line: str) -> None:
    # Bytes, not text: what is printed is escaped UTF-8 whatever the locale.
    sys.stdout.buffer.write(line.encode("utf-8") + b"\n")


def _json(obj: Dict[str, Any]) -> str:
    # serde_json's compact form, keys in order, non-ASCII as is.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def info(path: bytes, as_json: bool) -> int:
    s = n.HolderStruct()
    rc = n.hpclock_holder_info(path, ctypes.byref(s))
    if rc != n.OK:
        raise _raise(rc)
    note = n.last_error()
    if as_json:
        obj: Dict[str, Any] = {
            "state": _text.STATE_WORDS.get(s.state, str(s.state)),
            "alive": s.alive,
            "pid": s.pid,
            "uid": s.uid,
            "mpi_rank": s.mpi_rank,
            "generation": s.generation,
            "acquired_unix_ms": s.acquired_unix_ms,
            "released_unix_ms": s.released_unix_ms,
        }
        _text.put_bytes(obj, "path", path)
        _text.put_bytes(obj, "host", s.host)
        _text.put_bytes(obj, "job_id", s.job_id)
        _text.put_bytes(obj, "label", s.label)
        if note:
            obj["note"] = note
        _out(_json(obj))
    else:
        _out(f"{_text.shown(path)}: {_text.holder_sentence(s)}")
        if note:
            _out(f"note: {_text.shown(note.encode('utf-8'))}")
    return 0


def check(path: bytes, as_json: bool) -> int:
    s = n.FsInfoStruct()
    rc = n.hpclock_fs_check(path, ctypes.byref(s))
    if rc != n.OK:
        raise _raise(rc)
    scope = _text.SCOPE_WORDS.get(s.scope, str(s.scope))
    primitive = _text.PRIMITIVE_WORDS.get(s.primitive, str(s.primitive))
    if as_json:
        obj: Dict[str, Any] = {
            "scope": scope,
            "primitive": primitive,
            "magic": s.magic,
            "fs_type": s.fs_type.decode("utf-8", "replace"),
            "detail": s.detail.decode("utf-8", "replace"),
        }
        _text.put_bytes(obj, "path", path)
        _out(_json(obj))
    else:
        _out(f"{_text.shown(path)}: {_text.shown(s.fs_type)} (scope {scope}, {primitive} locks): "
             f"{_text.shown(s.detail)}")
    # The lease makes SPLIT and NONE hold across nodes too.
    return 0 if s.scope == 2 or s.primitive == n.PRIMITIVE_LEASE else 1


def _raise(rc: int) -> Error:
    from ._api import _error
    return _error(rc)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hpclock",
        description="Look at hpclock locks: the `hpclock` command's info and check, from the Python package.",
        epilog="Exit statuses: 0; check: 1 when a lock at PATH would not exclude other nodes; "
               "70 an error (the message names the path and the OS error); 2 bad usage.")
    parser.add_argument("--version", action="version", version=f"hpclock {n.library_version()} (Python)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    p = commands.add_parser("info", help="show who holds a lock (never takes it, not even for a moment)",
                            description="Show who holds a lock (never takes it, not even for a moment). JSON "
                            "fields are those of the C struct hpclock_holder, plus path (and note, if the file "
                            "holds no readable record); state is \"free\", \"held\", \"stale\" or \"done\".")
    p.add_argument("--json", action="store_true", help="one JSON object instead of a sentence")
    p.add_argument("lock", metavar="LOCK", help="the lock file")
    p = commands.add_parser("check", help="say whether a lock at PATH would exclude other nodes, and why",
                            description="Say whether a lock at PATH would exclude other nodes, and why. Exit "
                            "status 0 when locks there exclude across nodes (scope cluster, or the lease), "
                            "1 otherwise.")
    p.add_argument("--json", action="store_true", help="one JSON object instead of a sentence")
    p.add_argument("path", metavar="PATH", help="a lock file, or the directory it would be in")
    args = parser.parse_args(argv)

    try:
        if args.command == "info":
            return info(_fspath(args.lock), args.json)
        return check(_fspath(args.path), args.json)
    except Error as error:
        sys.stdout.flush()
        sys.stderr.buffer.write(f"hpclock: {error}\n".encode("utf-8"))
        return EXIT_UNSAFE if isinstance(error, UnsafeError) else EXIT_ERROR
    except ValueError as error:
        sys.stderr.buffer.write(f"hpclock: {error}\n".encode("utf-8"))
        return 2


if __name__ == "__main__":
    sys.exit(main())
