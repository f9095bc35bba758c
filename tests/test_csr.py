"""ControlRegisters in Amaranth's simulator, driven by the shared AXI4-Lite host (tests/support/axil.py)."""

from amaranth.sim import Simulator

from flashnpu.hw.csr import ControlRegisters, counter_layout
from flashnpu.spec.config import load_config
from flashnpu.spec.isa import ErrorCode
from flashnpu.spec.regmap import (CONFIG_FIELDS, COUNTERS, CONTROL_ABORT, CONTROL_SOFT_RESET, CONTROL_START, NPU_ID, REG,
                                REGISTERS, STATUS_BUSY, STATUS_DONE, STATUS_ERROR, STATUS_CODE_SHIFT,
                                STATUS_QUIET, STATUS_RESETTING, DramGrant)
from support.axil import LiteHost

TINY = load_config("tiny")


#: Host timings every bus test runs under: back to back, then random valid/ready delays.
TIMINGS = ({}, {"seed": 3, "p_valid": 0.6, "p_ready": 0.4})


def simulate(body, cfg=TINY):
    for timing in TIMINGS:
        _simulate(body, cfg, LiteHost(**timing))


def _simulate(body, cfg, host):
    dut = ControlRegisters(cfg)
    host.bus = dut.s_axil
    pulses = {"start": [], "soft_reset": []}
    cycle = [0]

    async def monitor(ctx):
        async for clk_edge, rst, start, soft in ctx.tick().sample(dut.start, dut.soft_reset):
            cycle[0] += 1
            if start:
                pulses["start"].append(cycle[0])
            if soft:
                pulses["soft_reset"].append(cycle[0])

    async def tb(ctx):
        ctx.set(dut.quiet, 1)              # an idle NPU: the bus is quiet
        await body(ctx, dut, host, pulses)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(monitor)
    sim.add_testbench(tb)
    sim.run()
    return dut


def test_reset_values_of_every_register():
    cfg = TINY

    async def body(ctx, dut, host, pulses):
        expect = {
            "ID": NPU_ID,
            "STATUS": STATUS_QUIET,
        }
        for reg in REGISTERS:
            if reg.name == "CONFIG":
                continue                   # test_config_register_reports_the_config
            value = await host.read(ctx, reg.offset)          # the host checks RRESP = OKAY
            assert value == expect.get(reg.name, 0), reg.name
        # Unknown addresses read 0 with OKAY and ignore writes.
        assert await host.read(ctx, 0xFC) == 0
        await host.write(ctx, 0xFC, 0xFFFFFFFF)
        await host.write(ctx, REG["ID"], 0)
        assert await host.read(ctx, REG["ID"]) == NPU_ID
        assert pulses["start"] == [] and pulses["soft_reset"] == []

    simulate(body)


def _field(word, name):
    lo, width = CONFIG_FIELDS[name]
    return (word >> lo) & ((1 << width) - 1)


def test_config_register_reports_the_config():
    # The word read over the bus, decoded with the register map's field table, gives back each
    # config value. queue_depth 256 needs the 9th bit (it once read 0 through an 8-bit mask).
    large = load_config("large")
    configs = (TINY, load_config("default"), large, TINY.replace(queue_depth=256), TINY.replace(queue_depth=255),
               TINY.replace(queue_depth=2),
               large.replace(array_rows=64, array_cols=64, vector_lanes=64, dma_data_bits=512, queue_depth=256))
    for cfg in configs:
        async def body(ctx, dut, host, pulses, cfg=cfg):
            word = await host.read(ctx, REG["CONFIG"])
            assert _field(word, "dim") == cfg.dim
            assert 1 << _field(word, "log2_dma_beat_bytes") == cfg.dma_beat_bytes
            assert _field(word, "queue_depth") == cfg.queue_depth
            # No bit is set outside the documented fields.
            used = sum(((1 << w) - 1) << lo for lo, w in CONFIG_FIELDS.values())
            assert word & ~used == 0

        simulate(body, cfg)


