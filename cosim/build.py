"""Verilate a component for cocotb, cached by hash, and run cocotb tests on it.

:func:`build` converts a component to Verilog, then runs ``verilator`` and
``make`` itself with the command of ``cocotb_tools.runner.Verilator`` except
``--public-flat-rw`` (which makes every signal VPI-writable and made a 32x32
array build and simulate 16x slower): a generated Verilator control file
(``ports.vlt``) makes only the top module's ports public, which is all
cocotb needs. The model lands in ``build/sim/<key>/``, where
``key`` hashes the Verilog text, the flags and every tool version, so a second
call with the same inputs is instant and a changed input never reuses stale
objects. :func:`run_cocotb` runs the simulator binary with the environment
that cocotb's runner would set and reads pass/fail from ``results.xml``.
See ``docs/cosim.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from flashnpu.cosim.toolchain import build_env, find_toolchain, fst_build_flags, toolchain_id
from flashnpu.cosim.verilog import to_verilog, waiver_flags

__all__ = ["BuildError", "BuildResult", "CocotbResult", "build", "build_verilog", "build_key",
           "source_key", "build_from_sources",
           "verilator_args", "run_cocotb", "DEFAULT_ROOT"]

#: Where models are built: ``build/sim`` in the repository, whatever the working directory.
DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "build" / "sim"
#: Simulation time unit and precision (cocotb's clocks are given in ns).
TIMESCALE = "1ns/1ps"
#: C++ optimisation of the model's hot code. ``-O2`` through ``-CFLAGS`` (every
#: file) made a cold compile of the large files take over 10 minutes.
MAKE_VARS = ("OPT_FAST=-O2",)


class BuildError(RuntimeError):
    """Verilator or the C++ build failed; the message holds the tail of the log."""


@dataclass
class BuildResult:
    """A Verilated model ready for cocotb.

    Members
    -------
    dir : Path
        ``build/sim/<key>``; holds the Verilog, the objects, the binary and ``build.json``.
    top : str
        Top module name (also the binary's name).
    verilog : Path
    exe : Path
        The simulator binary.
    key : str
        The cache key (hex).
    waves : bool
        Built with FST tracing (``dump.fst`` when run with waves).
    build_s : float
        Wall time of this :func:`build` call (about 0 when ``cached``).
    cached : bool
        The model was already built.
    test_module : str or None
        The default cocotb module for :func:`run_cocotb`.
    """
    dir: Path
    top: str
    verilog: Path
    exe: Path
    key: str
    waves: bool
    build_s: float
    cached: bool
    test_module: str | None = None
    cold_build_s: float | None = None


def verilator_args(top: str, *, waves: bool, extra_args=()) -> list[str]:
    """Verilator's flags besides ``-Mdir`` and the sources (the part of the cache key that is flags)."""
    import cocotb_tools.config as cc
    libs = cc.libs_dir
    return [
        "-cc", "--exe", "--top-module", top, "--vpi",
        "--prefix", "Vtop", "-o", top,
        "-LDFLAGS", f"-Wl,-rpath,{libs} -L{libs} -lcocotbvpi_verilator",
        "--timescale", TIMESCALE,
        *waiver_flags(),
        *(["--trace-fst", "--trace-structs", *fst_build_flags(DEFAULT_ROOT)] if waves else []),
        *extra_args,
    ]


def ports_vlt(verilog_text: str, top: str) -> str:
    """A Verilator control file making exactly the ports of module ``top`` VPI-visible and writable."""
    m = re.search(rf"^module\s+{re.escape(top)}\s*\(([^)]*)\)\s*;", verilog_text, flags=re.M)
    if m is None:
        raise BuildError(f"no 'module {top}(...)' header in the Verilog")
    ports = [p.strip() for p in m.group(1).split(",") if p.strip()]
    lines = ["`verilator_config"]
    lines += [f'public_flat_rw -module "{top}" -var "{p}"' for p in ports]
    return "\n".join(lines) + "\n"


def build_key(verilog_text: str, top: str, *, waves: bool, extra_args=()) -> str:
    """Hash of everything a model depends on: the Verilog, the flags, the tools, cocotb's main."""
    import cocotb_tools.config as cc
    h = hashlib.sha256()
    for part in (verilog_text, top, ports_vlt(verilog_text, top), json.dumps(verilator_args(top, waves=waves, extra_args=extra_args)),
                 json.dumps(MAKE_VARS), toolchain_id(),
                 (cc.share_dir / "lib" / "verilator" / "verilator.cpp").read_text()):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _log(progress, msg):
    if progress is not None:
        progress(msg)


def build_verilog(verilog_text: str, top: str, *, waves: bool = False, root=DEFAULT_ROOT,
                  test_module: str | None = None, progress=None, jobs: int = 2,
                  timeout_s: float = 3600, extra_args=()) -> BuildResult:
    """Verilate ``verilog_text`` (top module ``top``) unless a build with the same key exists.

    ``extra_args`` are more Verilator flags (part of the key)."""
    t0 = time.monotonic()
    extra_args = tuple(extra_args)
    key = build_key(verilog_text, top, waves=waves, extra_args=extra_args)
    root = Path(root).resolve()
    final = root / key[:20]
    if (final / "build.json").exists() and (final / top).exists():
        meta = json.loads((final / "build.json").read_text())
        return BuildResult(final, top, final / f"{top}.v", final / top, key, waves,
                           time.monotonic() - t0, True, test_module, meta.get("build_s"))
    tc = find_toolchain()
    root.mkdir(parents=True, exist_ok=True)
    # Build into a private folder, then rename: a half-finished or concurrent
    # build never looks finished, and no old objects are ever reused.
    tmp = Path(tempfile.mkdtemp(prefix=f"{key[:20]}.tmp-", dir=root))
    try:
        vpath = tmp / f"{top}.v"
        vpath.write_text(verilog_text)
        vlt = tmp / "ports.vlt"
        vlt.write_text(ports_vlt(verilog_text, top))
        import cocotb_tools.config as cc
        main_cpp = cc.share_dir / "lib" / "verilator" / "verilator.cpp"
        env = build_env()
        log = tmp / "build.log"
        cmds = [
            [str(tc.verilator), "-Mdir", str(tmp), *verilator_args(top, waves=waves, extra_args=extra_args),
             str(vlt), str(main_cpp), str(vpath)],
            ["make", "-j", str(jobs), "-C", str(tmp), "-f", "Vtop.mk", *MAKE_VARS],
        ]
        with open(log, "w") as lf:
            for i, cmd in enumerate(cmds):
                _log(progress, ("verilating " if i == 0 else "compiling ") + f"{top} into {final}")
                lf.write("$ " + " ".join(cmd) + "\n")
                lf.flush()
                try:
                    p = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env,
                                       timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    raise BuildError(f"build of {top} timed out after {timeout_s} s; log: {log}")
                if p.returncode != 0:
                    lf.flush()
                    tail = "\n".join(log.read_text().splitlines()[-30:])
                    raise BuildError(f"{'verilator' if i == 0 else 'make'} failed for {top} "
                                     f"(exit {p.returncode}):\n{tail}")
        build_s = time.monotonic() - t0
        (tmp / "build.json").write_text(json.dumps({
            "key": key, "top": top, "waves": waves, "build_s": round(build_s, 2),
            "toolchain": toolchain_id(), "verilator_args": verilator_args(top, waves=waves, extra_args=extra_args),
            "make_vars": list(MAKE_VARS)}, indent=2) + "\n")
        # Object files are not needed once linked; keep the folder small.
        for o in tmp.glob("*.o"):
            o.unlink()
        for g in tmp.glob("*.gch"):
            g.unlink()
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished the same build first; use its result.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log(progress, f"built {top} in {build_s:.1f} s")
    return BuildResult(final, top, final / f"{top}.v", final / top, key, waves,
                       time.monotonic() - t0, False, test_module, build_s)


def build(component, top_name: str, test_module: str | None = None, *, waves: bool = False,
          root=DEFAULT_ROOT, progress=None, jobs: int = 2, extra_args=()) -> BuildResult:
    """Convert ``component`` to Verilog (top module ``top_name``) and Verilate it (cached).

    ``test_module`` is remembered as the default module for :func:`run_cocotb`;
    it is not part of the model. ``waves`` builds with FST tracing (a
    different model, hence part of the key). ``progress`` is called with
    one-line messages while a cold build runs.
    """
    text = to_verilog(component, top_name)
    return build_verilog(text, top_name, waves=waves, root=root, test_module=test_module,
                         progress=progress, jobs=jobs, extra_args=extra_args)


def source_key(*parts) -> str:
    """Hash of every Python file of ``hw/``, ``sw/`` and ``cosim/`` plus ``parts``: names a design before it is converted."""
    pkg = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for folder in ("hw", "sw", "cosim"):
        for f in sorted((pkg / folder).glob("*.py")):
            h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    for part in parts:
        h.update(str(part).encode() + b"\0")
    return h.hexdigest()


def build_from_sources(make_verilog, top_name: str, src_key: str, test_module: str | None = None,
                       *, waves: bool = False, root=DEFAULT_ROOT, progress=None, jobs: int = 2,
                       extra_args=()) -> BuildResult:
    """:func:`build` with an index from ``src_key`` (see :func:`source_key`) to the model folder.

    Converting a large design to Verilog takes seconds; when nothing under
    ``hw/`` or ``sw/`` changed, the index names the finished model and
    ``make_verilog`` (returning the Verilog text) is not even called. On a miss the design is converted
    and built (or found) by its Verilog hash as usual.
    """
    t0 = time.monotonic()
    root = Path(root).resolve()
    idx = root / "index" / f"{hashlib.sha256((src_key + top_name + repr(waves) + repr(tuple(extra_args)) + toolchain_id()).encode()).hexdigest()[:24]}.json"
    if idx.exists():
        meta = json.loads(idx.read_text())
        d = Path(meta["dir"])
        if (d / "build.json").exists() and (d / top_name).exists():
            info = json.loads((d / "build.json").read_text())
            return BuildResult(d, top_name, d / f"{top_name}.v", d / top_name, info["key"], waves,
                               time.monotonic() - t0, True, test_module, info.get("build_s"))
    b = build_verilog(make_verilog(), top_name, waves=waves, root=root, test_module=test_module,
                      progress=progress, jobs=jobs, extra_args=extra_args)
    idx.parent.mkdir(parents=True, exist_ok=True)
    tmp = idx.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"dir": str(b.dir), "key": b.key}))
    os.replace(tmp, idx)
    b.build_s = time.monotonic() - t0
    return b


