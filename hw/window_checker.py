"""The DRAM window check of a LOAD/STORE at dispatch, combinational.

The host grants the NPU a code window and up to ``DMA_WINDOWS`` data windows
(``sw/regmap.DramGrant``). A LOAD or STORE is refused before any bus
transaction when its DRAM rows are not wholly inside one open window, or pass
the AXI address range (``DMA_WINDOW``), and a STORE also when it touches the
code window (``CODE_WRITE``). ``sw/golden.check_window`` is the same check.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flashnpu.spec.isa import INSTR_LAYOUT, ErrorCode, Mem, Opcode
from flashnpu.spec.regmap import DMA_WINDOWS
from flashnpu.hw.signatures import ERROR_SHAPE, GRANT_LAYOUT

__all__ = ["DramWindowChecker"]


class DramWindowChecker(wiring.Component):
    """Check the DRAM extent of one LOAD/STORE word against the host's grant.

    The extent is ``[dram_addr, dram_addr + (rows-1)*dram_stride + chunks*row_bytes)``
    (rows ascend with ``r`` and ``c``), computed without wrapping. Other
    opcodes pass. Zero counts are check 4's (``InstrChecker``), which runs first.

    Parameters
    ----------
    config : NPUConfig
        ``axi_addr_bits`` and the row bytes of each memory.

    Members
    -------
    word : In(INSTR_LAYOUT)
    grant : In(GRANT_LAYOUT)
    error : Out(ERROR_SHAPE)
        Combinational: ``DMA_WINDOW``, ``CODE_WRITE`` or 0.
    """

    def __init__(self, config):
        self._cfg = config
        super().__init__({
            "word": In(INSTR_LAYOUT),
            "grant": In(GRANT_LAYOUT),
            "error": Out(ERROR_SHAPE),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        w, g = self.word, self.grant
        dma = w.body.dma
        is_load, is_store = w.opcode == Opcode.LOAD, w.opcode == Opcode.STORE

        lg_rb = Mux(dma.mem == Mem.ACC, (4 * cfg.dim).bit_length() - 1, cfg.dim.bit_length() - 1)
        lo = Signal(32)
        hi = Signal(32 + 16 + 2)
        m.d.comb += [lo.eq(dma.dram_addr),
                     hi.eq(dma.dram_addr + (dma.rows - 1)[:16] * dma.dram_stride + (dma.chunks << lg_rb))]

        inside = Signal(DMA_WINDOWS)
        for i in range(DMA_WINDOWS):
            win = g.windows[i]
            m.d.comb += inside[i].eq((win.base < win.limit) & (win.base <= lo) & (hi <= win.limit))
        past_bus = hi > (1 << cfg.axi_addr_bits)
        code = (lo < g.prog_end) & (g.prog_addr < hi)

        with m.If((is_load | is_store) & (past_bus | ~inside.any())):
            m.d.comb += self.error.eq(ErrorCode.DMA_WINDOW)
        with m.Elif(is_store & code):
            m.d.comb += self.error.eq(ErrorCode.CODE_WRITE)
        return m
