"""Each block of the matrix unit alone in Amaranth's simulator: issue, hazard, operands, row tags, write-back.

tests/test_matrix_unit.py runs them together (with the array and SRAMs); these pin each block's own
contract (what it emits in which cycle), so that a broken block fails here by name.
"""

import contextlib
import dataclasses
import gc
import random
import warnings

import pytest
from amaranth.hdl import Fragment, UnusedElaboratable

from flashnpu.hw.matrix_hazard import MatrixHazard
from flashnpu.hw.matrix_issue import MatrixIssue
from flashnpu.hw.matrix_operands import MatrixOperands
from flashnpu.hw.matrix_row_tags import MatrixRowTags
from flashnpu.hw.matrix_unit import MatrixUnit
from flashnpu.hw.matrix_writeback import MatrixWriteback
from flashnpu.spec.config import load_config
from flashnpu.spec.isa import Mem
from flashnpu.spec.numerics import A_WIDE_BITS, saturate_a, wrap32
from flashnpu.spec.timing import timing

from support.sim import simulate as run
from support.sram import Sram

TINY = load_config("tiny")
M16 = (1 << 16) - 1
ISSUE_FIELDS = ("w_row", "w_addr", "transpose", "a_row", "a_acc", "a_addr", "dst", "rmw", "last", "first",
                "a_lo", "a_end")


def set_fields(ctx, view, fields):
    for k, v in fields.items():
        ctx.set(getattr(view, k), v)


def lanes(value, bits, n, signed=True):
    out = []
    for k in range(n):
        v = (value >> (bits * k)) & ((1 << bits) - 1)
        out.append(v - (1 << bits) if signed and v >> (bits - 1) else v)
    return out


def pack(values, bits):
    return sum((v & ((1 << bits) - 1)) << (bits * k) for k, v in enumerate(values))


def matmul_fields(rng, dim):
    return dict(accumulate=rng.randrange(2), transpose_w=rng.randrange(2), a_mem=rng.randrange(2),
                m_rows=rng.choice([1, dim - 1, dim, dim + 2]), k_chunks=rng.randrange(1, 4),
                n_blocks=rng.randrange(1, 3), a_addr=rng.randrange(M16 + 1), a_kstride=rng.randrange(40),
                w_addr=rng.randrange(M16 + 1), w_kstride=rng.randrange(40), w_nstride=rng.randrange(40),
                out_addr=rng.randrange(M16 + 1), out_nstride=rng.randrange(40))


def tile_cycles(f, dim):
    """The tile cycles of a MATMUL, written from the loop of docs/architecture.md."""
    out = []
    for nb in range(f["n_blocks"]):
        for kc in range(f["k_chunks"]):
            a_base = (f["a_addr"] + kc * f["a_kstride"]) & M16
            w_base = (f["w_addr"] + kc * f["w_kstride"] + nb * f["w_nstride"]) & M16
            out_base = (f["out_addr"] + nb * f["out_nstride"]) & M16
            last_tile = nb == f["n_blocks"] - 1 and kc == f["k_chunks"] - 1
            for t in range(max(f["m_rows"], dim)):
                out.append(dict(
                    w_row=int(t < dim), w_addr=(w_base + t) & M16, transpose=f["transpose_w"],
                    a_row=int(t < f["m_rows"]), a_acc=int(f["a_mem"] == Mem.ACC), a_addr=(a_base + t) & M16,
                    dst=(out_base + t) & M16, rmw=int(bool(f["accumulate"] or kc > 0)),
                    last=int(last_tile and t == f["m_rows"] - 1), first=int(t == 0),
                    a_lo=a_base, a_end=a_base + f["m_rows"]))
    return out


