"""The matrix unit's operand reads: weight rows and A rows from SRAM into the systolic array.

See ``docs/matrix_unit.md`` ("Structure", "Pipeline").
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.hw.matrix_issue import ISSUE_LAYOUT, SRAM_ADDR_WIDTH
from flashnpu.hw.matrix_row_tags import ROW_TAG_LAYOUT
from flashnpu.hw.signatures import SramReadSignature
from flashnpu.spec.numerics import A_WIDE_BITS

__all__ = ["MatrixOperands", "weight_layout", "a_row_layout"]


def weight_layout(dim):
    """A weight row (or column, ``transpose``) for the array: ``dim`` INT8 lanes as a scratchpad row holds them."""
    return data.StructLayout({"data": unsigned(8 * dim), "transpose": unsigned(1)})


def a_row_layout(dim):
    """An A row for the array: ``dim`` lanes of ``A_WIDE_BITS`` bits, signed."""
    return data.ArrayLayout(signed(A_WIDE_BITS), dim)


class MatrixOperands(wiring.Component):
    """Read the operands of each issued tile cycle and present them to the array.

    A tile cycle (on ``issue``, cycle ``c``) with ``w_row`` reads its weight row
    through ``w_rd`` in ``c``; it is on ``weights`` in ``c + 1``. With ``a_row``
    it reads its A row in ``c + 1`` (``a_rd``, or ``acc_a_rd`` with ``a_acc``),
    with its tag on ``tag`` in that cycle; the row is on ``a_rows`` in ``c + 2``,
    INT8 lanes sign-extended or INT32 lanes saturated to ``A_WIDE_BITS`` bits
    (``numerics.saturate_a``). So the A row follows its weight row by one cycle.

    Members
    -------
    issue : In(stream.Signature(ISSUE_LAYOUT, always_ready=True))
    w_rd, a_rd : Out(SramReadSignature(addr_width=16, data_width=8*dim))
    acc_a_rd : Out(SramReadSignature(addr_width=16, data_width=32*dim))
    weights : Out(stream.Signature(weight_layout(dim), always_ready=True))
    a_rows : Out(stream.Signature(a_row_layout(dim), always_ready=True))
    tag : Out(stream.Signature(ROW_TAG_LAYOUT, always_ready=True))
        The tag of the A row read in this cycle (``valid``: a row is read).
    """

    def __init__(self, config):
        self._dim = dim = config.dim
        super().__init__({
            "issue": In(stream.Signature(ISSUE_LAYOUT, always_ready=True)),
            "w_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=8 * dim)),
            "a_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=8 * dim)),
            "acc_a_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=32 * dim)),
            "weights": Out(stream.Signature(weight_layout(dim), always_ready=True)),
            "a_rows": Out(stream.Signature(a_row_layout(dim), always_ready=True)),
            "tag": Out(stream.Signature(ROW_TAG_LAYOUT, always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        i = self.issue.payload
        # Weights: read in the issue cycle, to the array in the next.
        m.d.comb += [self.w_rd.en.eq(self.issue.valid & i.w_row), self.w_rd.addr.eq(i.w_addr)]
        w = self.weights
        m.d.sync += [w.valid.eq(self.w_rd.en), w.payload.transpose.eq(i.transpose)]
        m.d.comb += w.payload.data.eq(self.w_rd.data)

        # A row: read one cycle after its issue, with its tag; to the array in the next.
        a_acc = Signal()
        a_addr = Signal(SRAM_ADDR_WIDTH)
        tag = self.tag
        m.d.sync += [
            tag.valid.eq(self.issue.valid & i.a_row), a_acc.eq(i.a_acc), a_addr.eq(i.a_addr),
            tag.payload.dst.eq(i.dst), tag.payload.rmw.eq(i.rmw), tag.payload.last.eq(i.last),
        ]
        m.d.comb += [
            self.a_rd.en.eq(tag.valid & ~a_acc), self.a_rd.addr.eq(a_addr),
            self.acc_a_rd.en.eq(tag.valid & a_acc), self.acc_a_rd.addr.eq(a_addr),
        ]
        e_acc = Signal()
        m.d.sync += [self.a_rows.valid.eq(tag.valid), e_acc.eq(a_acc)]
        hi, lo = (1 << (A_WIDE_BITS - 1)) - 1, -(1 << (A_WIDE_BITS - 1))
        for k in range(self._dim):
            sp = self.a_rd.data[8 * k:8 * k + 8].as_signed()
            ac = self.acc_a_rd.data[32 * k:32 * k + 32].as_signed()
            m.d.comb += self.a_rows.payload[k].eq(Mux(e_acc, Mux(ac > hi, hi, Mux(ac < lo, lo, ac)), sp))
        return m
