"""ProcessingElement alone in Amaranth's simulator: random weight writes and MACs against a Python model."""

import random

from amaranth.sim import Simulator

from flashnpu.hw.processing_element import ProcessingElement
from flashnpu.spec.numerics import A_WIDE_BITS, wrap32

A_MIN, A_MAX = -(1 << (A_WIDE_BITS - 1)), (1 << (A_WIDE_BITS - 1)) - 1


def test_pe_double_buffered_mac_matches_model():
    dut = ProcessingElement()
    rng = random.Random(7)
    steps = [dict(a=rng.randint(A_MIN, A_MAX), a_sel=rng.randint(0, 1),
                  psum_in=rng.randint(-(1 << 31), (1 << 31) - 1), w_data=rng.randint(-128, 127),
                  w_we=int(rng.random() < 0.4), w_buf=rng.randint(0, 1)) for _ in range(400)]
    # Extremes: the largest products and a psum that wraps.
    steps += [dict(a=A_MIN, a_sel=s, psum_in=-(1 << 31), w_data=127, w_we=1, w_buf=s) for s in (0, 1)]
    steps += [dict(a=A_MIN, a_sel=s, psum_in=-(1 << 31), w_data=0, w_we=0, w_buf=0) for s in (0, 1)]
    seen = []

    async def bench(ctx):
        w = [0, 0]                            # the weight registers (reset value 0)
        for st in steps:
            for name, v in st.items():
                ctx.set(getattr(dut, name), v)
            await ctx.tick()
            expect = (wrap32(st["psum_in"] + st["a"] * w[st["a_sel"]]), st["a"], st["a_sel"])
            if st["w_we"]:
                w[st["w_buf"]] = st["w_data"]  # the write is seen from the next cycle on
            got = (ctx.get(dut.psum_out), ctx.get(dut.a_out), ctx.get(dut.a_sel_out))
            assert got == expect, (st, got, expect)
            seen.append(got)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(seen) == len(steps)
    assert any(p == wrap32(-(1 << 31) + A_MIN * 127) for p, _, _ in seen)   # the wrapping case ran