@dataclass
class CocotbResult:
    """The outcome of one simulator run.

    ``passed`` is True only if the simulator exited 0, ``results.xml`` exists
    and lists at least one test and no failure.
    """
    passed: bool
    tests: int
    failures: list = field(default_factory=list)   # (test name, message)
    results_xml: Path | None = None
    log: Path | None = None
    run_dir: Path | None = None
    returncode: int = 0
    wall_s: float = 0.0
    sim_time_ns: float = 0.0

    def summary(self) -> str:
        if self.passed:
            return f"{self.tests} cocotb test(s) passed in {self.wall_s:.1f} s"
        lines = [f"cocotb: {len(self.failures)} of {self.tests} test(s) failed "
                 f"(exit {self.returncode}); log {self.log}"]
        lines += [f"  {name}: {msg}" for name, msg in self.failures]
        if self.log is not None and self.log.exists() and not self.failures:
            lines += self.log.read_text(errors="replace").splitlines()[-20:]
        return "\n".join(lines)


def _parse_results(path: Path):
    tests, failures, sim_ns = 0, [], 0.0
    root = ET.parse(path).getroot()
    for tc in root.iter("testcase"):
        tests += 1
        sim_ns += float(tc.get("sim_time_ns", 0) or 0)
        bad = tc.find("failure")
        if bad is None:
            bad = tc.find("error")
        if bad is not None:
            msg = (bad.get("message") or bad.text or "failed").strip()
            failures.append((tc.get("name", "?"), msg))
    return tests, failures, sim_ns


