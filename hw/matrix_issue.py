"""The matrix unit's issue stage: takes a MATMUL and walks its tiles, one tile cycle per clock.

See ``docs/matrix_unit.md`` ("Structure", "Pipeline").
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.spec.isa import MATMUL_LAYOUT, Mem

__all__ = ["MatrixIssue", "ISSUE_LAYOUT", "SRAM_ADDR_WIDTH"]

SRAM_ADDR_WIDTH = 16

#: Tile cycle ``t`` of tile ``(kc, nb)``: the reads it makes and where its A row's product goes.
ISSUE_LAYOUT = data.StructLayout({
    "w_row": unsigned(1),              # t < dim: read weight row t
    "w_addr": unsigned(SRAM_ADDR_WIDTH),   # w_addr + kc*w_kstride + nb*w_nstride + t
    "transpose": unsigned(1),
    "a_row": unsigned(1),              # t < m_rows: read A row t
    "a_acc": unsigned(1),              # A rows from the accumulator
    "a_addr": unsigned(SRAM_ADDR_WIDTH),   # a_addr + kc*a_kstride + t
    "dst": unsigned(SRAM_ADDR_WIDTH),      # out_addr + nb*out_nstride + t
    "rmw": unsigned(1),                # accumulate or kc > 0
    "last": unsigned(1),               # the instruction's last A row
    "first": unsigned(1),              # t == 0: the tile's first cycle
    "a_lo": unsigned(SRAM_ADDR_WIDTH),     # the tile's A rows are [a_lo, a_end)
    "a_end": unsigned(SRAM_ADDR_WIDTH + 1),
})


class MatrixIssue(wiring.Component):
    """Take MATMUL instructions and issue their tile cycles, ``nb`` outer, ``kc`` inner, ``t`` innermost.

    A tile has ``max(m_rows, dim)`` cycles. ``tiles`` offers tile cycle ``t`` from
    the cycle after the take; it advances when ``tiles.ready`` (low: the tile
    waits at its first cycle for an accumulator row in flight). ``instr.ready``
    is high when idle or in the instruction's last tile cycle (then the next
    instruction's first cycle follows at once). ``instr.ready`` does not look at
    ``tiles.ready``: the consumer may hold only a tile's ``first`` cycle, which for
    ``dim >= 2`` is never an instruction's last.

    Members
    -------
    instr : In(stream.Signature(MATMUL_LAYOUT))
    tiles : Out(stream.Signature(ISSUE_LAYOUT))
    done : In(1)
        An instruction's last accumulator write.
    busy : Out(1)
        An instruction is taken and not ``done``.
    """

    def __init__(self, config):
        self._dim = config.dim
        super().__init__({
            "instr": In(stream.Signature(MATMUL_LAYOUT)),
            "tiles": Out(stream.Signature(ISSUE_LAYOUT)),
            "done": In(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        dim = self._dim
        p = self.instr.payload
        o = self.tiles.payload
        i_active = self.tiles.valid
        f = Signal(MATMUL_LAYOUT)        # the instruction, as taken
        i_tile_len = Signal(16)          # max(m_rows, dim)
        i_t = Signal(16)                 # cycle within the tile
        i_kc = Signal(8)
        i_nb = Signal(8)
        i_w_nbase = Signal(16)           # w_addr + nb*w_nstride
        i_w_base = Signal(16)            # ... + kc*w_kstride
        i_a_base = Signal(16)            # a_addr + kc*a_kstride
        i_out_base = Signal(16)          # out_addr + nb*out_nstride

        last_t, last_kc, last_nb, take = Signal(), Signal(), Signal(), Signal()
        m.d.comb += [
            last_t.eq(i_t == i_tile_len - 1),
            last_kc.eq(i_kc == f.k_chunks - 1),
            last_nb.eq(i_nb == f.n_blocks - 1),
            self.instr.ready.eq(~i_active | (i_active & last_t & last_kc & last_nb)),
            take.eq(self.instr.valid & self.instr.ready),
            o.w_row.eq(i_t < dim), o.w_addr.eq(i_w_base + i_t), o.transpose.eq(f.transpose_w),
            o.a_row.eq(i_t < f.m_rows), o.a_acc.eq(f.a_mem == Mem.ACC), o.a_addr.eq(i_a_base + i_t),
            o.dst.eq(i_out_base + i_t), o.rmw.eq(f.accumulate | (i_kc != 0)),
            o.last.eq(last_kc & last_nb & (i_t == f.m_rows - 1)),
            o.first.eq(i_t == 0), o.a_lo.eq(i_a_base), o.a_end.eq(i_a_base + f.m_rows),
        ]

        with m.If(take):
            m.d.sync += [
                i_active.eq(1), f.eq(p),
                i_tile_len.eq(Mux(p.m_rows > dim, p.m_rows, dim)),
                i_t.eq(0), i_kc.eq(0), i_nb.eq(0),
                i_w_nbase.eq(p.w_addr), i_w_base.eq(p.w_addr),
                i_a_base.eq(p.a_addr), i_out_base.eq(p.out_addr),
            ]
        with m.Elif(i_active & self.tiles.ready):
            with m.If(last_t):
                m.d.sync += i_t.eq(0)
                with m.If(last_kc):
                    m.d.sync += [
                        i_kc.eq(0), i_nb.eq(i_nb + 1),
                        i_w_nbase.eq(i_w_nbase + f.w_nstride), i_w_base.eq(i_w_nbase + f.w_nstride),
                        i_a_base.eq(f.a_addr), i_out_base.eq(i_out_base + f.out_nstride),
                    ]
                    with m.If(last_nb):
                        m.d.sync += i_active.eq(0)
                with m.Else():
                    m.d.sync += [
                        i_kc.eq(i_kc + 1),
                        i_w_base.eq(i_w_base + f.w_kstride), i_a_base.eq(i_a_base + f.a_kstride),
                    ]
            with m.Else():
                m.d.sync += i_t.eq(i_t + 1)

        # In flight: taken and not done. At most about 3*dim+2 cycles of latency
        # over at least dim cycles per instruction, so a few at a time.
        inflight = Signal(range(16))
        m.d.sync += inflight.eq(inflight + take - self.done)
        m.d.comb += self.busy.eq(inflight != 0)
        return m
