"""The API: acquire and the Lock, Busy/Done and their fields, errors as
OSErrors, paths of every kind, options, and the struct layouts."""

import ctypes
import datetime
import errno
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import threading
import time

import pytest

import hpclock
from helpers import REPO, Holder, need, run_python

HOST = os.uname().nodename


def test_acquire_and_release_write_the_record(lockdir):
    path = lockdir / "a.lock"
    with hpclock.acquire(path, label="step 1") as lock:
        assert lock.generation == 1 and lock.mine.generation == 1
        assert lock.mine.pid == os.getpid() and lock.mine.label == "step 1" and lock.mine.host == HOST
        assert lock.previous.state == hpclock.FREE and lock.previous.generation == 0 and not lock.took_over
        seen = hpclock.holder_info(path)
        assert (seen.state, seen.pid, seen.alive, seen.label) == (hpclock.HELD, os.getpid(), True, "step 1")
        assert seen.acquired is not None and seen.released is None
    seen = hpclock.holder_info(path)
    assert seen.state == hpclock.FREE and seen.released is not None and seen.generation == 1
    with hpclock.acquire(str(path)) as lock:
        assert lock.generation == 2
        assert lock.previous.state == hpclock.FREE and lock.previous.label == "step 1"
    assert b"state=free" in path.read_bytes()


def test_an_exception_in_the_with_block_releases_and_does_not_complete(lockdir):
    path = lockdir / "exc.lock"
    with pytest.raises(ZeroDivisionError):
        with hpclock.acquire(path) as lock:
            1 / 0
    assert lock.released and not lock.completed
    assert hpclock.holder_info(path).state == hpclock.FREE
    with hpclock.acquire(path) as lock:  # not Done: the work is to be done again
        assert lock.generation == 2


def test_complete_makes_later_acquires_raise_done(lockdir):
    path = lockdir / "done.lock"
    with hpclock.acquire(path, label="the work") as lock:
        lock.complete()
        assert lock.completed and lock.released
    # Leaving the block after complete() releases nothing more.
    assert hpclock.holder_info(path).state == hpclock.DONE
    with pytest.raises(hpclock.Done) as done:
        hpclock.acquire(path)
    d = done.value
    assert isinstance(d, hpclock.NotAcquired) and not isinstance(d, OSError)
    assert d.status == hpclock.Status.DONE
    assert (d.pid, d.host, d.label) == (os.getpid(), HOST, "the work")
    assert d.holder.state == hpclock.DONE and d.holder.released is not None
    assert str(d).startswith(f"{path}: already done (completed by pid {os.getpid()} on {HOST} (the work) at ")
    # Done stays done for waiting callers too, and until ignore_done.
    with pytest.raises(hpclock.Done):
        hpclock.acquire(path, timeout=1)
    with hpclock.acquire(path, ignore_done=True) as again:
        assert again.previous.state == hpclock.DONE and again.generation == 2
    with hpclock.acquire(path) as third:  # release cleared DONE
        assert third.generation == 3


def test_busy_carries_the_holders_pid_host_job_since_and_label(lockdir):
    path = lockdir / "busy.lock"
    env = dict(os.environ, SLURM_JOB_ID="8812400", SLURM_ARRAY_JOB_ID="8812345", SLURM_ARRAY_TASK_ID="7")
    before = datetime.datetime.now(datetime.timezone.utc)
    with Holder("hpclock", path, "step 2", env=env) as holder:
        with pytest.raises(hpclock.Busy) as busy:
            hpclock.acquire(path)
        b = busy.value
        assert isinstance(b, hpclock.NotAcquired) and not isinstance(b, OSError)
        assert b.status == hpclock.Status.BUSY
        assert b.pid == holder.pid and b.host == HOST and b.job == "8812345_7" and b.label == "step 2"
        assert b.since.tzinfo is not None
        assert before - datetime.timedelta(seconds=1) <= b.since <= datetime.datetime.now(datetime.timezone.utc)
        assert b.holder.state == hpclock.HELD and b.holder.alive is True and b.holder.uid == os.getuid()
        assert b.path == path
        assert str(b) == (f"{path}: held by pid {holder.pid} on {HOST}, job 8812345_7 (step 2), "
                          f"since {b.since.astimezone().strftime('%H:%M:%S')}")
        # Busy survives pickling (multiprocessing sends exceptions that way).
        again = pickle.loads(pickle.dumps(b))
        assert type(again) is hpclock.Busy and again.pid == b.pid and again.holder == b.holder and str(again) == str(b)
        # A timed wait answers Busy no earlier than its timeout.
        t0 = time.monotonic()
        with pytest.raises(hpclock.Busy):
            hpclock.acquire(path, timeout=0.3)
        assert time.monotonic() - t0 >= 0.3
        # A longer wait gets the lock once the holder lets go.
        timer = threading.Timer(0.3, holder.stop)
        timer.start()
        with hpclock.acquire(path, timeout=20) as lock:
            assert lock.previous.pid == holder.pid and lock.previous.job_id == "8812345_7"
        timer.join(30)


