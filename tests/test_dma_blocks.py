"""The DMA engine's blocks, each alone in Amaranth's simulator (tiny config: 4-byte beats,
4-byte scratchpad rows, 16-byte accumulator rows, 16-beat bursts, 2 read slots).

The engine as a whole is tests/test_dma_engine.py; these catch a broken block on its own.
"""

import random

from flashnpu.hw.dma_burst_planner import BurstPlanner, BurstPlanSignature
from flashnpu.hw.dma_fetch import DmaFetch
from flashnpu.hw.dma_read_path import DmaReadPath, LoadRowWriter
from flashnpu.hw.dma_write_path import DmaWritePath, StoreRowReader
from flashnpu.spec.config import load_config
from flashnpu.spec.isa import ErrorCode, Mem, Opcode, encode
from flashnpu.spec.timing import timing
from flashnpu.sw.perfmodel import plan_bursts

from support.dma_ref import dma
from support.sram import Sram
from support.sim import simulate

TINY = load_config("tiny")


def test_signatures_compare_by_parameters():
    assert BurstPlanSignature(burst_len=16) == BurstPlanSignature(burst_len=16)
    assert BurstPlanSignature(burst_len=16) != BurstPlanSignature(burst_len=8)


def test_planner_cuts_as_the_reference_and_offers_two_cycles_after_the_take():
    rng = random.Random(3)
    transfers = [dma(Mem.ACC, 0xFF0, 3 * 16, 4, 3),          # contiguous, across 4 KiB
                 dma(Mem.SPAD, 0x100, 40, 5, 2),             # strided rows of 2 beats
                 dma(Mem.ACC, 0x1FC0, 16, 9, 1),             # contiguous, 36 beats
                 dma(Mem.SPAD, 0x3, 4, 1, 1)]
    dut = BurstPlanner(TINY)
    port = dut.port

    async def bench(ctx):
        for f in transfers:
            ctx.set(port.cmd.valid, 1)
            ctx.set(port.cmd.payload, {k: f[k] for k in ("mem", "dram_addr", "dram_stride",
                                                        "rows", "chunks")})
            assert ctx.get(port.cmd.ready) and not ctx.get(port.busy)
            await ctx.tick()
            ctx.set(port.cmd.valid, 0)
            got, cycle = [], 0
            while True:
                assert ctx.get(port.busy) and not ctx.get(port.cmd.ready)
                ready = rng.random() < 0.7
                ctx.set(port.burst.ready, ready)
                if ctx.get(port.burst.valid):
                    assert got or cycle == 1, "first burst: the second cycle after the take"
                    b = ctx.get(port.burst.payload)
                    if ready:
                        got.append((b.addr, b.len, b.last))
                else:
                    assert not got, "bursts of a transfer are offered back to back"
                await ctx.tick()
                cycle += 1
                if got and got[-1][2]:
                    break
            ctx.set(port.burst.ready, 0)
            assert [(a, n) for a, n, _ in got] == plan_bursts(TINY, f)
            assert [last for *_, last in got] == [0] * (len(got) - 1) + [1]
            assert not ctx.get(port.burst.valid) and not ctx.get(port.busy)

    simulate(dut, bench)


def test_fetch_limits_requests_to_fetch_depth_and_assembles_words():
    depth, fbeats = timing(TINY).fetch_depth, timing(TINY).fetch_beats
    n = depth + 2
    dut = DmaFetch(TINY)
    words = [random.Random(i).getrandbits(256) for i in range(n)]

    async def bench(ctx):
        ars = []
        ctx.set(dut.ar.ready, 1)
        ctx.set(dut.fetch.resp.ready, 0)
        for _ in range(3 * n):     # no responses yet: at most `depth` requests go out
            ctx.set(dut.fetch.req.valid, 1)
            ctx.set(dut.fetch.req.payload.addr, 0x1000 + 32 * len(ars))
            if ctx.get(dut.fetch.req.ready):
                assert ctx.get(dut.ar.valid)
                ars.append(ctx.get(dut.ar.payload))
            await ctx.tick()
        ctx.set(dut.fetch.req.valid, 0)
        assert len(ars) == depth and ctx.get(dut.busy)
        assert [(a.id, a.addr, a.len) for a in ars] == [(0, 0x1000 + 32 * i, fbeats - 1)
                                                          for i in range(depth)]
        for i in range(depth):     # the answers, word i has an SLVERR beat if i == 1
            for b in range(fbeats):
                ctx.set(dut.r.valid, 1)
                ctx.set(dut.r.payload, {"id": 0, "data": words[i] >> (32 * b) & 0xFFFFFFFF,
                                        "resp": 0b10 if (i, b) == (1, 3) else 0,
                                        "last": b == fbeats - 1})
                await ctx.tick()
        ctx.set(dut.r.valid, 0)
        assert not ctx.get(dut.busy) and not ctx.get(dut.ar.valid)   # the FIFO is full
        got = []
        ctx.set(dut.fetch.resp.ready, 1)
        while ctx.get(dut.fetch.resp.valid):
            got.append((ctx.get(dut.fetch.resp.payload.word), ctx.get(dut.fetch.resp.payload.error)))
            await ctx.tick()
        assert got == [(words[i], int(i == 1)) for i in range(depth)]

    simulate(dut, bench)


