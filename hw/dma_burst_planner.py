"""The DMA's burst planner: cut a 2-D strided DRAM transfer into AXI INCR bursts."""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.spec.isa import DMA_LAYOUT, Mem
from flashnpu.hw.dma_common import log2

__all__ = ["PLAN_LAYOUT", "burst_layout", "BurstPlanSignature", "BurstPlanner"]

#: The DRAM side of a LOAD or STORE: what the planner cuts into bursts.
PLAN_LAYOUT = data.StructLayout({f: DMA_LAYOUT[f].shape for f in
                                 ("mem", "dram_addr", "dram_stride", "rows", "chunks")})


def burst_layout(burst_len):
    """One burst: its address, its length in beats (1..burst_len), the transfer's last burst."""
    return data.StructLayout({"addr": unsigned(32), "len": range(burst_len + 1),
                              "last": unsigned(1)})


class BurstPlanSignature(wiring.Signature):
    """A read or write path driving its burst planner (seen from the path).

    * ``cmd``: a transfer to plan; taken (``ready``) when the planner is idle.
    * ``burst``: the transfer's bursts, in order, one per cycle at most.
    * ``busy``: a transfer is being planned (taken, and not every burst taken yet).
    * ``abort``: drop the transfer being planned.
    """

    def __init__(self, *, burst_len):
        self._burst_len = burst_len
        super().__init__({
            "cmd": Out(stream.Signature(PLAN_LAYOUT)),
            "burst": In(stream.Signature(burst_layout(burst_len))),
            "busy": In(1),
            "abort": Out(1),
        })

    @property
    def burst_len(self):
        return self._burst_len

    def __eq__(self, other):
        return type(other) is type(self) and other.burst_len == self.burst_len

    def __repr__(self):
        return f"BurstPlanSignature(burst_len={self.burst_len})"


class BurstPlanner(wiring.Component):
    """Cut a 2-D strided DRAM transfer into INCR bursts.

    The cycle after ``cmd`` is taken it computes the segment length; from the next
    cycle ``burst`` offers one burst per cycle. A burst never crosses a 4 KiB
    boundary, never exceeds ``dma_burst_len`` beats and never spans two DRAM rows
    unless the rows are contiguous (``dram_stride == chunks * row_bytes``), in which
    case the whole transfer is one segment and bursts run across rows.

    Parameters
    ----------
    config : NPUConfig
        ``dma_beat_bytes``, ``dma_burst_len`` and the SRAM row widths.
    """

    def __init__(self, config):
        self._beat = config.dma_beat_bytes
        self._burst_len = config.dma_burst_len
        self._rb = {Mem.SPAD: config.spad_row_bytes, Mem.ACC: config.acc_row_bytes}
        super().__init__({"port": In(BurstPlanSignature(burst_len=config.dma_burst_len))})

    def elaborate(self, platform):
        m = Module()
        cmd, burst = self.port.cmd, self.port.burst
        lg_beat = log2(self._beat)
        lg_rb = {k: log2(v) for k, v in self._rb.items()}

        setup = Signal()       # the cycle after cmd: the segment length
        run = Signal()         # offering bursts
        mem = Signal()
        stride = Signal(32)
        rows = Signal(16)
        chunks = Signal(8)
        row_addr = Signal(32)
        addr = Signal(32)
        seg_beats = Signal(32)
        seg_left = Signal(32)
        rows_left = Signal(16)

        m.d.comb += [self.port.busy.eq(setup | run), cmd.ready.eq(~(setup | run))]

        # Beats to the next 4 KiB boundary (1 .. 4096/beat).
        to_4k = Signal(range(4096 // self._beat + 1))
        m.d.comb += to_4k.eq((4096 - addr[:12]) >> lg_beat)
        cap = Signal(range(self._burst_len + 1))
        m.d.comb += cap.eq(Mux(to_4k < self._burst_len, to_4k, self._burst_len))
        m.d.comb += [
            burst.valid.eq(run),
            burst.payload.addr.eq(addr),
            burst.payload.len.eq(Mux(seg_left < cap, seg_left, cap)),
            burst.payload.last.eq(run & (seg_left == burst.payload.len) & (rows_left == 0)),
        ]

        with m.If(cmd.valid & cmd.ready):
            m.d.sync += [
                setup.eq(1), run.eq(0), mem.eq(cmd.payload.mem),
                addr.eq(cmd.payload.dram_addr), row_addr.eq(cmd.payload.dram_addr),
                stride.eq(cmd.payload.dram_stride), rows.eq(cmd.payload.rows),
                chunks.eq(cmd.payload.chunks),
            ]
        with m.Elif(setup):
            # The row length in beats, and whether consecutive rows touch.
            row_bytes = Signal(32)
            m.d.comb += row_bytes.eq(Mux(mem, chunks << lg_rb[Mem.ACC], chunks << lg_rb[Mem.SPAD]))
            row_beats = Signal(32)
            m.d.comb += row_beats.eq(row_bytes >> lg_beat)
            m.d.sync += [setup.eq(0), run.eq((rows != 0) & (chunks != 0))]
            with m.If(stride == row_bytes):
                m.d.sync += [seg_beats.eq(rows * row_beats), seg_left.eq(rows * row_beats),
                             rows_left.eq(0)]
            with m.Else():
                m.d.sync += [seg_beats.eq(row_beats), seg_left.eq(row_beats),
                             rows_left.eq(rows - 1)]
        with m.Elif(burst.valid & burst.ready):
            blen = burst.payload.len
            m.d.sync += [addr.eq(addr + (blen << lg_beat)), seg_left.eq(seg_left - blen)]
            with m.If(seg_left == blen):
                with m.If(rows_left != 0):
                    m.d.sync += [row_addr.eq(row_addr + stride), addr.eq(row_addr + stride),
                                 seg_left.eq(seg_beats), rows_left.eq(rows_left - 1)]
                with m.Else():
                    m.d.sync += run.eq(0)
        with m.If(self.port.abort):
            m.d.sync += [setup.eq(0), run.eq(0)]
        return m
