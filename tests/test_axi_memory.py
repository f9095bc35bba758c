# amaranth: UnusedElaboratable=no
"""AxiMemory in Amaranth's simulator: behind the DmaEngine (exact ideal-slave cycle model,
data, errors), against a direct AXI master (IDs, strobes, W before AW, backpressure, full
queues) and through its backdoor; and Verilated behind the DmaEngine (rate, LOAD/STORE data).
"""

import json
import random
from pathlib import Path

import pytest
from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from flashnpu.cosim.axi_memory import AxiMemory
from flashnpu.hw.dma_engine import DmaEngine
from flashnpu.spec.config import load_config
from flashnpu.spec.isa import ErrorCode, Mem, Opcode, encode
from flashnpu.sw.perfmodel import LoadModel, StoreModel, plan_bursts

from support.dma_ref import dma, expect_load, expect_store
from support.sram import Sram

TINY = load_config("tiny")
MEM_BYTES = 1 << 14


class Pair(Elaboratable):
    """A DmaEngine whose master is an AxiMemory."""

    def __init__(self, cfg, *, mem_bytes=MEM_BYTES, lat, **kwargs):
        self.dma = DmaEngine(cfg)
        self.mem = AxiMemory(addr_width=cfg.axi_addr_bits, data_width=cfg.dma_data_bits,
                             id_width=cfg.axi_id_bits, size_bytes=mem_bytes, lat=lat, **kwargs)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dma = self.dma
        m.submodules.mem = self.mem
        wiring.connect(m, self.dma.m_axi, self.mem.axi)
        return m


def random_image(nbytes, seed):
    rng = random.Random(seed)
    return bytes(rng.randrange(256) for _ in range(nbytes))


