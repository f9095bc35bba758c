"""The cocotb side of the fuzz campaign's RTL categories: many programs per simulator launch.

``flashnpu/fuzz_rtl.py`` writes ``$FLASHNPU_RUN_DIR/jobs.json`` and ``images.npz``
and runs this module on the Verilated ``NPU(config)`` (module ``npu``, the
model :func:`flashnpu.cosim.rtl_backend.build_npu` builds). A job is a list
of steps; each step

* resets the NPU first (``"hard"``: the ``rst`` pin; ``"soft"``: the
  ``SOFT_RESET`` bit of ``CONTROL``, then waits until ``STATUS`` says the NPU is
  quiet; ``"none"``: starts again right after the previous done),
* loads its DRAM image (``mem_size`` bytes; DECERR at or beyond it, and on
  the ``faults`` ranges SLVERR or DECERR, per beat),
* writes ``PROG_ADDR`` and the grant registers, sets ``START``, and waits for
  done or error under a watchdog of ``timeout_cycles``,
* appends its result (``STATUS``, error code, ``ERROR_PC``, counters, the
  watchdog's verdict) to ``results.jsonl`` and its DRAM to ``out/<job>_<step>.npy``.

A ``start`` line precedes each step, so that when the simulator dies the
parent knows which step killed it. The DRAM is cocotbext-axi's ``AxiRam``
(random ready/valid pauses on all five channels when ``backpressure``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import traceback
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam
from cocotbext.axi.constants import AxiResp

from flashnpu.spec import regmap
from flashnpu.spec.regmap import COUNTERS, CONTROL_START, REG

CLOCK_NS = 10
POLL_CYCLES = 20_000
_RESP = {"SLVERR": AxiResp.SLVERR, "DECERR": AxiResp.DECERR}


def _pauses(rng: random.Random, p: float):
    while True:
        yield rng.random() < p


class FuzzDram:
    """``AxiRam`` whose size (DECERR beyond it) and fault ranges change from step to step."""

    def __init__(self, dut, capacity: int):
        logging.getLogger(f"cocotb.{dut._name}.m_axi").setLevel(logging.ERROR)
        self.capacity = int(capacity)
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi", bus_separator="__"), dut.clk, dut.rst,
                          size=self.capacity)
        self.size = self.capacity
        self.faults = []
        self.errors = []
        self.beats = 0             # data beats served (read and write), for activity after a run
        self.beats_at_end = 0
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

    def configure(self, size: int, faults, backpressure: bool, rng: random.Random, p: float):
        self.size = int(size)
        self.faults = [(int(lo), int(hi), _RESP[str(k).upper()]) for lo, hi, k in faults]
        self.errors = []
        self._r_resp = self._b_resp = 0
        rd, wr = self.ram.read_if, self.ram.write_if
        for ch in (rd.ar_channel, rd.r_channel, wr.aw_channel, wr.w_channel, wr.b_channel):
            ch.set_pause_generator(_pauses(random.Random(rng.random()), p) if backpressure else None)
            if not backpressure:
                ch.pause = False        # a killed pause generator leaves the last value (maybe a pause)

    def resp(self, address: int, length: int) -> int:
        if address + length > self.size:
            return AxiResp.DECERR
        worst = AxiResp.OKAY
        for lo, hi, code in self.faults:
            if address < hi and lo < address + length:
                worst = max(worst, code)
        return worst

    async def _read(self, address, length):
        self.beats += 1
        resp = self.resp(address, length)
        if resp:
            self._r_resp = resp
            self.errors.append(("read", address, int(resp)))
            raise IOError(f"read of {length} B at {address:#x}: {AxiResp(resp).name}")
        return self.ram.read(address, length)

    async def _write(self, address, data):
        self.beats += 1
        resp = self.resp(address, len(data))
        if resp:
            self._b_resp = max(self._b_resp, int(resp))
            self.errors.append(("write", address, int(resp)))
            raise IOError(f"write of {len(data)} B at {address:#x}: {AxiResp(resp).name}")
        self.ram.write(address, data)

    def load(self, image: np.ndarray):
        self.ram.write(0, bytes(np.asarray(image, dtype=np.uint8)))

    def dump(self) -> np.ndarray:
        return np.frombuffer(self.ram.read(0, self.size), dtype=np.uint8).copy()


class Host:
    """The NPU's registers (``spec/regmap.py``) over AXI4-Lite."""

    def __init__(self, dut):
        logging.getLogger(f"cocotb.{dut._name}.s_axil").setLevel(logging.ERROR)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__"), dut.clk, dut.rst)

    async def read(self, name: str) -> int:
        return await self.axil.read_dword(REG[name])

    async def write(self, name: str, value: int):
        await self.axil.write_dword(REG[name], int(value))

    async def counter(self, name: str) -> int:
        lo = await self.read(f"{name}_LO")
        hi = await self.read(f"{name}_HI")
        return hi << 32 | lo

    async def status(self) -> dict:
        s = await self.read("STATUS")
        return {"raw": s, "busy": bool(s & regmap.STATUS_BUSY), "done": bool(s & regmap.STATUS_DONE),
                "error": bool(s & regmap.STATUS_ERROR),
                "code": (s >> regmap.STATUS_CODE_SHIFT) & regmap.STATUS_CODE_MASK}


