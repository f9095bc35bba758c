"""Exp2Lane in Amaranth's simulator against ``exp2_fixed(exp_arg(diff, mult, shift))``.

Arguments stream in one per cycle (the lane is free running); each result is
read ``LATENCY`` cycles after its argument, so the test also checks the latency.
"""

import random

from amaranth.sim import Simulator

from flashnpu.hw.exp2_lane import Exp2Lane
from flashnpu.spec.numerics import (EXP_ARG_MIN, EXP_FRAC, EXP_TABLE_BITS, INT32_MAX, INT32_MIN,
                                  exp2_fixed, exp_arg)


def run_lane(args):
    """Feed ``(diff, mult, shift)`` one per cycle; return the outputs seen LATENCY cycles later."""
    dut = Exp2Lane()
    lat = Exp2Lane.LATENCY
    got = []

    async def tb(ctx):
        for k in range(len(args) + lat):
            if k < len(args):
                d, mu, sh = args[k]
                ctx.set(dut.diff, d)
                ctx.set(dut.mult, mu)
                ctx.set(dut.shift, sh)
            if k >= lat:
                got.append(ctx.get(dut.e))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return got


def check(args):
    got = run_lane(args)
    want = [exp2_fixed(exp_arg(d, mu, sh)) for d, mu, sh in args]
    bad = [(a, g, w) for a, g, w in zip(args, got, want) if g != w]
    assert not bad, f"{len(bad)} mismatches, first (diff, mult, shift), got, want: {bad[:5]}"


def test_edge_arguments():
    # t itself (mult 1, shift 0): 0, -1, the minimum, around the flush point
    # (t < -16*4096 gives 0) and every table boundary of every octave.
    step = 1 << (EXP_FRAC - EXP_TABLE_BITS)
    ts = {0, -1, -2, EXP_ARG_MIN, EXP_ARG_MIN + 1, EXP_ARG_MIN - 1, -(16 << EXP_FRAC),
          -(16 << EXP_FRAC) - 1, -(16 << EXP_FRAC) + 1, -(17 << EXP_FRAC), -(15 << EXP_FRAC)}
    for n in range(0, 18):
        for k in range(0, 1 << EXP_FRAC, step):
            for d in (-1, 0, 1, step - 1):
                ts.add(-(n << EXP_FRAC) + k + d)
    args = [(t, 1, 0) for t in sorted(ts) if t <= 1]
    # Differences beyond INT32 (33-bit), positive ones (t = 0), mult 0 and huge products.
    args += [(-(1 << 32), 1, 0), (-(1 << 32), (1 << 32) - 1, 63), (-(1 << 32), (1 << 32) - 1, 0),
             (INT32_MIN, (1 << 32) - 1, 43), (INT32_MIN, (1 << 32) - 1, 42),
             (INT32_MAX, (1 << 32) - 1, 0), ((1 << 32) - 1, 5, 3), (1, 1, 0),
             (-12345, 0, 0), (-1, (1 << 32) - 1, 63), (-1, (1 << 32) - 1, 32), (-1, (1 << 32) - 1, 31),
             (-(1 << 20), 1, 0), (-(1 << 20) - 1, 1, 0), (-(1 << 21), 1, 1), (-(1 << 21) - 1, 1, 1),
             (-(1 << 21) - 2, 1, 1), (-3, 1, 1), (-5, 3, 2)]
    check(args)


def test_random_arguments():
    rng = random.Random(1)
    args = []
    for _ in range(3000):
        kind = rng.randrange(4)
        if kind == 0:       # typical softmax scaling: t spread over the live range
            d = -rng.randrange(0, 1 << 16)
            mu, sh = rng.randrange(1 << 15, 1 << 16), rng.randrange(10, 20)
        elif kind == 1:     # anything
            d = rng.randrange(-(1 << 32), 1 << 32)
            mu, sh = rng.randrange(1 << 32), rng.randrange(64)
        elif kind == 2:     # t directly, over the whole range
            d, mu, sh = rng.randrange(EXP_ARG_MIN - 100, 2), 1, 0
        else:               # exactly representable shifts: floor vs ceil matters
            sh = rng.randrange(1, 40)
            d = -rng.randrange(1, 1 << 31)
            mu = rng.randrange(1, 1 << 32)
        args.append((d, mu, sh))
    check(args)
