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

The cache holds no half-written entry whatever happens to a build (killed at
any point, two processes building the same key): a build holds an ``flock``
on ``build/sim/<key>.lock`` (a second process waits for it; the kernel drops
the lock of a dead process), runs in ``build/sim/<key>.tmp-<pid>-*`` with its
tools in their own process group (killed with their folder on any exit
path), writes the ``build.json`` marker last and renames the folder into
place. An entry without a valid marker counts as absent.
:func:`cache_integrity_check` lists what is wrong in a cache folder.
See "The build cache" in ``docs/cosim.md``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from flashnpu.cosim.toolchain import build_env, find_toolchain, fst_build_flags, toolchain_id
from flashnpu.cosim.verilog import to_verilog, waiver_flags

__all__ = ["BuildError", "BuildResult", "CocotbResult", "build", "build_verilog", "build_key",
           "source_key", "build_from_sources",
           "verilator_args", "run_cocotb", "DEFAULT_ROOT", "RunFolder", "keep_runs",
           "cache_integrity_check", "KEEP_RUNS_ENV", "SIM_CACHE_ENV", "default_root"]

#: ``FLASHNPU_SIM_CACHE=/some/folder`` puts the model cache there (see :func:`default_root`).
SIM_CACHE_ENV = "FLASHNPU_SIM_CACHE"


def default_root() -> Path:
    """Where models are built and cached.

    ``$FLASHNPU_SIM_CACHE`` if set; else, in a source checkout (editable
    install), ``build/sim`` of the repository, whatever the working directory;
    else (an installed wheel, whose package folder need not be writable) the
    user's cache, ``$XDG_CACHE_HOME/flashnpu/sim`` (default ``~/.cache/flashnpu/sim``).
    """
    env = os.environ.get(SIM_CACHE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").is_file() and (repo / "cosim").is_dir():
        return repo / "build" / "sim"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser().resolve() / "flashnpu" / "sim"


#: The model cache of this process (:func:`default_root`, read once at import).
DEFAULT_ROOT = default_root()
#: Simulation time unit and precision (cocotb's clocks are given in ns).
TIMESCALE = "1ns/1ps"
#: C++ optimisation of the model's hot code. ``-O2`` through ``-CFLAGS`` (every
#: file) made a cold compile of the large files take over 10 minutes.
MAKE_VARS = ("OPT_FAST=-O2",)
#: The build's marker file, written last: an entry folder without a valid one counts as absent.
MARKER = "build.json"
#: ``FLASHNPU_KEEP_RUNS=1`` keeps every run folder (see :class:`RunFolder`).
KEEP_RUNS_ENV = "FLASHNPU_KEEP_RUNS"
#: Every process of a build runs with this variable set to its build folder, so a
#: later build finds (in ``/proc/<pid>/environ``) and kills what a killed build left running.
BUILD_TAG_ENV = "FLASHNPU_BUILD_DIR"
#: A build folder of a flashnpu from before the lock (no pid in its name) is
#: removed only once it has not changed for this long.
LEGACY_STALE_S = 3600.0
#: Entries are named by the first characters of the key.
_KEY_CHARS = 20
_ENTRY_RE = re.compile(r"^[0-9a-f]{20}$")
# <key>.tmp-<pid>-<random>: a build in progress; <key>.bad-<pid>-<random>: an invalid entry
# moved aside to be removed. Without "<pid>-": made by a flashnpu from before the lock.
_WORK_RE = re.compile(r"^(?P<key>[0-9a-f]{20})\.(?P<kind>tmp|bad)-(?:(?P<pid>\d+)-)?[a-z0-9_]+$")
# run-<pid>-<random>: removed when its run is over; run-keep-<random>: kept.
_RUN_RE = re.compile(r"^run-(?:(?P<pid>\d+)|keep)-[a-z0-9_]+$")


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
    cold_build_s : float or None
        How long the build that made the entry took.
    waited_s : float
        Time spent waiting for another process building the same key (its
        result is then ``cached``).
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
    waited_s: float = 0.0


# ============================================================ processes, signals, folders
# Process groups of running builds and simulations (pid -> (owner pid, Popen)), build
# folders being written and run folders not kept (path -> owner pid). The owner pid keeps
# a forked child from cleaning up its parent's.
_GROUPS: dict = {}
_TMP_DIRS: dict = {}
_RUN_DIRS: dict = {}
_PREVIOUS_HANDLERS: dict = {}
_CAUGHT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1
_prctl_fn = None


def _prctl():
    global _prctl_fn
    if _prctl_fn is None:
        _prctl_fn = False
        if sys.platform.startswith("linux"):
            try:
                f = ctypes.CDLL(None, use_errno=True).prctl
                f.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
                f.restype = ctypes.c_int
                _prctl_fn = f
            except (OSError, AttributeError):
                pass
    return _prctl_fn or None


def _child_setup():
    """``preexec_fn`` of a build or simulator process: SIGTERM when this process dies (Linux)."""
    parent, prctl, sig = os.getpid(), _prctl(), int(signal.SIGTERM)

    def setup():
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:      # the parent died before the line above
            os._exit(1)
    return setup


def _proc_table():
    """(pid, state, process group) of every process in ``/proc`` (empty without ``/proc``)."""
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for n in names:
        if not n.isdigit():
            continue
        try:
            with open(f"/proc/{n}/stat", "rb") as f:
                stat = f.read()
            rest = stat[stat.rindex(b")") + 2:].split()
            out.append((int(n), rest[0].decode(), int(rest[2])))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2:].split()[0] not in (b"Z", b"X")
    except (OSError, ValueError, IndexError):
        return True


