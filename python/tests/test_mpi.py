"""examples/mpi4py_guard.py under real Open MPI (`mpirun -np 4`), as
c-tests/test_mpi.sh runs the C guard: rank 0 acquires, broadcasts, and all
ranks go on or stop together."""

import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from helpers import REPO, need

EXAMPLE = os.path.join(REPO, "examples", "mpi4py_guard.py")


@pytest.fixture
def mpirun():
    if not shutil.which("mpirun"):
        need("mpirun (Open MPI)")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        need("mpi4py (pip install mpi4py into the test venv)")
    args = ["mpirun", "--oversubscribe", "-np", "4"]
    if os.geteuid() == 0:
        args.append("--allow-run-as-root")
    # One machine: local start without ssh, shared memory only (test_mpi.sh).
    env = dict(os.environ, OMPI_MCA_plm="isolated", OMPI_MCA_btl="self,vader",
               OMPI_MCA_btl_vader_single_copy_mechanism="none")

    def run(lock, work_ms="100", background=False):
        cmd = [*args, sys.executable, EXAMPLE, str(lock), work_ms]
        # Each mpirun its own session directory: two started at once race to
        # create /tmp/ompi.HOST.UID, and Open MPI 4.1's loser dies of EEXIST.
        # (Short paths: Open MPI puts Unix sockets there.)
        job_env = dict(env, TMPDIR=tempfile.mkdtemp(prefix="hpclock-mpi-"))
        made.append(job_env["TMPDIR"])
        if background:
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=job_env)
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=job_env, timeout=120)
    made = []
    yield run
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


def test_rank_0_acquires_and_all_4_ranks_proceed_then_a_requeue_finds_it_done(mpirun, lockdir):
    lock = lockdir / "mpi.lock"
    out = mpirun(lock)
    text = out.stdout.decode()
    assert out.returncode == 0, text
    assert "rank 0 of 4 (hpclock.mpi_rank 0): OK\n" in text
    for r in (1, 2, 3):
        assert f"rank {r} of 4 (hpclock.mpi_rank {r}): NOT_RANK0\n" in text, text
    assert "all 4 ranks proceed" in text
    assert b"state=done\n" in lock.read_bytes()

    again = mpirun(lock, "50")
    text = again.stdout.decode()
    assert again.returncode == 0, text
    assert re.search(r"^rank 0: DONE: completed by pid \d+ on .* \(job none, label mpi4py_guard\); all 4 ranks stop$",
                     text, re.M), text
    assert "proceed" not in text


def test_two_jobs_started_together_exactly_one_proceeds(mpirun, lockdir):
    lock = lockdir / "two.lock"
    jobs = [mpirun(lock, "5000", background=True) for _ in range(2)]
    outs = [(j.wait(timeout=120), j.stdout.read().decode()) for j in jobs]
    statuses = sorted(status for status, _ in outs)
    assert statuses == [0, 75], outs
    winner = next(text for status, text in outs if status == 0)
    loser = next(text for status, text in outs if status == 75)
    assert "all 4 ranks proceed" in winner and "proceed" not in loser
    holder_pid = re.search(rb"^pid=(\d+)$", lock.read_bytes(), re.M).group(1).decode()
    assert re.search(rf"^rank 0: BUSY: held by pid {holder_pid} on {re.escape(os.uname().nodename)} "
                     rf"\(job [^,]*, label mpi4py_guard\); all 4 ranks stop$", loser, re.M), (holder_pid, loser)
