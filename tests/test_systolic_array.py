"""SystolicArray in Amaranth's simulator: random tiles against numpy, exact output timing."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from flashnpu.hw.systolic_array import SystolicArray
from flashnpu.spec.config import load_config
from flashnpu.spec.numerics import A_WIDE_BITS, wrap32

TINY = load_config("tiny")
DEFAULT = load_config("default")


def pack(row, bits):
    mask = (1 << bits) - 1
    return sum((int(v) & mask) << (bits * j) for j, v in enumerate(row))


def unpack32(word, dim):
    out = []
    for j in range(dim):
        v = (word >> (32 * j)) & 0xFFFFFFFF
        out.append(v - (1 << 32) if v >> 31 else v)
    return out


def make_schedule(dim, tiles, rng, *, gaps):
    """Cycle-by-cycle inputs for ``tiles`` (list of (W, transpose, A)) and the expected outputs.

    Tile j's weight rows go in cycles c0..c0+dim-1, its A rows in cycles after
    c0 and at or before the next tile's c0 (the contract). With ``gaps``, rows
    and tiles are spread out at random within the contract; without, tiles
    follow each other at the maximum rate, ``max(M, dim)`` cycles per tile.
    """
    inputs = {}
    expect = []                     # (cycle the A row entered, product row)
    c0 = 1
    for j, (w, tr, a) in enumerate(tiles):
        m_rows = a.shape[0]
        src = w.T if tr else w      # what goes on w_data: rows of W, or columns of W
        for t in range(dim):
            inputs.setdefault(c0 + t, {}).update(w=pack(src[t], 8), wv=1, wt=tr)
        span = max(m_rows, dim) + (rng.randrange(0, 4) if gaps else 0)
        if gaps:
            slots = sorted(rng.sample(range(1, span + 1), m_rows))
        else:
            slots = range(1, m_rows + 1)
        prod = wrap32(a.astype(np.int64) @ w.astype(np.int64))
        for i, s in enumerate(slots):
            inputs.setdefault(c0 + s, {}).update(a=pack(a[i], A_WIDE_BITS), av=1)
            expect.append((c0 + s, [int(x) for x in prod[i]]))
        c0 += span
    return inputs, expect, c0 + 1


def run_array(cfg, tiles, *, seed=0, gaps=False):
    dim = cfg.dim
    rng = random.Random(seed)
    dut = SystolicArray(cfg)
    inputs, expect, end = make_schedule(dim, tiles, rng, gaps=gaps)
    seen = []

    async def tb(ctx):
        for c in range(end + dut.latency + 1):
            d = inputs.get(c, {})
            ctx.set(dut.w_valid, d.get("wv", 0))
            ctx.set(dut.w_transpose, d.get("wt", rng.randrange(2)))
            ctx.set(dut.w_data, d.get("w", rng.getrandbits(8 * dim)))
            ctx.set(dut.a_valid, d.get("av", 0))
            ctx.set(dut.a_data, d.get("a", rng.getrandbits(A_WIDE_BITS * dim)))
            if ctx.get(dut.out_valid):
                seen.append((c, unpack32(ctx.get(dut.out_data), dim)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert len(seen) == len(expect)
    for (c_out, got), (c_in, want) in zip(seen, expect):
        assert c_out == c_in + dut.latency
        assert got == want


A_MIN, A_MAX = -(1 << (A_WIDE_BITS - 1)), (1 << (A_WIDE_BITS - 1)) - 1


def random_tiles(dim, n, rng, m_choices, *, extreme=False):
    """Tiles of INT8 weights and A rows that are INT8 (as from the scratchpad) or 12-bit (as P from the accumulator)."""
    tiles = []
    for _ in range(n):
        m_rows = rng.choice(m_choices)
        if extreme:
            w = rng.choice([np.full((dim, dim), -128), np.full((dim, dim), 127)])
            a = np.array([[rng.choice([A_MIN, A_MAX, -128, 127]) for _ in range(dim)] for _ in range(m_rows)])
        else:
            lo, hi = rng.choice([(-128, 127), (A_MIN, A_MAX), (0, 2047)])
            w = np.array([[rng.randrange(-128, 128) for _ in range(dim)] for _ in range(dim)])
            a = np.array([[rng.randint(lo, hi) for _ in range(dim)] for _ in range(m_rows)])
        tiles.append((w, rng.randrange(2), a))
    return tiles


@pytest.mark.parametrize("seed", [1, 2])
def test_tiny_back_to_back(seed):
    rng = random.Random(seed)
    dim = TINY.dim
    run_array(TINY, random_tiles(dim, 10, rng, [1, 2, 3, dim, dim + 1, 2 * dim + 3]), seed=seed)


def test_tiny_gaps():
    rng = random.Random(7)
    dim = TINY.dim
    run_array(TINY, random_tiles(dim, 10, rng, [1, 2, dim, 2 * dim]), seed=7, gaps=True)


def test_tiny_extremes():
    rng = random.Random(3)
    dim = TINY.dim
    run_array(TINY, random_tiles(dim, 4, rng, [1, dim + 2], extreme=True), seed=3)


def test_default_back_to_back():
    rng = random.Random(11)
    dim = DEFAULT.dim
    run_array(DEFAULT, random_tiles(dim, 3, rng, [3, dim, dim + 5]), seed=11)
