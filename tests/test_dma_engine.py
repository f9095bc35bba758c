"""DmaEngine in Amaranth's simulator against a Python AXI4 slave and SRAM models.

The slave adds random latency and backpressure, may answer read bursts of
different IDs out of order and interleaved, checks every burst against the
AXI rules (4 KiB, length, INCR, size, wlast) and answers SLVERR/DECERR for
chosen address ranges.
"""

import random

import pytest
from amaranth.sim import Simulator

from flashnpu.hw.dma_engine import DmaEngine
from flashnpu.spec.config import load_config
from flashnpu.spec.isa import ErrorCode, Mem, Opcode, encode
from flashnpu.sw.perfmodel import LoadModel, StoreModel, plan_bursts

from support.axi_slave import Slave   # the shared AXI4 slave memory model
from support.dma_ref import dma, expect_load, expect_store
from support.sram import Sram

TINY = load_config("tiny")


def run(cfg, instrs, slave, *, fetches=(), fetch_p_ready=1.0, max_cycles=20000, seed=7, serial=False):
    """Run LOAD/STORE instructions (each queue in order) and fetch requests.

    ``serial``: offer an instruction only once the previous one of its queue is done.
    Returns a dict with the SRAMs, per-instruction (opcode, accept cycle, done
    cycle), fetch responses, the unit errors and the byte counters.
    """
    rng = random.Random(seed)
    dut = DmaEngine(cfg)
    spad = Sram.random(cfg.spad_rows, cfg.spad_row_bytes, rng)
    acc = Sram.random(cfg.acc_rows, cfg.acc_row_bytes, rng)
    spad0, acc0 = list(spad.rows), list(acc.rows)
    res = {"spad": spad, "acc": acc, "spad0": spad0, "acc0": acc0, "timeline": [],
           "fetched": [], "load_error": 0, "store_error": 0, "bytes_read": 0,
           "bytes_written": 0, "cycles": 0}
    queues = {Opcode.LOAD: [i for i in instrs if i[0] == Opcode.LOAD],
              Opcode.STORE: [i for i in instrs if i[0] == Opcode.STORE]}

    async def tb(ctx):
        units = {Opcode.LOAD: dut.load, Opcode.STORE: dut.store}
        pos = {op: 0 for op in units}
        waiting = {op: [] for op in units}   # accepted, not done
        fpos = 0
        for now in range(max_cycles):
            await slave.step(ctx, dut, now)
            for op, unit in units.items():
                q = queues[op]
                if pos[op] < len(q) and not (serial and waiting[op]):
                    kw = dict(q[pos[op]][1])
                    ctx.set(unit.instr.payload.as_value(), encode(op, **kw))
                    ctx.set(unit.instr.valid, 1)
                else:
                    ctx.set(unit.instr.valid, 0)
            ctx.set(dut.fetch.req.valid, fpos < len(fetches))
            if fpos < len(fetches):
                ctx.set(dut.fetch.req.payload.addr, fetches[fpos])
            ctx.set(dut.fetch.resp.ready, rng.random() < fetch_p_ready)
            spad.step(ctx, rd=dut.spad_rd, wr=dut.spad_wr)
            acc.step(ctx, rd=dut.acc_rd, wr=dut.acc_wr)
            res["bytes_read"] += ctx.get(dut.bytes_read_inc)
            res["bytes_written"] += ctx.get(dut.bytes_written_inc)
            for op, unit in units.items():
                if ctx.get(unit.done):
                    rec = waiting[op].pop(0)
                    rec[3] = now
                if ctx.get(unit.instr.valid) and ctx.get(unit.instr.ready):
                    rec = [op, queues[op][pos[op]][1], now, None]
                    res["timeline"].append(rec)
                    waiting[op].append(rec)
                    pos[op] += 1
            if ctx.get(dut.fetch.req.valid) and ctx.get(dut.fetch.req.ready):
                fpos += 1
            if ctx.get(dut.fetch.resp.valid) and ctx.get(dut.fetch.resp.ready):
                res["fetched"].append((ctx.get(dut.fetch.resp.payload.word),
                                       ctx.get(dut.fetch.resp.payload.error)))
            if ctx.get(dut.fetch.resp.valid):
                res.setdefault("fetch_valid_cycles", []).append(now)
            if ctx.get(dut.fetch.req.valid) and ctx.get(dut.fetch.req.ready):
                res.setdefault("fetch_req_cycles", []).append(now)
            res["load_error"] = ctx.get(dut.load.error)
            if res["load_error"] and "load_error_cycle" not in res:
                res["load_error_cycle"] = now
            res["store_error"] = ctx.get(dut.store.error)
            busy = ctx.get(dut.load.busy) or ctx.get(dut.store.busy)
            all_issued = all(pos[op] == len(queues[op]) for op in units)
            if (all_issued and not busy and not any(waiting.values())
                    and len(res["fetched"]) == len(fetches)):
                res["cycles"] = now
                # Idle a few cycles to catch stray writes.
                for _ in range(4):
                    await ctx.tick()
                    spad.step(ctx, rd=dut.spad_rd, wr=dut.spad_wr)
                    acc.step(ctx, rd=dut.acc_rd, wr=dut.acc_wr)
                return
            if res["load_error"] or res["store_error"]:
                if not busy and all(not waiting[op] or ctx.get(units[op].error) for op in units):
                    res["cycles"] = now
                    return
            await ctx.tick()
        raise AssertionError(f"timeout after {max_cycles} cycles: {res['timeline']}")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return res


