"""BankedSram in Amaranth's simulator against a Python model, cycle by cycle."""

import gc
import random
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from flashnpu.hw.sram import BankedSram


def run_random(*, rows, banks, width, reads, writes, cycles, seed, p_en=0.6, addr_span=None):
    rng = random.Random(seed)
    dut = BankedSram(rows=rows, banks=banks, width=width, read_ports=reads, write_ports=writes)
    model = [0] * rows
    span = addr_span or rows + 8            # some addresses beyond the end
    held = {n: 0 for n in reads}
    stats = {"collisions": 0, "oob_reads": 0, "holds": 0, "rd_wr_same": 0}

    async def tb(ctx):
        for _ in range(cycles):
            # This cycle's read data: what the last enabled read saw (held otherwise).
            for n in reads:
                assert ctx.get(getattr(dut, f"rd_{n}").data) == held[n], n
            rd_now = {}
            for n in reads:
                en = rng.random() < p_en
                addr = rng.randrange(span)
                rd = getattr(dut, f"rd_{n}")
                ctx.set(rd.en, en)
                ctx.set(rd.addr, addr)
                if en:
                    rd_now[n] = addr
                else:
                    stats["holds"] += 1
            wr_now = []
            for n in writes:
                en = rng.random() < p_en
                addr = rng.randrange(span)
                val = rng.getrandbits(width)
                wr = getattr(dut, f"wr_{n}")
                ctx.set(wr.en, en)
                ctx.set(wr.addr, addr)
                ctx.set(wr.data, val)
                if en:
                    wr_now.append((addr, val))
            # Reads see the old contents.
            for n, addr in rd_now.items():
                held[n] = model[addr] if addr < rows else 0
                stats["oob_reads"] += addr >= rows
                stats["rd_wr_same"] += any(a == addr for a, _ in wr_now)
            # The first-named write port wins a same-row collision.
            done = set()
            for addr, val in wr_now:
                if addr in done:
                    stats["collisions"] += 1
                    continue
                done.add(addr)
                if addr < rows:
                    model[addr] = val
            await ctx.tick()
        # Final contents, read through the memories themselves.
        for r in range(rows):
            b, i = dut.locate(r)
            assert ctx.get(dut.banks[b].data[i]) == model[r], r

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return stats


def test_random_two_readers_one_writer():
    s = run_random(rows=64, banks=4, width=32, reads=("a", "b"), writes=("x",), cycles=600, seed=1)
    assert s["oob_reads"] > 0 and s["holds"] > 0 and s["rd_wr_same"] > 0


def test_random_write_collisions():
    # A small address span makes same-row writes (and read-during-write) common.
    s = run_random(rows=16, banks=2, width=16, reads=("m", "v", "s"), writes=("l", "m", "v"),
                   cycles=600, seed=2, addr_span=18)
    assert s["collisions"] > 20 and s["rd_wr_same"] > 20


def test_non_power_of_two_bank_rows():
    s = run_random(rows=48, banks=4, width=8, reads=("a",), writes=("x", "y"), cycles=500, seed=3)
    assert s["oob_reads"] > 0


def test_one_bank_wide_rows():
    run_random(rows=8, banks=1, width=512, reads=("a", "b"), writes=("x",), cycles=200, seed=4)


def test_data_holds_for_many_cycles():
    dut = BankedSram(rows=8, banks=2, width=8, read_ports=("a",), write_ports=("x",))

    async def tb(ctx):
        ctx.set(dut.wr_x.en, 1)
        ctx.set(dut.wr_x.addr, 5)
        ctx.set(dut.wr_x.data, 0x5A)
        await ctx.tick()
        ctx.set(dut.wr_x.en, 0)
        ctx.set(dut.rd_a.en, 1)
        ctx.set(dut.rd_a.addr, 5)
        await ctx.tick()
        ctx.set(dut.rd_a.en, 0)
        ctx.set(dut.rd_a.addr, 1)          # the address moves; data must not
        for _ in range(5):
            assert ctx.get(dut.rd_a.data) == 0x5A
            await ctx.tick()
        # A write to the held row does not change the held data either.
        ctx.set(dut.wr_x.en, 1)
        ctx.set(dut.wr_x.addr, 5)
        ctx.set(dut.wr_x.data, 0x11)
        await ctx.tick()
        ctx.set(dut.wr_x.en, 0)
        assert ctx.get(dut.rd_a.data) == 0x5A

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


@pytest.mark.parametrize("kw, field", [
    (dict(rows=10, banks=4, width=8), "rows"),
    (dict(rows=1 << 17, banks=1, width=8), "rows"),
    (dict(rows=8, banks=0, width=8), "banks"),
    (dict(rows=8, banks=2, width=0), "width"),
    (dict(rows=8, banks=2, width=8, read_ports=("a", "a")), "read_ports"),
    (dict(rows=8, banks=2, width=8, write_ports="x"), "write_ports"),
])
def test_bad_parameters(kw, field):
    # The half-built component is never elaborated; keep its warning out of the log.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=field):
            BankedSram(**kw)
        gc.collect()
