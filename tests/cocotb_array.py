"""cocotb test of the Verilated ``SystolicArray``: weight tiles and A rows streamed back to back.

Run by ``tests/test_rtl_array.py`` through ``flashnpu.cosim.build.run_cocotb``.
Input ``$FLASHNPU_RUN_DIR/array_in.npz``: ``w`` [T, dim, dim] (W of each tile,
``W[k][n]``), ``transpose`` [T], ``a`` [sum(M), dim] (``A_WIDE_BITS``-bit signed lanes), ``m`` [T] (A rows per
tile), ``expected`` [sum(M), dim] (int64 holding INT32). The driver follows the
array's timing contract: tile *t*'s rows (or columns) load in cycles
``c0 .. c0+dim-1``, its A rows are presented in ``c0+1 .. c0+M``, and the next
tile starts at ``c0 + max(M, dim)`` (the fastest the contract allows). Every
product row is compared bit for bit, and its latency against ``2*dim - 1``.
Output ``array_out.npz`` (``got``) and ``array_result.json`` (mismatches).
"""

import json
import os
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from flashnpu.spec.numerics import A_WIDE_BITS


def _pack(lanes, bits):
    mask = (1 << bits) - 1
    v = 0
    for j, x in enumerate(lanes):
        v |= (int(x) & mask) << (bits * j)
    return v


def _unpack_signed(v, n, bits):
    out = []
    for j in range(n):
        x = (v >> (bits * j)) & ((1 << bits) - 1)
        out.append(x - (1 << bits) if x >> (bits - 1) else x)
    return out


@cocotb.test()
async def stream_tiles(dut):
    run_dir = Path(os.environ["FLASHNPU_RUN_DIR"])
    d = np.load(run_dir / "array_in.npz")
    w, tr, a, m, expected = d["w"], d["transpose"], d["a"], d["m"], d["expected"]
    dim = w.shape[1]
    latency = 2 * dim - 1

    # Per-cycle schedule: (w_word or None, transpose, a_word or None).
    sched = []
    row = 0
    for t in range(len(m)):
        span = max(int(m[t]), dim)
        # cycle c0 + i, i in 0..span-1: weight row i (i < dim); A row i-1 (1 <= i <= M)
        cyc = [[None, 0, None] for _ in range(span + 1)]
        for i in range(dim):
            lanes = w[t][:, i] if tr[t] else w[t][i]      # column i of W, or row i
            cyc[i][0], cyc[i][1] = _pack(lanes, 8), int(tr[t])
        for i in range(int(m[t])):
            cyc[i + 1][2] = _pack(a[row + i], A_WIDE_BITS)
        row += int(m[t])
        if sched:
            # The next tile's c0 is this tile's c0 + span: merge the overlap cycle.
            last = sched[-1]
            first = cyc[0]
            assert last[0] is None
            sched[-1] = [first[0], first[1], last[2]]
            cyc = cyc[1:]
        sched.extend(cyc)
    sched.extend([[None, 0, None]] * (latency + 2))

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.w_valid.value = 0
    dut.a_valid.value = 0
    dut.w_transpose.value = 0
    dut.w_data.value = 0
    dut.a_data.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0

    got, out_cycles, in_cycles = [], [], []
    for c, (wv, t, av) in enumerate(sched):
        await RisingEdge(dut.clk)
        dut.w_valid.value = wv is not None
        dut.w_transpose.value = t
        dut.w_data.value = 0 if wv is None else wv
        dut.a_valid.value = av is not None
        dut.a_data.value = 0 if av is None else av
        if av is not None:
            in_cycles.append(c)
        await ReadOnly()
        # Cycle c: registers as of edge c, inputs as just written (taken at edge c+1).
        if dut.out_valid.value:
            got.append(_unpack_signed(int(dut.out_data.value), dim, 32))
            out_cycles.append(c)

    got = np.array(got, dtype=np.int64).reshape(-1, dim)
    np.savez(run_dir / "array_out.npz", got=got)
    mismatches = []
    if got.shape != expected.shape:
        mismatches.append(f"{got.shape[0]} product rows out, {expected.shape[0]} expected")
    else:
        for r, n in zip(*np.nonzero(got != expected)):
            if len(mismatches) < 10:
                mismatches.append(f"row {r} lane {n}: got {got[r, n]}, expected {expected[r, n]}")
    lat = sorted({o - i for o, i in zip(out_cycles, in_cycles)})
    if lat != [latency]:
        mismatches.append(f"latencies {lat}, contract says {latency}")
    (run_dir / "array_result.json").write_text(json.dumps(
        {"rows": int(got.shape[0]), "cycles": len(sched), "latencies": lat,
         "mismatches": mismatches}, indent=2))
    assert not mismatches, "; ".join(mismatches)
