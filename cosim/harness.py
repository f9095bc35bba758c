"""The cocotb side of an NPU run: DRAM model, host driver, watchdog.

The top is ``NPU(config)`` as Verilog module ``npu`` (ports ``clk``, ``rst``,
``m_axi__*``, ``s_axil__*``, ``irq``). :func:`npu_session` is the cocotb test
that :mod:`flashnpu.cosim.rtl_backend` runs. Data passes through files in
``$FLASHNPU_RUN_DIR``:

* in: ``input.npz`` (``dram``: the uint8 image, program included) and
  ``input.json`` (``prog_addr``, ``mem_size``, ``timeout_cycles``,
  ``backpressure``, ``seed``, ``slverr``: list of ``[lo, hi)`` byte ranges);
* out: ``output.npz`` (``dram``: the image after the run) and ``result.json``
  (``status``, ``done``, ``error_code``, ``error_pc``, ``counters``,
  ``timeout``, ``message``, ...).

With a ``SimTop`` top (module ``sim_top``, ports ``bd_*``), the DRAM is the
HDL memory of ``cosim/axi_memory.py`` instead, loaded and read through its
backdoor (:class:`FastDram`, using ``cosim/fast_dram.py``). Otherwise the DRAM is cocotbext-axi's ``AxiRam`` (it also asserts that no burst
crosses 4 KiB), extended by :class:`DramModel` to answer DECERR beyond
``mem_size`` and SLVERR inside the ``slverr`` ranges, so the NPU's error paths
can be driven. :class:`NpuHost` drives the registers of ``spec/regmap.py`` over
``AxiLiteMaster``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam
from cocotbext.axi.constants import AxiResp

from flashnpu.cosim.fast_dram import load_image, read_image, set_slverr
from flashnpu.spec.isa import ErrorCode, Queue
from flashnpu.spec.regmap import (COUNTERS, CONTROL_ABORT, CONTROL_SOFT_RESET, CONTROL_START, NPU_ID, REG,
                                STATUS_BUSY, STATUS_CODE_MASK, STATUS_CODE_SHIFT, STATUS_DONE,
                                STATUS_ERROR, STATUS_QUIET, STATUS_RESETTING)

__all__ = ["CLOCK_NS", "DramModel", "FastDram", "NpuHost", "pause_generator", "npu_session"]

#: Clock period of the testbench.
CLOCK_NS = 10
#: Cycles between two STATUS polls while waiting (irq wakes the wait earlier).
POLL_CYCLES = 20_000


def pause_generator(rng: random.Random, p: float):
    """Pause a channel in each cycle with probability ``p`` (cocotbext-axi pause generator)."""
    while True:
        yield rng.random() < p


class DramModel:
    """``AxiRam`` on ``m_axi`` that answers DECERR at or beyond ``size`` and SLVERR in ``slverr`` ranges.

    ``faults`` (settable between runs) adds ``(lo, hi, resp)`` ranges answered
    with ``resp`` (``AxiResp.SLVERR`` or ``AxiResp.DECERR``).

    A beat that errs reads as zeros and is not written; the burst's B carries
    its worst response. cocotbext-axi turns an exception in a beat's read or
    write into SLVERR; the response is then rewritten on its way to R or B.
    """

    def __init__(self, dut, size: int, *, slverr=(), prefix="m_axi"):
        self.size = int(size)
        self.slverr = [(int(lo), int(hi)) for lo, hi in slverr]
        self.faults = []
        logging.getLogger(f"cocotb.{dut._name}.{prefix}").setLevel(logging.WARNING)
        self.ram = AxiRam(AxiBus.from_prefix(dut, prefix, bus_separator="__"), dut.clk, dut.rst,
                          size=self.size)
        self.errors = []            # (kind, address, resp) of every error beat
        self._r_resp = 0
        self._b_resp = 0
        rd, wr = self.ram.read_if, self.ram.write_if
        rd._read = self._read
        wr._write = self._write
        r_send, b_send = rd.r_channel.send, wr.b_channel.send

        async def send_r(r):
            if self._r_resp:
                r.rresp = self._r_resp
                self._r_resp = 0
            await r_send(r)

        async def send_b(b):
            if self._b_resp:
                b.bresp = self._b_resp
                self._b_resp = 0
            await b_send(b)

        rd.r_channel.send = send_r
        wr.b_channel.send = send_b

    def resp(self, address: int, length: int) -> int:
        """The response to an access of ``length`` bytes at ``address``."""
        if address + length > self.size:
            return AxiResp.DECERR
        for lo, hi, resp in self.faults:
            if address < hi and lo < address + length:
                return resp
        for lo, hi in self.slverr:
            if address < hi and lo < address + length:
                return AxiResp.SLVERR
        return AxiResp.OKAY

    async def _read(self, address, length):
        resp = self.resp(address, length)
        if resp:
            self._r_resp = resp
            self.errors.append(("read", address, int(resp)))
            raise IOError(f"read of {length} B at {address:#x}: {AxiResp(resp).name}")
        return self.ram.read(address, length)

    async def _write(self, address, data):
        resp = self.resp(address, len(data))
        if resp:
            self._b_resp = max(self._b_resp, int(resp))
            self.errors.append(("write", address, int(resp)))
            raise IOError(f"write of {len(data)} B at {address:#x}: {AxiResp(resp).name}")
        self.ram.write(address, data)

    async def load(self, image: np.ndarray, writable_end: int):
        """The image, then zeros to the end of the memory (``writable_end`` is for FastDram)."""
        img = bytes(np.asarray(image, dtype=np.uint8))
        self.ram.write(0, img + bytes(self.size - len(img)))

    async def dump(self, nbytes: int) -> np.ndarray:
        """The whole memory (reading it costs no clock; ``nbytes`` is for FastDram)."""
        return np.frombuffer(self.ram.read(0, self.size), dtype=np.uint8).copy()

    def set_backpressure(self, rng: random.Random, p: float = 0.3):
        """Random stalls on every channel: ready low on AR/AW/W, valid gaps on R/B."""
        rd, wr = self.ram.read_if, self.ram.write_if
        for ch in (rd.ar_channel, rd.r_channel, wr.aw_channel, wr.w_channel, wr.b_channel):
            ch.set_pause_generator(pause_generator(random.Random(rng.random()), p))


class FastDram:
    """The HDL memory of ``SimTop`` (``cosim/axi_memory.py``) through the backdoor helpers of
    ``cosim/fast_dram.py``.

    The backdoor moves one word per clock, and the memory can be much larger
    than an image (one build serves a whole suite), so only what matters moves:
    :meth:`load` writes the image and clears what earlier runs may have left
    beyond it (below ``_dirty_end``, the end of every earlier image and
    writable window; above it the memory is still zero), and :meth:`dump`
    reads back the image.
    """

    def __init__(self, dut, size: int, beat: int, *, slverr=()):
        self.dut = dut
        self.size = int(size)
        self.beat = int(beat)
        if len(slverr) > 1:
            raise ValueError("the HDL memory has one SLVERR window")
        self.slverr = [(int(lo), int(hi)) for lo, hi in slverr]
        self.errors = []
        self.faults = []
        self._dirty_end = 0         # every byte at or beyond it is zero
        for name in ("bd_we", "bd_slverr_we", "bd_addr", "bd_wdata"):
            getattr(dut, name).value = 0

    async def load(self, image: np.ndarray, writable_end: int):
        """Write ``image`` at 0 and zeros after it up to what earlier runs touched;
        ``writable_end``: the end of this run's image and writable windows."""
        img = np.asarray(image, dtype=np.uint8).tobytes()
        if len(img) > self.size:
            raise ValueError(f"image of {len(img)} B: larger than the {self.size}-byte memory")
        writable_end = min(int(writable_end), self.size)     # beyond it the memory answers DECERR
        # Below the dirty end every word is written (zeros too); above it only non-zero words.
        dirty = -(-self._dirty_end // self.beat) * self.beat
        img = img + bytes(max(0, dirty - len(img)))
        await load_image(self.dut, img[:dirty], self.beat)
        if len(img) > dirty:
            await load_image(self.dut, img[dirty:], self.beat, addr=dirty, assume_zero=True)
        self._dirty_end = max(self._dirty_end, len(img), int(writable_end))
        ranges = self.slverr + [(lo, hi) for lo, hi, resp in self.faults if resp == AxiResp.SLVERR]
        if any(resp != AxiResp.SLVERR for _, _, resp in self.faults) or len(ranges) > 1:
            raise ValueError("the HDL memory answers one SLVERR range (no DECERR ranges)")
        lo, hi = ranges[0] if ranges else (0, 0)
        await set_slverr(self.dut, lo, hi - lo)

    async def dump(self, nbytes: int) -> np.ndarray:
        """The first ``nbytes`` (the image) of the memory."""
        data = await read_image(self.dut, 0, nbytes, self.beat)
        return np.frombuffer(data, dtype=np.uint8).copy()


class NpuHost:
    """The host's view of the NPU registers (``spec/regmap.py``) over AXI4-Lite."""

    def __init__(self, dut, prefix="s_axil"):
        logging.getLogger(f"cocotb.{dut._name}.{prefix}").setLevel(logging.WARNING)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, prefix, bus_separator="__"),
                                  dut.clk, dut.rst)

    async def read(self, name: str) -> int:
        return await self.axil.read_dword(REG[name])

    async def write(self, name: str, value: int):
        await self.axil.write_dword(REG[name], value)

    async def counter(self, name: str) -> int:
        lo = await self.read(f"{name}_LO")        # latches _HI
        hi = await self.read(f"{name}_HI")
        return hi << 32 | lo

    async def counters(self) -> dict:
        return {name: await self.counter(name) for name, _ in COUNTERS}

    async def status(self) -> dict:
        s = await self.read("STATUS")
        code = (s >> STATUS_CODE_SHIFT) & STATUS_CODE_MASK
        return {"raw": s, "busy": bool(s & STATUS_BUSY), "done": bool(s & STATUS_DONE),
                "error": bool(s & STATUS_ERROR), "error_code": code, "quiet": bool(s & STATUS_QUIET),
                "resetting": bool(s & STATUS_RESETTING)}


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"unknown({code})"


