"""Processes and threads: the race, kill -9, fork and spawn, threads."""

import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import hpclock
from helpers import Holder, acquire_generation, race_worker, run_python

RACERS = 32


def race(ctx, path, n):
    start, tried, results = ctx.Barrier(n), ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=race_worker, args=(path, start, tried, results)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in range(n)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return outcomes


@pytest.mark.parametrize("round_", range(3))
def test_32_processes_race_and_exactly_one_wins(lockdir, round_):
    path = str(lockdir / "race.lock")
    outcomes = race(multiprocessing.get_context("fork"), path, RACERS)
    winners = [pid for pid, outcome in outcomes if outcome == "ok"]
    assert len(winners) == 1, outcomes
    assert sorted(o for _, o in outcomes).count("busy") == RACERS - 1, outcomes
    after = hpclock.holder_info(path)
    assert after.state == hpclock.FREE and after.pid == winners[0] and after.generation == 1


def test_spawned_processes_race_and_exactly_one_wins(lockdir):
    path = str(lockdir / "spawn-race.lock")
    outcomes = race(multiprocessing.get_context("spawn"), path, 4)
    assert [o for _, o in outcomes].count("ok") == 1, outcomes


def test_spawn_pool_gets_busy_with_its_fields_and_then_the_lock(lockdir):
    path = lockdir / "spawn.lock"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        with hpclock.acquire(path, label="parent"):
            # The exception is raised in the child and pickled back whole.
            with pytest.raises(hpclock.Busy) as busy:
                pool.apply(acquire_generation, (path,))
            assert busy.value.pid == os.getpid()
            assert busy.value.label == "parent"
            assert busy.value.holder.state == hpclock.HELD
            assert busy.value.path == path
        pid, generation = pool.apply(acquire_generation, (path,))
    assert pid != os.getpid() and generation == 2
    assert hpclock.holder_info(path).label == "spawned"


def test_kill_9_take_over_sees_the_stale_predecessor(lockdir):
    path = lockdir / "crash.lock"
    with Holder("hpclock", path, "doomed") as holder:
        with pytest.raises(hpclock.Busy) as busy:
            hpclock.acquire(path)
        assert busy.value.pid == holder.pid
        holder.kill9()
    seen = hpclock.holder_info(path)
    assert seen.state == hpclock.STALE and seen.pid == holder.pid and seen.alive is False
    with hpclock.acquire(path) as lock:
        assert lock.took_over
        assert lock.previous.state == hpclock.STALE
        assert lock.previous.pid == holder.pid
        assert lock.previous.label == "doomed"
        assert lock.generation == lock.previous.generation + 1 == 2


def _child_leaves_with_block(lock, report):
    # The inherited lock: leaving the with block releases the child's copy only.
    try:
        lock.complete()
        report.put("complete succeeded")
    except hpclock.InvalidError as e:
        report.put(("complete refused", e.errno))
    with lock:
        pass
    report.put(("released here", lock.released))


def test_forked_child_leaving_the_with_block_keeps_the_parents_lock(lockdir):
    path = lockdir / "fork.lock"
    ctx = multiprocessing.get_context("fork")
    report = ctx.Queue()
    with hpclock.acquire(path, label="parent") as lock:
        before = path.read_bytes()
        child = ctx.Process(target=_child_leaves_with_block, args=(lock, report))
        child.start()
        assert report.get(timeout=30) == ("complete refused", 22)
        assert report.get(timeout=30) == ("released here", True)
        child.join(timeout=30)
        assert child.exitcode == 0
        # The parent still holds it, and its record was not touched.
        assert not lock.released
        assert path.read_bytes() == before
        seen = hpclock.holder_info(path)
        assert seen.state == hpclock.HELD and seen.pid == os.getpid() and seen.alive
        with pytest.raises(hpclock.Busy):
            hpclock.acquire(path)
        assert lock.check()
    assert hpclock.holder_info(path).state == hpclock.FREE


def _child_sleeps(ready, stop):
    ready.set()
    stop.wait(30)


def test_parent_release_unlocks_while_a_forked_child_lives(lockdir):
    path = lockdir / "fork2.lock"
    ctx = multiprocessing.get_context("fork")
    ready, stop = ctx.Event(), ctx.Event()
    lock = hpclock.acquire(path)
    child = ctx.Process(target=_child_sleeps, args=(ready, stop))
    child.start()
    try:
        assert ready.wait(30)
        lock.release()
        with hpclock.acquire(path) as again:
            assert again.generation == 2 and not again.took_over
    finally:
        stop.set()
        child.join(timeout=30)