def check_clean(slave):
    assert slave.errors == [], slave.errors


# --------------------------------------------------------------------- tests
LOADS = [
    dma(Mem.SPAD, 0x100, 0x40, 5, 3, 10, 8),       # strided, chunks
    dma(Mem.ACC, 0x2000, 0x30, 3, 2, 4, 5),        # acc: 4 beats per row on tiny
    dma(Mem.SPAD, 0x3F0, 0x0C, 4, 3, 100, 4),      # contiguous rows (stride = chunks*rb), crosses 4 KiB? no
    dma(Mem.ACC, 0x0FE0, 0x20, 4, 2, 200, 4),      # contiguous, crosses 4 KiB
]


@pytest.mark.parametrize("timing", ["ideal", "random", "reorder"])
def test_loads(timing):
    params = {"ideal": {}, "random": dict(lat=(0, 12), p_ready=0.6, p_rvalid=0.7),
              "reorder": dict(lat=(0, 20), p_ready=0.8, p_rvalid=0.8, reorder=True)}[timing]
    slave = Slave(TINY, seed=3, **params)
    dram = bytes(slave.mem)
    res = run(TINY, [(Opcode.LOAD, f) for f in LOADS], slave)
    check_clean(slave)
    spad, acc = res["spad0"], res["acc0"]
    for f in LOADS:
        if f["mem"] == Mem.SPAD:
            spad = expect_load(TINY, spad, dram, f)
        else:
            acc = expect_load(TINY, acc, dram, f)
    assert res["spad"].rows == spad
    assert res["acc"].rows == acc
    assert all(t[3] is not None for t in res["timeline"])
    assert res["load_error"] == 0
    total = sum(f["rows"] * f["chunks"] * (TINY.spad_row_bytes if f["mem"] == Mem.SPAD
                                           else TINY.acc_row_bytes) for f in LOADS)
    assert res["bytes_read"] == total


@pytest.mark.parametrize("timing", ["ideal", "random"])
def test_stores(timing):
    params = {"ideal": {}, "random": dict(lat=(0, 10), p_ready=0.5)}[timing]
    stores = [
        dma(Mem.SPAD, 0x100, 0x40, 5, 3, 10, 8),
        dma(Mem.ACC, 0x2000, 0x30, 3, 2, 4, 5),
        dma(Mem.ACC, 0x0FE0, 0x20, 4, 2, 200, 4),   # contiguous, crosses 4 KiB
        dma(Mem.SPAD, 0x1FF8, 0x04, 9, 1, 0, 0),    # contiguous spad rows, crosses 4 KiB
    ]
    slave = Slave(TINY, seed=5, **params)
    dram = bytes(slave.mem)
    res = run(TINY, [(Opcode.STORE, f) for f in stores], slave)
    check_clean(slave)
    for f in stores:
        dram = expect_store(TINY, res["spad0"] if f["mem"] == Mem.SPAD else res["acc0"], dram, f)
    assert bytes(slave.mem) == bytes(dram)
    assert res["spad"].rows == res["spad0"] and res["acc"].rows == res["acc0"]
    assert res["bytes_written"] == sum(f["rows"] * f["chunks"] * (4 if f["mem"] == Mem.SPAD else 16)
                                       for f in stores)