async def queue_states(host: NpuHost, clk, window: int = 256) -> dict:
    """What each queue is doing now: counters read twice, ``window`` cycles apart."""
    a = await host.counters()
    await ClockCycles(clk, window)
    b = await host.counters()
    rising = {k: b[k] > a[k] for k in a}
    states = {}
    for q in Queue:
        n = q.name
        if rising[f"{n}_BUSY"]:
            states[n] = "busy"
        elif rising[f"{n}_STALL"]:
            states[n] = "waiting for a token"
        else:
            states[n] = "idle"
    states["DISPATCH"] = "blocked on a full queue" if rising["DISPATCH_STALL"] else \
        "fetching/dispatching" if rising["INSTRUCTIONS"] else "idle"
    return {"states": states, "counters": b}


def _run_dir() -> Path:
    d = os.environ.get("FLASHNPU_RUN_DIR")
    if not d:
        raise RuntimeError("FLASHNPU_RUN_DIR is not set: run this through flashnpu.cosim.rtl_backend")
    return Path(d)


#: Cycles a SOFT_RESET or ABORT may take to quiet the bus before the harness calls it a hang.
STOP_TIMEOUT_CYCLES = 20_000

_RESP = {"SLVERR": AxiResp.SLVERR, "DECERR": AxiResp.DECERR}