def test_forked_child_exiting_normally_releases_only_its_copy():
    # A plain os.fork() whose child ends the interpreter normally: the
    # finalizer runs at exit in the child, and must not unlock the parent.
    out = run_python("""
        import os, sys, tempfile, hpclock
        path = os.path.join(tempfile.mkdtemp(), "x.lock")
        lock = hpclock.acquire(path)
        pid = os.fork()
        if pid == 0:
            sys.exit(0)            # atexit: the lock's finalizer, in the child
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
        try:
            hpclock.acquire(path)
            print("second holder!")
        except hpclock.Busy as busy:
            print("busy", busy.pid == os.getpid(), lock.check())
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"busy True True\n"


def test_a_lock_cannot_be_pickled(lockdir):
    import pickle
    with hpclock.acquire(lockdir / "p.lock") as lock:
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(lock)


def test_threads_race_and_exactly_one_wins(lockdir):
    path = lockdir / "threads.lock"
    n = 16
    start, tried = threading.Barrier(n), threading.Barrier(n)
    outcomes = []

    def racer():
        start.wait()
        lock = None
        try:
            lock = hpclock.acquire(path)
            outcomes.append("ok")
        except hpclock.Busy:
            outcomes.append("busy")
        tried.wait()
        if lock is not None:
            lock.release()

    threads = [threading.Thread(target=racer) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(outcomes) == n and outcomes.count("ok") == 1, outcomes


def test_each_thread_gets_its_own_error_message(lockdir):
    # hpclock_last_error() is per thread: errors in threads at once never mix.
    n = 8
    start = threading.Barrier(n)
    results = {}

    def fail(i):
        start.wait()
        for _ in range(200):
            try:
                hpclock.acquire(lockdir / f"missing-{i}" / "x.lock")
            except hpclock.SystemCallError as e:
                if f"missing-{i}/" not in e.strerror or e.errno != 2:
                    results[i] = e.strerror
                    return
        results[i] = "ok"

    threads = [threading.Thread(target=fail, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {i: "ok" for i in range(n)}


def test_a_thread_waits_for_the_lock_and_gets_it(lockdir):
    path = lockdir / "wait.lock"
    lock = hpclock.acquire(path)
    got = []

    def waiter():
        with hpclock.acquire(path, timeout=20) as mine:
            got.append(mine.generation)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    assert not got
    lock.release()
    t.join(20)
    assert got == [2]


def test_ctrl_c_interrupts_a_wait_without_limit(lockdir):
    path = lockdir / "sigint.lock"
    with hpclock.acquire(path):
        proc = subprocess.Popen([sys.executable, "-c", """
import sys, hpclock
print("waiting", flush=True)
try:
    hpclock.acquire(sys.argv[1], timeout=None)
    print("acquired?!")
except KeyboardInterrupt:
    print("interrupted", hpclock.holder_info(sys.argv[1]).pid)
""", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout.readline() == b"waiting\n"
        time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    assert out == f"interrupted {os.getpid()}\n".encode(), err
    assert took < 2, took


def test_garbage_collected_lock_is_released(lockdir):
    path = lockdir / "gc.lock"
    lock = hpclock.acquire(path)
    assert hpclock.holder_info(path).state == hpclock.HELD
    del lock
    gc.collect()
    seen = hpclock.holder_info(path)
    assert seen.state == hpclock.FREE and seen.pid == os.getpid()


def test_a_lock_still_held_at_exit_is_released_cleanly(lockdir):
    # Module-level, in a reference cycle, and in a thread-local: the
    # interpreter's shutdown releases each without a crash or a message.
    path = lockdir / "exit.lock"
    out = run_python("""
        import sys, threading, hpclock
        held = hpclock.acquire(sys.argv[1] + ".1")
        class Cycle: pass
        c = Cycle(); c.me = c; c.lock = hpclock.acquire(sys.argv[1] + ".2")
        local = threading.local(); local.lock = hpclock.acquire(sys.argv[1] + ".3")
        print("holding", flush=True)
    """, str(path))
    assert out.returncode == 0 and out.stdout == b"holding\n" and out.stderr == b"", out
    for i in (1, 2, 3):
        seen = hpclock.holder_info(f"{path}.{i}")
        assert seen.state == hpclock.FREE, (i, seen)