def test_bursts_split_at_4k_and_merge_contiguous_rows():
    # 40 contiguous spad rows of 4 bytes from 0xFE0: 8 beats to the boundary, then 16 + 16.
    f = dma(Mem.SPAD, 0x0FE0, 4, 40, 1, 0, 0)
    slave = Slave(TINY)
    res = run(TINY, [(Opcode.LOAD, f)], slave)
    check_clean(slave)
    assert [(a[2], a[3] + 1) for a in slave.ar_log] == [(0xFE0, 8), (0x1000, 16), (0x1040, 16)]
    # Not contiguous: one burst per DRAM row (3 chunks of 4 bytes = 3 beats).
    f = dma(Mem.SPAD, 0x100, 0x20, 3, 3, 0, 3)
    slave = Slave(TINY)
    run(TINY, [(Opcode.LOAD, f)], slave)
    assert [(a[2], a[3] + 1) for a in slave.aw_log + slave.ar_log] == [(0x100, 3), (0x120, 3), (0x140, 3)]
    # Store side uses the same planner.
    f = dma(Mem.ACC, 0x0FF0, 16, 3, 1, 0, 0)
    slave = Slave(TINY)
    run(TINY, [(Opcode.STORE, f)], slave)
    check_clean(slave)
    assert [(a[2], a[3] + 1) for a in slave.aw_log] == [(0xFF0, 4), (0x1000, 8)]


def test_several_outstanding_reads_with_distinct_ids():
    f = dma(Mem.SPAD, 0x0, 4, 128, 1, 0, 0)
    slave = Slave(TINY, lat=(20, 20))
    res = run(TINY, [(Opcode.LOAD, f)], slave)
    check_clean(slave)
    assert slave.max_r_in_flight == TINY.dma_max_outstanding
    assert {a[1] for a in slave.ar_log} == set(range(1, TINY.dma_max_outstanding + 1))


def test_load_throughput_one_beat_per_cycle():
    """A long contiguous LOAD moves one beat per cycle once the pipeline is full."""
    cfg = TINY.replace(dma_max_outstanding=4)
    for lat in (0, 8):
        n = 256
        slave = Slave(cfg, lat=(lat, lat))
        res = run(cfg, [(Opcode.LOAD, dma(Mem.SPAD, 0, 4, n, 1, 0, 0))], slave)
        _, _, start, done = res["timeline"][0]
        cycles = done - start
        print(f"LOAD {n} beats, latency {lat}: {cycles} cycles")
        assert cycles <= n + lat + 12


def test_fetch_interleaved_with_loads():
    from flashnpu.spec.isa import INSTR_BYTES
    slave = Slave(TINY, seed=9, lat=(0, 6), p_ready=0.7, reorder=True)
    addrs = [0x4000 + INSTR_BYTES * k for k in range(12)]
    loads = [dma(Mem.SPAD, 0x100, 4, 60, 1, 0, 0), dma(Mem.ACC, 0x800, 16, 20, 1, 0, 0)]
    res = run(TINY, [(Opcode.LOAD, f) for f in loads], slave, fetches=addrs, fetch_p_ready=0.5)
    check_clean(slave)
    assert [w for w, e in res["fetched"]] == [
        int.from_bytes(slave.mem[a:a + INSTR_BYTES], "little") for a in addrs]
    assert not any(e for w, e in res["fetched"])
    spad = expect_load(TINY, res["spad0"], bytes(slave.mem), loads[0])
    assert res["spad"].rows == spad
    assert {a[1] for a in slave.ar_log if a[2] >= 0x4000} == {0}


def test_fetch_error_flag():
    slave = Slave(TINY, rd_err=[(0x4020, 0x4040, 2), (0x4040, 0x4044, 3)])
    res = run(TINY, [], slave, fetches=[0x4000, 0x4020, 0x4040, 0x4060])
    assert [e for w, e in res["fetched"]] == [0, 1, 1, 0]


@pytest.mark.parametrize("resp,code", [(2, ErrorCode.AXI_SLVERR), (3, ErrorCode.AXI_DECERR)])
def test_load_error(resp, code):
    f = dma(Mem.SPAD, 0x100, 4, 64, 1, 0, 0)
    slave = Slave(TINY, lat=(0, 5), p_rvalid=0.8, rd_err=[(0x140, 0x144, resp)])
    res = run(TINY, [(Opcode.LOAD, f)], slave)
    assert res["load_error"] == code
    assert res["timeline"][0][3] is None            # no done
    # Never the bad beat's data, and nothing after it.
    assert res["spad"].rows[16] == res["spad0"][16]
    assert all(res["spad"].rows[r] == res["spad0"][r] for r in range(16, 64))
    assert not slave.pending_r                      # every requested beat was drained


