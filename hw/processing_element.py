"""One processing element of the systolic array: two weight registers and a multiply-accumulate.

Its own component so that synthesis sees one PE module that it maps once and
counts ``rows x cols`` times (``flashnpu synth``), and so that it can be tested
alone. See ``docs/matrix_unit.md`` for how the array uses it.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flashnpu.spec.numerics import A_WIDE_BITS

__all__ = ["ProcessingElement"]


class ProcessingElement(wiring.Component):
    """``psum_out <= psum_in + a * W[a_sel]``, and the activation passed on to the right.

    Attributes
    ----------
    a, a_sel : In(signed(A_WIDE_BITS)), In(1)
        The activation and the weight buffer it multiplies with.
    psum_in : In(signed(32))
        The partial sum from the PE above (0 in the first array row).
    w_data, w_we, w_buf : In(signed(8)), In(1), In(1)
        Write ``w_data`` into weight buffer ``w_buf`` when ``w_we``.
    a_out, a_sel_out : Out(signed(A_WIDE_BITS)), Out(1)
        ``a`` and ``a_sel`` one cycle later, for the PE to the right. Registers.
    psum_out : Out(signed(32))
        ``wrap32(psum_in + a * W[a_sel])``, one cycle later. A register.
    """

    def __init__(self):
        super().__init__({
            "a": In(signed(A_WIDE_BITS)),
            "a_sel": In(1),
            "psum_in": In(signed(32)),
            "w_data": In(signed(8)),
            "w_we": In(1),
            "w_buf": In(1),
            "a_out": Out(signed(A_WIDE_BITS)),
            "a_sel_out": Out(1),
            "psum_out": Out(signed(32)),
        })

    def elaborate(self, platform):
        m = Module()
        w0 = Signal(signed(8))
        w1 = Signal(signed(8))
        with m.If(self.w_we & ~self.w_buf):
            m.d.sync += w0.eq(self.w_data)
        with m.If(self.w_we & self.w_buf):
            m.d.sync += w1.eq(self.w_data)
        prod = Signal(signed(A_WIDE_BITS + 8))
        m.d.comb += prod.eq(self.a * Mux(self.a_sel, w1, w0))
        m.d.sync += [
            self.psum_out.eq(self.psum_in + prod),
            self.a_out.eq(self.a),
            self.a_sel_out.eq(self.a_sel),
        ]
        return m