def run_dma(cfg, instrs, *, lat, image, seed=7, max_cycles=20000, prologue=None, **kwargs):
    """Run LOAD/STORE queues (each in order, offered back to back) on the DmaEngine + AxiMemory.

    ``prologue(ctx, pair)`` runs first (e.g. backdoor writes). Returns the SRAMs,
    the timeline [(opcode, accept, done)] with cycles counted from the first
    offer, the unit errors and the memory image afterwards.
    """
    rng = random.Random(seed)
    pair = Pair(cfg, lat=lat, **kwargs)
    dut = pair.dma
    beat = cfg.dma_beat_bytes
    spad = Sram.random(cfg.spad_rows, cfg.spad_row_bytes, rng)
    acc = Sram.random(cfg.acc_rows, cfg.acc_row_bytes, rng)
    res = {"spad": spad, "acc": acc, "spad0": list(spad.rows), "acc0": list(acc.rows),
           "timeline": [], "load_error": 0, "store_error": 0}
    queues = {op: [f for o, f in instrs if o == op] for op in (Opcode.LOAD, Opcode.STORE)}

    async def tb(ctx):
        data = pair.mem.memory_data
        for i in range(len(image) // beat):
            ctx.set(data[i], int.from_bytes(image[i * beat:(i + 1) * beat], "little"))
        if prologue is not None:
            await prologue(ctx, pair)
        units = {Opcode.LOAD: dut.load, Opcode.STORE: dut.store}
        pos = {op: 0 for op in units}
        waiting = {op: [] for op in units}
        for now in range(max_cycles):
            for op, unit in units.items():
                if pos[op] < len(queues[op]):
                    ctx.set(unit.instr.payload.as_value(), encode(op, **queues[op][pos[op]]))
                    ctx.set(unit.instr.valid, 1)
                else:
                    ctx.set(unit.instr.valid, 0)
            spad.step(ctx, rd=dut.spad_rd, wr=dut.spad_wr)
            acc.step(ctx, rd=dut.acc_rd, wr=dut.acc_wr)
            for op, unit in units.items():
                if ctx.get(unit.done):
                    waiting[op].pop(0)[2] = now
                if ctx.get(unit.instr.valid) and ctx.get(unit.instr.ready):
                    rec = [op, now, None]
                    res["timeline"].append(rec)
                    waiting[op].append(rec)
                    pos[op] += 1
            res["load_error"] = ctx.get(dut.load.error)
            res["store_error"] = ctx.get(dut.store.error)
            busy = ctx.get(dut.load.busy) or ctx.get(dut.store.busy)
            issued = all(pos[op] == len(queues[op]) for op in units)
            # A unit with an error takes nothing more and never signals done.
            stopped = all(not waiting[op] and pos[op] == len(queues[op]) or ctx.get(units[op].error)
                          for op in units)
            if not busy and (stopped or (issued and not any(waiting.values()))):
                for _ in range(3):   # catch stray writes
                    await ctx.tick()
                    spad.step(ctx, rd=dut.spad_rd, wr=dut.spad_wr)
                    acc.step(ctx, rd=dut.acc_rd, wr=dut.acc_wr)
                res["image"] = b"".join(ctx.get(data[i]).to_bytes(beat, "little")
                                        for i in range(pair.mem.depth))
                return
            await ctx.tick()
        raise AssertionError(f"timeout after {max_cycles} cycles: {res['timeline']}")

    sim = Simulator(pair)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return res


CASES = [
    dma(Mem.SPAD, 0, 4, 200, 1, 0, 0),             # contiguous, long bursts
    dma(Mem.ACC, 0x0FC0, 16, 30, 1, 0, 0),         # contiguous across 4 KiB
    dma(Mem.SPAD, 0x100, 0x20, 12, 3, 0, 12),      # 3-beat bursts: slot-limited
    dma(Mem.ACC, 0x100, 0x100, 6, 2, 0, 6),        # 8-beat bursts
    dma(Mem.SPAD, 0x100, 0x8, 10, 1, 0, 0),        # 1-beat bursts
    dma(Mem.SPAD, 0x3000, 4, 1, 1, 7, 0),          # one beat
]


@pytest.mark.parametrize("lat", [1, 10])
def test_single_transfers_match_the_cycle_model(lat):
    """Each transfer alone: accept-to-done cycles exactly as docs/dma.md's ideal slave says."""
    image = random_image(MEM_BYTES, 1)
    for f in CASES:
        for op, model in ((Opcode.LOAD, LoadModel), (Opcode.STORE, StoreModel)):
            res = run_dma(TINY, [(op, f)], lat=lat, image=image)
            ((_, accept, done),) = res["timeline"]
            m_accept, m_done = model(TINY, lat).issue(0, f)
            assert done - accept == m_done - m_accept, (op, f)
            if op == Opcode.LOAD:
                rows = res["spad0"] if f["mem"] == Mem.SPAD else res["acc0"]
                got = res["spad"].rows if f["mem"] == Mem.SPAD else res["acc"].rows
                assert got == expect_load(TINY, rows, image, f)
                assert res["image"] == image
            else:
                rows = res["spad0"] if f["mem"] == Mem.SPAD else res["acc0"]
                assert res["image"] == bytes(expect_store(TINY, rows, image, f))


@pytest.mark.parametrize("lat", [1, 10])
def test_queued_loads_and_stores_match_the_cycle_model(lat):
    """Back-to-back queues: every accept and done cycle as LoadModel/StoreModel, and the data."""
    image = random_image(MEM_BYTES, 2)
    res = run_dma(TINY, [(Opcode.LOAD, f) for f in CASES], lat=lat, image=image)
    model = LoadModel(TINY, lat)
    assert [(a, d) for _, a, d in res["timeline"]] == [model.issue(0, f) for f in CASES]
    spad, acc = res["spad0"], res["acc0"]
    for f in CASES:
        if f["mem"] == Mem.SPAD:
            spad = expect_load(TINY, spad, image, f)
        else:
            acc = expect_load(TINY, acc, image, f)
    assert res["spad"].rows == spad and res["acc"].rows == acc

    stores = CASES + [dma(Mem.ACC, 0x2000, 16, 40, 1, 20, 0)]
    res = run_dma(TINY, [(Opcode.STORE, f) for f in stores], lat=lat, image=image)
    model = StoreModel(TINY, lat)
    assert [(a, d) for _, a, d in res["timeline"]] == [model.issue(0, f) for f in stores]
    want = image
    for f in stores:
        want = expect_store(TINY, res["spad0"] if f["mem"] == Mem.SPAD else res["acc0"], want, f)
    assert res["image"] == bytes(want)


def test_default_config_queue_matches_the_model():
    """128-bit beats, 4 read slots: a LOAD queue and a STORE queue, exact at lat = 10."""
    cfg = load_config("default")
    image = random_image(MEM_BYTES, 3)
    fs = [dma(Mem.SPAD, 0x0F00, 0x20, 6, 2, 3, 7), dma(Mem.ACC, 0x2000, 0x40, 10, 1, 1, 9),
          dma(Mem.SPAD, 0x400, 0x10, 64, 1, 100, 0)]
    res = run_dma(cfg, [(Opcode.LOAD, f) for f in fs] + [(Opcode.STORE, f) for f in fs],
                  lat=10, image=image)
    lm, sm = LoadModel(cfg, 10), StoreModel(cfg, 10)
    got = {op: [(a, d) for o, a, d in res["timeline"] if o == op] for op in (Opcode.LOAD, Opcode.STORE)}
    assert got[Opcode.LOAD] == [lm.issue(0, f) for f in fs]
    assert got[Opcode.STORE] == [sm.issue(0, f) for f in fs]


@pytest.mark.parametrize("op", [Opcode.LOAD, Opcode.STORE])
def test_decerr_beyond_size(op):
    """A transfer running past size_bytes: DECERR reaches the unit; no write lands anywhere."""
    image = random_image(MEM_BYTES, 4)
    f = dma(Mem.SPAD, MEM_BYTES - 0x40, 4, 64, 1, 0, 0)     # 16 good beats, then beyond
    res = run_dma(TINY, [(op, f)], lat=3, image=image)
    key = "load_error" if op == Opcode.LOAD else "store_error"
    assert res[key] == ErrorCode.AXI_DECERR
    assert res["timeline"][0][2] is None                       # no done
    assert all(res["spad"].rows[r] == res["spad0"][r] for r in range(16, 64))
    if op == Opcode.STORE:
        # The in-range beats of the burst are written; nothing else changes.
        want = expect_store(TINY, res["spad0"], image, dma(Mem.SPAD, MEM_BYTES - 0x40, 4, 16, 1, 0, 0))
        assert res["image"] == bytes(want)


def test_slverr_window_from_constructor_and_backdoor():
    image = random_image(MEM_BYTES, 5)
    f = dma(Mem.SPAD, 0x800, 4, 32, 1, 0, 0)
    # Constructor window [0x840, 0x848): the LOAD fails with SLVERR.
    res = run_dma(TINY, [(Opcode.LOAD, f)], lat=1, image=image, slverr_base=0x840, slverr_size=8)
    assert res["load_error"] == ErrorCode.AXI_SLVERR
    assert res["timeline"][0][2] is None
    # Same LOAD, window moved away by the backdoor registers: no error.
    async def move(ctx, pair):
        ctx.set(pair.mem.bd_slverr_we, 1)
        ctx.set(pair.mem.bd_slverr_base, 0x3000)
        ctx.set(pair.mem.bd_slverr_size, 0x100)
        await ctx.tick()
        ctx.set(pair.mem.bd_slverr_we, 0)
    res = run_dma(TINY, [(Opcode.LOAD, f)], lat=1, image=image, slverr_base=0x840, slverr_size=8,
                  prologue=move)
    assert res["load_error"] == 0 and res["timeline"][0][2] is not None
    assert res["spad"].rows == expect_load(TINY, res["spad0"], image, f)
    # A STORE into the backdoor window: SLVERR, and the window's words keep their value.
    g = dma(Mem.SPAD, 0x2FF0, 4, 32, 1, 0, 0)
    res = run_dma(TINY, [(Opcode.STORE, g)], lat=1, image=image, prologue=move)
    assert res["store_error"] == ErrorCode.AXI_SLVERR
    assert res["image"][0x3000:0x3070] == image[0x3000:0x3070]
    assert res["image"][0x2FF0:0x3000] == bytes(expect_store(TINY, res["spad0"], image, g))[0x2FF0:0x3000]


def test_backdoor_write_then_read_and_load():
    """Backdoor writes land (1 word per cycle); bd_rdata is the word of the previous cycle's address; a LOAD sees them."""
    beat = TINY.dma_beat_bytes
    words = {0x200 + k: 0x11111111 * (k + 1) & 0xFFFFFFFF for k in range(8)}
    got = {}

    async def bd(ctx, pair):
        mem = pair.mem
        for a, w in words.items():
            ctx.set(mem.bd_addr, a)
            ctx.set(mem.bd_wdata, w)
            ctx.set(mem.bd_we, 1)
            await ctx.tick()
        ctx.set(mem.bd_we, 0)
        for a in [0x1FF] + list(words) + [0x208]:
            ctx.set(mem.bd_addr, a)
            await ctx.tick()
            got[a] = ctx.get(mem.bd_rdata)
    res = run_dma(TINY, [(Opcode.LOAD, dma(Mem.SPAD, 0x200 * beat, 4, 8, 1, 40, 0))], lat=2,
                  image=bytes(MEM_BYTES), prologue=bd)
    assert got == {0x1FF: 0, **words, 0x208: 0}
    assert res["spad"].rows[40:48] == list(words.values())


# ------------------------------------------------------ direct AXI master tests
def run_master(mem, *, ars=(), aws=(), seed=0, p_valid=1.0, p_ready=1.0, w_lead=False,
               image=b"", max_cycles=4000, hold_r=0, hold_b=0):
    """Drive ``mem`` from a Python AXI master; return the R and B beats seen and the image.

    ``ars``: (id, addr, len) read bursts, ``aws``: (id, addr, [(data, strb), ...]) write
    bursts, issued in order. ``p_valid``/``p_ready``: chance per cycle of offering a
    valid and of taking R/B. ``w_lead``: a write burst's W beats may go before its AW.
    ``hold_r``/``hold_b``: rready/bready stay low for the first cycles. Records
    R as (cycle, id, data, resp, last), B as (cycle, id, resp), AR handshakes as cycles.
    """
    rng = random.Random(seed)
    axi = mem.axi
    beat = mem.axi.signature.data_width // 8
    out = {"r": [], "b": [], "ar_cycles": [], "arready_low": [], "awready_low": []}
    wbeats = [(k, d, s, j == len(beats) - 1) for k, (_, _, beats) in enumerate(aws)
              for j, (d, s) in enumerate(beats)]
    n_r = sum(n + 1 for _, _, n in ars)

    async def tb(ctx):
        data = mem.memory_data
        for i in range(len(image) // beat):
            ctx.set(data[i], int.from_bytes(image[i * beat:(i + 1) * beat], "little"))
        ai = wi = wb = 0
        for now in range(max_cycles):
            ar_v = ai < len(ars) and rng.random() < p_valid
            if ar_v:
                ctx.set(axi.arid, ars[ai][0]), ctx.set(axi.araddr, ars[ai][1]), ctx.set(axi.arlen, ars[ai][2])
            ctx.set(axi.arvalid, ar_v)
            aw_v = wi < len(aws) and rng.random() < p_valid
            if aw_v:
                ctx.set(axi.awid, aws[wi][0]), ctx.set(axi.awaddr, aws[wi][1])
                ctx.set(axi.awlen, len(aws[wi][2]) - 1)
            ctx.set(axi.awvalid, aw_v)
            # W of burst k goes only after AW k unless w_lead.
            w_v = wb < len(wbeats) and (w_lead or wbeats[wb][0] < wi) and rng.random() < p_valid
            if w_v:
                _, d, s, last = wbeats[wb]
                ctx.set(axi.wdata, d), ctx.set(axi.wstrb, s), ctx.set(axi.wlast, last)
            ctx.set(axi.wvalid, w_v)
            rready = now >= hold_r and rng.random() < p_ready
            bready = now >= hold_b and rng.random() < p_ready
            ctx.set(axi.rready, rready)
            ctx.set(axi.bready, bready)
            if ar_v and ctx.get(axi.arready):
                out["ar_cycles"].append(now)
                ai += 1
            if ai < len(ars) and not ctx.get(axi.arready):
                out["arready_low"].append((now, ai))
            if wi < len(aws) and not ctx.get(axi.awready):
                out["awready_low"].append((now, wi))
            if aw_v and ctx.get(axi.awready):
                wi += 1
            if w_v and ctx.get(axi.wready):
                wb += 1
            if ctx.get(axi.rvalid) and rready:
                out["r"].append((now, ctx.get(axi.rid), ctx.get(axi.rdata), ctx.get(axi.rresp),
                                 ctx.get(axi.rlast)))
            if ctx.get(axi.bvalid) and bready:
                out["b"].append((now, ctx.get(axi.bid), ctx.get(axi.bresp)))
            if len(out["r"]) == n_r and len(out["b"]) == len(aws):
                out["image"] = b"".join(ctx.get(data[i]).to_bytes(beat, "little")
                                        for i in range(mem.depth))
                out["cycles"] = now
                return
            await ctx.tick()
        raise AssertionError(f"timeout: {len(out['r'])}/{n_r} R beats, {len(out['b'])}/{len(aws)} B")

    sim = Simulator(mem)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return out


def small_mem(lat, **kwargs):
    return AxiMemory(addr_width=16, data_width=32, id_width=4, size_bytes=4096, lat=lat, **kwargs)


@pytest.mark.parametrize("lat", [1, 4])
def test_read_timing_order_and_ids(lat):
    """First beat h+1+lat (or right after the previous burst), one beat a cycle, AR order, IDs echoed."""
    image = random_image(4096, 8)
    ars = [(3, 0x100, 3), (7, 0x200, 0), (1, 0x40, 1), (3, 0xFF8, 3), (0, 0x10, 0)]
    out = run_master(small_mem(lat), ars=ars, image=image)
    assert out["ar_cycles"] == list(range(len(ars)))       # always ready
    want, t = [], None
    for (rid, addr, n), h in zip(ars, out["ar_cycles"]):
        t = h + 1 + lat if t is None else max(h + 1 + lat, t)
        for k in range(n + 1):
            a = addr + 4 * k
            word = int.from_bytes(image[a:a + 4], "little") if a < 4096 else 0
            want.append((t, rid, word, 0 if a < 4096 else 3, int(k == n)))
            t += 1
    assert out["r"] == want


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_master_with_backpressure(seed):
    """Random valid/ready timing, W before AW, partial strobes, errors: data, responses, no hang."""
    rng = random.Random(seed)
    image = random_image(4096, seed)
    ars = [(rng.randrange(16), 4 * rng.randrange(0, 0x200), rng.randrange(8)) for _ in range(30)]
    ars += [(5, 0xFF0, 7)]                                   # runs past the end: DECERR
    aws = []
    for _ in range(30):
        n = rng.randrange(1, 6)
        aws.append((rng.randrange(16), 4 * rng.randrange(0x200, 0x37F - n),
                    [(rng.getrandbits(32), rng.randrange(16)) for _ in range(n)]))
    # Last two beats beyond the end; the first two (strobes 0) leave the words the reads see.
    aws += [(9, 0xFF8, [(0xDEADBEEF, 0), (0xDEADBEEF, 0), (0xDEADBEEF, 0xF), (0xDEADBEEF, 0xF)])]
    aws += [(2, 0xE00, [(0x12345678, 0xF)] * 2)]            # SLVERR window
    out = run_master(small_mem(2, slverr_base=0xE04, slverr_size=0x10, queue_depth=4),
                     ars=ars, aws=aws, seed=seed, p_valid=0.6, p_ready=0.5, w_lead=True,
                     image=image)
    # Reads come back in AR order with their IDs, one burst after another.
    want_r = []
    for rid, addr, n in ars:
        for k in range(n + 1):
            a = addr + 4 * k
            ok = a < 4096 and not 0xE04 <= a < 0xE14
            word = int.from_bytes(image[a:a + 4], "little") if ok else 0
            want_r.append((rid, word, 0 if ok else (3 if a >= 4096 else 2), int(k == n)))
    assert [r[1:] for r in out["r"]] == want_r
    # Writes: strobed bytes land, error beats do not; B in AW order, worst response of the burst.
    ref = bytearray(image)
    want_b = []
    for bid, addr, beats in aws:
        resp = 0
        for k, (d, s) in enumerate(beats):
            a = addr + 4 * k
            r = 3 if a >= 4096 else (2 if 0xE04 <= a < 0xE14 else 0)
            resp = max(resp, r)
            if r == 0:
                for j in range(4):
                    if s >> j & 1:
                        ref[a + j] = d >> (8 * j) & 0xFF
        want_b.append((bid, resp))
    assert [b[1:] for b in out["b"]] == want_b
    assert out["image"] == bytes(ref)


def test_full_queues_deassert_ready_then_drain():
    """With rready/bready held low the AR/AW/W queues fill, ready falls, and everything completes after."""
    image = random_image(4096, 9)
    depth = 4
    ars = [(k % 16, 4 * k, 0) for k in range(12)]
    aws = [(k % 16, 0x800 + 4 * k, [(k, 0xF)]) for k in range(12)]
    out = run_master(small_mem(1, queue_depth=depth), ars=ars, aws=aws, image=image,
                     hold_r=60, hold_b=60)
    # AR: depth entries queued plus the one burst on R (taken from the queue); then not ready.
    assert out["arready_low"] and out["arready_low"][0][1] == depth + 1
    assert all(t < 60 + 2 for t, _ in out["arready_low"])
    # AW: depth queued behind those whose B waits in the B queue (depth) and on B (1).
    assert out["awready_low"] and out["awready_low"][0][1] == 2 * depth + 1
    assert [r[1:] for r in out["r"]] == [(k % 16, int.from_bytes(image[4 * k:4 * k + 4], "little"), 0, 1)
                                         for k in range(12)]
    assert [b[1:] for b in out["b"]] == [(k % 16, 0) for k in range(12)]
    assert out["image"][0x800:0x830] == b"".join(k.to_bytes(4, "little") for k in range(12))


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="size_bytes"):
        AxiMemory(addr_width=16, data_width=32, id_width=4, size_bytes=4094, lat=1)
    with pytest.raises(ValueError, match="size_bytes"):
        AxiMemory(addr_width=12, data_width=32, id_width=4, size_bytes=8192, lat=1)
    with pytest.raises(ValueError, match="lat"):
        small_mem(0)
    with pytest.raises(ValueError, match="queue_depth"):
        small_mem(1, queue_depth=1)
    with pytest.raises(ValueError, match="storage"):
        small_mem(1, storage="sram")


# -------------------------------------------------------------- Verilator bench
class DmaStreamBench(wiring.Component):
    """DmaEngine + AxiMemory (Verilog storage) + a scratchpad, driven by counters for cocotb.

    The bench offers ``ld_instr`` until ``ld_n`` LOADs are taken (``st_*`` likewise),
    so a long run needs no Python per cycle. ``*_first``/``*_last``: the cycle of the
    first accept and of the latest done; ``clear`` zeroes the counters.
    """

    def __init__(self, cfg, *, mem_bytes, lat):
        self._cfg = cfg
        self._mem = AxiMemory(addr_width=cfg.axi_addr_bits, data_width=cfg.dma_data_bits,
                              id_width=cfg.axi_id_bits, size_bytes=mem_bytes, lat=lat,
                              storage="verilog")
        members = {"clear": In(1)}
        for u in ("ld", "st"):
            members.update({f"{u}_instr": In(256), f"{u}_n": In(32), f"{u}_taken": Out(32),
                            f"{u}_done": Out(32), f"{u}_first": Out(32), f"{u}_last": Out(32),
                            f"{u}_error": Out(8)})
        members.update({"cycles": Out(32), "r_beats": Out(32), "w_beats": Out(32)})
        mem_sig = self._mem.signature.members
        members.update({n: mem_sig[n] for n in mem_sig if n.startswith("bd_")})
        super().__init__(members)

    def elaborate(self, platform):
        from amaranth.lib import memory
        cfg = self._cfg
        m = Module()
        dma = m.submodules.dma = DmaEngine(cfg)
        mem = m.submodules.dram = self._mem
        wiring.connect(m, dma.m_axi, mem.axi)
        for n, mb in self.signature.members.items():
            if n.startswith("bd_"):
                a, b = getattr(mem, n), getattr(self, n)
                m.d.comb += (a.eq(b) if mb.flow == In else b.eq(a))
        spad = m.submodules.spad = memory.Memory(shape=unsigned(cfg.spad_row_bytes * 8),
                                                 depth=cfg.spad_rows, init=[])
        wp, rp = spad.write_port(), spad.read_port()
        m.d.comb += [wp.en.eq(dma.spad_wr.en), wp.addr.eq(dma.spad_wr.addr),
                     wp.data.eq(dma.spad_wr.data), rp.en.eq(dma.spad_rd.en),
                     rp.addr.eq(dma.spad_rd.addr), dma.spad_rd.data.eq(rp.data)]
        m.d.sync += self.cycles.eq(self.cycles + 1)
        axi = dma.m_axi
        m.d.sync += [self.r_beats.eq(self.r_beats + (axi.rvalid & axi.rready)),
                     self.w_beats.eq(self.w_beats + (axi.wvalid & axi.wready))]
        for u, unit in (("ld", dma.load), ("st", dma.store)):
            taken, done = getattr(self, f"{u}_taken"), getattr(self, f"{u}_done")
            first, last = getattr(self, f"{u}_first"), getattr(self, f"{u}_last")
            m.d.comb += [unit.instr.valid.eq(taken < getattr(self, f"{u}_n")),
                         unit.instr.payload.as_value().eq(getattr(self, f"{u}_instr")),
                         getattr(self, f"{u}_error").eq(unit.error)]
            acc = unit.instr.valid & unit.instr.ready
            m.d.sync += [taken.eq(taken + acc), done.eq(done + unit.done)]
            with m.If(acc & (taken == 0)):
                m.d.sync += first.eq(self.cycles)
            with m.If(unit.done):
                m.d.sync += last.eq(self.cycles)
            with m.If(self.clear):
                m.d.sync += [taken.eq(0), done.eq(0)]
        with m.If(self.clear):
            m.d.sync += [self.r_beats.eq(0), self.w_beats.eq(0)]
        return m


@pytest.mark.rtl
def test_verilated_stream_rate_and_data(tmp_path):
    """Default config, 16 MiB DRAM at lat = 10, Verilated: backdoor load, LOAD, STORE, backdoor
    read gives the image back; a long LOAD queue and a long STORE queue end exactly at the
    models' cycles; rates printed (docs/axi_memory.md)."""
    from flashnpu.cosim.axi_memory import with_storage
    from flashnpu.cosim.build import build_verilog, run_cocotb
    from flashnpu.cosim.verilog import to_verilog
    cfg = load_config("default")
    lat, mem_bytes = 10, 16 << 20
    rows = cfg.spad_rows                                   # 64 KiB: 4096 beats per instruction
    params = {
        "beat": cfg.dma_beat_bytes, "image_bytes": 1 << 20, "seed": 5,
        "load": encode(Opcode.LOAD, **dma(Mem.SPAD, 0x10000, cfg.spad_row_bytes, rows, 1, 0, 0)),
        "store": encode(Opcode.STORE, **dma(Mem.SPAD, 0x200000, cfg.spad_row_bytes, rows, 1, 0, 0)),
        "stream_load": encode(Opcode.LOAD, **dma(Mem.SPAD, 0, cfg.spad_row_bytes, rows, 1, 0, 0)),
        "stream_store": encode(Opcode.STORE, **dma(Mem.SPAD, 0x400000, cfg.spad_row_bytes, rows, 1, 0, 0)),
        "n_stream": 64,
    }
    text = with_storage(to_verilog(DmaStreamBench(cfg, mem_bytes=mem_bytes, lat=lat), "dma_stream_bench"))
    b = build_verilog(text, "dma_stream_bench", test_module="cocotb_axi_memory")
    (tmp_path / "params.json").write_text(json.dumps(params))
    res = run_cocotb(b, run_dir=tmp_path, python_path=[Path(__file__).resolve().parent], timeout_s=600)
    assert res.passed, res.summary()
    out = json.loads((tmp_path / "result.json").read_text())
    assert out["image_ok"] and out["stored_ok"] and out["errors"] == [0, 0]
    f = dma(Mem.SPAD, 0, cfg.spad_row_bytes, rows, 1, 0, 0)
    n = params["n_stream"]
    lm, sm = LoadModel(cfg, lat), StoreModel(cfg, lat)
    ld = [lm.issue(0, f) for _ in range(n)]
    st = [sm.issue(0, f) for _ in range(n)]
    assert out["load_span"] == ld[-1][1] - ld[0][0]
    assert out["store_span"] == st[-1][1] - st[0][0]
    assert out["load_beats"] == out["store_beats"] == n * rows
    print(json.dumps(out, indent=1))


# ---------------------------------------------------------------------- SimTop
def test_sim_top_runs_a_program_from_the_backdoor_image():
    """SimTop (tiny NPU + AxiMemory, lat 3): image in, START over s_axil, irq, result out of the
    backdoor equals numpy and the golden model's whole DRAM image."""
    import numpy as np
    from flashnpu.cosim.axi_memory import SimTop
    from flashnpu.sw.golden import GoldenNPU
    from flashnpu.spec.isa import INSTR_BYTES
    from flashnpu.spec.regmap import CONTROL_START, REG, STATUS_DONE, STATUS_QUIET, DramGrant
    from support.axil import LiteHost
    from support.programs import A_ADDR, C_ADDR, PROG, W_ADDR, gemm_program

    m_, k_, n_ = 6, 8, 8
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, size=(m_, k_), dtype=np.int8)
    w = rng.integers(-128, 128, size=(k_, n_), dtype=np.int8)
    words = gemm_program(m_, k_, n_)
    image = bytearray(MEM_BYTES)
    image[A_ADDR:A_ADDR + a.size] = a.tobytes()
    image[W_ADDR:W_ADDR + w.size] = w.tobytes()
    image[PROG:PROG + INSTR_BYTES * len(words)] = b"".join(x.to_bytes(INSTR_BYTES, "little") for x in words)
    top = SimTop(TINY, mem_bytes=MEM_BYTES, lat=3, storage="memory")
    beat = TINY.dma_beat_bytes
    out = {}

    async def tb(ctx):
        data = top.dram.memory_data
        for i in range(MEM_BYTES // beat):
            ctx.set(data[i], int.from_bytes(image[i * beat:(i + 1) * beat], "little"))
        host = LiteHost()
        grant = DramGrant.for_program(PROG, len(words), MEM_BYTES)
        host.ops += [("w", REG[k], v) for k, v in grant.registers().items()]
        host.ops.append(("w", REG["CONTROL"], CONTROL_START))
        for now in range(5000):
            host.step(ctx, top.s_axil)
            if ctx.get(top.irq):
                break
            await ctx.tick()
        else:
            raise AssertionError("no irq")
        host.ops.append(("r", REG["STATUS"]))
        while not host.idle:
            host.step(ctx, top.s_axil)
            await ctx.tick()
        out["status"] = host.reads[-1]
        # Read the whole image back through the backdoor port.
        got = bytearray()
        ctx.set(top.bd_addr, 0)
        for i in range(MEM_BYTES // beat):
            await ctx.tick()
            ctx.set(top.bd_addr, i + 1 if i + 1 < MEM_BYTES // beat else 0)
            got += ctx.get(top.bd_rdata).to_bytes(beat, "little")
        out["image"] = bytes(got)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert out["status"] == STATUS_DONE | STATUS_QUIET, hex(out["status"])
    c = np.frombuffer(out["image"][C_ADDR:C_ADDR + 4 * m_ * n_], dtype="<i4").reshape(m_, n_)
    assert (c == a.astype(np.int64) @ w.astype(np.int64)).all()
    gold = GoldenNPU(TINY).run(np.frombuffer(bytes(image), dtype=np.uint8).copy(), PROG)
    assert (gold.dram == np.frombuffer(out["image"], dtype=np.uint8)).all()


def test_sim_top_verilog_ports():
    """The Verilog top has the s_axil__*, irq and bd_* ports, and carries the storage module."""
    import re
    from flashnpu.cosim.axi_memory import STORAGE_MODULE, sim_top_verilog
    text = sim_top_verilog(TINY, mem_bytes=16 << 20, lat=1)
    header = re.search(r"^module sim_top\s*\(([^)]*)\)", text, flags=re.M).group(1)
    ports = {p.strip() for p in header.split(",")}
    assert {"clk", "rst", "irq", "s_axil__awaddr", "s_axil__rdata", "s_axil__bready", "bd_addr",
            "bd_wdata", "bd_we", "bd_rdata", "bd_slverr_we", "bd_slverr_base", "bd_slverr_size"} <= ports
    assert not any(p.startswith("m_axi") for p in ports)
    assert f"module {STORAGE_MODULE}" in text and f"{STORAGE_MODULE} #(" in text
    assert ".DEPTH(32'd4194304)" in text and ".WIDTH(32'd32)" in text   # 16 MiB of 4-byte words