async def _hard_reset(dut):
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)


async def _soft_reset(dut, host: Host, limit: int) -> tuple[bool, int, int]:
    """SOFT_RESET, then wait for not BUSY, not RESETTING and QUIET: (ok, STATUS, cycles waited)."""
    await host.write("CONTROL", regmap.CONTROL_SOFT_RESET)
    quiet = getattr(regmap, "STATUS_QUIET", 0)
    resetting = getattr(regmap, "STATUS_RESETTING", 0)
    t0 = get_sim_time("ns")
    while True:
        s = await host.read("STATUS")
        waited = round((get_sim_time("ns") - t0) / CLOCK_NS)
        if not s & regmap.STATUS_BUSY and not s & resetting and (not quiet or s & quiet):
            return True, s, waited
        if waited > limit:
            return False, s, waited
        await ClockCycles(dut.clk, 16)


async def _queue_states(host: Host, clk, window: int = 256) -> dict:
    names = [n for n, _ in COUNTERS]
    a = {n: await host.counter(n) for n in names}
    await ClockCycles(clk, window)
    b = {n: await host.counter(n) for n in names}
    states = {}
    for q in ("LOAD", "STORE", "MATRIX", "VECTOR"):
        states[q] = ("busy" if b[f"{q}_BUSY"] > a[f"{q}_BUSY"] else
                     "waiting for a token" if b[f"{q}_STALL"] > a[f"{q}_STALL"] else "idle")
    states["DISPATCH"] = ("blocked on a full queue" if b["DISPATCH_STALL"] > a["DISPATCH_STALL"] else
                          "dispatching" if b["INSTRUCTIONS"] > a["INSTRUCTIONS"] else "idle")
    return {"states": states, "counters": b}