async def _wait(host, clk, irq, until, timeout: int, on_progress=None) -> tuple[dict, int]:
    """Poll STATUS (waking on irq) until ``until(status)`` or ``timeout`` cycles: (status, cycles waited)."""
    st = await host.status()
    waited = 0
    while not until(st) and waited < timeout:
        chunk = min(POLL_CYCLES, timeout - waited)
        t0 = get_sim_time("ns")
        if irq is not None:
            await First(RisingEdge(irq), Timer(chunk * CLOCK_NS, "ns"))
        else:
            await Timer(chunk * CLOCK_NS, "ns")
        waited += max(1, round((get_sim_time("ns") - t0) / CLOCK_NS))
        if on_progress is not None:
            on_progress(waited)
        st = await host.status()
    return st, waited


async def _stop(host, clk, kind: str) -> tuple[dict, bool]:
    """Write SOFT_RESET or ABORT; wait until the NPU has stopped and the bus is quiet: (status, in time)."""
    await host.write("CONTROL", CONTROL_SOFT_RESET if kind == "soft_reset" else CONTROL_ABORT)
    for _ in range(STOP_TIMEOUT_CYCLES // 16):
        st = await host.status()
        if st["quiet"] and not st["busy"] and not st["resetting"]:
            return st, True
        await ClockCycles(clk, 16)
    return await host.status(), False


@cocotb.test()
async def npu_session(dut):
    """Run each program of the session in turn, in one simulation; read everything back.

    Before every run but the first, the harness writes SOFT_RESET and waits
    until STATUS shows the NPU quiet: no power cycle and no rebuild between
    runs. A run may be stopped ``stop_at`` cycles after START with a
    SOFT_RESET or an ABORT.
    """
    run_dir = _run_dir()
    cfg = json.loads((run_dir / "input.json").read_text())
    images = np.load(run_dir / "input.npz")
    runs = cfg["runs"]
    mem_size = int(cfg["mem_size"])
    rng = random.Random(cfg.get("seed", 0))

    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    fast = hasattr(dut, "bd_addr")    # SimTop: the NPU with the HDL memory inside
    if fast:
        if cfg.get("backpressure"):
            raise ValueError("backpressure needs the AxiRam memory (the HDL memory has fixed timing)")
        dram = FastDram(dut, mem_size, int(cfg["beat"]), slverr=cfg.get("slverr", ()))
    else:
        dram = DramModel(dut, mem_size, slverr=cfg.get("slverr", ()))
        if cfg.get("backpressure"):
            dram.set_backpressure(rng, float(cfg.get("pause_p", 0.3)))
    host = NpuHost(dut)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    ident = await host.read("ID")
    assert ident == NPU_ID, f"ID register reads {ident:#010x}, expected {NPU_ID:#010x}: not the NPU?"
    irq = getattr(dut, "irq", None)
    progress_file, tmp = run_dir / "progress", run_dir / "progress.tmp"

    def on_progress(waited):
        tmp.write_text(str(waited))
        tmp.replace(progress_file)          # atomic: the parent never reads half a number

    results = []
    hung = False
    for k, run in enumerate(runs):
        result = {"timeout": False, "message": ""}
        if k:
            st, ok = await _stop(host, dut.clk, "soft_reset")
            if not ok:
                result.update(timeout=True, message=f"SOFT_RESET before run {k} did not quiet the "
                              f"NPU in {STOP_TIMEOUT_CYCLES} cycles (STATUS={st['raw']:#x})")
        dram.faults = [(int(lo), int(hi), _RESP[resp]) for lo, hi, resp in run.get("faults", ())]
        image = images[f"dram{run['image']}"]
        await dram.load(image, int(run["writable_end"]))
        for name, value in run["grant"].items():
            await host.write(name, int(value))
        t_wall = time.monotonic()
        t_start = get_sim_time("ns")
        await host.write("CONTROL", CONTROL_START)
        timeout = int(run["timeout_cycles"])
        stop_at = run.get("stop_at")
        if stop_at is not None:
            await ClockCycles(dut.clk, int(stop_at))
            st, ok = await _stop(host, dut.clk, run.get("stop_kind", "soft_reset"))
            if not ok:
                result.update(timeout=True, message=f"{run.get('stop_kind')} {stop_at} cycles after "
                              f"START did not quiet the NPU in {STOP_TIMEOUT_CYCLES} cycles "
                              f"(STATUS={st['raw']:#x})")
        else:
            st, _ = await _wait(host, dut.clk, irq, lambda s: s["done"] or s["error"], timeout,
                                on_progress)
        harness_cycles = round((get_sim_time("ns") - t_start) / CLOCK_NS)
        sim_wall = time.monotonic() - t_wall
        result.update({"status": st["raw"], "done": st["done"], "error": st["error"],
                       "quiet": st["quiet"], "error_code": st["error_code"],
                       "error_name": _code_name(st["error_code"]), "harness_cycles": harness_cycles,
                       "sim_wall_s": sim_wall, "axi_errors": dram.errors[-20:]})
        if stop_at is None and not (st["done"] or st["error"]):
            q = await queue_states(host, dut.clk)
            c = q["counters"]
            states = ", ".join(f"{n}: {v}" for n, v in q["states"].items())
            result.update(timeout=True, counters=c, queue_states=q["states"], message=(
                f"watchdog: the NPU is neither done nor in error after {timeout} cycles "
                f"(STATUS={st['raw']:#x}, busy={st['busy']}); {states}; "
                f"{c['INSTRUCTIONS']} instructions dispatched, BYTES_READ={c['BYTES_READ']}, "
                f"BYTES_WRITTEN={c['BYTES_WRITTEN']}, CYCLES={c['CYCLES']}"))
        else:
            result["counters"] = await host.counters()
        result["error_pc"] = await host.read("ERROR_PC")
        result["cycles"] = result["counters"]["CYCLES"]
        result["dram"] = f"dram{k}"
        results.append((result, await dram.dump(image.size)))
        dut._log.info("run %d finished: %s", k, result["message"] or
                      f"status {st['raw']:#x} ({result['error_name']}), {result['cycles']} cycles, "
                      f"{harness_cycles / max(sim_wall, 1e-9):.0f} cycles/s")
        if result["timeout"]:
            hung = True
            break
    np.savez(run_dir / "output.npz", **{r["dram"]: d for r, d in results})
    (run_dir / "result.json").write_text(json.dumps({"runs": [r for r, _ in results]}, indent=2) + "\n")
    assert not hung, results[-1][0]["message"]
