"""Divider in Amaranth's simulator against ``recip_fixed``, with its exact timing.

Divisions run back to back (``start`` in each ``done`` cycle), so the test
checks the result, the ``done`` cycle and ``busy`` of every one.
"""

import random

import pytest
from amaranth.sim import Simulator

from flashnpu.hw.divider import Divider
from flashnpu.spec.numerics import INT32_MAX, INT32_MIN, RECIP_MULT_LIMIT, recip_fixed


def run_divider(pairs, bits_per_cycle=2, gap=0):
    """Divide ``(l, mult)`` pairs in order, each started ``gap`` cycles after the previous ``done``.

    Returns ``([(result, cycles from start to done)], Divider.cycles)``.
    """
    dut = Divider(bits_per_cycle=bits_per_cycle)
    out = []

    async def tb(ctx):
        cyc = 0
        for l, mu in pairs:
            ctx.set(dut.start, 1)
            ctx.set(dut.l, l)
            ctx.set(dut.mult, mu)
            t0 = cyc
            await ctx.tick()
            cyc += 1
            ctx.set(dut.start, 0)
            ctx.set(dut.l, random.randrange(INT32_MIN, INT32_MAX))   # inputs matter only at start
            ctx.set(dut.mult, 0xFFFF)
            while not ctx.get(dut.done):
                assert ctx.get(dut.busy) or dut.cycles == 1
                assert cyc - t0 <= dut.cycles, "no done"
                await ctx.tick()
                cyc += 1
            assert not ctx.get(dut.busy)
            out.append((ctx.get(dut.f), cyc - t0))
            for _ in range(gap):
                await ctx.tick()
                cyc += 1
                assert not ctx.get(dut.done) and not ctx.get(dut.busy)
                assert ctx.get(dut.f) == out[-1][0], "f must hold until the next start"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return out, dut.cycles


def check(pairs, **kw):
    got, cyc = run_divider(pairs, **kw)
    assert cyc == -(-48 // kw.get("bits_per_cycle", 2))
    for (l, mu), (f, n) in zip(pairs, got):
        assert f == recip_fixed(l, mu), f"l={l} mult={mu}: got {f}, want {recip_fixed(l, mu)}"
        assert n == cyc, f"l={l} mult={mu}: done after {n} cycles, want {cyc}"


EDGE = [(0, 0), (0, 1), (0, RECIP_MULT_LIMIT - 1), (1, RECIP_MULT_LIMIT - 1), (1, 1), (1, 0),
        (2, RECIP_MULT_LIMIT - 1), (3, RECIP_MULT_LIMIT - 1), (-1, 5), (INT32_MIN, 100),
        (INT32_MAX, RECIP_MULT_LIMIT - 1), (INT32_MAX, 1), (INT32_MAX - 1, 1), (1 << 30, 1),
        ((1 << 30) + 1, 3), (127, 1 << 15), (127 * 64, 12345), (3, 1), (5, 1), (7, 7)]


def test_edges_back_to_back():
    check(EDGE)


def test_random():
    rng = random.Random(3)
    pairs = []
    for _ in range(300):
        kind = rng.randrange(3)
        l = (rng.randrange(INT32_MIN, INT32_MAX + 1) if kind == 0 else
             rng.randrange(1, 1 << rng.randrange(1, 32)))
        pairs.append((l, rng.randrange(RECIP_MULT_LIMIT) if kind != 2 else RECIP_MULT_LIMIT - 1))
    check(pairs)


@pytest.mark.parametrize("k", [1, 3, 4, 48])
def test_other_radices_with_gaps(k):
    rng = random.Random(k)
    pairs = EDGE[:8] + [(rng.randrange(1, 1 << 31), rng.randrange(RECIP_MULT_LIMIT)) for _ in range(20)]
    check(pairs, bits_per_cycle=k, gap=2)


def test_bad_parameter():
    with pytest.raises(ValueError, match="bits_per_cycle"):
        Divider(bits_per_cycle=0)
