"""The C boundary: the bundled libhpclock, its structs and its prototypes.

This module is the only one that touches ctypes. It loads the copy of the
library that the wheel carries next to this file, by its full path, so the
package never picks up another libhpclock installed on the system (a
different file with the same soname is a different object to the dynamic
loader). The structs mirror include/hpclock.h field for field; the tests
compare their sizes and offsets with what the C compiler gives.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any
from ctypes import POINTER, Structure, c_char, c_char_p, c_int32, c_int64, c_uint32, c_uint64

# The soname this module's structs and prototypes are written for. The wheel's
# build hook refuses a library with another soname (an incompatible ABI), so a
# bumped library cannot be paired with stale struct layouts by accident.
SONAME = "libhpclock.so.0.2"

# Statuses (docs/api.md).
OK = 0
BUSY = 1
DONE = 2
NOT_RANK0 = 3
E_INVALID = -1
E_OS = -2
E_NOTSUP = -3
E_UNSAFE = -4
E_INTERNAL = -5
E_LOST = -6

# hpclock_options.flags
RANK0_ONLY = 1
REQUIRE_CLUSTER = 2
SYNC = 4
IGNORE_DONE = 8
LEASE = 16
NO_LEASE = 32

PRIMITIVE_LEASE = 3


class Options(Structure):
    _fields_ = [
        ("flags", c_uint32),
        ("mode", c_uint32),
        ("timeout_ms", c_int64),
        ("label", c_char_p),
        ("lease_ms", c_int64),
    ]


class HolderStruct(Structure):
    _fields_ = [
        ("state", c_int32),
        ("alive", c_int32),
        ("pid", c_int64),
        ("uid", c_uint32),
        ("mpi_rank", c_int32),
        ("generation", c_uint64),
        ("acquired_unix_ms", c_int64),
        ("released_unix_ms", c_int64),
        ("host", c_char * 256),
        ("job_id", c_char * 64),
        ("label", c_char * 128),
    ]


class FsInfoStruct(Structure):
    _fields_ = [
        ("scope", c_int32),
        ("primitive", c_int32),
        ("magic", c_uint64),
        ("fs_type", c_char * 32),
        ("detail", c_char * 256),
    ]


LIBRARY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), SONAME)


def _load() -> ctypes.CDLL:
    if not os.path.exists(LIBRARY_PATH):
        raise ImportError(
            f"hpclock: the bundled library {LIBRARY_PATH} is missing; install hpclock from its wheel "
            "(pip install ./python in the repository builds one), not by putting python/src on sys.path"
        )
    # A path with a slash: dlopen takes exactly this file, never a system copy.
    return ctypes.CDLL(LIBRARY_PATH, mode=ctypes.RTLD_LOCAL)


lib = _load()


def _proto(name: str, restype: Any, *argtypes: Any) -> Any:
    function = getattr(lib, name)
    function.restype = restype
    function.argtypes = list(argtypes)
    return function


hpclock_options_init = _proto("hpclock_options_init", None, POINTER(Options))
hpclock_acquire = _proto("hpclock_acquire", c_int32, c_char_p, POINTER(Options), POINTER(c_uint64))
hpclock_release = _proto("hpclock_release", c_int32, c_uint64)
hpclock_complete = _proto("hpclock_complete", c_int32, c_uint64)
hpclock_check = _proto("hpclock_check", c_int32, c_uint64)
hpclock_holder_info = _proto("hpclock_holder_info", c_int32, c_char_p, POINTER(HolderStruct))
hpclock_handle_info = _proto("hpclock_handle_info", c_int32, c_uint64, POINTER(HolderStruct), POINTER(HolderStruct))
hpclock_fs_check = _proto("hpclock_fs_check", c_int32, c_char_p, POINTER(FsInfoStruct))
hpclock_mpi_rank = _proto("hpclock_mpi_rank", c_int32)
hpclock_last_error = _proto("hpclock_last_error", c_char_p)
hpclock_last_errno = _proto("hpclock_last_errno", c_int32)
hpclock_status_name = _proto("hpclock_status_name", c_char_p, c_int32)
hpclock_version = _proto("hpclock_version", c_char_p)


def last_error() -> str:
    """This thread's last message from the library ("" if none)."""
    # The library writes its own messages as UTF-8 (Rust strings); a path in
    # one is escaped text, so 'replace' never loses anything real.
    message: bytes = hpclock_last_error() or b""
    return message.decode("utf-8", "replace")


def library_version() -> str:
    version: bytes = hpclock_version()
    return version.decode("ascii")


def default_options() -> Options:
    options = Options()
    hpclock_options_init(ctypes.byref(options))
    return options


def _check_abi() -> None:
    # The soname carries MAJOR.MINOR while MAJOR is 0 (MAJOR alone from 1.0):
    # the loaded library must be the ABI the structs above describe.
    version = library_version()
    major, minor = version.split(".")[:2]
    abi = f"{major}.{minor}" if major == "0" else major
    if SONAME != f"libhpclock.so.{abi}":
        raise ImportError(f"hpclock: {LIBRARY_PATH} is version {version}, not the ABI of {SONAME}")


_check_abi()