# ------------------------------------------------------------------ issue
def test_issue_walks_tiles_holds_while_not_ready_and_takes_in_the_last_cycle():
    """Tile cycles in loop order, held while not ready (at a tile's first cycle, where the hazard holds
    them); the next MATMUL taken in the current one's last cycle, no gap; busy counts take - done."""
    dim = TINY.dim
    dut = MatrixIssue(TINY)
    rng = random.Random(4)
    instrs = [matmul_fields(rng, dim) for _ in range(5)]
    want = [c for f in instrs for c in tile_cycles(f, dim)]
    ends = {sum(len(tile_cycles(f, dim)) for f in instrs[:j + 1]) for j in range(len(instrs))}
    got, busy = [], []
    takes = dones = 0

    async def tb(ctx):
        nonlocal takes, dones
        for cycle in range(len(want) * 2 + 20):
            ctx.set(dut.instr.valid, takes < len(instrs))
            set_fields(ctx, dut.instr.payload, instrs[min(takes, len(instrs) - 1)])
            ready = not ctx.get(dut.tiles.payload.first) or rng.random() < 0.5
            ctx.set(dut.tiles.ready, ready)
            done = takes > dones and rng.random() < 0.1
            ctx.set(dut.done, done)
            going = ctx.get(dut.tiles.valid) and ready
            if going:
                got.append({k: ctx.get(getattr(dut.tiles.payload, k)) for k in ISSUE_FIELDS})
            # instr.ready: idle, or exactly the last tile cycle of the instruction, going now.
            assert ctx.get(dut.instr.ready) == (not ctx.get(dut.tiles.valid) or (going and len(got) in ends))
            if ctx.get(dut.instr.ready) and takes < len(instrs):
                takes += 1
            dones += done
            busy.append((ctx.get(dut.busy), takes - dones))
            await ctx.tick()
        assert not ctx.get(dut.tiles.valid)

    run(dut, tb)
    assert got == want and takes == len(instrs)
    # busy is registered: high in the cycle after a take until the cycle after the last done.
    assert all(b == (prev != 0) for (b, _), (_, prev) in zip(busy[1:], busy))


def test_issue_offers_the_first_cycle_right_after_the_take():
    dim = TINY.dim
    dut = MatrixIssue(TINY)
    f = dict(accumulate=0, transpose_w=1, a_mem=Mem.ACC, m_rows=2, k_chunks=1, n_blocks=1, a_addr=7, a_kstride=0,
             w_addr=100, w_kstride=0, w_nstride=0, out_addr=30, out_nstride=0)

    async def tb(ctx):
        ctx.set(dut.tiles.ready, 1)
        ctx.set(dut.instr.valid, 1)
        set_fields(ctx, dut.instr.payload, f)
        assert ctx.get(dut.instr.ready) and not ctx.get(dut.tiles.valid)
        await ctx.tick()
        ctx.set(dut.instr.valid, 0)
        seen = []
        for _ in range(dim):
            assert ctx.get(dut.tiles.valid)
            seen.append({k: ctx.get(getattr(dut.tiles.payload, k)) for k in ISSUE_FIELDS})
            # instr.ready only in the last of the dim cycles (m_rows < dim: the tile is dim long).
            assert ctx.get(dut.instr.ready) == (len(seen) == dim)
            await ctx.tick()
        assert not ctx.get(dut.tiles.valid) and ctx.get(dut.instr.ready)
        assert seen == tile_cycles(f, dim)

    run(dut, tb)


# ----------------------------------------------------------------- hazard
def test_hazard_holds_a_first_acc_cycle_while_a_row_in_flight_hits_its_range():
    stages = timing(TINY).array_latency + 2
    dut = MatrixHazard(stages)
    rng = random.Random(6)
    waits = 0

    async def tb(ctx):
        nonlocal waits
        for _ in range(600):
            valid, a_acc, first = (rng.randrange(2) for _ in range(3))
            lo = rng.randrange(0, 40)
            end = lo + rng.randrange(1, 12)
            rows = [(rng.randrange(2), rng.randrange(0, 60)) for _ in range(stages)]
            other = {k: rng.randrange(2) for k in ("w_row", "transpose", "a_row", "rmw", "last")}
            addrs = {k: rng.randrange(M16 + 1) for k in ("w_addr", "a_addr", "dst")}
            p = dut.issue.payload
            set_fields(ctx, p, {**other, **addrs, "a_acc": a_acc, "first": first, "a_lo": lo, "a_end": end})
            ctx.set(dut.issue.valid, valid)
            for k, (v, d) in enumerate(rows):
                ctx.set(dut.rows[k].valid, v)
                ctx.set(dut.rows[k].dst, d)
            wait = bool(valid and a_acc and first and any(v and lo <= d < end for v, d in rows))
            waits += wait
            assert ctx.get(dut.issue.ready) == (not wait)
            assert ctx.get(dut.out.valid) == (valid and not wait)
            for k in ISSUE_FIELDS:
                assert ctx.get(getattr(dut.out.payload, k)) == ctx.get(getattr(p, k))
            await ctx.delay(1e-6)

    run(dut, tb, clock=False)
    assert waits > 20


