"""Each block of the vector unit alone in Amaranth's simulator: issue, lanes, row state, reciprocal.

tests/test_vector_unit.py runs them together; these tests pin each block's own contract (what it
emits in which cycle), so that a broken block fails here by name.
"""

import random

from flashnpu.hw.vector_issue import VectorIssue
from flashnpu.hw.vector_lanes import VectorLanes
from flashnpu.hw.vector_reciprocal import VectorReciprocal
from flashnpu.hw.vector_row_state import StateReadSignature, VectorRowState
from flashnpu.spec.config import load_config
from flashnpu.spec.isa import VectorFunct
from flashnpu.spec.numerics import NEG_INF
from flashnpu.spec.timing import timing

from support import vector_ref
from support.sim import simulate as run

TINY = load_config("tiny")
T = timing(TINY)
F = VectorFunct
M32 = (1 << 32) - 1


def s32(v):
    return v - (1 << 32) if v >> 31 else v


def test_state_read_signature_eq():
    assert StateReadSignature() == StateReadSignature()
    assert StateReadSignature() != StateReadSignature().flip()


def test_issue_walks_elements_and_stalls():
    """Row outer, block inner; acc/spad/state rows, first/last/end and the mask; held while not ready."""
    dim = TINY.dim
    dut = VectorIssue(dim)
    f = dict(funct=F.EXP, rows=3, blocks=2, acc_addr=10, acc_block_stride=5, state_addr=7, spad_addr=40,
             spad_block_stride=9, kv_valid=6, causal=1, causal_offset=2, mult=1234, shift=9)
    want = [dict(acc=10 + b * 5 + i, spad=40 + b * 9 + i, st=7 + i, first=int(b == 0), last=int(b == 1),
                 end=int(b == 1 and i == 2),
                 mask=[int(c < 6 and c <= i + 2) for c in range(b * dim, b * dim + dim)])
            for i in range(3) for b in range(2)]
    got = []
    rng = random.Random(5)

    async def tb(ctx):
        ctx.set(dut.instr.valid, 1)
        for k, v in f.items():
            ctx.set(getattr(dut.instr.payload, k), v)
        assert ctx.get(dut.instr.ready) and not ctx.get(dut.recip.valid)
        await ctx.tick()
        ctx.set(dut.instr.valid, 0)
        assert ctx.get(dut.busy) and ctx.get(dut.params.rshift) == 9 and ctx.get(dut.params.mult) == 1234
        for _ in range(40):
            ready = rng.random() < 0.6
            ctx.set(dut.elem.ready, ready)
            assert not ctx.get(dut.instr.ready)          # busy until done
            if ctx.get(dut.elem.valid) and ready:
                e = dut.elem.payload
                got.append(dict(acc=ctx.get(e.acc), spad=ctx.get(e.spad), st=ctx.get(e.st),
                                first=ctx.get(e.first), last=ctx.get(e.last), end=ctx.get(e.end),
                                mask=[ctx.get(e.mask[l]) for l in range(dim)]))
            await ctx.tick()
        assert not ctx.get(dut.elem.valid)
        # done frees the unit; a RECIP goes to ``recip`` in its take cycle and issues no element.
        ctx.set(dut.done, 1)
        ctx.set(dut.instr.valid, 1)
        ctx.set(dut.instr.payload.funct, F.RECIP)
        ctx.set(dut.instr.payload.rows, 4)
        ctx.set(dut.instr.payload.mult, 0x12345)
        assert ctx.get(dut.instr.ready) and ctx.get(dut.recip.valid)
        assert (ctx.get(dut.recip.payload.rows), ctx.get(dut.recip.payload.row),
                ctx.get(dut.recip.payload.mult)) == (4, 7, 0x2345)
        await ctx.tick()
        ctx.set(dut.done, 0)
        assert ctx.get(dut.busy) and not ctx.get(dut.elem.valid)
        assert ctx.get(dut.params.rshift) == 9      # shift; SCALE alone rounds by 15

    run(dut, tb)
    assert got == want