def test_errors_are_oserrors_with_errno_message_and_path(lockdir):
    missing = lockdir / "no-such-dir" / "x.lock"
    with pytest.raises(hpclock.SystemCallError) as e:
        hpclock.acquire(missing)
    err = e.value
    assert isinstance(err, OSError) and isinstance(err, hpclock.Error)
    assert err.errno == errno.ENOENT and err.filename == missing and err.status == hpclock.Status.E_OS
    assert f'"{missing}"' in err.strerror and "(ENOENT)" in err.strerror and str(err) == err.strerror
    back = pickle.loads(pickle.dumps(err))
    assert (type(back), back.errno, back.strerror, back.filename) == (type(err), err.errno, err.strerror, err.filename)
    with pytest.raises(hpclock.SystemCallError) as e:
        hpclock.holder_info(missing)
    assert e.value.errno == errno.ENOENT

    with pytest.raises(hpclock.InvalidError) as e:
        hpclock.acquire(lockdir / "label.lock", label="x" * 128)
    assert e.value.errno == errno.EINVAL and "127" in str(e.value)
    with hpclock.acquire(lockdir / "label.lock", label="x" * 127) as lock:
        assert lock.mine.label == "x" * 127

    results = lockdir / "results.csv"
    results.write_bytes(b"a,b\n1,2\n")
    with pytest.raises(hpclock.InvalidError, match="is not a lock file: refusing to overwrite its 8 bytes"):
        hpclock.acquire(results)
    assert results.read_bytes() == b"a,b\n1,2\n"

    with pytest.raises(hpclock.SystemCallError) as e:
        hpclock.acquire(lockdir)
    assert e.value.errno in (errno.EISDIR, errno.ENOTDIR, errno.EACCES), e.value

    with pytest.raises(hpclock.UnsafeError, match="REQUIRE_CLUSTER"):
        hpclock.acquire(lockdir / "unsafe.lock", require_cluster=True)
    assert not (lockdir / "unsafe.lock").exists()

    with pytest.raises(hpclock.InvalidError):
        hpclock.acquire(lockdir / "flags.lock", flags=hpclock.LEASE | hpclock.NO_LEASE)
    with pytest.raises(hpclock.InvalidError):
        hpclock.acquire("")


def test_paths_str_bytes_pathlike_and_not_utf8(lockdir):
    class MyPath:
        def __init__(self, p):
            self.p = p

        def __fspath__(self):
            return self.p

    for i, make in enumerate([str, os.fsencode, pathlib.Path, lambda p: MyPath(str(p)),
                              lambda p: MyPath(os.fsencode(p))]):
        path = make(lockdir / f"kind{i}.lock")
        with hpclock.acquire(path) as lock:
            assert lock.path is path
            assert hpclock.holder_info(path).state == hpclock.HELD
        assert hpclock.holder_info(path).generation == 1

    raw = os.fsencode(lockdir) + b"/lock-\xff\xfe-\xc3\xa9.lock"  # not UTF-8, then UTF-8
    with hpclock.acquire(raw) as lock:
        assert b"lock-\xff\xfe-\xc3\xa9.lock" in os.listdir(os.fsencode(lockdir))
        # The same file, named by the str os.listdir(str) gives (surrogateescape).
        as_str = os.fsdecode(raw)
        assert isinstance(as_str, str)
        with pytest.raises(hpclock.Busy) as busy:
            hpclock.acquire(as_str)
        assert busy.value.pid == os.getpid()
        assert "\\xff\\xfe-\u00e9" in str(busy.value)  # escaped like the command's messages
    with pytest.raises(ValueError):
        hpclock.acquire(str(lockdir / "nul\0.lock"))
    with pytest.raises(TypeError):
        hpclock.acquire(42)


def test_labels_as_bytes_keep_their_bytes(lockdir):
    path = lockdir / "label-bytes.lock"
    with hpclock.acquire(path, label=b"step \xff 3") as lock:
        assert os.fsencode(lock.mine.label) == b"step \xff 3"
        assert b"label=step \xff 3\n" in path.read_bytes()
    with pytest.raises(ValueError):
        hpclock.acquire(path, label="a\0b")


def test_check_is_true_while_held_and_raises_lost_once_the_file_is_replaced(lockdir):
    path = lockdir / "check.lock"
    lock = hpclock.acquire(path)
    assert lock.check() is True
    replacement = lockdir / "new"
    replacement.write_bytes(b"")
    os.replace(replacement, path)
    with pytest.raises(hpclock.LostError) as e:
        lock.check()
    assert isinstance(e.value, OSError) and e.value.status == hpclock.Status.E_LOST
    lock.release()
    with pytest.raises(hpclock.InvalidError):
        lock.check()


def test_a_released_lock_releases_once_and_refuses_the_rest(lockdir):
    lock = hpclock.acquire(lockdir / "once.lock")
    assert "held" in repr(lock)
    lock.release()
    lock.release()  # nothing more, like closing a closed file
    assert lock.released and "released" in repr(lock)
    with pytest.raises(hpclock.InvalidError):
        lock.complete()
    with pytest.raises(hpclock.InvalidError):
        with lock:
            pass
    assert lock.generation == 1  # still known after release


