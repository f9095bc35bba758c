"""The build cache holds no half-made entry, whatever kills a build or runs next to it.

A tiny counter is the model (a real Verilator build, about 20-40 s cold on the
2 shared cores). The cache mechanisms (docs/cosim.md, "The build cache"): a
per-key ``flock``, a private ``<key>.tmp-<pid>-*`` folder renamed into place,
the ``build.json`` marker written last, the build's tools in their own
process group, run folders removed when their run is over.
"""

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flashnpu.cosim import build as B
from flashnpu.cosim.build import (KEEP_RUNS_ENV, MARKER, BuildError, RunFolder, build_key, build_verilog,
                                  cache_integrity_check, run_cocotb)
from flashnpu.cosim.verilog import to_verilog


class Counter(wiring.Component):
    en: In(1)
    count: Out(16)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.count.eq(self.count + 1)
        return m


# The cocotb side, written next to each test's files (the simulator imports it by name).
COCOTB_MODULE = '''
import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge


async def _start(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.en.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    dut.en.value = 1


@cocotb.test()
async def counts(dut):
    await _start(dut)
    await ClockCycles(dut.clk, 3)
    await ReadOnly()
    first = int(dut.count.value)
    await RisingEdge(dut.clk)
    await ClockCycles(dut.clk, 6)
    await ReadOnly()
    assert first > 0 and int(dut.count.value) == (first + 7) % 65536, (first, int(dut.count.value))


@cocotb.test()
async def forever(dut):
    await _start(dut)
    while True:
        await ClockCycles(dut.clk, 1000)
'''

# A build in another process: prints what build_verilog returned.
BUILD_SCRIPT = '''
import json, sys
from pathlib import Path
from flashnpu.cosim.build import build_verilog
r = build_verilog(Path(sys.argv[1]).read_text(), "counter", root=sys.argv[2])
print(json.dumps({"cached": r.cached, "waited_s": r.waited_s, "dir": str(r.dir), "build_s": r.build_s}))
'''

# A simulation in another process: the counter counts until killed.
RUN_SCRIPT = '''
import sys
from pathlib import Path
from flashnpu.cosim.build import build_verilog, run_cocotb
b = build_verilog(Path(sys.argv[1]).read_text(), "counter", root=sys.argv[2])
print("running", flush=True)
run_cocotb(b, "cocotb_counter", testcase="forever", python_path=[sys.argv[3]], timeout_s=600)
'''


@pytest.fixture(scope="module")
def counter_text():
    return to_verilog(Counter(), "counter")


@pytest.fixture(scope="module")
def shared(tmp_path_factory, counter_text):
    """A folder with the counter's Verilog and cocotb module; ``shared / "sim"`` is a cache
    shared by the tests that need a built model but not a cold build of their own."""
    d = tmp_path_factory.mktemp("counter")
    (d / "counter.v").write_text(counter_text)
    (d / "cocotb_counter.py").write_text(COCOTB_MODULE)
    return d


def _spawn(script, *args):
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _work_folders(root):
    return sorted(p.name for p in Path(root).iterdir() if B._WORK_RE.match(p.name))


def _live_in_groups(pgids):
    return [pid for pid, state, pg in B._proc_table() if pg in pgids and state not in ("Z", "X")]


def _check_model(b, shared):
    res = run_cocotb(b, "cocotb_counter", testcase="counts", python_path=[shared], timeout_s=120)
    assert res.passed, res.summary()