def _group_alive(pgid: int) -> bool:
    return any(pg == pgid and st not in ("Z", "X") for _, st, pg in _proc_table())


def _tagged_processes(root) -> dict:
    """Live processes whose :data:`BUILD_TAG_ENV` names a folder under ``root``: {folder: [pid]}."""
    prefix = str(Path(root).resolve()) + os.sep
    tag = BUILD_TAG_ENV.encode() + b"="
    found, me = {}, os.getpid()
    for pid, state, _ in _proc_table():
        if pid == me or state in ("Z", "X"):
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        for item in env.split(b"\0"):
            if item.startswith(tag):
                folder = os.fsdecode(item[len(tag):])
                if folder.startswith(prefix):
                    found.setdefault(folder, []).append(pid)
                break
    return found


def _kill_pids(pids, timeout_s: float = 10.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + timeout_s
    while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)


def _kill_group(p: subprocess.Popen, *, reap: bool, timeout_s: float = 10.0) -> None:
    """SIGKILL the whole process group of ``p`` (a session leader) and wait until it is empty.

    Only while ``p`` is not reaped (``returncode`` None) is its pid surely still its group's id.
    ``reap=False`` in a signal handler: ``p.wait()`` there could deadlock on Popen's own lock.
    """
    if p.returncode is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        if reap:
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
    deadline = time.monotonic() + timeout_s
    while _group_alive(p.pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _start_group(cmd, **kw) -> subprocess.Popen:
    """``Popen`` in a new session (its own process group, no terminal signals), SIGTERMed if we die."""
    p = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_child_setup(), **kw)
    _GROUPS[p.pid] = (os.getpid(), p)
    return p


def _run_group(cmd, *, timeout_s: float, on_start=None, **kw) -> int:
    """Run ``cmd`` in its own process group; on any exception (timeout included) kill the group."""
    p = _start_group(cmd, **kw)
    try:
        if on_start is not None:
            on_start(p.pid)
        return p.wait(timeout=timeout_s)
    except BaseException:
        _kill_group(p, reap=True)
        raise
    finally:
        _GROUPS.pop(p.pid, None)


def _remove_tree(path) -> bool:
    """Remove a folder (or file); retried while dying processes still write into it."""
    path = str(path)
    for _ in range(20):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(path)
        if not os.path.lexists(path):
            return True
        time.sleep(0.05)
    return False


def _clean_up(remove_dirs: bool) -> None:
    """Kill this process's build and simulator groups; with ``remove_dirs`` remove its build and run folders."""
    me = os.getpid()
    for owner, p in list(_GROUPS.values()):
        if owner == me:
            _kill_group(p, reap=False)
    if remove_dirs:
        for reg in (_TMP_DIRS, _RUN_DIRS):
            for d, owner in list(reg.items()):
                if owner == me:
                    _remove_tree(d)
                    reg.pop(d, None)


