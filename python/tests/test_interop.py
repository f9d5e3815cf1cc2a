"""Interop with the Python code that locks today: fcntl.flock, and the seed's
own pattern (open(path, 'w'), flock(LOCK_EX | LOCK_NB), write "PID\\nTIME\\n"),
in both directions, on this node's local filesystem (flock(2))."""

import fcntl
import os
import subprocess
import sys

import pytest

import hpclock
from helpers import Holder

# The seed's _acquire_process_lock, as the job scripts run it, in a process
# of its own: prints True (won) or False (lost), and holds until stdin closes.
SEED = r"""
import fcntl, os, sys, time

class Job:
    def __init__(self, lock_file_path):
        self.lock_file_path = lock_file_path

    def _acquire_process_lock(self):
        try:
            # Step 1: Open file (creates if doesn't exist)
            self.lock_file = open(self.lock_file_path, 'w')
            # Step 2: ATOMIC OPERATION - Try to get exclusive lock
            fcntl.flock(self.lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Step 3: If we reach here, we WON the race
            self.lock_file.write(f"{os.getpid()}\n{time.time()}\n")
            self.lock_file.flush()
            return True
        except (IOError, OSError):
            # Step 4: We LOST the race - another process has the lock
            return False

job = Job(sys.argv[1])
print(job._acquire_process_lock(), flush=True)
sys.stdin.readline()
"""


def seed(path):
    proc = subprocess.Popen([sys.executable, "-c", SEED, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    won = proc.stdout.readline()
    return proc, won


def finish(proc):
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0, proc.stderr.read()


def test_hpclock_holder_keeps_out_fcntl_flock(lockdir):
    path = lockdir / "a.lock"
    with hpclock.acquire(path):
        # Another open file description, in this process and in another one.
        with open(path, "rb") as f:
            with pytest.raises(BlockingIOError):
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        out = subprocess.run([sys.executable, "-c", """
import fcntl, sys
f = open(sys.argv[1], "rb")
try:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("got it")
except BlockingIOError:
    print("blocked")
""", str(path)], capture_output=True, timeout=30)
        assert out.stdout == b"blocked\n", out.stderr
    with open(path, "rb") as f:  # released: flock gets it now
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_fcntl_flock_holder_keeps_out_hpclock_and_is_named(lockdir):
    path = lockdir / "b.lock"
    with Holder("flock", path) as holder:
        with pytest.raises(hpclock.Busy) as busy:
            hpclock.acquire(path)
        # No record: the kernel's lock table names the holder.
        assert busy.value.pid == holder.pid
        assert busy.value.holder.state == hpclock.HELD and busy.value.holder.alive is True
        holder.stop()
    with hpclock.acquire(path) as lock:
        assert lock.generation == 1


def test_the_seeds_pattern_holding_keeps_out_hpclock_which_reads_its_pid(lockdir):
    path = lockdir / "seed.lock"
    proc, won = seed(path)
    try:
        assert won == b"True\n"
        with pytest.raises(hpclock.Busy) as busy:
            hpclock.acquire(path)
        assert busy.value.pid == proc.pid
        content = path.read_bytes()
        assert content.startswith(f"{proc.pid}\n".encode())  # the seed's PID\nTIME\n, untouched
    finally:
        finish(proc)
    # The seed exited without unlocking (its process ended): hpclock takes
    # over, and its record replaces the two lines.
    with hpclock.acquire(path) as lock:
        assert lock.previous.pid == proc.pid
        assert lock.generation == 1
    assert path.read_bytes().startswith(b"hpclock-record 1\n")


def test_the_seeds_pattern_killed_holding_is_a_stale_predecessor(lockdir):
    path = lockdir / "seed-crash.lock"
    proc, won = seed(path)
    assert won == b"True\n"
    proc.kill()
    proc.wait(timeout=30)
    seen = hpclock.holder_info(path)
    # The two-line record names no host, so the library leaves alive at -1
    # (None) even while it calls the holder STALE (reported to the lead).
    assert seen.pid == proc.pid and seen.state == hpclock.STALE and seen.alive is not True
    with hpclock.acquire(path) as lock:
        assert lock.took_over and lock.previous.pid == proc.pid


def test_hpclock_holding_keeps_out_the_seeds_pattern_and_survives_its_truncation(lockdir):
    path = lockdir / "seed-loses.lock"
    with hpclock.acquire(path, label="hpclock holds") as lock:
        generation = lock.generation
        proc, won = seed(path)
        try:
            assert won == b"False\n"  # the seed's loser exits gracefully
        finally:
            finish(proc)
        # The seed's open(path, 'w') truncated the record before its flock
        # failed (the seed's bug). The kernel still says who holds it.
        assert path.read_bytes() == b""
        seen = hpclock.holder_info(path)
        assert seen.state == hpclock.HELD and seen.pid == os.getpid()
        assert lock.check()
    # Release writes the whole record again, with the generation it had.
    seen = hpclock.holder_info(path)
    assert seen.state == hpclock.FREE and seen.generation == generation and seen.label == "hpclock holds"
    with hpclock.acquire(path) as lock:
        assert lock.generation == generation + 1