def acc_row(beats):
    return sum(b << (32 * i) for i, b in enumerate(beats))


def test_load_row_writer_places_beats_and_skips_bad_rows():
    dut = LoadRowWriter(TINY)
    f = dma(Mem.ACC, 0, 0, rows=2, chunks=2, sram_addr=5, sram_chunk_stride=3)
    beats = [(0xA0 + i, 0) for i in range(16)]
    bad = [(0xB0 + i, ErrorCode.AXI_SLVERR if i == 5 else 0) for i in range(8)]   # row 1 bad

    async def bench(ctx):
        acc, spad, dones = Sram(None), Sram(None), []
        queue = [(f, beats), (dict(f, rows=1, sram_addr=20), bad)]
        for params, stream in queue:
            ctx.set(dut.params.valid, 1)
            ctx.set(dut.params.payload, {k: params[k] for k in ("mem", "sram_addr",
                                        "sram_chunk_stride", "rows", "chunks")})
            while not ctx.get(dut.params.ready):
                await ctx.tick()
            await ctx.tick()
            ctx.set(dut.params.valid, 0)
            for i, (d, err) in enumerate(stream):
                ctx.set(dut.beats.valid, 1)
                ctx.set(dut.beats.payload, {"data": d, "err": err})
                assert ctx.get(dut.final) == (i == len(stream) - 1)
                await ctx.tick()
                acc.step(ctx, wr=dut.acc_wr)
                spad.step(ctx, wr=dut.spad_wr)
                dones.append(ctx.get(dut.done))
                ctx.set(dut.beats.valid, 0)
                if err:            # the read path's unit error, from the cycle after the bad beat
                    ctx.set(dut.error, err)
            for _ in range(2):
                await ctx.tick()
                acc.step(ctx, wr=dut.acc_wr)
                dones.append(ctx.get(dut.done))
        rows = [acc_row([d for d, _ in beats[4 * i:4 * i + 4]]) for i in range(4)]
        # (r, c) order: row 0 chunk 0 -> 5, chunk 1 -> 8, row 1 -> 6, 9; then the bad LOAD's row 0
        assert acc.writes == list(zip([5, 8, 6, 9], rows)) + [(20, acc_row([d for d, _ in bad[:4]]))]
        assert spad.writes == []
        assert sum(dones) == 1 and dones[len(beats) - 1] == 1   # with the last row; not the bad LOAD

    simulate(dut, bench)


def test_store_row_reader_cuts_rows_into_bursts_under_backpressure():
    rng = random.Random(5)
    dut = StoreRowReader(TINY)
    rows = [rng.getrandbits(128) for _ in range(16)]
    f = dma(Mem.ACC, 0, 0, rows=1, chunks=2, sram_addr=7, sram_chunk_stride=2)   # 8 beats
    lens = [2, 4]           # awlen: bursts of 3 and 5 beats

    async def bench(ctx):
        sram, got = Sram(rows), []
        ctx.set(dut.params.valid, 1)
        ctx.set(dut.params.payload, {k: f[k] for k in ("mem", "sram_addr", "sram_chunk_stride",
                                                       "rows", "chunks")})
        pending = list(lens)
        for _ in range(60):
            took_params = ctx.get(dut.params.valid) and ctx.get(dut.params.ready)
            ctx.set(dut.burst_lens.valid, bool(pending))
            ctx.set(dut.burst_lens.payload, pending[0] if pending else 0)
            took_len = ctx.get(dut.burst_lens.ready) and pending
            ready = rng.random() < 0.5
            ctx.set(dut.w.ready, ready)
            if ready and ctx.get(dut.w.valid):
                w = ctx.get(dut.w.payload)
                got.append((w.data, w.last))
            sram.step(ctx, rd=dut.acc_rd)
            assert not ctx.get(dut.spad_rd.en)
            await ctx.tick()
            if took_len:
                pending.pop(0)
            if took_params:
                ctx.set(dut.params.valid, 0)
        beats = [rows[r] >> (32 * b) & 0xFFFFFFFF for r in (7, 9) for b in range(4)]
        assert got == list(zip(beats, [0, 0, 1, 0, 0, 0, 0, 1]))
        assert not ctx.get(dut.busy)

    simulate(dut, bench)


