"""`python -m hpclock info|check` against the compiled `hpclock` command:
the same bytes on stdout and stderr, the same exit statuses."""

import json
import os
import subprocess
import sys

import pytest

import hpclock
from helpers import REPO, Holder, need

HPCLOCK = os.environ.get("HPCLOCK_BIN") or os.path.join(REPO, "build", "bin", "hpclock")


def both(*args):
    """Runs the command and the module with the same arguments (bytes allowed)."""
    if not os.access(HPCLOCK, os.X_OK):
        need(f"the hpclock command ({HPCLOCK}: make lib builds it)")
    env = dict(os.environ, TZ=os.environ.get("TZ", "UTC"))
    rust = subprocess.run([HPCLOCK, *args], capture_output=True, timeout=30, env=env)
    py = subprocess.run([sys.executable, "-m", "hpclock", *args], capture_output=True, timeout=30, env=env)
    return rust, py


def same(*args, status=0):
    rust, py = both(*args)
    assert (py.returncode, py.stdout, py.stderr) == (rust.returncode, rust.stdout, rust.stderr)
    assert py.returncode == status, py
    return py.stdout


@pytest.fixture
def locks(lockdir):
    """Lock files in every state the sentences tell apart."""
    made = {}
    made["never"] = lockdir / "never.lock"
    made["free"] = lockdir / "free.lock"
    with hpclock.acquire(made["free"], label="plain"):
        pass
    made["done"] = lockdir / "done.lock"
    hpclock.acquire(made["done"], label="finished").complete()
    made["odd"] = lockdir / "odd.lock"  # a label that is not UTF-8 and has control characters and C1
    with hpclock.acquire(made["odd"], label=b"l\xff\x1b[31m \\ \t\xc2\x9b \xf0\x9f\x98A \xed\xa0\x80 \xe2\x82"):
        pass
    made["foreign"] = lockdir / "foreign"
    made["foreign"].write_bytes(b"hello \x1b world\n")
    made["legacy"] = lockdir / "legacy.lock"
    made["legacy"].write_bytes(b"999999999\n1795690000.5\n")
    return made


@pytest.mark.parametrize("name", ["never", "free", "done", "odd", "foreign", "legacy"])
@pytest.mark.parametrize("json_flag", [False, True])
def test_info_prints_what_the_command_prints(locks, name, json_flag):
    out = same("info", *(["--json"] if json_flag else []), str(locks[name]))
    if json_flag:
        json.loads(out)


def test_info_of_held_and_stale_locks_with_job_rank_and_label(lockdir):
    path = lockdir / "held.lock"
    env = dict(os.environ, SLURM_JOB_ID="8812345", OMPI_COMM_WORLD_RANK="0")
    with Holder("hpclock", path, "step 2 of 5", env=env) as holder:
        assert b"held by pid %d on" % holder.pid in same("info", str(path))
        obj = json.loads(same("info", "--json", str(path)))
        assert obj["state"] == "held" and obj["job_id"] == "8812345" and obj["mpi_rank"] == 0
        holder.kill9()
    assert b"stale: pid %d" % holder.pid in same("info", str(path))
    same("info", "--json", str(path))


def test_info_of_a_path_that_is_not_utf8(lockdir):
    raw = os.fsencode(lockdir) + b"/not-utf8-\xff\n.lock"
    with hpclock.acquire(raw, label="x"):
        out = same("info", os.fsdecode(raw))
        assert b"not-utf8-\\xff\\n.lock: held by" in out
        obj = json.loads(same("info", "--json", os.fsdecode(raw)))
        import base64
        assert base64.b64decode(obj["path_base64"]) == raw


def test_errors_and_exit_statuses(lockdir):
    rust, py = both("info", str(lockdir / "missing" / "x.lock"))
    assert py.returncode == rust.returncode == 70
    assert py.stderr == rust.stderr and py.stderr.startswith(b"hpclock: ") and b"(ENOENT)" in py.stderr
    assert py.stdout == rust.stdout == b""
    rust, py = both("check", str(lockdir / "missing" / "deeper"))
    assert (py.returncode, py.stdout, py.stderr) == (rust.returncode, rust.stdout, rust.stderr)
    for args in [(), ("info",), ("frobnicate", "x"), ("info", "a", "b")]:
        rust, py = both(*args)
        assert py.returncode == rust.returncode == 2, (args, py)


def test_check_says_what_the_command_says(lockdir):
    info = hpclock.fs_check(lockdir)
    status = 0 if info.excludes_other_nodes else 1
    same("check", str(lockdir), status=status)
    same("check", str(lockdir / "x.lock"), status=status)
    obj = json.loads(same("check", "--json", str(lockdir), status=status))
    assert obj["fs_type"] == info.fs_type and obj["magic"] == info.magic