def _on_fatal_signal(signum, frame):
    """SIGTERM/SIGHUP during a build or a simulation: clean up, then do what the signal did before."""
    prev = _PREVIOUS_HANDLERS.pop(signum, signal.SIG_DFL)
    signal.signal(signum, prev)
    if callable(prev):
        # Someone else handles the signal and the process may go on: stop our tools only
        # (the build or run then fails and removes its own folder), then chain.
        _clean_up(remove_dirs=False)
        prev(signum, frame)
        return
    _clean_up(remove_dirs=True)
    signal.raise_signal(signum)          # SIG_DFL: terminate, as without this handler
    os._exit(128 + signum)


@contextlib.contextmanager
def _cleanup_on_signals():
    """While inside: SIGTERM/SIGHUP kill our process groups and remove our folders before
    the process ends (main thread only; elsewhere the signal's default stays, and
    ``PR_SET_PDEATHSIG`` plus the next build's sweep clean up)."""
    installed = []
    if threading.current_thread() is threading.main_thread():
        for s in _CAUGHT_SIGNALS:
            cur = signal.getsignal(s)
            if cur is _on_fatal_signal or cur is None or cur == signal.SIG_IGN:
                continue
            _PREVIOUS_HANDLERS[s] = cur
            signal.signal(s, _on_fatal_signal)
            installed.append(s)
    try:
        yield
    finally:
        for s in installed:
            if signal.getsignal(s) is _on_fatal_signal:
                signal.signal(s, _PREVIOUS_HANDLERS.pop(s, signal.SIG_DFL))


def _clean_up_at_exit():
    _clean_up(remove_dirs=False)
    me = os.getpid()
    for d, owner in list(_TMP_DIRS.items()):
        if owner == me:
            _remove_tree(d)


atexit.register(_clean_up_at_exit)


