"""The wheel's build hook: put the compiled libhpclock inside the package.

`pip install ./python` (or `pip wheel ./python`) from the repository runs
this. It takes the library from, in this order:

1. $HPCLOCK_LIBRARY, a libhpclock.so built already (`make python-test` passes
   the one `make lib` built and the C tests tested);
2. `cargo build --release --locked` in the repository, when cargo is there
   (cargo rebuilds only what changed; the Makefile runs the same command);
3. build/lib/libhpclock.so, left by an earlier `make`.

Symbolic links are resolved (build/lib/libhpclock.so -> libhpclock.so.0.2 ->
libhpclock.so.0.2.0): the wheel carries the file itself, named by its soname,
next to the Python code that loads it by that full path. A library whose
soname is not the ABI the bindings were written for is refused.

The wheel is tagged py3-none-PLATFORM: it holds machine code, so it is not
pure, but it calls the library through ctypes, not the Python C API, so one
wheel serves every CPython 3.9+ (and PyPy) on the platform.
"""

import os
import re
import shutil
import struct
import subprocess

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:  # setuptools >= 70.1 has its own
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # older setuptools: the wheel package's
    from wheel.bdist_wheel import bdist_wheel

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def cargo_version():
    with open(os.path.join(REPO, "Cargo.toml"), encoding="utf-8") as f:
        text = f.read()
    package = text.split("[package]", 1)[1].split("\n[", 1)[0]
    return re.search(r'^version\s*=\s*"([^"]+)"', package, re.M).group(1)


def expected_soname():
    with open(os.path.join(HERE, "src", "hpclock", "_native.py"), encoding="utf-8") as f:
        return re.search(r'^SONAME = "([^"]+)"', f.read(), re.M).group(1)


def elf_soname(path):
    """DT_SONAME of a 64-bit little-endian ELF shared object, or None."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SystemExit(f"{path} is not a 64-bit little-endian ELF file")
    e_phoff, = struct.unpack_from("<Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    loads, dynamic = [], None
    for i in range(e_phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        if p_type == 1:  # PT_LOAD
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 2:  # PT_DYNAMIC
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return None
    strtab = soname = None
    for off in range(dynamic[0], dynamic[0] + dynamic[1], 16):
        tag, val = struct.unpack_from("<qQ", data, off)
        if tag == 0:
            break
        if tag == 5:  # DT_STRTAB (an address)
            strtab = val
        elif tag == 14:  # DT_SONAME (an offset into the string table)
            soname = val
    if strtab is None or soname is None:
        return None
    for vaddr, offset, size in loads:
        if vaddr <= strtab < vaddr + size:
            start = strtab - vaddr + offset + soname
            return data[start:data.index(b"\0", start)].decode()
    return None


def find_library():
    given = os.environ.get("HPCLOCK_LIBRARY")
    if given:
        if not os.path.isfile(given):
            raise SystemExit(f"HPCLOCK_LIBRARY={given}: no such file")
        return os.path.realpath(given)
    if shutil.which(os.environ.get("CARGO", "cargo")) and os.path.exists(os.path.join(REPO, "Cargo.toml")):
        print("hpclock: cargo build --release --locked (in %s)" % REPO, flush=True)
        subprocess.run([os.environ.get("CARGO", "cargo"), "build", "--release", "--locked"], cwd=REPO, check=True)
        target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
        return os.path.realpath(os.path.join(target, "release", "libhpclock.so"))
    built = os.path.join(REPO, "build", "lib", "libhpclock.so")
    if os.path.exists(built):
        return os.path.realpath(built)
    raise SystemExit("hpclock: no libhpclock.so to put in the wheel: build from the repository with a Rust "
                     "toolchain (cargo), run `make` first, or set HPCLOCK_LIBRARY to a built libhpclock.so")


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        library = find_library()
        soname, want = elf_soname(library), expected_soname()
        if soname != want:
            raise SystemExit(f"hpclock: {library} has soname {soname}, but the Python bindings "
                             f"(python/src/hpclock/_native.py) are written for {want}: update them")
        dest = os.path.join(self.build_lib, "hpclock", soname)
        self.mkpath(os.path.dirname(dest))
        shutil.copyfile(library, dest)  # the file itself, never a link
        os.chmod(dest, 0o755)
        print(f"hpclock: bundled {library} as hpclock/{soname}", flush=True)


class BinaryDistribution(Distribution):
    def has_ext_modules(self):
        return True  # machine code inside: a platform wheel, installed to platlib


class PlatformWheel(bdist_wheel):
    def get_tag(self):
        _, _, platform = super().get_tag()
        return "py3", "none", platform  # no Python C API: any Python 3 on this platform


# setuptools' scratch space goes under the repository's build/, not into python/.
SCRATCH = os.path.join(REPO, "build", "python", "setuptools")
os.makedirs(SCRATCH, exist_ok=True)

setup(
    version=cargo_version(),
    distclass=BinaryDistribution,
    cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": PlatformWheel},
    options={"build": {"build_base": SCRATCH}, "egg_info": {"egg_base": SCRATCH}},
)