@pytest.mark.parametrize("which", [0, -1])
def test_hazard_sees_every_stage_up_to_its_range_ends(which):
    """One row in flight at the first or the last stage: hit at a_lo and a_end - 1, miss just outside."""
    stages = timing(TINY).array_latency + 2
    dut = MatrixHazard(stages)
    k = which % stages

    async def tb(ctx):
        p = dut.issue.payload
        ctx.set(dut.issue.valid, 1)
        ctx.set(p.a_acc, 1)
        ctx.set(p.first, 1)
        ctx.set(p.a_lo, 10)
        ctx.set(p.a_end, 14)
        ctx.set(dut.rows[k].valid, 1)
        for dst, hit in ((9, False), (10, True), (13, True), (14, False)):
            ctx.set(dut.rows[k].dst, dst)
            assert ctx.get(dut.issue.ready) == (not hit), dst
        ctx.set(dut.rows[k].dst, 12)
        ctx.set(p.first, 0)                 # only a tile's first cycle waits
        assert ctx.get(dut.issue.ready)

    run(dut, tb, clock=False)


# --------------------------------------------------------------- operands
def test_operands_read_weights_then_a_rows_and_saturate_accumulator_lanes():
    dim = TINY.dim
    dut = MatrixOperands(TINY)
    rng = random.Random(8)
    n_rows = 64
    spad = Sram.random(n_rows, dim, rng)
    big = [rng.choice([rng.randrange(-(1 << 31), 1 << 31), rng.randrange(-3000, 3000)]) for _ in range(n_rows * dim)]
    acc = Sram([pack(big[r * dim:(r + 1) * dim], 32) for r in range(n_rows)])
    spad_w = Sram(spad.rows)            # the weight port reads the same scratchpad
    cycles = 300
    issued = [dict(valid=rng.random() < 0.8, w_row=rng.randrange(2), a_row=rng.randrange(2),
                   a_acc=rng.randrange(2), transpose=rng.randrange(2), w_addr=rng.randrange(n_rows),
                   a_addr=rng.randrange(n_rows), dst=rng.randrange(M16 + 1), rmw=rng.randrange(2),
                   last=rng.randrange(2)) for _ in range(cycles)]
    seen = []

    async def tb(ctx):
        for c in range(cycles + 3):
            i = issued[c] if c < cycles else dict(issued[0], valid=0)
            ctx.set(dut.issue.valid, i["valid"])
            for k in ("w_row", "a_row", "a_acc", "transpose", "w_addr", "a_addr", "dst", "rmw", "last"):
                ctx.set(getattr(dut.issue.payload, k), i[k])
            spad_w.step(ctx, rd=dut.w_rd)
            spad.step(ctx, rd=dut.a_rd)
            acc.step(ctx, rd=dut.acc_a_rd)
            seen.append(dict(
                w=(ctx.get(dut.weights.valid), ctx.get(dut.weights.payload.data), ctx.get(dut.weights.payload.transpose)),
                a=(ctx.get(dut.a_rows.valid), [ctx.get(dut.a_rows.payload[k]) for k in range(dim)]),
                tag=(ctx.get(dut.tag.valid), ctx.get(dut.tag.payload.dst), ctx.get(dut.tag.payload.rmw),
                     ctx.get(dut.tag.payload.last))))
            await ctx.tick()

    run(dut, tb)
    n_w = n_a = 0
    for c, i in enumerate(issued):
        w_valid, w_data, w_tr = seen[c + 1]["w"]
        assert w_valid == (i["valid"] and i["w_row"]), c
        assert w_tr == i["transpose"], c
        if w_valid:
            n_w += 1
            assert w_data == spad.rows[i["w_addr"]], c
        read = i["valid"] and i["a_row"]
        assert seen[c + 1]["tag"] == (read, i["dst"], i["rmw"], i["last"]), c
        a_valid, a_lanes = seen[c + 2]["a"]
        assert a_valid == read, c
        if read:
            n_a += 1
            r = i["a_addr"]
            want = ([saturate_a(v) for v in big[r * dim:(r + 1) * dim]] if i["a_acc"]
                    else lanes(spad.rows[r], 8, dim))
            assert a_lanes == want, c
    assert n_w > 50 and n_a > 50
    assert min(min(x) for x in (s["a"][1] for s in seen)) == -(1 << (A_WIDE_BITS - 1))