def test_options_mode_sync_lease_and_flags(lockdir):
    old = os.umask(0o022)
    try:
        with hpclock.acquire(lockdir / "mode.lock", mode=0o600, sync=True):
            assert (lockdir / "mode.lock").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    with hpclock.acquire(lockdir / "flags.lock", flags=hpclock.SYNC | hpclock.NO_LEASE):
        pass
    with hpclock.acquire(lockdir / "lease.lock", lease=0.5) as lock:
        assert (lockdir / "lease.lock.hpclock").is_dir()  # the ladder of docs/lease.md
        assert lock.check()
        with pytest.raises(hpclock.Busy):
            hpclock.acquire(lockdir / "lease.lock", lease=True)
    with hpclock.acquire(lockdir / "lease.lock", lease=0.5) as lock:
        assert lock.generation == 2
    with pytest.raises(ValueError):
        hpclock.acquire(lockdir / "x.lock", lease=0.05)
    with pytest.raises(ValueError):
        hpclock.acquire(lockdir / "x.lock", timeout=float("nan"))
    with pytest.raises(ValueError):
        hpclock.acquire(lockdir / "x.lock", mode=0o10000)


def test_rank0_only_on_another_rank_touches_nothing(lockdir):
    code = """
        import sys, hpclock
        try:
            hpclock.acquire(sys.argv[1], rank0_only=True)
            print("acquired")
        except hpclock.NotRank0 as e:
            print("not rank 0:", e.rank, hpclock.mpi_rank())
    """
    path = str(lockdir / "rank.lock")
    out = run_python(code, path, env=dict(os.environ, OMPI_COMM_WORLD_RANK="3"))
    assert out.stdout == b"not rank 0: 3 3\n", out.stderr
    assert not os.path.exists(path)
    out = run_python(code, path, env=dict(os.environ, OMPI_COMM_WORLD_RANK="0"))
    assert out.stdout == b"acquired\n", out.stderr


def test_holder_info_of_a_missing_file_and_of_a_foreign_one(lockdir):
    seen = hpclock.holder_info(lockdir / "never.lock")
    assert seen.state == hpclock.FREE and seen.generation == 0 and seen.note is None
    assert not (lockdir / "never.lock").exists()
    (lockdir / "foreign").write_bytes(b"hello\n")
    seen = hpclock.holder_info(lockdir / "foreign")
    assert seen.state == hpclock.FREE and "not an hpclock record" in seen.note


def test_fs_check_says_a_local_directory_is_node_scope(lockdir):
    info = hpclock.fs_check(lockdir)
    assert isinstance(info.scope, hpclock.Scope) and info.fs_type
    if info.scope == hpclock.Scope.NODE:
        assert not info.excludes_other_nodes and info.primitive == hpclock.Primitive.FLOCK
    assert info.detail


def test_versions_and_names():
    with open(os.path.join(REPO, "Cargo.toml")) as f:
        cargo = f.read()
    assert f'version = "{hpclock.__version__}"' in cargo
    assert hpclock.library_version() == hpclock.__version__
    assert hpclock.status_name(hpclock.Status.BUSY) == "HPCLOCK_BUSY"
    assert hpclock.status_name(99) == "HPCLOCK_UNKNOWN_STATUS"
    assert hpclock.mpi_rank() is None or "OMPI_COMM_WORLD_RANK" in os.environ


def test_the_ctypes_structs_match_the_c_compilers_layout(tmp_path):
    cc = shutil.which(os.environ.get("CC", "cc"))
    if not cc:
        need("a C compiler (cc)")
    lib = tmp_path / "layout.so"
    subprocess.run([cc, "-shared", "-fPIC", "-I", os.path.join(REPO, "include"),
                    os.path.join(REPO, "f-tests", "layout.c"), "-o", str(lib)], check=True)
    layout = ctypes.CDLL(str(lib))
    out = (ctypes.c_int64 * 18)()
    assert layout.ftest_c_layout(out) == 18
    from hpclock import _native as n
    o, h, f = n.Options, n.HolderStruct, n.FsInfoStruct
    mine = [ctypes.sizeof(o), o.flags.offset, o.mode.offset, o.timeout_ms.offset, o.label.offset,
            ctypes.sizeof(h), h.pid.offset, h.uid.offset, h.generation.offset, h.released_unix_ms.offset,
            h.host.offset, h.job_id.offset, h.label.offset,
            ctypes.sizeof(f), f.magic.offset, f.fs_type.offset, f.detail.offset, o.lease_ms.offset]
    assert mine == list(out)
    # hpclock_options_init's defaults, as the package builds them.
    d = n.default_options()
    assert (d.flags, d.mode, d.timeout_ms, d.label, d.lease_ms) == (0, 0o644, 0, None, 0)  # lease_ms 0: the default period


def test_the_python_module_imports_on_its_own_in_a_fresh_interpreter():
    out = run_python("import hpclock, sys; print(sorted(hpclock.__all__) == sorted(set(hpclock.__all__)))")
    assert out.stdout == b"True\n", out.stderr
    assert sys.version_info >= (3, 9)
