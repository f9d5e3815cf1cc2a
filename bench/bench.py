#!/usr/bin/env python3
"""`make bench`: hpclock side by side with raw flock and the tools people use
today, measured in one run, in interleaved blocks, as medians, each with its
ratio to raw flock. Prints the machine and a Markdown table.

Usage: bench.py BENCH_C [MPI_GUARD] [--python VENV_PYTHON] [--quick]
"""

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# The seed's Python pattern (open, flock, write pid and time, unlock, close)
# and the filelock package, each timed inside its own interpreter so that
# start-up is not counted: the script prints ns per cycle.
SEED_PATTERN = r"""
import fcntl, os, sys, time
path, k = sys.argv[1], int(sys.argv[2])
def cycle():
    f = open(path, 'w')
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    f.write(f"{os.getpid()}\n{time.time()}\n")
    f.flush()
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()
cycle()
start = time.perf_counter_ns()
for _ in range(k):
    cycle()
print((time.perf_counter_ns() - start) / k)
"""

FILELOCK = r"""
import sys, time
from filelock import FileLock
path, k = sys.argv[1], int(sys.argv[2])
def cycle():
    lock = FileLock(path, timeout=0)
    lock.acquire()
    lock.release()
cycle()
start = time.perf_counter_ns()
for _ in range(k):
    cycle()
print((time.perf_counter_ns() - start) / k)
"""

# System calls that name a path (strace's %file class, as far as a lock
# library can meet them).
PATH_CALLS = {
    "open", "openat", "openat2", "creat", "stat", "lstat", "newfstatat", "fstatat64", "statx", "access",
    "faccessat", "faccessat2", "readlink", "readlinkat", "unlink", "unlinkat", "rename", "renameat",
    "renameat2", "mkdir", "mkdirat", "chmod", "fchmodat", "chown", "fchownat", "truncate", "statfs",
    "utimensat", "link", "linkat", "symlink", "symlinkat", "getxattr", "lgetxattr",
}


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def machine(directory, bench_c):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    fs = run([bench_c, "fs", directory, "0"]).strip()
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores",
        f"- kernel: {platform.system()} {platform.release()}",
        f"- filesystem of the lock files: {fs}",
        f"- Python: {platform.python_version()}; util-linux: {run(['flock', '--version']).strip()}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
    ]


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