@pytest.mark.parametrize("resp,code", [(2, ErrorCode.AXI_SLVERR), (3, ErrorCode.AXI_DECERR)])
def test_store_error(resp, code):
    f = dma(Mem.ACC, 0x100, 16, 20, 1, 0, 0)
    slave = Slave(TINY, lat=(0, 5), p_ready=0.7, wr_err=[(0x180, 0x184, resp)])
    res = run(TINY, [(Opcode.STORE, f)], slave)
    assert res["store_error"] == code
    assert res["timeline"][0][3] is None
    assert not slave.b_q and slave.b_cur is None


def test_wide_beat_config():
    """16x16 array, 128-bit beats: spad rows are one beat, acc rows four."""
    cfg = load_config("default")
    slave = Slave(cfg, seed=2, lat=(0, 8), p_ready=0.7, reorder=True)
    dram = bytes(slave.mem)
    loads = [dma(Mem.SPAD, 0x0F00, 0x20, 6, 2, 3, 7), dma(Mem.ACC, 0x2000, 0x100, 3, 2, 1, 9)]
    res = run(cfg, [(Opcode.LOAD, f) for f in loads], slave, fetches=[0x6000, 0x6020])
    check_clean(slave)
    assert res["spad"].rows == expect_load(cfg, res["spad0"], dram, loads[0])
    assert res["acc"].rows == expect_load(cfg, res["acc0"], dram, loads[1])
    assert [w for w, e in res["fetched"]] == [int.from_bytes(dram[a:a + 32], "little")
                                              for a in (0x6000, 0x6020)]


# ------------------------------------------------------------ cycle model
# The executable form of the cycle model in docs/dma.md, for an ideal slave:
# arready, awready, wready always high; a read burst whose AR handshake is in
# cycle h has its first beat on R from cycle h + 1 + lat, then one beat per
# cycle, bursts in AR order; a write burst whose last W handshake is in cycle w
# has its B in cycle w + 1 + lat.
def model_load_sequence(cfg, fs, lat, offered=None):
    """(accept, done) cycles of LOADs offered back to back (the model lives in sw/perfmodel.py)."""
    offered = offered or [0] * len(fs)
    m = LoadModel(cfg, lat)
    return [m.issue(o, f) for o, f in zip(offered, fs)]


def model_load_cycles(cfg, f, lat):
    """Cycles from the cycle a LOAD is accepted to the cycle of its done pulse (LOAD unit idle)."""
    (accept, done), = model_load_sequence(cfg, [f], lat)
    return done - accept


def model_store_sequence(cfg, fs, lat, offered=None):
    """(accept, done) cycles of STOREs offered back to back (the model lives in sw/perfmodel.py)."""
    offered = offered or [0] * len(fs)
    m = StoreModel(cfg, lat)
    return [m.issue(o, f) for o, f in zip(offered, fs)]


def model_store_cycles(cfg, f, lat):
    """Cycles from the cycle a STORE is accepted to the cycle of its done pulse (STORE unit idle)."""
    (accept, done), = model_store_sequence(cfg, [f], lat)
    return done - accept


CYCLE_CASES = [
    dma(Mem.SPAD, 0, 4, 200, 1, 0, 0),             # contiguous, long bursts
    dma(Mem.ACC, 0x0FC0, 16, 30, 1, 0, 0),         # contiguous across 4 KiB
    dma(Mem.SPAD, 0x100, 0x20, 12, 3, 0, 12),      # 3-beat bursts: slot-limited
    dma(Mem.ACC, 0x100, 0x100, 6, 2, 0, 6),        # 8-beat bursts
    dma(Mem.SPAD, 0x100, 0x8, 10, 1, 0, 0),        # 1-beat bursts
]


@pytest.mark.parametrize("lat", [0, 3, 20])
def test_cycle_model_exact(lat):
    for f in CYCLE_CASES:
        slave = Slave(TINY, lat=(lat, lat))
        res = run(TINY, [(Opcode.LOAD, f), (Opcode.STORE, f)], slave)
        check_clean(slave)
        assert [(a[2], a[3] + 1) for a in slave.ar_log] == plan_bursts(TINY, f)
        assert [(a[2], a[3] + 1) for a in slave.aw_log] == plan_bursts(TINY, f)
        (_, _, la, ld), (_, _, sa, sd) = res["timeline"]
        assert (ld - la, sd - sa) == (model_load_cycles(TINY, f, lat), model_store_cycles(TINY, f, lat)), f