def run_cocotb(build: BuildResult, test_module: str | None = None, testcase=None,
               extra_env: dict | None = None, *, run_dir=None, python_path=(), seed=None,
               waves: bool = False, timeout_s: float = 1800, on_progress=None) -> CocotbResult:
    """Run cocotb ``test_module`` (default ``build.test_module``) on the model; never raises on a failing test.

    ``testcase`` (a name or list) selects tests. The run happens in
    ``run_dir`` (default a new ``build.dir/run-*``), whose path cocotb sees as
    ``FLASHNPU_RUN_DIR`` (for passing data in files); ``extra_env`` is added to
    the simulator's environment; ``python_path`` entries are prepended to its
    ``PYTHONPATH`` (for test modules outside the package). ``waves`` writes
    ``dump.fst`` (the build must have ``waves``). The simulator is killed
    after ``timeout_s`` seconds of wall time. ``on_progress(cycles)`` is called
    about twice a second with the number the test last wrote to
    ``run_dir/progress`` (the harness writes the cycles simulated so far).
    """
    import cocotb_tools.config as cc
    import find_libpython
    module = test_module or build.test_module
    if not module:
        raise ValueError("run_cocotb: no test_module given and the build has none")
    if waves and not build.waves:
        raise ValueError("run_cocotb: waves=True needs a build made with waves=True")
    if run_dir is None:
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=build.dir))
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    results = run_dir / "results.xml"
    results.unlink(missing_ok=True)
    libpython = os.environ.get("LIBPYTHON_LOC") or find_libpython.find_libpython()
    if libpython is None:
        raise RuntimeError("cocotb needs libpython, and find_libpython found none")
    env = dict(os.environ)
    # What cocotb_tools.runner.Verilator.test() sets (cocotb 2.1).
    env.update({
        "PATH": env.get("PATH", "") + os.pathsep + str(cc.libs_dir),
        "PYTHONPATH": os.pathsep.join([*(str(Path(p).resolve()) for p in python_path), *sys.path]),
        "PYGPI_PYTHON_BIN": sys.executable,
        "GPI_USERS": f"{libpython};{cc.pygpi_entry_point()}",
        "COCOTB_TOPLEVEL": build.top,
        "COCOTB_TEST_MODULES": module,
        "TOPLEVEL_LANG": "verilog",
        "COCOTB_TRUST_INERTIAL_WRITES": "1",
        "COCOTB_RESULTS_FILE": str(results),
        "FLASHNPU_RUN_DIR": str(run_dir),
    })
    env.pop("COCOTB_TEST_FILTER", None)
    if testcase is not None:
        names = [testcase] if isinstance(testcase, str) else list(testcase)
        env["COCOTB_TEST_FILTER"] = r"\.(" + "|".join(rf".*{re.escape(n)}" for n in names) + ")$"
    if seed is not None:
        env["COCOTB_RANDOM_SEED"] = str(seed)
    env.update({k: str(v) for k, v in (extra_env or {}).items()})
    cmd = [str(build.exe), *(["--trace", "--trace-file", str(run_dir / "dump.fst")] if waves else [])]
    log = run_dir / "sim.log"
    t0 = time.monotonic()
    progress_file = run_dir / "progress"
    progress_file.unlink(missing_ok=True)
    with open(log, "w") as lf:
        p = subprocess.Popen(cmd, cwd=run_dir, env=env, stdout=lf, stderr=subprocess.STDOUT)
        last = None
        while True:
            try:
                rc = p.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() - t0 > timeout_s:
                p.kill()
                p.wait()
                rc = -9
                lf.write(f"\nflashnpu: simulator killed after {timeout_s} s wall time\n")
                break
            if on_progress is not None:
                try:
                    now = int(progress_file.read_text() or 0)
                except (OSError, ValueError):     # not written yet, or caught mid-write
                    continue
                if now != last:
                    on_progress(now)
                    last = now
    wall = time.monotonic() - t0
    if not results.exists():
        return CocotbResult(False, 0, [("(no results.xml)", f"simulator exit {rc}")], None, log,
                            run_dir, rc, wall)
    tests, failures, sim_ns = _parse_results(results)
    passed = rc == 0 and tests > 0 and not failures
    return CocotbResult(passed, tests, failures, results, log, run_dir, rc, wall, sim_ns)
