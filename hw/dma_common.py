"""Pieces the DMA blocks share: the SRAM-side row walker, AXI response decoding and the
payload layouts of the streams between the blocks (``docs/dma.md``, "Blocks")."""

from amaranth import *
from amaranth.lib import data

from flashnpu.spec.isa import DMA_LAYOUT, ErrorCode

__all__ = ["SRAM_ADDR_WIDTH", "SRAM_SIDE_LAYOUT", "log2", "resp_error", "ar_layout",
           "r_beat_layout", "RowWalker"]

SRAM_ADDR_WIDTH = 16

#: The SRAM side of a LOAD or STORE, queued from the take of the instruction to its rows.
SRAM_SIDE_LAYOUT = data.StructLayout({f: DMA_LAYOUT[f].shape for f in
                                      ("mem", "sram_addr", "sram_chunk_stride", "rows", "chunks")})


def log2(n):
    assert n > 0 and n & (n - 1) == 0, n
    return n.bit_length() - 1


def resp_error(resp):
    """The ErrorCode of an AXI response (0 for OKAY and EXOKAY)."""
    return Mux(resp[1], Mux(resp[0], ErrorCode.AXI_DECERR, ErrorCode.AXI_SLVERR), ErrorCode.NONE)


def ar_layout(config):
    """A read request offered to the AR register: AXI ``arid``, ``araddr``, ``arlen``."""
    return data.StructLayout({"id": unsigned(config.axi_id_bits), "addr": unsigned(32),
                              "len": unsigned(8)})


def r_beat_layout(config):
    """One registered R beat."""
    return data.StructLayout({"id": unsigned(config.axi_id_bits),
                              "data": unsigned(config.dma_data_bits),
                              "resp": unsigned(2), "last": unsigned(1)})


class RowWalker:
    """Step through the SRAM side of a DMA transfer, one AXI beat per ``step``.

    Beat ``sub`` of chunk ``c`` of DRAM row ``r`` goes to SRAM row
    ``cur = sram_addr + c*sram_chunk_stride + r``. ``last_sub`` is high on the
    last beat of an SRAM row, ``final`` on the last beat of the transfer.
    (Logic added into the caller's module: a few registers, not a block of its own.)
    """

    def __init__(self, name, *, sub_bits):
        self.sub = Signal(max(sub_bits, 1), name=f"{name}_sub")
        self.sub_max = Signal(max(sub_bits, 1), name=f"{name}_sub_max")
        self.c_rem = Signal(8, name=f"{name}_c_rem")
        self.r_rem = Signal(16, name=f"{name}_r_rem")
        self.chunks_m1 = Signal(8, name=f"{name}_chunks_m1")
        self.stride = Signal(16, name=f"{name}_cs")
        self.row_base = Signal(16, name=f"{name}_row_base")
        self.cur = Signal(16, name=f"{name}_cur")
        self.last_sub = Signal(name=f"{name}_last_sub")
        self.final = Signal(name=f"{name}_final")

    def elaborate_into(self, m):
        m.d.comb += [
            self.last_sub.eq(self.sub == self.sub_max),
            self.final.eq(self.last_sub & (self.c_rem == 0) & (self.r_rem == 0)),
        ]

    def init(self, m, *, sub_max, sram_addr, stride, rows, chunks):
        m.d.sync += [
            self.sub.eq(0), self.sub_max.eq(sub_max),
            self.c_rem.eq(chunks - 1), self.chunks_m1.eq(chunks - 1),
            self.r_rem.eq(rows - 1), self.stride.eq(stride),
            self.row_base.eq(sram_addr), self.cur.eq(sram_addr),
        ]

    def step(self, m):
        with m.If(self.last_sub):
            m.d.sync += self.sub.eq(0)
            with m.If(self.c_rem == 0):
                m.d.sync += [self.c_rem.eq(self.chunks_m1), self.r_rem.eq(self.r_rem - 1),
                             self.row_base.eq(self.row_base + 1), self.cur.eq(self.row_base + 1)]
            with m.Else():
                m.d.sync += [self.c_rem.eq(self.c_rem - 1), self.cur.eq(self.cur + self.stride)]
        with m.Else():
            m.d.sync += self.sub.eq(self.sub + 1)
