"""cocotb test of the Verilated ``DmaStreamBench`` (tests/test_axi_memory.py): AxiMemory behind the DmaEngine.

Run by ``tests/test_axi_memory.py::test_verilated_stream_rate_and_data``. Reads
``$FLASHNPU_RUN_DIR/params.json``, writes ``result.json``: whether a random
image survives backdoor load -> LOAD -> STORE -> backdoor read, the cycle spans
and beats of a LOAD queue and a STORE queue, and the wall-clock rates.
"""

import json
import os
import random
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge, Timer

from flashnpu.cosim.fast_dram import load_image, read_image

CLOCK_NS = 10


async def _value(dut, name):
    await ReadOnly()
    v = int(getattr(dut, name).value)
    await RisingEdge(dut.clk)
    return v


async def _run(dut, unit, instr, n, *, chunk=20000, limit=10_000_000):
    """Offer ``instr`` ``n`` times; wait (Timer, no Python per cycle) until all are done or an error."""
    await RisingEdge(dut.clk)
    dut.clear.value = 1
    await RisingEdge(dut.clk)
    dut.clear.value = 0
    getattr(dut, f"{unit}_instr").value = instr
    getattr(dut, f"{unit}_n").value = n
    waited = 0
    while waited < limit:
        await Timer(chunk * CLOCK_NS, "ns")
        waited += chunk
        await ReadOnly()
        if int(getattr(dut, f"{unit}_done").value) == n or int(getattr(dut, f"{unit}_error").value):
            break
    await RisingEdge(dut.clk)
    getattr(dut, f"{unit}_n").value = 0
    first = await _value(dut, f"{unit}_first")
    last = await _value(dut, f"{unit}_last")
    return last - first


@cocotb.test()
async def stream(dut):
    run_dir = Path(os.environ["FLASHNPU_RUN_DIR"])
    p = json.loads((run_dir / "params.json").read_text())
    beat = p["beat"]
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    for s in ("clear", "ld_n", "st_n", "bd_we", "bd_slverr_we"):
        getattr(dut, s).value = 0
    dut.rst.value = 1
    await Timer(3 * CLOCK_NS, "ns")
    dut.rst.value = 0
    out = {}

    # Backdoor load, LOAD into the scratchpad, STORE elsewhere, backdoor read.
    rng = random.Random(p["seed"])
    image = rng.randbytes(p["image_bytes"])
    t, cpu = time.perf_counter(), time.process_time()
    await load_image(dut, image, beat)
    out["backdoor_write_words_per_s"] = round(len(image) // beat / (time.perf_counter() - t))
    out["backdoor_write_words_per_cpu_s"] = round(len(image) // beat / (time.process_time() - cpu))
    spad_bytes = 4096 * beat
    await _run(dut, "ld", p["load"], 1)
    await _run(dut, "st", p["store"], 1)
    t, cpu = time.perf_counter(), time.process_time()
    back = await read_image(dut, 0x200000, spad_bytes, beat)
    out["backdoor_read_words_per_s"] = round(spad_bytes // beat / (time.perf_counter() - t))
    out["backdoor_read_words_per_cpu_s"] = round(spad_bytes // beat / (time.process_time() - cpu))
    out["stored_ok"] = back == image[0x10000:0x10000 + spad_bytes]
    whole = await read_image(dut, 0, len(image), beat)
    out["image_ok"] = whole == image

    # Long queues: no Python per cycle.
    for unit, key, beats_sig in (("ld", "stream_load", "r_beats"), ("st", "stream_store", "w_beats")):
        t, cpu = time.perf_counter(), time.process_time()
        c0 = await _value(dut, "cycles")
        span = await _run(dut, unit, p[key], p["n_stream"])
        c1 = await _value(dut, "cycles")
        wall = time.perf_counter() - t
        cpu = time.process_time() - cpu
        name = "load" if unit == "ld" else "store"
        out[f"{name}_span"] = span
        out[f"{name}_beats"] = await _value(dut, beats_sig)
        out[f"{name}_cycles_per_s"] = round((c1 - c0) / wall)
        out[f"{name}_beats_per_s"] = round(out[f"{name}_beats"] / wall)
        out[f"{name}_wall_s"] = round(wall, 3)
        # CPU time of the simulator process: the rate on an unshared core.
        out[f"{name}_cpu_s"] = round(cpu, 3)
        out[f"{name}_cycles_per_cpu_s"] = round((c1 - c0) / cpu)
        out[f"{name}_beats_per_cpu_s"] = round(out[f"{name}_beats"] / cpu)
    out["errors"] = [await _value(dut, "ld_error"), await _value(dut, "st_error")]
    (run_dir / "result.json").write_text(json.dumps(out, indent=1))