def test_prog_addr_byte_strobes():
    async def body(ctx, dut, host, pulses):
        await host.write(ctx, REG["PROG_ADDR"], 0x12345678)
        assert await host.read(ctx, REG["PROG_ADDR"]) == 0x12345678
        assert ctx.get(dut.prog_addr) == 0x12345678
        await host.write(ctx, REG["PROG_ADDR"], 0xAABBCCDD, strb=0b0101)
        assert await host.read(ctx, REG["PROG_ADDR"]) == 0x12BB56DD

    simulate(body)


def test_start_done_error_handshake_and_cycle_counter():
    async def body(ctx, dut, host, pulses):
        await host.write(ctx, REG["PROG_ADDR"], 0x1000)
        await host.write(ctx, REG["CONTROL"], CONTROL_START)
        assert len(pulses["start"]) == 1
        # The sequencer raises busy the cycle after start, for 37 cycles.
        ctx.set(dut.busy, 1)
        assert await host.read(ctx, REG["STATUS"]) == STATUS_BUSY | STATUS_QUIET
        await host.write(ctx, REG["CONTROL"], CONTROL_START)       # ignored while busy
        assert len(pulses["start"]) == 1
        # Count the cycles busy is high ourselves.
        busy_cycles = 0
        for _ in range(37):
            busy_cycles += 1
            await ctx.tick()
        ctx.set(dut.busy, 0)
        ctx.set(dut.done, 1)
        assert await host.read(ctx, REG["STATUS"]) == STATUS_DONE | STATUS_QUIET
        cycles = await host.read(ctx, REG["CYCLES_LO"])
        assert await host.read(ctx, REG["CYCLES_HI"]) == 0
        assert cycles == ctx.get(dut.counters["CYCLES"])
        assert cycles > busy_cycles                       # plus the reads above, while busy
        # An error: level from the sequencer.
        ctx.set(dut.done, 0)
        ctx.set(dut.error_code, ErrorCode.AXI_DECERR)
        ctx.set(dut.error_pc, 7)
        assert await host.read(ctx, REG["STATUS"]) == STATUS_ERROR | STATUS_QUIET | (ErrorCode.AXI_DECERR << STATUS_CODE_SHIFT)
        assert await host.read(ctx, REG["ERROR_PC"]) == 7
        # A new start clears the counters.
        ctx.set(dut.error_code, 0)
        await host.write(ctx, REG["CONTROL"], CONTROL_START)
        assert len(pulses["start"]) == 2
        assert await host.read(ctx, REG["CYCLES_LO"]) == 0

    simulate(body)


def test_start_pulse_is_one_cycle_after_the_write():
    async def body(ctx, dut, host, pulses):
        ctx.set(dut.s_axil.awaddr, REG["CONTROL"])
        ctx.set(dut.s_axil.wdata, CONTROL_START)
        ctx.set(dut.s_axil.wstrb, 0xF)
        ctx.set(dut.s_axil.awvalid, 1)
        ctx.set(dut.s_axil.wvalid, 1)
        ctx.set(dut.s_axil.bready, 1)
        seen = []
        for t in range(6):
            seen.append((ctx.get(dut.s_axil.awready), ctx.get(dut.start), ctx.get(dut.s_axil.bvalid)))
            taken = ctx.get(dut.s_axil.awready)
            await ctx.tick()
            if taken:
                ctx.set(dut.s_axil.awvalid, 0)
                ctx.set(dut.s_axil.wvalid, 0)
        # cycle 0: offered; 1: taken; 2: start pulse and B; then idle.
        assert seen == [(0, 0, 0), (1, 0, 0), (0, 1, 1), (0, 0, 0), (0, 0, 0), (0, 0, 0)]

    simulate(body)