def test_lanes_latencies_and_values():
    """Random elements every cycle: rowmax, requant and exp come out at their stages, bit-exact."""
    dim = TINY.dim
    dut = VectorLanes(TINY)
    rng = random.Random(9)
    mult, shift, rshift = 40000, 11, 13
    ins = []
    for k in range(40):
        x = [rng.choice([rng.randrange(-(1 << 31), 1 << 31), rng.randrange(-3000, 3000)]) for _ in range(dim)]
        ins.append(dict(valid=rng.randrange(2), first=rng.randrange(2), x=x,
                        m=max(x) + rng.randrange(0, 500), factor=rng.randrange(1 << 48),
                        mask=[rng.randrange(2) for _ in range(dim)]))
    out_lat, exp_lat = T.vector_out_write - 1, T.vector_exp_write - 1

    async def tb(ctx):
        p = dut.params
        ctx.set(p.mult, mult)
        ctx.set(p.shift, shift)
        ctx.set(p.rshift, rshift)
        ctx.set(p.rshift_m1, rshift - 1)
        for c in range(len(ins) + exp_lat):
            if c < len(ins):
                e = ins[c]
                ctx.set(dut.elem.valid, e["valid"])
                for name in ("first", "m", "factor"):
                    ctx.set(getattr(dut.elem.payload, name), e[name])
                for l in range(dim):
                    ctx.set(dut.elem.payload.x[l], e["x"][l])
                    ctx.set(dut.elem.payload.mask[l], e["mask"][l])
            if 1 <= c <= len(ins):
                e = ins[c - 1]
                mx = vector_ref.masked_max(e["x"], e["mask"])
                assert ctx.get(dut.rowmax.valid) == e["valid"]
                assert ctx.get(dut.rowmax.payload.first) == e["first"]
                assert ctx.get(dut.rowmax.payload.max) == mx
            if out_lat <= c < len(ins) + out_lat:
                e = ins[c - out_lat]
                assert ctx.get(dut.requant.valid) == e["valid"]
                for l in range(dim):
                    w = vector_ref.rounded_product(e["x"][l], e["factor"], rshift)
                    assert s32(ctx.get(dut.requant.payload.w[l])) == w
                    q = ctx.get(dut.requant.payload.q[l])
                    assert q - 256 * (q >> 7) == vector_ref.output(e["x"][l], e["factor"], rshift)
            if c >= exp_lat:
                e = ins[c - exp_lat]
                ps = [vector_ref.exp_p(v, e["m"], mult, shift) if k else 0 for v, k in zip(e["x"], e["mask"])]
                assert ctx.get(dut.exp.valid) == e["valid"] and ctx.get(dut.exp.payload.first) == e["first"]
                assert [ctx.get(dut.exp.payload.p[l]) for l in range(dim)] == ps
                assert ctx.get(dut.exp.payload.sum) == sum(ps)
            await ctx.tick()

    run(dut, tb)


