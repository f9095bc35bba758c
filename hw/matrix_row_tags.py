"""The matrix unit's row tags: where each A row's product goes, delayed beside the systolic array.

See ``docs/matrix_unit.md`` ("Structure", "Pipeline").
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.hw.matrix_issue import SRAM_ADDR_WIDTH

__all__ = ["MatrixRowTags", "ROW_TAG_LAYOUT", "ROW_IN_FLIGHT_LAYOUT"]

#: What an A row's product needs at write-back: its accumulator row, add or overwrite, last of its MATMUL.
ROW_TAG_LAYOUT = data.StructLayout({
    "dst": unsigned(SRAM_ADDR_WIDTH),
    "rmw": unsigned(1),
    "last": unsigned(1),
})

#: A pipeline stage as the accumulator hazard sees it: a row whose write is still to come, and its row.
ROW_IN_FLIGHT_LAYOUT = data.StructLayout({"valid": unsigned(1), "dst": unsigned(SRAM_ADDR_WIDTH)})


class MatrixRowTags(wiring.Component):
    """A shift register of ``depth`` stages: the tag on ``a`` in cycle ``c`` is on ``r`` in ``c + depth``.

    Every stage is a register of ``valid`` and the tag, loaded every cycle (no
    stall: the array does not stall either).

    Members
    -------
    a : In(stream.Signature(ROW_TAG_LAYOUT, always_ready=True))
        The tags of the A rows read in this cycle.
    r : Out(stream.Signature(ROW_TAG_LAYOUT, always_ready=True))
        The tags ``depth`` cycles later.
    in_flight : Out(data.ArrayLayout(ROW_IN_FLIGHT_LAYOUT, depth + 1))
        Stage ``k``: the row of ``a`` ``k`` cycles ago (``k = 0``: ``a`` itself, ``k = depth``: ``r``).
    """

    def __init__(self, depth):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        self._depth = depth
        super().__init__({
            "a": In(stream.Signature(ROW_TAG_LAYOUT, always_ready=True)),
            "r": Out(stream.Signature(ROW_TAG_LAYOUT, always_ready=True)),
            "in_flight": Out(data.ArrayLayout(ROW_IN_FLIGHT_LAYOUT, depth + 1)),
        })

    @property
    def depth(self):
        return self._depth

    def elaborate(self, platform):
        m = Module()
        stage_layout = data.StructLayout({"valid": unsigned(1), "tag": ROW_TAG_LAYOUT})
        stage = Signal(stage_layout, name="tag_in")
        m.d.comb += [stage.valid.eq(self.a.valid), stage.tag.eq(self.a.payload)]
        stages = [stage]
        for d in range(self._depth):
            q = Signal(stage_layout, name=f"tag{d}")
            m.d.sync += q.eq(stages[-1])
            stages.append(q)
        for k, s in enumerate(stages):
            m.d.comb += [self.in_flight[k].valid.eq(s.valid), self.in_flight[k].dst.eq(s.tag.dst)]
        m.d.comb += [self.r.valid.eq(stages[-1].valid), self.r.payload.eq(stages[-1].tag)]
        return m
