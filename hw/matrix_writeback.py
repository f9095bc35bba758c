"""The matrix unit's write-back: each product row added to (or written over) its accumulator row.

See ``docs/matrix_unit.md`` ("Pipeline", "Read-modify-write hazards").
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.hw.matrix_issue import SRAM_ADDR_WIDTH
from flashnpu.hw.matrix_row_tags import ROW_IN_FLIGHT_LAYOUT, ROW_TAG_LAYOUT
from flashnpu.hw.signatures import SramReadSignature, SramWriteSignature

__all__ = ["MatrixWriteback"]


class MatrixWriteback(wiring.Component):
    """Three stages: r (read the old row), x (old + product, wrap32 per lane), w (write).

    A tag on ``r`` in cycle ``q - 1`` reads its row if ``rmw``; its product is on
    ``product`` in ``q`` (stage x), and the row is written through ``acc_wr`` in
    ``q + 1`` (stage w; ``done`` with it if the tag is ``last``). The read in
    ``q - 1`` sees the writes up to ``q - 2``: the rows written in ``q`` and
    ``q - 1`` are forwarded (the newer one wins).

    Members
    -------
    r : In(stream.Signature(ROW_TAG_LAYOUT, always_ready=True))
    product : In(data.ArrayLayout(unsigned(32), dim))
    acc_rd : Out(SramReadSignature(addr_width=16, data_width=32*dim))
    acc_wr : Out(SramWriteSignature(addr_width=16, data_width=32*dim))
        Registers.
    done : Out(1)
        The write of a ``last`` row (a register).
    x : Out(ROW_IN_FLIGHT_LAYOUT)
        The row in stage x (its write is next cycle's).
    """

    def __init__(self, config):
        self._dim = dim = config.dim
        super().__init__({
            "r": In(stream.Signature(ROW_TAG_LAYOUT, always_ready=True)),
            "product": In(data.ArrayLayout(unsigned(32), dim)),
            "acc_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=32 * dim)),
            "acc_wr": Out(SramWriteSignature(addr_width=SRAM_ADDR_WIDTH, data_width=32 * dim)),
            "done": Out(1),
            "x": Out(ROW_IN_FLIGHT_LAYOUT),
        })

    def elaborate(self, platform):
        m = Module()
        dim = self._dim
        r, wr = self.r, self.acc_wr
        x_rmw = Signal()
        x_last = Signal()
        x_fwd_w = Signal()               # the old row is the one w writes now
        x_fwd_w2 = Signal()              # ... or the one w wrote last cycle
        w2_data = Signal(32 * dim)
        m.d.comb += [self.acc_rd.en.eq(r.valid & r.payload.rmw), self.acc_rd.addr.eq(r.payload.dst)]
        m.d.sync += [
            self.x.valid.eq(r.valid), self.x.dst.eq(r.payload.dst),
            x_rmw.eq(r.payload.rmw), x_last.eq(r.payload.last),
            x_fwd_w.eq(self.x.valid & (self.x.dst == r.payload.dst)),
            x_fwd_w2.eq(wr.en & (wr.addr == r.payload.dst)),
        ]
        old = Signal(32 * dim)
        m.d.comb += old.eq(Mux(x_fwd_w, wr.data, Mux(x_fwd_w2, w2_data, self.acc_rd.data)))
        total = Signal(32 * dim)
        for n in range(dim):
            lane = slice(32 * n, 32 * n + 32)
            m.d.comb += total[lane].eq(Mux(x_rmw, old[lane] + self.product[n], self.product[n]))
        m.d.sync += [
            wr.en.eq(self.x.valid), wr.addr.eq(self.x.dst), wr.data.eq(total),
            self.done.eq(self.x.valid & x_last), w2_data.eq(wr.data),
        ]
        return m