@pytest.mark.parametrize("lat", [0, 2, 20])
def test_back_to_back_loads_overlap(lat):
    """The next LOAD starts issuing while the previous one's data still arrives."""
    fs = [dma(Mem.SPAD, 0x100 * k, 4, 20, 1, 0, 0) for k in range(3)] + [
        dma(Mem.ACC, 0x1000, 0x40, 3, 2, 0, 3), dma(Mem.SPAD, 0x2000, 4, 1, 1, 7, 0),
        dma(Mem.SPAD, 0x3000, 0x10, 5, 1, 9, 0)]
    slave = Slave(TINY, lat=(lat, lat))
    dram = bytes(slave.mem)
    res = run(TINY, [(Opcode.LOAD, f) for f in fs], slave)
    check_clean(slave)
    assert [(t[2], t[3]) for t in res["timeline"]] == model_load_sequence(TINY, fs, lat)
    spad, acc = res["spad0"], res["acc0"]
    for f in fs:
        if f["mem"] == Mem.SPAD:
            spad = expect_load(TINY, spad, dram, f)
        else:
            acc = expect_load(TINY, acc, dram, f)
    assert res["spad"].rows == spad and res["acc"].rows == acc
    total = sum(n for f in fs for _, n in plan_bursts(TINY, f))
    print(f"lat {lat}: {len(fs)} LOADs, {total} beats, {res['timeline'][-1][3]} cycles")