def _write_json_atomic(path: Path, obj) -> None:
    """Write ``obj`` as JSON to a temporary file next to ``path`` and ``os.replace`` it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


class _KeyLock:
    """An exclusive ``flock`` on ``<root>/<key>.lock``, held while that key is being built.

    The kernel releases it when the holder dies, however it dies, so a lock is never stale.
    The file holds the pid of the last holder (for messages); lock files are never deleted
    (deleting one while another process waits on it would let two builders in).
    """

    def __init__(self, root: Path, key20: str):
        self.path = Path(root) / f"{key20}.lock"
        self.fd = None
        self.waited_s = 0.0

    def acquire(self, *, blocking: bool = True, on_wait=None) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not blocking:
                    os.close(fd)
                    return False
                if on_wait is not None:
                    on_wait()
                t = time.monotonic()
                fcntl.flock(fd, fcntl.LOCK_EX)
                self.waited_s = time.monotonic() - t
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        self.fd = fd
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return True

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


def _lock_held(root: Path, key20: str) -> bool:
    """Another open file holds ``<key>.lock`` (read-only check: creates nothing)."""
    try:
        fd = os.open(Path(root) / f"{key20}.lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _marker_problem(entry: Path, key: str | None = None, top: str | None = None, *,
                    deep: bool = False):
    """Why ``entry`` is not a complete cache entry (None: it is), and its marker."""
    try:
        meta = json.loads((entry / MARKER).read_text())
    except FileNotFoundError:
        return f"no {MARKER}", None
    except (OSError, ValueError) as e:
        return f"unreadable {MARKER} ({type(e).__name__}: {e})", None
    if not isinstance(meta, dict) or not isinstance(meta.get("key"), str) \
            or not isinstance(meta.get("top"), str):
        return f"{MARKER} without key and top", None
    if meta["key"][:_KEY_CHARS] != entry.name or (key is not None and meta["key"] != key):
        return f"{MARKER} is for key {meta['key'][:_KEY_CHARS]}", None
    if top is not None and meta["top"] != top:
        return f"{MARKER} is for top {meta['top']!r}", None
    exe = entry / meta["top"]
    try:
        st = exe.stat()
    except OSError:
        return f"no simulator binary {meta['top']!r}", None
    info = meta.get("exe")
    # Markers from before the format held "exe" were also written before the rename into place.
    if info is not None:
        if not isinstance(info, dict) or info.get("size") != st.st_size:
            return (f"simulator binary is {st.st_size} bytes, {MARKER} says "
                    f"{info.get('size') if isinstance(info, dict) else info}"), None
        if deep and info.get("sha256") and _sha256(exe) != info["sha256"]:
            return "simulator binary does not match the sha256 in the marker", None
    return None, meta


def _read_marker(entry: Path, key: str, top: str):
    """The marker of a complete entry for ``key``/``top``, or None (then the entry counts as absent)."""
    return _marker_problem(entry, key, top)[1]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _discard(path: Path) -> None:
    """Move an invalid entry aside (atomically: it no longer looks like an entry), then remove it."""
    aside = path.with_name(f"{path.name}.bad-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    _remove_tree(aside)


def _sweep(root: Path, holding: str | None = None) -> None:
    """Remove the build folders no live build owns, first killing processes still working in them.

    ``<key>.tmp-<pid>-*`` and ``<key>.bad-<pid>-*`` are stale when nobody holds
    ``<key>.lock`` (``holding``: the key whose lock the caller holds). A folder of a
    flashnpu from before the lock is removed once untouched for :data:`LEGACY_STALE_S`.
    """
    tagged = _tagged_processes(root)
    now = time.time()

    def clear(folder: Path):
        _kill_pids(tagged.pop(str(folder), []))
        _remove_tree(folder)

    for child in sorted(root.iterdir()):
        m = _WORK_RE.match(child.name)
        if m is None:
            continue
        if m["pid"] is None:
            with contextlib.suppress(OSError):
                if m["kind"] == "tmp" and now - child.stat().st_mtime > LEGACY_STALE_S:
                    _remove_tree(child)
            continue
        if m["key"] == holding:
            clear(child)
            continue
        lock = _KeyLock(root, m["key"])
        if lock.acquire(blocking=False):
            try:
                clear(child)
            finally:
                lock.release()
    # Processes left working in build folders that are already gone.
    for folder, pids in tagged.items():
        m = _WORK_RE.match(Path(folder).name)
        if m and not os.path.lexists(folder) and (m["key"] == holding or not _lock_held(root, m["key"])):
            _kill_pids(pids)


def keep_runs() -> bool:
    """``FLASHNPU_KEEP_RUNS`` is set (to anything but ``0``/``no``/``false``): keep run folders."""
    return os.environ.get(KEEP_RUNS_ENV, "").strip().lower() not in ("", "0", "no", "false")


def _drop_run_dir(path: str, owner: int) -> None:
    if os.getpid() == owner:
        _RUN_DIRS.pop(path, None)
        _remove_tree(path)


def _sweep_runs(parent: Path) -> None:
    """Remove ``run-<pid>-*`` folders of processes that are gone (killed before they could)."""
    me = os.getpid()
    with contextlib.suppress(OSError):
        for child in parent.iterdir():
            m = _RUN_RE.match(child.name)
            if m is None or m["pid"] is None:
                continue
            pid = int(m["pid"])
            if (pid == me and str(child) not in _RUN_DIRS) or (pid != me and not _pid_alive(pid)):
                _remove_tree(child)


class RunFolder:
    """A new per-run working folder ``parent/run-*``, removed when the run is over.

    Unless kept, the folder is ``run-<pid>-*`` and is removed when this object
    is dropped (the :class:`CocotbResult` or ``RtlResult`` holding it, or the
    exception that ended the run, is garbage collected), at interpreter exit,
    or right away on SIGTERM/SIGHUP during a simulation; one left by a killed
    process is removed when the next run folder is made next to it.
    ``keep=True`` (the caller wants it, e.g. waves) or ``FLASHNPU_KEEP_RUNS=1``
    keeps it: it is then ``run-keep-*`` and never removed automatically.
    """

    def __init__(self, parent, *, keep: bool = False):
        parent = Path(parent).resolve()
        self.keep = bool(keep) or keep_runs()
        _sweep_runs(parent)
        prefix = "run-keep-" if self.keep else f"run-{os.getpid()}-"
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        self._finalizer = None
        if not self.keep:
            _RUN_DIRS[str(self.path)] = os.getpid()
            self._finalizer = weakref.finalize(self, _drop_run_dir, str(self.path), os.getpid())

    def remove(self) -> None:
        """Remove the folder now (no-op when kept)."""
        if self._finalizer is not None:
            self._finalizer()

    def __fspath__(self) -> str:
        return str(self.path)

    def __reduce__(self):
        # A copy (pickled to another process, deep-copied) is a plain path: only this object owns the folder.
        return (Path, (str(self.path),))

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, keep={self.keep})"


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


def _cached_result(final: Path, key: str, top: str, waves: bool, test_module, t0: float,
                   waited_s: float = 0.0) -> BuildResult | None:
    meta = _read_marker(final, key, top)
    if meta is None:
        return None
    return BuildResult(final, top, final / f"{top}.v", final / top, key, waves,
                       time.monotonic() - t0, True, test_module, meta.get("build_s"), waited_s)


def build_verilog(verilog_text: str, top: str, *, waves: bool = False, root=DEFAULT_ROOT,
                  test_module: str | None = None, progress=None, jobs: int = 2,
                  timeout_s: float = 3600, extra_args=()) -> BuildResult:
    """Verilate ``verilog_text`` (top module ``top``) unless a build with the same key exists.

    ``extra_args`` are more Verilator flags (part of the key). Safe to call from
    several processes (or threads) at once: one builds, the others wait for its
    lock and use its entry (``cached``, ``waited_s``). ``timeout_s`` limits each
    of the two steps (verilator, make); a timeout raises :class:`BuildError`."""
    t0 = time.monotonic()
    extra_args = tuple(extra_args)
    key = build_key(verilog_text, top, waves=waves, extra_args=extra_args)
    root = Path(root).resolve()
    final = root / key[:_KEY_CHARS]
    hit = _cached_result(final, key, top, waves, test_module, t0)
    if hit is not None:
        return hit
    tc = find_toolchain()
    root.mkdir(parents=True, exist_ok=True)
    lock = _KeyLock(root, key[:_KEY_CHARS])
    lock.acquire(on_wait=lambda: _log(progress, f"waiting for another process building {top} "
                                                f"into {final} (lock {lock.path})"))
    try:
        hit = _cached_result(final, key, top, waves, test_module, t0, lock.waited_s)
        if hit is not None:
            return hit
        _sweep(root, holding=key[:_KEY_CHARS])
        if os.path.lexists(final):
            # No valid marker: half-made by hand or damaged. Treat as absent.
            _log(progress, f"{final} has no valid {MARKER}; rebuilding it")
            _discard(final)
        build_s = _build_locked(verilog_text, top, key, final, tc, waves=waves, extra_args=extra_args,
                                progress=progress, jobs=jobs, timeout_s=timeout_s, t0=t0)
    finally:
        lock.release()
    _log(progress, f"built {top} in {build_s:.1f} s")
    return BuildResult(final, top, final / f"{top}.v", final / top, key, waves,
                       time.monotonic() - t0, False, test_module, build_s, lock.waited_s)


def _build_locked(verilog_text, top, key, final: Path, tc, *, waves, extra_args, progress, jobs,
                  timeout_s, t0) -> float:
    """Build into ``<key>.tmp-<pid>-*`` and rename it to ``final`` (the caller holds the key's lock)."""
    import cocotb_tools.config as cc
    root = final.parent
    with _cleanup_on_signals():
        # Build into a private folder, then rename: a half-finished build never
        # looks finished, and no old objects are ever reused.
        tmp = Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp-{os.getpid()}-", dir=root))
        _TMP_DIRS[str(tmp)] = os.getpid()
        try:
            owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                     "groups": []}
            _write_json_atomic(tmp / "owner.json", owner)

            def started(pgid):
                owner["groups"].append(pgid)
                _write_json_atomic(tmp / "owner.json", owner)

            vpath = tmp / f"{top}.v"
            vpath.write_text(verilog_text)
            vlt = tmp / "ports.vlt"
            vlt.write_text(ports_vlt(verilog_text, top))
            main_cpp = cc.share_dir / "lib" / "verilator" / "verilator.cpp"
            env = build_env()
            env[BUILD_TAG_ENV] = str(tmp)
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
                        rc = _run_group(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=lf,
                                        stderr=subprocess.STDOUT, timeout_s=timeout_s, on_start=started)
                    except subprocess.TimeoutExpired:
                        raise BuildError(f"build of {top} timed out after {timeout_s} s") from None
                    if rc != 0:
                        lf.flush()
                        tail = "\n".join(log.read_text().splitlines()[-30:])
                        raise BuildError(f"{'verilator' if i == 0 else 'make'} failed for {top} "
                                         f"(exit {rc}):\n{tail}")
            # Object files are not needed once linked; keep the folder small.
            for o in tmp.glob("*.o"):
                o.unlink()
            for g in tmp.glob("*.gch"):
                g.unlink()
            (tmp / "owner.json").unlink()
            exe = tmp / top
            build_s = time.monotonic() - t0
            # The marker comes last: its presence says everything else is in place.
            _write_json_atomic(tmp / MARKER, {
                "key": key, "top": top, "waves": waves, "build_s": round(build_s, 2),
                "exe": {"size": exe.stat().st_size, "sha256": _sha256(exe)},
                "toolchain": toolchain_id(), "verilator_args": verilator_args(top, waves=waves, extra_args=extra_args),
                "make_vars": list(MAKE_VARS)})
            _promote(tmp, final, key, top)
        except BaseException:
            _remove_tree(tmp)
            raise
        finally:
            _TMP_DIRS.pop(str(tmp), None)
    return build_s


