"""Helpers for the Python package's tests (run by python/run_tests.sh, which
installs the wheel into a fresh venv and runs pytest there). Importable by
module name, so multiprocessing's spawn children find the workers below."""

import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.environ.get("HPCLOCK_REPO") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def need(what: str) -> None:
    """A tool the test needs is missing: SKIPPED on a developer's machine,
    FAILED with CI=true, where nothing may be skipped (c-tests/harness.sh)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is not available, and CI=true: failing rather than skipping")
    pytest.skip(f"{what} is not available")


def run_python(code: str, *args: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter of this venv (the installed package)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                          timeout=timeout, **kw)


class Holder:
    """A separate process that holds a lock until told to stop (or killed).

    kind: "hpclock" (the package), "flock" (fcntl.flock on its own open file)
    or "seed" (the seed's pattern: open(path, 'w'), flock, write pid+time)."""

    SCRIPT = r"""
import fcntl, os, sys, time
kind, path, label = sys.argv[1], sys.argv[2], sys.argv[3]
if kind == "hpclock":
    import hpclock
    lock = hpclock.acquire(path, label=os.fsencode(label) if label else None)
elif kind == "flock":
    f = open(path, "a")
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
elif kind == "seed":
    lock_file = open(path, 'w')
    fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    lock_file.write(f"{os.getpid()}\n{time.time()}\n")
    lock_file.flush()
print("held", flush=True)
sys.stdin.readline()   # hold until told (or killed)
if kind == "hpclock":
    lock.release()
"""

    def __init__(self, kind: str, path, label: str = "", env=None):
        self.proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT, kind, os.fsdecode(path), label],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env)
        line = self.proc.stdout.readline()
        if line != b"held\n":
            self.proc.kill()
            raise AssertionError(f"holder did not start: {line!r} {self.proc.stderr.read()!r}")
        self.pid = self.proc.pid

    def stop(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0, self.proc.stderr.read()

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc.stdin.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


# ---- workers for multiprocessing (module-level, so spawn children import them) ----

def race_worker(path, start, tried, results):
    """Try once when every racer is ready; hold until every racer has tried."""
    import hpclock
    start.wait()
    lock = None
    try:
        lock = hpclock.acquire(path)
        outcome = "ok"
    except hpclock.Busy:
        outcome = "busy"
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which fails the test
        outcome = repr(e)
    results.put((os.getpid(), outcome))
    tried.wait()
    if lock is not None:
        lock.release()


def acquire_generation(path):
    """One acquire + release in a (spawned) child; Busy is raised to the parent."""
    import hpclock
    with hpclock.acquire(path, label="spawned") as lock:
        return os.getpid(), lock.generation