def test_row_state_updates():
    """INIT, a ROWMAX over two blocks (M, F), an EXP over two blocks (L), a RECIP write of F."""
    dut = VectorRowState(TINY)
    S, E = T.vector_state_write, T.vector_exp_write
    mult, shift = 30000, 10
    M0, L0, F0 = -5000, 123456, (1 << 47) - 3
    seen = {}

    async def tb(ctx):
        ctx.set(dut.state_m.data[3], M0 & M32)
        ctx.set(dut.state_l.data[3], L0)
        ctx.set(dut.state_f.data[3], F0)
        ctx.set(dut.state_m.data[6], 17)
        ctx.set(dut.params.mult, mult)
        ctx.set(dut.params.shift, shift)

        async def element(c, first, last, op, rowmax=None, psum=None):
            """Drive one element of state row 3 issued in cycle c (the caller's timeline is cycles c..c+S)."""
            for k in range(S + 1):
                ctx.set(dut.elem_rd.en, k == 0)
                ctx.set(dut.elem_rd.addr, 3)
                ctx.set(dut.rowmax.valid, k == 2)
                ctx.set(dut.rowmax.payload.first, first)
                ctx.set(dut.rowmax.payload.max, rowmax if rowmax is not None else NEG_INF)
                ctx.set(dut.exp.valid, k == E)
                ctx.set(dut.exp.payload.first, first)
                ctx.set(dut.exp.payload.sum, psum or 0)
                ctx.set(dut.update.valid, k == S and last)
                ctx.set(dut.update.payload.op, op)
                ctx.set(dut.update.payload.row, 3)
                if k == 1:
                    seen.setdefault(op, ctx.get(dut.elem_rd.data.m))
                await ctx.tick()

        # ROWMAX over two blocks with maxima -7000 then -4000; the reference takes the row's max.
        want = vector_ref.RowState(M0, L0, F0)
        await element(0, 1, 0, F.ROWMAX, rowmax=-7000)
        await element(0, 0, 1, F.ROWMAX, rowmax=-4000)
        want.rowmax(max(-7000, -4000), mult, shift)
        assert s32(ctx.get(dut.state_m.data[3])) == want.m
        assert ctx.get(dut.state_f.data[3]) == want.f
        # EXP: two blocks whose P sum to 100 + 250.
        await element(0, 1, 0, F.EXP, psum=100)
        await element(0, 0, 1, F.EXP, psum=250)
        want.l = vector_ref.l_update(want.l, want.f, 100 + 250)
        assert s32(ctx.get(dut.state_l.data[3])) == want.l
        assert seen[F.ROWMAX] & M32 == M0 & M32
        # RECIP writes F through recip_wr; its read wins over the element read.
        ctx.set(dut.recip_wr.valid, 1)
        ctx.set(dut.recip_wr.payload.row, 6)
        ctx.set(dut.recip_wr.payload.f, 999)
        ctx.set(dut.recip_rd.en, 1)
        ctx.set(dut.recip_rd.addr, 6)
        ctx.set(dut.elem_rd.en, 1)
        ctx.set(dut.elem_rd.addr, 3)
        await ctx.tick()
        ctx.set(dut.recip_wr.valid, 0)
        ctx.set(dut.recip_rd.en, 0)
        ctx.set(dut.elem_rd.en, 0)
        assert ctx.get(dut.recip_rd.data.m) == 17 and ctx.get(dut.state_f.data[6]) == 999
        # INIT writes at once.
        ctx.set(dut.update.valid, 1)
        ctx.set(dut.update.payload.op, F.INIT)
        ctx.set(dut.update.payload.row, 3)
        await ctx.tick()
        ctx.set(dut.update.valid, 0)
        assert (s32(ctx.get(dut.state_m.data[3])), ctx.get(dut.state_l.data[3]),
                ctx.get(dut.state_f.data[3])) == (NEG_INF, 0, 0)

    run(dut, tb)


def test_reciprocal_rows_back_to_back():
    """F of row r in cycle recip_start + r*recip_row_interval + recip_row_cycles, read through rd: radices
    4 and 16, one divider (one row at a time), 5 (the interval rounds up), 8 and 24 (a row per cycle)."""
    for bits, dividers in ((2, 1), (4, 1), (2, 5), (2, 8), (2, 24)):
        cfg = TINY.replace(name=f"radix{bits}-div{dividers}", divider_bits_per_cycle=bits, recip_dividers=dividers)
        t = timing(cfg)
        assert t.recip_row_interval == -(-t.recip_row_cycles // dividers)
        dut = VectorReciprocal(cfg)
        L = {9 + r: v for r, v in enumerate((1, 1 << 20, -3, 2**31 - 1, 7, 0, 12345, 99, 1 << 30))}
        rows = len(L)
        writes = []

        async def tb(ctx):
            ctx.set(dut.start.valid, 1)
            ctx.set(dut.start.payload.rows, rows)
            ctx.set(dut.start.payload.row, 9)
            ctx.set(dut.start.payload.mult, 50000)
            rd = None
            for c in range(t.recip_start + rows * t.recip_row_cycles + 3):
                ctx.set(dut.rd.data.l, L.get(rd, 0))
                if ctx.get(dut.wr.valid):
                    writes.append((c, ctx.get(dut.wr.payload.row), ctx.get(dut.wr.payload.f),
                                   ctx.get(dut.wr.payload.last)))
                rd = ctx.get(dut.rd.addr) if ctx.get(dut.rd.en) else rd
                assert not ctx.get(dut.rd.en) or ctx.get(dut.rd.addr) in L     # never past the last row
                await ctx.tick()
                ctx.set(dut.start.valid, 0)

        run(dut, tb)
        assert writes == [(t.recip_start + r * t.recip_row_interval + t.recip_row_cycles, 9 + r,
                           vector_ref.recip(L[9 + r], 50000), int(r == rows - 1)) for r in range(rows)], cfg.name
