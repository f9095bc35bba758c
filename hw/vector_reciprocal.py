"""The vector unit's RECIP: ``F = recip_fixed(L, mult)`` for each row, on one sequential divider.

See ``docs/vector_unit.md`` ("Structure", "Divider").
"""

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.hw.divider import Divider
from flashnpu.hw.vector_issue import RECIP_START_LAYOUT
from flashnpu.hw.vector_row_state import RECIP_WRITE_LAYOUT, StateReadSignature
from flashnpu.spec.timing import timing

__all__ = ["VectorReciprocal"]


class VectorReciprocal(wiring.Component):
    """Read L of each row, divide, write F; rows back to back, ``recip_row_cycles`` each.

    A ``start`` in cycle 0 reads L of the first row in cycle 1 and starts the
    divider in cycle 2 (``spec.timing``'s ``recip_start``), prefetching the next
    row's L; each division's ``done`` writes F and starts the next row at once.
    So row ``r``'s F is written in cycle ``recip_start + (r + 1) * recip_row_cycles``.

    Members
    -------
    start : In(stream.Signature(RECIP_START_LAYOUT, always_ready=True))
        ``rows`` from state row ``row``, numerator multiplier ``mult``.
    rd : Out(StateReadSignature())
        L of the next row (the divider takes ``rd.data.l`` the cycle after).
    wr : Out(stream.Signature(RECIP_WRITE_LAYOUT, always_ready=True))
        F of a row; ``last`` on the instruction's last row.
    """

    def __init__(self, config):
        t = timing(config)
        self._bits = t.divider_bits_per_cycle
        if -(-Divider.QUOTIENT_BITS // self._bits) != t.recip_row_cycles or t.recip_start != 2:
            raise ValueError("spec.timing's recip_row_cycles / recip_start do not match the divider")
        super().__init__({
            "start": In(stream.Signature(RECIP_START_LAYOUT, always_ready=True)),
            "rd": Out(StateReadSignature()),
            "wr": Out(stream.Signature(RECIP_WRITE_LAYOUT, always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        div = m.submodules.div = Divider(bits_per_cycle=self._bits)
        s = self.start.payload
        phase = Signal(2)          # 0 idle, 1 read row 0, 2 start row 0, 3 dividing
        left = Signal(16)          # rows after the one being divided
        row = Signal.like(self.wr.payload.row)    # state row being divided
        mult = Signal.like(s.mult)
        div_start = Signal()
        done = Signal()
        m.d.comb += [
            div.l.eq(self.rd.data.l),
            div.mult.eq(mult),
            div.start.eq(div_start),
            done.eq((phase == 3) & div.done),
            self.wr.valid.eq(done),
            self.wr.payload.row.eq(row),
            self.wr.payload.f.eq(div.f),
            self.wr.payload.last.eq(left == 0),
        ]
        with m.If(self.start.valid):
            m.d.sync += [phase.eq(1), left.eq(s.rows - 1), row.eq(s.row), mult.eq(s.mult),
                         self.rd.addr.eq(s.row)]
        with m.Elif(phase == 1):
            m.d.comb += self.rd.en.eq(1)
            m.d.sync += [phase.eq(2), self.rd.addr.eq(self.rd.addr + 1)]
        with m.Elif(phase == 2):
            m.d.comb += [div_start.eq(1), self.rd.en.eq(left != 0)]
            m.d.sync += [phase.eq(3), self.rd.addr.eq(self.rd.addr + 1)]
        with m.Elif(done):
            with m.If(left == 0):
                m.d.sync += phase.eq(0)
            with m.Else():
                m.d.comb += [div_start.eq(1), self.rd.en.eq(left != 1)]
                m.d.sync += [left.eq(left - 1), row.eq(row + 1), self.rd.addr.eq(self.rd.addr + 1)]
        return m