def drive_plan(ctx, plan, bursts, state):
    """Play the burst planner: after ``cmd`` is taken, offer ``bursts`` one per cycle."""
    ctx.set(plan.cmd.ready, not state["busy"])
    if ctx.get(plan.cmd.valid) and not state["busy"]:
        state["busy"], state["queue"] = True, list(bursts)
        return
    q = state.get("queue") or []
    ctx.set(plan.burst.valid, bool(q))
    if q:
        ctx.set(plan.burst.payload, {"addr": q[0][0], "len": q[0][1], "last": len(q) == 1})
        if ctx.get(plan.burst.ready):
            q.pop(0)
            state["busy"] = bool(q)


def test_read_path_reorders_answers_by_slot():
    dut = DmaReadPath(TINY)
    f = dma(Mem.ACC, 0x400, 16, rows=2, chunks=1, sram_addr=3)
    data = {1: [0x11, 0x12, 0x13, 0x14], 2: [0x21, 0x22, 0x23, 0x24]}

    async def bench(ctx):
        ctx.set(dut.load.instr.payload.as_value(), encode(Opcode.LOAD, **f))
        ctx.set(dut.load.instr.valid, 1)
        ctx.set(dut.ar.ready, 1)
        state, ars, acc, dones = {"busy": False}, [], Sram(None), 0
        for now in range(40):
            drive_plan(ctx, dut.plan, [(0x400, 4), (0x410, 4)], state)
            if ctx.get(dut.load.instr.ready) and ctx.get(dut.load.instr.valid):
                await ctx.tick()
                ctx.set(dut.load.instr.valid, 0)
                acc.step(ctx, wr=dut.acc_wr)
                continue
            if ctx.get(dut.ar.valid):
                ars.append(ctx.get(dut.ar.payload))
            # The slave answers ID 2 first, then ID 1, from cycle 10.
            k = now - 10
            beat = (2, k) if 0 <= k < 4 else (1, k - 4) if 4 <= k < 8 else None
            ctx.set(dut.r.valid, beat is not None)
            if beat:
                ctx.set(dut.r.payload, {"id": beat[0], "data": data[beat[0]][beat[1]], "resp": 0,
                                        "last": beat[1] == 3})
            await ctx.tick()
            acc.step(ctx, wr=dut.acc_wr)
            dones += ctx.get(dut.load.done)
        assert [(a.id, a.addr, a.len) for a in ars] == [(1, 0x400, 3), (2, 0x410, 3)]
        assert acc.writes == [(3, acc_row(data[1])), (4, acc_row(data[2]))]
        assert dones == 1 and not ctx.get(dut.load.busy) and not ctx.get(dut.bus_busy)

    simulate(dut, bench)


def test_write_path_sends_beats_and_counts_responses():
    dut = DmaWritePath(TINY)
    f = dma(Mem.SPAD, 0x800, 4, rows=3, chunks=1, sram_addr=2)
    rows = [0x1000 + i for i in range(8)]

    async def bench(ctx):
        ctx.set(dut.store.instr.payload.as_value(), encode(Opcode.STORE, **f))
        ctx.set(dut.store.instr.valid, 1)
        ctx.set(dut.aw.ready, 1)
        ctx.set(dut.w.ready, 1)
        state, aws, ws, b_due, dones, sram = {"busy": False}, [], [], [], [], Sram(rows)
        for now in range(40):
            drive_plan(ctx, dut.plan, [(0x800, 2), (0x808, 1)], state)
            taken = ctx.get(dut.store.instr.ready) and ctx.get(dut.store.instr.valid)
            if ctx.get(dut.aw.valid):
                aws.append(ctx.get(dut.aw.payload))
            if ctx.get(dut.w.valid):
                w = ctx.get(dut.w.payload)
                ws.append((w.data, w.last))
                if w.last:
                    b_due.append(now + 3)
            ctx.set(dut.b.valid, now in b_due)
            ctx.set(dut.b.payload.resp, 0)
            sram.step(ctx, rd=dut.spad_rd)
            await ctx.tick()
            if taken:
                ctx.set(dut.store.instr.valid, 0)
            if ctx.get(dut.store.done):
                dones.append(now)
        assert [(a.addr, a.len) for a in aws] == [(0x800, 1), (0x808, 0)]
        assert ws == [(rows[2], 0), (rows[3], 1), (rows[4], 1)]
        assert len(dones) == 1 and dones[0] > max(b_due)
        assert not ctx.get(dut.store.busy) and not ctx.get(dut.bus_busy)

    simulate(dut, bench)
