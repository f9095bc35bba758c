"""Each side of the HDL DRAM alone in Amaranth's simulator: AxiMemoryRead and AxiMemoryWrite.

tests/test_axi_memory.py runs them together as ``AxiMemory`` (behind the DMA and a Python master);
these drive one side's streams, its ``now`` and its word array port directly and check every beat's
cycle and content against the ideal-slave rules of docs/axi_memory.md, written out here per beat.
"""

import random

import pytest

from flashnpu.cosim.axi_memory_common import STAMP_BITS, Geometry
from flashnpu.cosim.axi_memory_read import AxiMemoryRead
from flashnpu.cosim.axi_memory_write import AxiMemoryWrite
from flashnpu.hw.axi import RESP_DECERR, RESP_SLVERR

from support.sim import simulate as run
from support.sram import Sram

GEO = Geometry(addr_width=16, data_width=32, id_width=4, size_bytes=1024)
BEAT = GEO.beat
WINDOW = (512, 64)                      # SLVERR in [512, 576)
STAMP_MASK = (1 << STAMP_BITS) - 1


def beat_resp(addr):
    if addr >= GEO.size_bytes:
        return RESP_DECERR
    return RESP_SLVERR if WINDOW[0] <= addr < WINDOW[0] + WINDOW[1] else 0


