"""The matrix unit's accumulator read hazard: a tile reading A from the accumulator waits for rows in flight.

See ``docs/matrix_unit.md`` ("A from the accumulator: waiting for in-flight rows").
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.hw.matrix_issue import ISSUE_LAYOUT
from flashnpu.hw.matrix_row_tags import ROW_IN_FLIGHT_LAYOUT

__all__ = ["MatrixHazard"]


class MatrixHazard(wiring.Component):
    """Hold a tile with ``a_acc`` at its first cycle while a row in flight is one of its A rows.

    The tile's first A read (the cycle after its first issue cycle) sees the
    accumulator writes up to the current cycle; ``rows`` are the ``stages``
    pipeline stages whose writes come later (A read .. sum). While one of them
    is valid with ``a_lo <= dst < a_end``, ``issue.ready`` is low and ``out``
    shows nothing; otherwise ``out`` is ``issue``.

    Members
    -------
    issue : In(stream.Signature(ISSUE_LAYOUT))
    out : Out(stream.Signature(ISSUE_LAYOUT, always_ready=True))
        ``issue``'s payload as it is; ``valid`` when it may go.
    rows : In(data.ArrayLayout(ROW_IN_FLIGHT_LAYOUT, stages))
    """

    def __init__(self, stages):
        self._stages = stages
        super().__init__({
            "issue": In(stream.Signature(ISSUE_LAYOUT)),
            "out": Out(stream.Signature(ISSUE_LAYOUT, always_ready=True)),
            "rows": In(data.ArrayLayout(ROW_IN_FLIGHT_LAYOUT, stages)),
        })

    def elaborate(self, platform):
        m = Module()
        t = self.issue.payload
        wait = Signal()
        hits = Cat(*(r.valid & (r.dst >= t.a_lo) & (r.dst < t.a_end) for r in (self.rows[k] for k in range(self._stages))))
        m.d.comb += [
            wait.eq(self.issue.valid & t.a_acc & t.first & hits.any()),
            self.issue.ready.eq(~wait),
            self.out.valid.eq(self.issue.valid & ~wait),
            self.out.payload.eq(t),
        ]
        return m
