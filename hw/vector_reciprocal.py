"""The vector unit's RECIP: ``F = recip_fixed(L, mult)`` for each row, on ``recip_dividers`` dividers.

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
    """Read L of each row, divide, write F: one row starts every ``recip_row_interval`` cycles.

    The rows are dealt round robin to ``recip_dividers`` dividers of
    ``recip_row_cycles`` cycles each; the interval is
    ``ceil(recip_row_cycles / recip_dividers)``, so a divider's previous row is
    done when its turn comes again. A ``start`` in cycle 0 reads L of row ``r``
    in cycle ``recip_start - 1 + r * interval`` and starts its division in the
    next cycle (``spec.timing``'s ``recip_start`` = 2 for row 0). Divisions end
    in the order they started, at most one per cycle, so row ``r``'s F is
    written in cycle ``recip_start + r * interval + recip_row_cycles``.

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
        self._dividers = t.recip_dividers
        self._interval = t.recip_row_interval
        if (-(-Divider.QUOTIENT_BITS // self._bits) != t.recip_row_cycles or t.recip_start != 2
                or self._dividers * self._interval < t.recip_row_cycles):
            raise ValueError("spec.timing's recip_row_cycles / recip_row_interval / recip_start do not "
                             "match the dividers")
        super().__init__({
            "start": In(stream.Signature(RECIP_START_LAYOUT, always_ready=True)),
            "rd": Out(StateReadSignature()),
            "wr": Out(stream.Signature(RECIP_WRITE_LAYOUT, always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        divs = [Divider(bits_per_cycle=self._bits) for _ in range(self._dividers)]
        for k, div in enumerate(divs):
            m.submodules[f"div{k}"] = div
        s = self.start.payload
        interval = self._interval
        to_start = Signal(17)      # rows whose division has not started
        to_write = Signal(17)      # rows whose F has not been written
        wait = Signal(range(max(interval, 2)))    # cycles until the next row starts (0: this cycle)
        turn = Signal(range(self._dividers))      # the divider the next row goes to
        row = Signal.like(self.wr.payload.row)    # state row of the next F written
        mult = Signal.like(s.mult)
        issue = Signal()
        done = Signal()
        f = Signal.like(self.wr.payload.f)
        m.d.comb += issue.eq((to_start != 0) & (wait == 0))
        for k, div in enumerate(divs):
            m.d.comb += [div.l.eq(self.rd.data.l), div.mult.eq(mult), div.start.eq(issue & (turn == k))]
            # At most one division ends per cycle: their starts are interval >= 1 cycles apart.
            with m.If(div.done):
                m.d.comb += [done.eq(1), f.eq(div.f)]
        m.d.comb += [
            self.wr.valid.eq(done & (to_write != 0)),
            self.wr.payload.row.eq(row),
            self.wr.payload.f.eq(f),
            self.wr.payload.last.eq(to_write == 1),
        ]
        # L is read the cycle before its division starts.
        if interval == 1:
            m.d.comb += self.rd.en.eq((wait == 1) & (to_start != 0) | (wait == 0) & (to_start > 1))
        else:
            m.d.comb += self.rd.en.eq((wait == 1) & (to_start != 0))
        with m.If(self.rd.en):
            m.d.sync += self.rd.addr.eq(self.rd.addr + 1)
        with m.If(issue):
            m.d.sync += [to_start.eq(to_start - 1), wait.eq(interval - 1),
                         turn.eq(Mux(turn == self._dividers - 1, 0, turn + 1))]
        with m.Elif(wait != 0):
            m.d.sync += wait.eq(wait - 1)
        with m.If(self.wr.valid):
            m.d.sync += [to_write.eq(to_write - 1), row.eq(row + 1)]
        # A start comes only when the previous RECIP is done (the vector unit takes one instruction at
        # a time), so it may override the updates above.
        with m.If(self.start.valid):
            m.d.sync += [to_start.eq(s.rows), to_write.eq(s.rows), wait.eq(1), turn.eq(0), row.eq(s.row),
                         mult.eq(s.mult), self.rd.addr.eq(s.row)]
        return m