# --------------------------------------------------------------- row tags
@pytest.mark.parametrize("depth", [1, timing(TINY).array_latency])
def test_row_tags_delay_every_tag_by_depth_and_show_each_stage(depth):
    dut = MatrixRowTags(depth)
    rng = random.Random(depth)
    ins = [(rng.randrange(2), rng.randrange(M16 + 1), rng.randrange(2), rng.randrange(2)) for _ in range(80)]

    async def tb(ctx):
        for c in range(len(ins)):
            v, dst, rmw, last = ins[c]
            ctx.set(dut.a.valid, v)
            ctx.set(dut.a.payload.dst, dst)
            ctx.set(dut.a.payload.rmw, rmw)
            ctx.set(dut.a.payload.last, last)
            if c >= depth:
                assert (ctx.get(dut.r.valid), ctx.get(dut.r.payload.dst), ctx.get(dut.r.payload.rmw),
                        ctx.get(dut.r.payload.last)) == ins[c - depth], c
                for k in range(depth + 1):
                    assert (ctx.get(dut.in_flight[k].valid), ctx.get(dut.in_flight[k].dst)) == ins[c - k][:2]
            await ctx.tick()

    run(dut, tb)


@contextlib.contextmanager
def never_elaborated():
    """Keep the warning of a half-built component (it raised) out of the log."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        yield
        gc.collect()


def test_row_tags_reject_depth_0():
    with never_elaborated(), pytest.raises(ValueError, match="depth"):
        MatrixRowTags(0)


# -------------------------------------------------------------- write-back
def test_writeback_adds_in_order_and_forwards_the_two_writes_in_flight():
    """Rows to few accumulator rows (spacings 1, 2, 3 ...) against the sequential loop on a non-transparent SRAM."""
    dim = TINY.dim
    dut = MatrixWriteback(TINY)
    rng = random.Random(10)
    n_rows = 4
    start = [pack([rng.randrange(-(1 << 31), 1 << 31) for _ in range(dim)], 32) for _ in range(n_rows)]
    acc = Sram(list(start))
    cycles = 400
    tags = [dict(valid=rng.random() < 0.85, dst=rng.randrange(n_rows), rmw=rng.random() < 0.7,
                 last=rng.random() < 0.2) for _ in range(cycles)]
    prods = [pack([rng.randrange(-(1 << 31), 1 << 31) for _ in range(dim)], 32) for _ in range(cycles + 3)]
    writes, dones = [], []

    async def tb(ctx):
        for c in range(cycles + 3):
            t = tags[c] if c < cycles else dict(valid=0, dst=0, rmw=0, last=0)
            ctx.set(dut.r.valid, t["valid"])
            ctx.set(dut.r.payload.dst, t["dst"])
            ctx.set(dut.r.payload.rmw, t["rmw"])
            ctx.set(dut.r.payload.last, t["last"])
            for n, v in enumerate(lanes(prods[c - 1] if c else 0, 32, dim, signed=False)):
                ctx.set(dut.product[n], v)
            acc.step(ctx, rd=dut.acc_rd)      # the read sees the memory before this cycle's write
            if ctx.get(dut.acc_wr.en):
                writes.append((c, ctx.get(dut.acc_wr.addr), ctx.get(dut.acc_wr.data)))
            acc.step(ctx, wr=dut.acc_wr)
            x = (ctx.get(dut.x.valid), ctx.get(dut.x.dst))
            assert x == ((tags[c - 1]["valid"], tags[c - 1]["dst"]) if 0 < c <= cycles else (0, x[1]))
            if ctx.get(dut.done):
                dones.append(c)
            await ctx.tick()

    run(dut, tb)
    mem = [lanes(r, 32, dim) for r in start]
    want = []
    for c, t in enumerate(tags):
        if not t["valid"]:
            continue
        p = lanes(prods[c], 32, dim)
        row = [wrap32(o + q) for o, q in zip(mem[t["dst"]], p)] if t["rmw"] else p
        mem[t["dst"]] = row
        want.append((c + 2, t["dst"], pack(row, 32)))
    assert writes == want
    assert dones == [c + 2 for c, t in enumerate(tags) if t["valid"] and t["last"]]
    spacings = {b - a for a, b in zip([w[0] for w in want], [w[0] for w in want][1:])}
    assert {1, 2, 3} <= spacings


# ----------------------------------------------------------------- the unit
def test_unit_refuses_a_spec_timing_array_latency_its_array_does_not_have(monkeypatch):
    import flashnpu.hw.matrix_unit as mu_mod
    wrong = dataclasses.replace(timing(TINY), array_latency=timing(TINY).array_latency + 1)
    monkeypatch.setattr(mu_mod, "timing", lambda cfg: wrong)
    with never_elaborated(), pytest.raises(ValueError, match="array_latency"):
        Fragment.get(MatrixUnit(TINY), None)