async def _run_step(dut, host: Host, dram: FuzzDram, step: dict, image: np.ndarray, rng: random.Random) -> dict:
    result = {"reset_ok": True, "beats_before_step": dram.beats - dram.beats_at_end}
    reset = step.get("reset", "hard")
    if reset == "hard":
        await ClockCycles(dut.clk, int(step.get("pre_reset_cycles", 0)) or 1)
        result["beats_before_reset"] = dram.beats - dram.beats_at_end
        await _hard_reset(dut)
    elif reset == "soft":
        ok, s, waited = await _soft_reset(dut, host, int(step.get("reset_limit", 50_000)))
        result.update(reset_ok=ok, reset_status=s, reset_cycles=waited)
        if not ok:
            result.update(timeout=True, message=f"SOFT_RESET: STATUS {s:#x} still busy/resetting/not quiet "
                                                f"after {waited} cycles")
            return result
    dram.configure(step["mem_size"], step.get("faults", ()), bool(step.get("backpressure")), rng,
                   float(step.get("pause_p", 0.3)))
    dram.load(image)
    await host.write("PROG_ADDR", int(step["prog_addr"]))
    for name, value in (step.get("grant") or {}).items():
        await host.write(name, value)
    timeout = int(step["timeout_cycles"])
    t_wall = time.monotonic()
    t_start = get_sim_time("ns")
    await host.write("CONTROL", CONTROL_START)
    irq = getattr(dut, "irq", None)
    st = await host.status()
    waited = 0
    while not (st["done"] or st["error"]) and waited < timeout:
        chunk = min(POLL_CYCLES, timeout - waited)
        t0 = get_sim_time("ns")
        if irq is not None:
            await First(RisingEdge(irq), Timer(chunk * CLOCK_NS, "ns"))
        else:
            await Timer(chunk * CLOCK_NS, "ns")
        waited += max(1, round((get_sim_time("ns") - t0) / CLOCK_NS))
        st = await host.status()
    result.update(status=st["raw"], done=st["done"], error=st["error"], error_code=st["code"],
                  harness_cycles=round((get_sim_time("ns") - t_start) / CLOCK_NS),
                  sim_wall_s=time.monotonic() - t_wall, timeout=False, message="",
                  axi_errors=dram.errors[:10])
    if not (st["done"] or st["error"]):
        q = await _queue_states(host, dut.clk)
        c = q["counters"]
        states = ", ".join(f"{k}: {v}" for k, v in q["states"].items())
        bus = {}
        for sig in ("arvalid", "arready", "rvalid", "rready", "awvalid", "awready", "wvalid", "wready",
                    "bvalid", "bready"):
            h = getattr(dut, f"m_axi__{sig}", None)
            if h is not None:
                try:
                    bus[sig] = int(h.value)
                except ValueError:
                    bus[sig] = str(h.value)
        rd, wr = dram.ram.read_if, dram.ram.write_if
        bus["queued"] = {n: ch.count() for n, ch in (("ar", rd.ar_channel), ("r", rd.r_channel),
                                                     ("aw", wr.aw_channel), ("w", wr.w_channel),
                                                     ("b", wr.b_channel))}
        result["bus"] = bus
        result.update(timeout=True, counters=c, message=(
            f"watchdog: neither done nor error after {timeout} cycles (STATUS={st['raw']:#x}); {states}; "
            f"{c['INSTRUCTIONS']} instructions dispatched, BYTES_READ={c['BYTES_READ']}, "
            f"BYTES_WRITTEN={c['BYTES_WRITTEN']}"))
    elif step.get("counters", "all") == "all":
        result["counters"] = {n: await host.counter(n) for n, _ in COUNTERS}
    else:
        result["counters"] = {n: await host.counter(n) for n in ("CYCLES", "INSTRUCTIONS")}
    result["error_pc"] = await host.read("ERROR_PC")
    result["cycles"] = result["counters"]["CYCLES"]
    result["axi_error_count"] = len(dram.errors)
    dram.beats_at_end = dram.beats
    return result


@cocotb.test()
async def fuzz_batch(dut):
    """Run every job of ``jobs.json``; one result line per step."""
    run_dir = Path(os.environ["FLASHNPU_RUN_DIR"])
    spec = json.loads((run_dir / "jobs.json").read_text())
    images = np.load(run_dir / "images.npz")
    (run_dir / "out").mkdir(exist_ok=True)
    log = open(run_dir / "results.jsonl", "a", buffering=1)
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dram = FuzzDram(dut, spec["capacity"])
    host = Host(dut)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    for job in spec["jobs"]:
        rng = random.Random(job.get("seed", 0))
        for k, step in enumerate(job["steps"]):
            log.write(json.dumps({"job": job["id"], "step": k, "event": "start"}) + "\n")
            try:
                r = await _run_step(dut, host, dram, step, images[step["image"]], rng)
            except Exception as e:       # the harness itself: the parent counts it against this step
                log.write(json.dumps({"job": job["id"], "step": k, "event": "harness-error",
                                      "message": f"{type(e).__name__}: {e}",
                                      "traceback": traceback.format_exc()[-2000:]}) + "\n")
                log.close()
                raise
            if not r.get("timeout") or "counters" in r:
                np.save(run_dir / "out" / f"{job['id']}_{k}.npy", dram.dump())
            log.write(json.dumps({"job": job["id"], "step": k, "event": "end", **r}) + "\n")
            if r.get("timeout"):
                break               # the NPU is stuck: the rest of this job cannot run
    log.write(json.dumps({"event": "batch-end"}) + "\n")
    log.close()


@cocotb.test()
async def counter_check(dut):
    """The small component of the build_cache category: count ``FUZZ_COUNTER_STEP`` per enabled cycle."""
    if not hasattr(dut, "count"):
        return
    step = int(os.environ.get("FUZZ_COUNTER_STEP", "1"))
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.rst.value = 1
    dut.en.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    dut.en.value = 1
    await ClockCycles(dut.clk, 10)
    dut.en.value = 0
    await ClockCycles(dut.clk, 2)
    assert int(dut.count.value) == (10 * step) & 0xFFFF, (int(dut.count.value), step)