def beat_addrs(addr, length):
    return [(addr // BEAT + j) * BEAT for j in range(length + 1)]


def random_burst(rng):
    addr = rng.choice([rng.randrange(0, 1000), rng.randrange(480, 600), rng.randrange(1 << 16)])
    return rng.randrange(1 << GEO.id_width), addr, rng.choice([0, 1, 3, rng.randrange(8)])


def offer_burst(ctx, channel, burst):
    """Offer ``burst`` ``(id, addr, len)`` on an AR or AW stream; nothing if ``burst`` is false."""
    ctx.set(channel.valid, bool(burst))
    if burst:
        for name, v in zip(("id", "addr", "len"), burst):
            ctx.set(getattr(channel.payload, name), v)


def set_window(ctx, dut):
    ctx.set(dut.window.base, WINDOW[0])
    ctx.set(dut.window.size, WINDOW[1])


# -------------------------------------------------------------------- read
def run_reads(dut, words, bursts, rng, *, start=0, ready_p=0.6, cycles=400):
    """Offer ``bursts`` on AR at random, take R at random: the AR handshake cycles and, per beat,
    ``(cycle shown, cycle taken, id, data, resp, last)``."""
    hs, beats = [], []

    async def tb(ctx):
        set_window(ctx, dut)
        shown = None
        for c in range(cycles):
            ctx.set(dut.now, (start + c) & STAMP_MASK)
            valid = len(hs) < len(bursts) and rng.random() < 0.5
            offer_burst(ctx, dut.ar, valid and bursts[len(hs)])
            if valid:
                assert ctx.get(dut.ar.ready)          # never full here
                hs.append(c)
            ready = rng.random() < ready_p
            ctx.set(dut.r.ready, ready)
            words.step(ctx, rd=dut.mem)
            if ctx.get(dut.r.valid):
                shown = c if shown is None else shown
                if ready:
                    p = dut.r.payload
                    beats.append((shown, c, ctx.get(p.id), ctx.get(p.data), ctx.get(p.resp), ctx.get(p.last)))
                    shown = None
            await ctx.tick()

    run(dut, tb)
    return hs, beats


@pytest.mark.parametrize("lat, start", [(1, 0), (4, STAMP_MASK - 30)])
def test_read_beats_in_order_at_ready_or_when_r_frees(lat, start):
    """Beat n shows in ``max(h + 1 + lat, previous beat taken + 1)``; data from the array, 0 on error.
    ``start`` near 2**32: the stamps wrap during the run."""
    rng = random.Random(lat)
    dut = AxiMemoryRead(GEO, lat=lat, queue_depth=16)
    words = Sram.random(GEO.depth, BEAT, rng)
    bursts = [random_burst(rng) for _ in range(12)]
    hs, beats = run_reads(dut, words, bursts, rng, start=start)
    want = [(h, bid, a, j == length) for (bid, addr, length), h in zip(bursts, hs)
            for j, a in enumerate(beat_addrs(addr, length))]
    assert len(beats) == len(want) == sum(b[2] + 1 for b in bursts)
    taken = None
    for (shown, took, bid, data, resp, last), (h, want_id, a, want_last) in zip(beats, want):
        assert shown == max(h + 1 + lat, taken + 1 if taken is not None else 0)
        assert (bid, resp, last) == (want_id, beat_resp(a), want_last)
        assert data == (words.rows[a // BEAT] if beat_resp(a) == 0 else 0)
        taken = took


@pytest.mark.parametrize("gap_every", [2, 3, 5])
def test_read_gaps_leave_one_cycle_after_every_k_minus_1_beats_of_a_burst(gap_every):
    """With ``r_gap_every = k``, beat j > 0 of a burst with j % (k-1) == 0 shows one cycle later than
    it would without gaps (spec/memory_timing.py); a burst's first beat never waits for a gap."""
    rng = random.Random(gap_every)
    lat = 2
    dut = AxiMemoryRead(GEO, lat=lat, queue_depth=16, r_gap_every=gap_every)
    words = Sram.random(GEO.depth, BEAT, rng)
    bursts = [(i % 16, rng.randrange(0, 400), rng.choice([0, 1, 4, 7])) for i in range(10)]
    hs, beats = run_reads(dut, words, bursts, rng, ready_p=0.7)
    want = [(h, j, a) for (bid, addr, length), h in zip(bursts, hs) for j, a in enumerate(beat_addrs(addr, length))]
    assert len(beats) == len(want)
    taken = None
    for (shown, took, _id, data, _resp, _last), (h, j, a) in zip(beats, want):
        gap = int(j > 0 and j % (gap_every - 1) == 0)
        assert shown == max(h + 1 + lat if j == 0 else 0, taken + 1 + gap if taken is not None else 0)
        assert data == words.rows[a // BEAT]
        taken = took


# ------------------------------------------------------------------- write
@pytest.mark.parametrize("lat, start", [(1, 0), (3, STAMP_MASK - 30)])
def test_write_beats_land_in_order_and_b_follows_at_its_ready_stamp(lat, start):
    """W may lead its AW. Beat j is written in ``max(its handshake, beat j-1 written + 1, its AW + 1)``,
    not at all on error; B ``n`` shows in ``max(max(AW, last W) + 1 + lat, last beat written + 2,
    B n-1 taken + 1)``, with the burst's worst response."""
    rng = random.Random(10 + lat)
    dut = AxiMemoryWrite(GEO, lat=lat, queue_depth=16)
    start_words = [rng.randrange(1 << 32) for _ in range(GEO.depth)]
    mem = list(start_words)
    # Beats in the window then out of it (worst is not the last), past the end, then random.
    bursts = [(1, WINDOW[0] + WINDOW[1] - 8, 3), (2, GEO.size_bytes - 8, 3)] + [random_burst(rng) for _ in range(10)]
    wbeats = [(k, rng.randrange(1 << 32), rng.randrange(16)) for k, b in enumerate(bursts) for _ in range(b[2] + 1)]
    aw_hs, w_hs, writes, bs = [], [], [], []

    async def tb(ctx):
        set_window(ctx, dut)
        shown = None
        for c in range(600):
            ctx.set(dut.now, (start + c) & STAMP_MASK)
            aw_v = len(aw_hs) < len(bursts) and rng.random() < 0.3
            offer_burst(ctx, dut.aw, aw_v and bursts[len(aw_hs)])
            # W beats of burst k may go before AW k, but at most 2 bursts ahead.
            w_v = (len(w_hs) < len(wbeats) and wbeats[len(w_hs)][0] <= len(aw_hs) + 1
                   and rng.random() < 0.6)
            ctx.set(dut.w.valid, w_v)
            if w_v:
                _, d, s = wbeats[len(w_hs)]
                ctx.set(dut.w.payload.data, d)
                ctx.set(dut.w.payload.strb, s)
            b_ready = rng.random() < 0.6
            ctx.set(dut.b.ready, b_ready)
            if aw_v and ctx.get(dut.aw.ready):
                aw_hs.append(c)
            if w_v and ctx.get(dut.w.ready):
                w_hs.append(c)
            en = ctx.get(dut.mem.en)
            if en:
                a, d = ctx.get(dut.mem.addr), ctx.get(dut.mem.data)
                writes.append((c, a, d, en))
                mask = sum(0xFF << (8 * j) for j in range(BEAT) if en >> j & 1)
                mem[a] = (mem[a] & ~mask) | (d & mask)
            if ctx.get(dut.b.valid):
                shown = c if shown is None else shown
                if b_ready:
                    bs.append((shown, c, ctx.get(dut.b.payload.id), ctx.get(dut.b.payload.resp)))
                    shown = None
            await ctx.tick()

    run(dut, tb)
    assert len(aw_hs) == len(bursts) and len(w_hs) == len(wbeats) and len(bs) == len(bursts)
    # Beats in order, one per cycle at most; the array written only for good beats with strobes.
    want_writes, want_mem, written, j = [], list(start_words), None, 0
    want_b, b_taken = [], None
    for k, ((bid, addr, length), a_cycle) in enumerate(zip(bursts, aw_hs)):
        worst = 0
        for a in beat_addrs(addr, length):
            _, d, s = wbeats[j]
            written = max(w_hs[j], a_cycle + 1, written + 1 if written is not None else 0)
            worst = max(worst, beat_resp(a))
            if beat_resp(a) == 0 and s:
                want_writes.append((written, a // BEAT, d, s))
                mask = sum(0xFF << (8 * i) for i in range(BEAT) if s >> i & 1)
                want_mem[a // BEAT] = (want_mem[a // BEAT] & ~mask) | (d & mask)
            j += 1
        shown = max(max(a_cycle, w_hs[j - 1]) + 1 + lat, written + 2, b_taken + 1 if b_taken is not None else 0)
        assert bs[k][0] == shown, k
        assert bs[k][2:] == (bid, worst), k
        b_taken = bs[k][1]
    assert writes == want_writes
    assert mem == want_mem
    assert {RESP_DECERR, RESP_SLVERR, 0} <= {b[3] for b in bs}


@pytest.mark.parametrize("side", ["read", "write"])
def test_full_queue_drops_ready(side):
    """Read, R never taken: ``queue_depth`` (2) one-beat ARs fit beside the burst on R, then ``ar.ready``
    is low. Write, no AW: ``queue_depth`` (4) W beats are queued, then ``w.ready`` is low; nothing written."""
    read = side == "read"
    dut = AxiMemoryRead(GEO, lat=1, queue_depth=2) if read else AxiMemoryWrite(GEO, lat=1, queue_depth=4)
    offered = dut.ar if read else dut.w

    async def tb(ctx):
        set_window(ctx, dut)
        ctx.set(offered.valid, 1)
        if not read:
            ctx.set(dut.w.payload.strb, 0xF)
        accepted = 0
        for c in range(10):
            ctx.set(dut.now, c)
            accepted += ctx.get(offered.ready)
            assert read or not (ctx.get(dut.mem.en) or ctx.get(dut.b.valid))
            await ctx.tick()
        assert accepted == (3 if read else 4)
        assert not read or ctx.get(dut.r.valid)

    run(dut, tb)


@pytest.mark.parametrize("aw_cycle", [0, 5])
def test_write_b_counts_from_the_later_of_aw_and_last_w(aw_cycle):
    """One single-beat burst, W in cycle 0, AW in ``aw_cycle``, lat 3: written in ``aw_cycle + 1`` (its
    AW must be at the queue head), B in ``aw_cycle + 1 + 3`` (the AW is the later stamp)."""
    lat = 3
    dut = AxiMemoryWrite(GEO, lat=lat, queue_depth=4)
    seen = {}

    async def tb(ctx):
        set_window(ctx, dut)
        ctx.set(dut.b.ready, 1)
        ctx.set(dut.w.payload.strb, 0xF)
        ctx.set(dut.w.payload.data, 0x12345678)
        ctx.set(dut.aw.payload.addr, 40)
        for c in range(20):
            ctx.set(dut.now, c)
            ctx.set(dut.w.valid, c == 0)
            ctx.set(dut.aw.valid, c == aw_cycle)
            if ctx.get(dut.mem.en):
                seen.setdefault("written", (c, ctx.get(dut.mem.addr), ctx.get(dut.mem.data)))
            if ctx.get(dut.b.valid):
                seen.setdefault("b", c)
            await ctx.tick()

    run(dut, tb)
    written = aw_cycle + 1
    assert seen["written"] == (written, 40 // BEAT, 0x12345678)
    assert seen["b"] == max(aw_cycle + 1 + lat, written + 2)