def test_planner_random_against_reference():
    rng = random.Random(11)
    for _ in range(6):
        mem = rng.choice([Mem.SPAD, Mem.ACC])
        rb = 4 if mem == Mem.SPAD else 16
        chunks = rng.randint(1, 3)
        stride = rng.choice([chunks * rb, 4 * rng.randint(1, 40)])
        f = dma(mem, 4 * rng.randrange(0x3F00 // 4), stride, rng.randint(1, 6), chunks,
                rng.randrange(64), rng.randint(0, 10))
        slave = Slave(TINY, seed=rng.randrange(99), lat=(0, 9), p_ready=0.6, reorder=True)
        dram = bytes(slave.mem)
        res = run(TINY, [(Opcode.LOAD, f)], slave)
        check_clean(slave)
        assert [(a[2], a[3] + 1) for a in slave.ar_log] == plan_bursts(TINY, f)
        rows = res["spad0"] if mem == Mem.SPAD else res["acc0"]
        got = res["spad"].rows if mem == Mem.SPAD else res["acc"].rows
        assert got == expect_load(TINY, rows, dram, f), f


@pytest.mark.parametrize("name,lat", [("tiny", 0), ("tiny", 5), ("default", 3)])
def test_fetch_latency(name, lat):
    cfg = load_config(name)
    slave = Slave(cfg, lat=(lat, lat))
    res = run(cfg, [], slave, fetches=[0x200])
    (req,) = res["fetch_req_cycles"]
    assert res["fetch_valid_cycles"][0] - req == lat + max(1, 32 // cfg.dma_beat_bytes) + 3


def test_beat_wider_than_an_instruction():
    """512-bit beats: a fetch reads one beat and keeps the right 32 bytes."""
    cfg = TINY.replace(array_rows=64, array_cols=64, vector_lanes=64, spad_rows=256, acc_rows=128,
                       dma_data_bits=512, dma_burst_len=8)
    slave = Slave(cfg, seed=4, lat=(0, 4), p_ready=0.8, reorder=True)
    dram = bytes(slave.mem)
    addrs = [0x1000, 0x1060, 0x1020, 0x1040]
    loads = [dma(Mem.ACC, 0x0E00, 0x100, 2, 2, 5, 3), dma(Mem.SPAD, 0x2000, 0x40, 12, 1, 0, 0)]
    res = run(cfg, [(Opcode.LOAD, f) for f in loads] + [(Opcode.STORE, loads[1])], slave, fetches=addrs)
    check_clean(slave)
    assert [w for w, e in res["fetched"]] == [int.from_bytes(dram[a:a + 32], "little") for a in addrs]
    assert res["acc"].rows == expect_load(cfg, res["acc0"], dram, loads[0])


def test_load_error_while_pipelined():
    """An error in the second of two queued LOADs: reported, drained, its rows untouched."""
    fs = [dma(Mem.SPAD, 0x100, 4, 40, 1, 0, 0), dma(Mem.SPAD, 0x400, 4, 40, 1, 100, 0)]
    slave = Slave(TINY, seed=6, lat=(0, 6), p_rvalid=0.8, reorder=True,
                  rd_err=[(0x404, 0x408, 3)])
    res = run(TINY, [(Opcode.LOAD, f) for f in fs], slave)
    assert res["load_error"] == ErrorCode.AXI_DECERR
    assert res["timeline"][1][3] is None
    # Reported only after the older LOAD's done, so the sequencer blames the failing one.
    assert res["timeline"][0][3] is not None and res["timeline"][0][3] < res["load_error_cycle"]
    assert all(res["spad"].rows[r] == res["spad0"][r] for r in range(101, 140))
    assert not slave.pending_r


@pytest.mark.parametrize("seed", range(4))
def test_load_error_reported_after_older_loads(seed):
    """The failing beat arrives early (slots answer out of order), yet the error waits for
    every older LOAD's done: with several LOADs in flight, the error belongs to the oldest."""
    fs = [dma(Mem.SPAD, 0x100 + 0x200 * k, 4, 30, 1, 40 * k, 0) for k in range(3)]
    slave = Slave(TINY, seed=seed, lat=(0, 12), reorder=True, rd_err=[(0x300, 0x304, 2)])
    res = run(TINY, [(Opcode.LOAD, f) for f in fs], slave)
    assert res["load_error"] == ErrorCode.AXI_SLVERR
    done = [t[3] for t in res["timeline"]]
    assert done[0] is not None and done[0] < res["load_error_cycle"]
    assert done[1] is None and done[2] is None
    assert all(res["spad"].rows[r] == res["spad0"][r] for r in range(40, 120))
    assert not slave.pending_r


def test_serial_loads_of_growing_size():
    """LOADs offered one at a time (each after the previous done) take the single-LOAD time."""
    fs = [dma(Mem.SPAD, 0, 4, n, 1, 0, 0) for n in (1, 16, 64, 256)]
    slave = Slave(TINY)
    res = run(TINY, [(Opcode.LOAD, f) for f in fs], slave, serial=True)
    check_clean(slave)
    assert [t[3] - t[2] for t in res["timeline"]] == [model_load_cycles(TINY, f, 0) for f in fs]


@pytest.mark.parametrize("lat", [0, 2, 20])
def test_back_to_back_stores_overlap(lat):
    fs = [dma(Mem.SPAD, 0x100 * k, 4, 20, 1, 0, 0) for k in range(3)] + [
        dma(Mem.ACC, 0x1000, 0x40, 3, 2, 0, 3), dma(Mem.SPAD, 0x2000, 4, 1, 1, 7, 0),
        dma(Mem.SPAD, 0x3000, 0x10, 5, 1, 9, 0), dma(Mem.ACC, 0x4000, 16, 40, 1, 20, 0)]
    slave = Slave(TINY, lat=(lat, lat))
    dram = bytes(slave.mem)
    res = run(TINY, [(Opcode.STORE, f) for f in fs], slave)
    check_clean(slave)
    for f in fs:
        dram = expect_store(TINY, res["spad0"] if f["mem"] == Mem.SPAD else res["acc0"], dram, f)
    assert bytes(slave.mem) == bytes(dram)
    assert [(t[2], t[3]) for t in res["timeline"]] == model_store_sequence(TINY, fs, lat)
    total = sum(n for f in fs for _, n in plan_bursts(TINY, f))
    print(f"lat {lat}: {len(fs)} STOREs, {total} beats, {res['timeline'][-1][3]} cycles")


def test_stores_random_timing_queue():
    fs = [dma(Mem.SPAD, 0x100 * k, 4, 20, 1, 0, 0) for k in range(3)] + [
        dma(Mem.ACC, 0x0FC0, 0x40, 3, 2, 0, 3), dma(Mem.SPAD, 0x2000, 4, 1, 1, 7, 0)]
    slave = Slave(TINY, seed=8, lat=(0, 9), p_ready=0.5)
    dram = bytes(slave.mem)
    res = run(TINY, [(Opcode.STORE, f) for f in fs], slave)
    check_clean(slave)
    for f in fs:
        dram = expect_store(TINY, res["spad0"] if f["mem"] == Mem.SPAD else res["acc0"], dram, f)
    assert bytes(slave.mem) == bytes(dram)
    assert all(t[3] is not None for t in res["timeline"])