class Bench:
    def __init__(self, bench_c, directory, python, rounds):
        self.bench_c, self.dir, self.python, self.rounds = bench_c, directory, python, rounds

    def c(self, *args):
        return run([self.bench_c, args[0], self.dir, *map(str, args[1:])])

    def uncontended(self):
        """Row group 1: interleaved blocks, median of each block's mean."""
        contenders = [
            ("raw C open + flock(LOCK_EX\\|LOCK_NB) + close", lambda: float(self.c("raw", 20000))),
            ("hpclock_try_acquire + hpclock_release", lambda: float(self.c("hpclock", 20000))),
            ("seed's Python pattern (open, flock, write pid+time, unlock, close)",
             lambda: float(run([self.python, "-c", SEED_PATTERN, f"{self.dir}/seed.lock", "3000"]))),
            ("Python `filelock` package (FileLock.acquire + release)",
             lambda: float(run([self.python, "-c", FILELOCK, f"{self.dir}/filelock.lock", "3000"]))),
            ("`flock -n FILE true` per call (spawned)", lambda: float(self.c("flock1", 200))),
        ]
        samples = {name: [] for name, _ in contenders}
        for _ in range(self.rounds):
            for name, measure in contenders:
                samples[name].append(measure())
        return [(name, statistics.median(values)) for name, values in samples.items()]

    def holder_info(self):
        return statistics.median(float(self.c("holder_info", 20000)) for _ in range(self.rounds))

    def race(self, n, rounds):
        times, bad = [], 0
        for _ in range(rounds):
            total, ok, busy, other = map(int, self.c("race", n).split())
            times.append(total)
            bad += ok != 1 or busy != n - 1 or other != 0
        return statistics.median(times), bad

    def handoff(self, k):
        latencies = sorted(int(line) for line in self.c("handoff", k).split())
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        return statistics.median(latencies), p99

    def syscalls(self, what, k=200):
        """Per acquire and per release: (path-based calls, all calls), from strace."""
        trace = os.path.join(self.dir, f"trace-{what}.txt")
        subprocess.run(["strace", "-qq", "-o", trace, self.bench_c, "trace", self.dir, str(k), what], check=True,
                       capture_output=True)
        counts = {"acquire": [0, 0], "release": [0, 0]}
        current = None
        with open(trace) as f:
            for line in f:
                marker = re.match(r'write\(-1, "([^"]*)"', line)
                if marker:  # "acquire{" opens a phase, "}acquire" closes it
                    text = marker.group(1)
                    current = text[:-1] if text.endswith("{") else None
                    continue
                if current is None:
                    continue
                name = line.split("(", 1)[0]
                counts[current][1] += 1
                # glibc's fstat is newfstatat(fd, "", ..., AT_EMPTY_PATH): no path
                counts[current][0] += name in PATH_CALLS and "AT_EMPTY_PATH" not in line
        return {phase: (p / k, a / k) for phase, (p, a) in counts.items()}

    def mpi_opens(self, mpi_guard):
        """Opens of the lock file by all ranks of `mpirun -np 8` with HPCLOCK_RANK0_ONLY."""
        lock = os.path.join(self.dir, "mpi.lock")
        prefix = os.path.join(self.dir, "mpi-trace")
        env = dict(os.environ, OMPI_MCA_plm="isolated", OMPI_MCA_btl="self,vader",
                   OMPI_MCA_btl_vader_single_copy_mechanism="none")
        cmd = ["mpirun", "--oversubscribe", "-np", "8"]
        if os.geteuid() == 0:
            cmd.append("--allow-run-as-root")
        cmd += ["sh", "-c", 'exec strace -f -qq -e trace=%file -o "$0.$OMPI_COMM_WORLD_RANK" "$1" "$2" 10',
                prefix, mpi_guard, lock]
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        opens = 0
        for rank in range(8):
            with open(f"{prefix}.{rank}") as f:
                # strace -f prefixes each line with the pid
                opens += sum(1 for line in f if re.search(r"\bopen(at)?\([^\"]*\"" + re.escape(lock) + '"', line))
        return opens


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bench_c")
    parser.add_argument("mpi_guard", nargs="?")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke test")
    args = parser.parse_args()
    rounds = 3 if args.quick else 11

    directory = tempfile.mkdtemp(prefix="hpclock-bench-", dir=os.environ.get("TMPDIR"))
    try:
        b = Bench(os.path.abspath(args.bench_c), directory, args.python, rounds)
        lines = ["## hpclock benchmark", "", *machine(directory, b.bench_c), "",
                 f"Medians over {rounds} interleaved rounds; ratios are to raw C open+flock+close in the same run.",
                 "", "| # | what | median | ratio to raw flock |", "|---|---|---|---|"]

        uncontended = b.uncontended()
        raw = uncontended[0][1]
        for name, ns in uncontended:
            lines.append(f"| 1 | {name} | {fmt_ns(ns)} | {ns / raw:.1f}× |")

        info = b.holder_info()
        lines.append(f"| 2 | hpclock_holder_info on a held lock | {fmt_ns(info)} | {info / raw:.1f}× |")

        per_process = {}
        for n in (2, 8, 64, 256):
            total, bad = b.race(n, 5 if n == 256 else rounds)
            per_process[n] = total / n
            check = "exactly one winner every round" if bad == 0 else f"**{bad} rounds without exactly one winner**"
            lines.append(f"| 3 | {n} racing processes: until all have their answer | {fmt_ns(total)} "
                         f"({fmt_ns(total / n)} per process) | {check} |")

        median, p99 = b.handoff(60 if args.quick else 200)
        lines.append(f"| 4 | hand-off to a timed waiter: release → acquired | median {fmt_ns(median)}, "
                     f"p99 {fmt_ns(p99)} | |")

        if shutil.which("strace"):
            raw_calls, hp_calls = b.syscalls("raw"), b.syscalls("hpclock")
            for phase in ("acquire", "release"):
                lines.append(
                    f"| 5 | system calls per {phase}: path-based / all | hpclock {hp_calls[phase][0]:.0f} / "
                    f"{hp_calls[phase][1]:.0f}; raw {raw_calls[phase][0]:.0f} / {raw_calls[phase][1]:.0f} | |")
        else:
            lines.append("| 5 | system calls per acquire and release | not measured: strace is not installed | |")

        if args.mpi_guard and shutil.which("mpirun") and shutil.which("strace"):
            opens = b.mpi_opens(os.path.abspath(args.mpi_guard))
            lines.append(f"| 6 | `mpirun -np 8` with HPCLOCK_RANK0_ONLY: opens of the lock file, all ranks | "
                         f"{opens} | expected 1 |")
        else:
            lines.append("| 6 | `mpirun -np 8` with HPCLOCK_RANK0_ONLY | not measured: needs mpicc, mpirun and strace | |")

        hp = uncontended[1][1]
        flat = per_process[256] / per_process[8]
        lines += ["", "Goals (reported, not asserted):",
                  f"- uncontended acquire + release ≤ 3× raw: **{hp / raw:.1f}×** "
                  f"({'met' if hp / raw <= 3 else 'missed'})",
                  f"- time per racing process within 2× from N=8 to N=256: **{flat:.2f}×** "
                  f"({'met' if flat <= 2 else 'missed'})",
                  f"- hand-off median ≤ 5 ms: **{fmt_ns(median)}** ({'met' if median <= 5e6 else 'missed'})"]
        if shutil.which("strace"):
            lines.append(f"- at most 2 path-based calls per acquire, none added by release: "
                         f"**{hp_calls['acquire'][0]:.0f} and {hp_calls['release'][0]:.0f}** "
                         f"({'met' if hp_calls['acquire'][0] <= 2 and hp_calls['release'][0] == 0 else 'missed'})")
        print("\n".join(lines))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