def _wait_for(cond, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------- without Verilator
def _fake_entry(root, key="ab" * 32, top="t", exe=b"abc"):
    """An entry that looks complete (for the checks that read markers, not models)."""
    import hashlib
    e = Path(root) / key[:20]
    e.mkdir(parents=True)
    (e / top).write_bytes(exe)
    (e / MARKER).write_text(json.dumps({"key": key, "top": top, "exe": {
        "size": len(exe), "sha256": hashlib.sha256(exe).hexdigest()}}))
    return e


def _dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


CORRUPTIONS = {
    "empty folder": lambda e: [f.unlink() for f in e.iterdir()],
    "no marker": lambda e: (e / MARKER).unlink(),
    "truncated marker": lambda e: (e / MARKER).write_text((e / MARKER).read_text()[:17]),
    "marker of another key": lambda e: (e / MARKER).write_text(
        (e / MARKER).read_text().replace("abab", "cdcd")),
    "marker of another top": lambda e: (e / MARKER).write_text(
        (e / MARKER).read_text().replace('"top": "t"', '"top": "u"')),
    "no binary": lambda e: (e / "t").unlink(),
    "truncated binary": lambda e: (e / "t").write_bytes(b"ab"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_incomplete_entry_is_reported_and_treated_as_absent(tmp_path, monkeypatch, corruption):
    key = "ab" * 32
    e = _fake_entry(tmp_path, key)
    assert cache_integrity_check(tmp_path) == [] and B._read_marker(e, key, "t") is not None
    CORRUPTIONS[corruption](e)
    problems = cache_integrity_check(tmp_path)
    assert len(problems) == 1 and problems[0].startswith(f"{key[:20]}: incomplete entry"), problems
    assert B._read_marker(e, key, "t") is None

    # build_verilog moves it aside, removes it, builds anew (the build itself stubbed out here).
    built = []

    def fake_build(text, top, k, final, tc, **kw):
        assert not final.exists() and _work_folders(tmp_path) == []
        built.append(k)
        _fake_entry(final.parent, k, top)
        return 0.0
    monkeypatch.setattr(B, "build_key", lambda *a, **kw: key)
    monkeypatch.setattr(B, "_build_locked", fake_build)
    r = build_verilog("module t(); endmodule", "t", root=tmp_path)
    assert built == [key] and not r.cached and r.dir == e
    assert cache_integrity_check(tmp_path) == []
    assert build_verilog("module t(); endmodule", "t", root=tmp_path).cached and built == [key]


def test_integrity_check_and_sweep_of_leftovers(tmp_path):
    key = "ab" * 32
    e = _fake_entry(tmp_path, key)
    dead = _dead_pid()
    stale = tmp_path / f"{key[:20]}.tmp-{dead}-x1y2z3w4"
    stale.mkdir()
    (stale / "Vtop.o").write_bytes(b"\0" * 1000)
    aside = tmp_path / f"{key[:20]}.bad-{dead}-00aa11bb"
    aside.mkdir()
    legacy = tmp_path / f"{key[:20]}.tmp-q1w2e3r4"
    legacy.mkdir()
    run = e / f"run-{dead}-abcd1234"
    run.mkdir()
    kept = e / "run-keep-abcd1234"
    kept.mkdir()
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "0123.json").write_text('{"dir": ')
    # Another key's build in progress: its lock is held, its folder is not stale.
    other = "cd" * 32
    busy = tmp_path / f"{other[:20]}.tmp-{os.getpid()}-aaaa0000"
    busy.mkdir()
    lock = B._KeyLock(tmp_path, other[:20])
    assert lock.acquire(blocking=False)
    try:
        problems = cache_integrity_check(tmp_path)
        text = "\n".join(problems)
        assert len(problems) == 6, text
        assert f"{stale.name}: stale build folder (owner pid {dead} dead" in text
        assert f"{aside.name}: stale discarded entry" in text
        assert f"{legacy.name}: build folder of a flashnpu from before the build lock" in text
        assert f"{e.name}/{run.name}: run folder left by pid {dead}" in text
        assert f"{other[:20]}.lock: held (by pid {os.getpid()})" in text
        assert "index/0123.json: unreadable index file" in text
        # A build's sweep removes what dead builds left, not what a live one is doing;
        # the old-style folder only once it is old.
        B._sweep(tmp_path)
        assert _work_folders(tmp_path) == sorted([busy.name, legacy.name])
        os.utime(legacy, (time.time() - 2 * B.LEGACY_STALE_S,) * 2)
        B._sweep(tmp_path)
        assert _work_folders(tmp_path) == [busy.name]
    finally:
        lock.release()
    # The next run folder made in the entry removes the dead process's, not the kept one.
    f = RunFolder(e)
    assert not run.exists() and kept.exists() and f.path.name.startswith(f"run-{os.getpid()}-")
    (tmp_path / "index" / "0123.json").unlink()
    assert cache_integrity_check(tmp_path) == [f"{busy.name}: stale build folder (owner pid "
                                               f"{os.getpid()} alive, {other[:20]}.lock not held)"]
    # deep: same size, other bytes.
    (e / "t").write_bytes(b"abd")
    assert any("sha256" in p for p in cache_integrity_check(tmp_path))
    assert not any("sha256" in p for p in cache_integrity_check(tmp_path, deep=False))


def test_run_folder_lifetime(tmp_path, monkeypatch):
    monkeypatch.delenv(KEEP_RUNS_ENV, raising=False)
    f = RunFolder(tmp_path)
    p = f.path
    assert p.is_dir() and p.parent == tmp_path.resolve() and not f.keep
    del f
    gc.collect()
    assert not p.exists()
    f = RunFolder(tmp_path)
    f.remove()
    assert not f.path.exists()
    kept = RunFolder(tmp_path, keep=True)
    monkeypatch.setenv(KEEP_RUNS_ENV, "1")
    kept_by_env = RunFolder(tmp_path)
    paths = kept.path, kept_by_env.path
    del kept, kept_by_env
    gc.collect()
    assert all(p.is_dir() and p.name.startswith("run-keep-") for p in paths)


def test_lock_waits_and_is_released_when_the_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from flashnpu.cosim.build import _KeyLock\n"
        "l = _KeyLock(sys.argv[1], 'ab' * 10); l.acquire(); print('held', flush=True); time.sleep(600)"),
        str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = B._KeyLock(tmp_path, "ab" * 10)
        assert not lock.acquire(blocking=False)
        assert B._lock_held(tmp_path, "ab" * 10)
    finally:
        holder.kill()
        holder.wait()
    # The kernel released it with the dead holder's file descriptors.
    assert lock.acquire(blocking=False)
    lock.release()
    assert not B._lock_held(tmp_path, "ab" * 10)


# ---------------------------------------------------------------- with Verilator
@pytest.mark.rtl
def test_two_processes_building_the_same_key_build_once(shared, counter_text):
    """Two processes build the same model at once: one builds, the other waits on the lock
    and uses its entry; the entry is complete and works."""
    root = shared / "sim"
    procs = [_spawn(BUILD_SCRIPT, shared / "counter.v", root) for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err
        outs.append(json.loads(out.splitlines()[-1]))
    assert sorted(o["cached"] for o in outs) == [False, True], outs
    waiter = next(o for o in outs if o["cached"])
    assert waiter["waited_s"] > 0, outs
    assert outs[0]["dir"] == outs[1]["dir"]
    assert _work_folders(root) == [] and cache_integrity_check(root) == []
    b = build_verilog(counter_text, "counter", root=root)
    assert b.cached and str(b.dir) == outs[0]["dir"]
    _check_model(b, shared)


# (signal, seconds after the build folder appeared)
KILLS = [(signal.SIGTERM, 0.5), (signal.SIGKILL, 0.5), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0),
         (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)]
# SIGINT at 3 s: once, from a clean clone with both cores busy, the build exited 0 instead of -SIGINT
# (not yet understood; kept apart so that it is seen, see test_sigint_stops_a_build).
SIGINT_KILLS = [(signal.SIGINT, 3.0)]


@pytest.mark.rtl
def test_killed_builds_leave_nothing_behind(tmp_path, shared, counter_text):
    # The late kills must land inside the build: on a quiet machine the counter's cold build took
    # 5.04 s once, and a SIGKILL at 5.0 s then came after the entry was in place. So they come at
    # 60 % of a cold build measured here.
    ref = build_verilog(counter_text, "counter", root=tmp_path / "ref")
    late = min(5.0, 0.6 * ref.build_s)
    _kill_builds(tmp_path, shared, counter_text, [(sig, min(after, late)) for sig, after in KILLS])


@pytest.mark.rtl
@pytest.mark.xfail(strict=False, reason="open: once exited 0 after SIGINT at 3 s under load (docs/cosim.md)")
def test_sigint_stops_a_build(tmp_path, shared, counter_text):
    _kill_builds(tmp_path, shared, counter_text, SIGINT_KILLS + [(signal.SIGKILL, 2.0)])


def _kill_builds(tmp_path, shared, counter_text, kills):
    """Builds killed at fixed points: after SIGTERM/SIGINT no process of the build's groups
    runs and its folder is gone; after SIGKILL the next build kills and removes what was
    left. Then a build succeeds and its model works."""
    root = tmp_path / "sim"
    sigterm_before = signal.getsignal(signal.SIGTERM)
    left = None                              # (folder, groups) a SIGKILL left behind
    for sig, after in kills:
        p = _spawn(BUILD_SCRIPT, shared / "counter.v", root)
        tmp = _wait_for(lambda: next(iter(root.glob(f"*.tmp-{p.pid}-*")), None) if root.exists() else None,
                        120, f"the build folder of pid {p.pid}")
        if left is not None:
            # The build swept before making its folder.
            folder, groups = left
            assert not folder.exists()
            assert _live_in_groups(groups) == [] and str(folder) not in B._tagged_processes(root)
            left = None
        time.sleep(after)
        try:
            groups = set(json.loads((tmp / "owner.json").read_text())["groups"])
        except (OSError, ValueError):
            groups = set()
        os.kill(p.pid, sig)
        p.communicate(timeout=120)
        assert p.returncode == -sig, (sig, after, p.returncode)
        if sig == signal.SIGKILL:
            left = (tmp, groups)
            continue
        assert not tmp.exists(), (sig, after)
        assert _live_in_groups(groups) == [], (sig, after, groups)
        assert B._tagged_processes(root) == {}, (sig, after)
    b = build_verilog(counter_text, "counter", root=root)
    assert not b.cached
    folder, groups = left
    assert not folder.exists() and _live_in_groups(groups) == [] and B._tagged_processes(root) == {}
    assert _work_folders(root) == [] and cache_integrity_check(root) == []
    assert signal.getsignal(signal.SIGTERM) == sigterm_before
    _check_model(b, shared)


@pytest.mark.rtl
def test_build_timeout_kills_the_group(tmp_path, counter_text):
    root = tmp_path / "sim"
    t0 = time.monotonic()
    with pytest.raises(BuildError, match="timed out"):
        build_verilog(counter_text, "counter", root=root, timeout_s=1.0)
    assert time.monotonic() - t0 < 30
    assert _work_folders(root) == [] and B._tagged_processes(root) == {}
    assert cache_integrity_check(root) == []


@pytest.mark.rtl
def test_entry_with_a_truncated_marker_is_rebuilt(tmp_path, shared, counter_text):
    root = tmp_path / "sim"
    key = build_key(counter_text, "counter", waves=False)
    entry = root / key[:20]
    entry.mkdir(parents=True)
    (entry / "counter").write_bytes(b"\x7fELF, not really")
    marker = json.dumps({"key": key, "top": "counter", "build_s": 1.0})
    (entry / MARKER).write_text(marker[:len(marker) // 2])
    problems = cache_integrity_check(root)
    assert len(problems) == 1 and "unreadable build.json" in problems[0], problems
    b = build_verilog(counter_text, "counter", root=root)
    assert not b.cached and b.dir == entry
    assert _work_folders(root) == [] and cache_integrity_check(root) == []
    _check_model(b, shared)


@pytest.mark.rtl
def test_run_folders_are_removed_after_a_run(shared, counter_text, monkeypatch):
    monkeypatch.delenv(KEEP_RUNS_ENV, raising=False)
    root = shared / "sim"
    b = build_verilog(counter_text, "counter", root=root)
    before = set(b.dir.glob("run-*"))
    res = run_cocotb(b, "cocotb_counter", testcase="counts", python_path=[shared], timeout_s=120)
    assert res.passed, res.summary()
    d = res.run_dir
    assert d.parent == b.dir and d.name.startswith(f"run-{os.getpid()}-") and (d / "results.xml").exists()
    del res
    gc.collect()
    assert not d.exists() and set(b.dir.glob("run-*")) == before
    # FLASHNPU_KEEP_RUNS=1 keeps them.
    monkeypatch.setenv(KEEP_RUNS_ENV, "1")
    res = run_cocotb(b, "cocotb_counter", testcase="counts", python_path=[shared], timeout_s=120)
    kept = res.run_dir
    del res
    gc.collect()
    assert kept.name.startswith("run-keep-") and (kept / "results.xml").exists()
    B._remove_tree(kept)


@pytest.mark.rtl
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_run_leaves_no_simulator_and_no_run_folder(shared, counter_text, monkeypatch, sig):
    """SIGTERM during a simulation kills the simulator and removes the run folder before the
    process ends; after SIGKILL the simulator dies with its parent and the next run folder
    made next to it removes the old one."""
    monkeypatch.delenv(KEEP_RUNS_ENV, raising=False)
    root = shared / "sim"
    b = build_verilog(counter_text, "counter", root=root)
    before = set(b.dir.glob("run-*"))
    p = _spawn(RUN_SCRIPT, shared / "counter.v", root, shared)
    try:
        assert p.stdout.readline().strip() == "running"
        run = _wait_for(lambda: next(iter(set(b.dir.glob(f"run-{p.pid}-*")) - before), None), 60,
                        "the run folder")
        sims = _wait_for(lambda: _simulators_in(run), 60, "the simulator")
        time.sleep(0.5)
        os.kill(p.pid, sig)
        p.communicate(timeout=60)
    finally:
        p.kill()
        p.wait()
    _wait_for(lambda: not any(B._pid_alive(s) for s in sims), 30, "the simulator to end")
    if sig == signal.SIGKILL:
        assert run.exists()
        RunFolder(b.dir).remove()
    assert not run.exists() and set(b.dir.glob("run-*")) == before


def _simulators_in(run):
    """Live processes whose FLASHNPU_RUN_DIR is ``run``."""
    tag = f"FLASHNPU_RUN_DIR={run}".encode()
    found = []
    for pid, state, _ in B._proc_table():
        if state in ("Z", "X") or pid == os.getpid():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if tag in env:
            found.append(pid)
    return found