def _promote(tmp: Path, final: Path, key: str, top: str) -> None:
    """Rename the finished ``tmp`` to ``final`` (atomic; fails if ``final`` exists and is not empty)."""
    try:
        os.rename(tmp, final)
        return
    except OSError as e:
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
    # Only a builder that takes no lock (a flashnpu from before it) can have made ``final`` meanwhile.
    if _read_marker(final, key, top) is not None:
        _remove_tree(tmp)               # theirs is complete: use it
        return
    _discard(final)
    os.rename(tmp, final)


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
    """Hash of every Python file of ``spec/``, ``hw/``, ``sw/`` and ``cosim/`` plus ``parts``: names a design
    before it is converted.

    The folders are found beside this one (``flashnpu/<layer>`` in an installed
    wheel, the repository's folders in a checkout)."""
    pkg = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for folder in ("spec", "hw", "sw", "cosim"):
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
    try:
        meta = json.loads(idx.read_text())
        d = Path(meta["dir"])
        hit = _cached_result(d, meta["key"], top_name, waves, test_module, t0)
    except (OSError, ValueError, KeyError, TypeError):
        hit = None
    if hit is not None:
        return hit
    b = build_verilog(make_verilog(), top_name, waves=waves, root=root, test_module=test_module,
                      progress=progress, jobs=jobs, extra_args=extra_args)
    idx.parent.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(idx, {"dir": str(b.dir), "key": b.key})
    b.build_s = time.monotonic() - t0
    return b


