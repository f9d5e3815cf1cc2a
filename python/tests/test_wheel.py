"""The wheel: built once by run_tests.sh, installed into a fresh venv, and
what is imported is that installed copy, with the library inside it."""

import os
import shutil
import subprocess
import sys
import zipfile


import hpclock
from helpers import REPO, need

WHEEL = os.environ.get("HPCLOCK_WHEEL", "")


def mapped_libhpclock(maps: str):
    return sorted({line.split(None, 5)[5] for line in maps.splitlines()
                   if len(line.split(None, 5)) == 6 and "libhpclock" in line.split(None, 5)[5]})


def test_the_package_is_the_installed_wheel_not_the_source_tree():
    package_dir = os.path.dirname(os.path.realpath(hpclock.__file__))
    assert sys.prefix != sys.base_prefix, "the tests run in a virtual environment"
    assert package_dir.startswith(os.path.realpath(sys.prefix) + os.sep), package_dir
    assert not package_dir.startswith(os.path.join(REPO, "python", "src"))
    assert hpclock.library_path() == os.path.join(os.path.dirname(hpclock.__file__), "libhpclock.so.0.2")
    with open("/proc/self/maps") as f:
        assert mapped_libhpclock(f.read()) == [os.path.realpath(hpclock.library_path())]
    assert os.path.exists(os.path.join(package_dir, "py.typed"))


def test_imported_from_outside_the_source_tree_loads_the_bundled_library(tmp_path):
    # A fresh interpreter, started in an empty directory, with nothing on
    # LD_LIBRARY_PATH that could offer another libhpclock.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}
    env["LD_LIBRARY_PATH"] = os.path.join(REPO, "build", "lib")  # a decoy: must not be used
    out = subprocess.run([sys.executable, "-c", """
import hpclock, os, tempfile
print(hpclock.__file__)
with hpclock.acquire(os.path.join(tempfile.mkdtemp(), "x.lock")) as lock:
    print(lock.generation)
print(open("/proc/self/maps").read())
"""], capture_output=True, cwd=tmp_path, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().split("\n")
    assert lines[0] == hpclock.__file__ and lines[1] == "1"
    assert mapped_libhpclock("\n".join(lines[2:])) == [os.path.realpath(hpclock.library_path())]


def test_the_wheel_is_a_platform_wheel_with_the_library_inside():
    if not WHEEL:
        need("the wheel (HPCLOCK_WHEEL, set by python/run_tests.sh)")
    name = os.path.basename(WHEEL)
    assert name == f"hpclock-{hpclock.__version__}-py3-none-linux_{os.uname().machine}.whl"
    with zipfile.ZipFile(WHEEL) as z:
        names = z.namelist()
        assert "hpclock/libhpclock.so.0.2" in names and "hpclock/py.typed" in names
        info = z.getinfo("hpclock/libhpclock.so.0.2")
        assert (info.external_attr >> 16) & 0o170000 != 0o120000, "a file, not a symbolic link"
        data = z.read("hpclock/libhpclock.so.0.2")
        assert data[:4] == b"\x7fELF"
        wheel_meta = z.read(f"hpclock-{hpclock.__version__}.dist-info/WHEEL").decode()
        assert "Root-Is-Purelib: false" in wheel_meta and "Tag: py3-none-linux_" in wheel_meta
        metadata = z.read(f"hpclock-{hpclock.__version__}.dist-info/METADATA").decode()
        assert "Requires-Python: >=3.9" in metadata and "Requires-Dist" not in metadata
    with open(hpclock.library_path(), "rb") as f:
        assert f.read() == data
    bundled = os.environ.get("HPCLOCK_LIBRARY")
    if bundled:  # the library make lib built, and the C tests tested
        with open(bundled, "rb") as f:
            assert f.read() == data


def test_the_bundled_library_needs_only_the_c_runtime():
    if not shutil.which("ldd"):
        need("ldd")
    out = subprocess.run(["ldd", hpclock.library_path()], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    needed = {line.split()[0] for line in out.stdout.splitlines() if line.strip()}
    assert not any("hpclock" in n for n in needed), needed
    assert "not found" not in out.stdout