def test_soft_reset_clears_counters_keeps_prog_addr():
    async def body(ctx, dut, host, pulses):
        await host.write(ctx, REG["PROG_ADDR"], 0xABC0)
        ctx.set(dut.count.instructions, 1)
        ctx.set(dut.count.bytes_read, 4)
        for _ in range(10):
            await ctx.tick()
        ctx.set(dut.count.instructions, 0)
        ctx.set(dut.count.bytes_read, 0)
        assert await host.read(ctx, REG["INSTRUCTIONS_LO"]) == 10
        assert await host.read(ctx, REG["BYTES_READ_LO"]) == 40
        await host.write(ctx, REG["CONTROL"], CONTROL_SOFT_RESET)
        assert len(pulses["soft_reset"]) == 1
        # The request alone clears nothing: the top resets the blocks once the bus is quiet.
        assert await host.read(ctx, REG["INSTRUCTIONS_LO"]) == 10
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        for name, _ in COUNTERS:
            assert await host.read(ctx, REG[f"{name}_LO"]) == 0
        assert await host.read(ctx, REG["PROG_ADDR"]) == 0xABC0

    simulate(body)


def test_start_only_on_a_quiet_idle_npu_and_status_bits():
    async def body(ctx, dut, host, pulses):
        for quiet, busy, resetting, taken in ((0, 0, 0, False), (1, 1, 0, False), (1, 0, 1, False),
                                              (1, 0, 0, True)):
            ctx.set(dut.quiet, quiet)
            ctx.set(dut.busy, busy)
            ctx.set(dut.resetting, resetting)
            n = len(pulses["start"])
            await host.write(ctx, REG["CONTROL"], CONTROL_START)
            assert (len(pulses["start"]) > n) == taken, (quiet, busy, resetting)
            status = await host.read(ctx, REG["STATUS"])
            assert status == (STATUS_QUIET * quiet | STATUS_BUSY * busy | STATUS_RESETTING * resetting)
        await host.write(ctx, REG["CONTROL"], CONTROL_ABORT)
        for name, value in DramGrant(0x100, 0x200, ((0x1000, 0x2000), (0x3000, 0x4000))).registers().items():
            await host.write(ctx, REG[name], value)
            assert await host.read(ctx, REG[name]) == value, name
        assert ctx.get(dut.grant.windows[1].limit) == 0x4000

    simulate(body)


def test_every_counter_has_an_input():
    layout = counter_layout(TINY)
    names = {name for name, _ in layout}
    assert names == {name.lower() for name, _ in COUNTERS} - {"cycles"}
    assert layout["bytes_read"].shape.width >= TINY.dma_beat_bytes.bit_length()


def test_counter_latching_across_32_bit_boundary():
    async def body(ctx, dut, host, pulses):
        ctx.set(dut.busy, 1)
        ctx.set(dut.counters["CYCLES"], (1 << 32) - 6)
        await ctx.tick()
        lo = await host.read(ctx, REG["CYCLES_LO"])
        # Several cycles pass and the live counter crosses 2**32 before _HI is read.
        for _ in range(10):
            await ctx.tick()
        assert ctx.get(dut.counters["CYCLES"]) >> 32 == 1
        hi = await host.read(ctx, REG["CYCLES_HI"])
        assert (hi, lo >> 28) == (0, 0xF)                   # the high half that went with lo
        lo2 = await host.read(ctx, REG["CYCLES_LO"])
        hi2 = await host.read(ctx, REG["CYCLES_HI"])
        assert hi2 == 1 and (hi2 << 32 | lo2) > (hi << 32 | lo)
        # Each counter has its own latch: reading another _LO does not disturb it.
        ctx.set(dut.counters["BYTES_WRITTEN"], 5 << 32 | 9)
        await host.read(ctx, REG["BYTES_WRITTEN_LO"])
        await host.read(ctx, REG["CYCLES_LO"])
        assert await host.read(ctx, REG["BYTES_WRITTEN_HI"]) == 5

    simulate(body)