@dataclass
class CocotbResult:
    """The outcome of one simulator run.

    ``passed`` is True only if the simulator exited 0, ``results.xml`` exists
    and lists at least one test and no failure. ``run_folder`` (the
    :class:`RunFolder` when :func:`run_cocotb` made the run folder) removes the
    folder when this result is dropped, unless kept.
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
    run_folder: RunFolder | None = field(default=None, repr=False, compare=False)

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
    ``run_dir`` (default a new :class:`RunFolder` ``build.dir/run-*``, removed
    when the result is dropped unless ``waves`` or ``FLASHNPU_KEEP_RUNS=1``;
    a ``run_dir`` given by the caller is never removed), whose path cocotb sees as
    ``FLASHNPU_RUN_DIR`` (for passing data in files); ``extra_env`` is added to
    the simulator's environment; ``python_path`` entries are prepended to its
    ``PYTHONPATH`` (for test modules outside the package). ``waves`` writes
    ``dump.fst`` (the build must have ``waves``). The simulator is killed
    after ``timeout_s`` seconds of wall time. ``on_progress(cycles)`` is called
    about twice a second with the number the test last wrote to
    ``run_dir/progress`` (the harness writes the cycles simulated so far).
    The simulator runs in its own process group, killed on any exception and on
    SIGTERM/SIGHUP (then the run folder goes too, and the process ends by the signal).
    """
    import cocotb_tools.config as cc
    import find_libpython
    module = test_module or build.test_module
    if not module:
        raise ValueError("run_cocotb: no test_module given and the build has none")
    if waves and not build.waves:
        raise ValueError("run_cocotb: waves=True needs a build made with waves=True")
    folder = None
    if run_dir is None:
        folder = RunFolder(build.dir, keep=waves)
        run_dir = folder.path
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
    with _cleanup_on_signals(), open(log, "w") as lf:
        p = _start_group(cmd, cwd=run_dir, env=env, stdout=lf, stderr=subprocess.STDOUT)
        try:
            last = None
            while True:
                try:
                    rc = p.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if time.monotonic() - t0 > timeout_s:
                    _kill_group(p, reap=True)
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
        except BaseException:
            _kill_group(p, reap=True)
            raise
        finally:
            _GROUPS.pop(p.pid, None)
    wall = time.monotonic() - t0
    if not results.exists():
        return CocotbResult(False, 0, [("(no results.xml)", f"simulator exit {rc}")], None, log,
                            run_dir, rc, wall, run_folder=folder)
    tests, failures, sim_ns = _parse_results(results)
    passed = rc == 0 and tests > 0 and not failures
    return CocotbResult(passed, tests, failures, results, log, run_dir, rc, wall, sim_ns, folder)


# ============================================================ integrity
def cache_integrity_check(root=DEFAULT_ROOT, *, deep: bool = True) -> list[str]:
    """What is wrong in the build cache ``root``: one line per problem (empty: all is well).

    Reported: an entry folder without a valid marker (missing, truncated, for
    another key or top, binary missing or of another size, with ``deep`` a
    binary whose sha256 differs); a build folder (``<key>.tmp-*``) or a discarded
    entry (``<key>.bad-*``) nobody's lock covers (its builder is dead), and
    those of a flashnpu from before the lock; a held lock (a build is running:
    meant to be called when none should be); processes still working in a
    build folder whose builder is gone; a ``run-<pid>-*`` folder of a dead
    process; an unreadable or half-written index file. Changes nothing.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    root = root.resolve()
    problems = []
    for child in sorted(root.iterdir()):
        name = child.name
        if _ENTRY_RE.match(name):
            if not child.is_dir() or child.is_symlink():
                problems.append(f"{name}: entry is not a folder")
                continue
            why, _ = _marker_problem(child, deep=deep)
            if why is not None:
                problems.append(f"{name}: incomplete entry: {why}")
            for run in sorted(child.glob("run-*")):
                m = _RUN_RE.match(run.name)
                if m and m["pid"] is not None and not _pid_alive(int(m["pid"])):
                    problems.append(f"{name}/{run.name}: run folder left by pid {m['pid']}, which is gone")
        elif (m := _WORK_RE.match(name)) is not None:
            what = "build folder" if m["kind"] == "tmp" else "discarded entry"
            if m["pid"] is None:
                problems.append(f"{name}: {what} of a flashnpu from before the build lock")
            elif not _lock_held(root, m["key"]):
                state = "alive" if _pid_alive(int(m["pid"])) else "dead"
                problems.append(f"{name}: stale {what} (owner pid {m['pid']} {state}, "
                                f"{m['key']}.lock not held)")
        elif name.endswith(".lock") and _ENTRY_RE.match(name[:-5]):
            if _lock_held(root, name[:-5]):
                try:
                    who = child.read_text().strip() or "?"
                except OSError:
                    who = "?"
                problems.append(f"{name}: held (by pid {who}): a build is running")
        elif name == "index" and child.is_dir():
            for f in sorted(child.iterdir()):
                if f.name.startswith("."):
                    m = re.search(r"\.(\d+)-\d+\.tmp$", f.name)
                    if m is None or not _pid_alive(int(m.group(1))):
                        problems.append(f"index/{f.name}: temporary index file left behind")
                    continue
                try:
                    meta = json.loads(f.read_text())
                    assert isinstance(meta, dict) and "dir" in meta and "key" in meta
                except (OSError, ValueError, AssertionError):
                    problems.append(f"index/{f.name}: unreadable index file")
    for folder, pids in sorted(_tagged_processes(root).items()):
        m = _WORK_RE.match(Path(folder).name)
        if m is None or not _lock_held(root, m["key"]):
            problems.append(f"processes {pids} still work in {folder}, whose build is gone")
    return problems
