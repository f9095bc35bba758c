"""The weight-stationary systolic array: ``dim x dim`` PEs, 12-bit signed A x INT8 W -> INT32.

See ``docs/matrix_unit.md`` for the dataflow and the cycle model.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flashnpu.hw.processing_element import ProcessingElement
from flashnpu.spec.numerics import A_WIDE_BITS

__all__ = ["SystolicArray"]


class SystolicArray(wiring.Component):
    """Multiply streamed A rows (``A_WIDE_BITS``-bit signed lanes) by a stationary ``dim x dim`` INT8 weight tile.

    PE ``(k, n)`` holds ``W[k][n]`` in two weight registers (double buffering).
    Activations move right along array row ``k``, partial sums move down
    column ``n``; an A row ``a`` enters skewed (lane ``k`` ``k`` cycles late) and
    its product ``a @ W`` (``dim`` wrapping INT32 sums) leaves de-skewed, one
    row per cycle. Every activation carries the index of the weight buffer it
    multiplies with, so consecutive tiles follow each other with no bubble:
    the boundary between two tiles is a diagonal wavefront in the array.

    Parameters
    ----------
    config : NPUConfig
        ``dim`` sets the size; A lanes are ``A_WIDE_BITS = 12``-bit signed
        (INT8 operands arrive sign-extended, probabilities P up to 2047 as they
        are), weights INT8, sums INT32 (wrapping).

    Attributes
    ----------
    w_data : In(8*dim)
        A weight row (``w_transpose = 0``: row ``t`` of W, lane ``n`` is
        ``W[t][n]``) or a weight column (``w_transpose = 1``: column ``t`` of W,
        lane ``k`` is ``W[k][t]``). Lane ``j`` is bits ``[8j+7:8j]`` (INT8), as
        in a scratchpad row.
    w_valid : In(1)
        Load ``w_data`` as row/column ``t`` of the next tile, ``t`` counting
        ``0..dim-1`` over the ``w_valid`` cycles. A tile's ``dim`` rows must come
        in ``dim`` consecutive cycles ``c0 .. c0+dim-1``.
    w_transpose : In(1)
        Orientation of ``w_data`` in this cycle.
    a_data : In(A_WIDE_BITS*dim)
        An A row, lane ``k`` (bits ``[12k+11:12k]``, signed) multiplies W row ``k``.
    a_valid : In(1)
        ``a_data`` is a row to multiply.
    out_data : Out(32*dim)
        The product row; lane ``n`` (bits ``[32n+31:32n]``) is
        ``wrap32(sum_k a[k]*W[k][n])``. A register.
    out_valid : Out(1)
        ``out_data`` holds a product row. A register.

    Timing contract
    ---------------
    * The first weight row of a tile (``w_valid`` in cycle ``c0`` with ``t = 0``)
      switches the A port to that tile: A rows presented in cycles
      ``c0+1 .. c0'`` (``c0'`` being the next tile's ``c0``) multiply with it;
      A rows up to and including cycle ``c0`` multiply with the previous tile.
      So the first A row may follow the first weight row by one cycle; the
      weight load of the next tile may start in the cycle of the last A row.
    * Tiles' weight loads must not overlap: ``c0' >= c0 + dim``. A tile of
      ``M`` rows therefore occupies the array ``max(M, dim)`` cycles.
    * The product of the A row presented in cycle ``c`` appears on
      ``out_data`` with ``out_valid`` in cycle ``c + LATENCY``,
      ``LATENCY = 2*dim - 1``; rows come out in the order they went in.
    * Weights persist: A rows presented any time after a load (however late)
      use it.
    """

    def __init__(self, config):
        self._dim = dim = config.dim
        super().__init__({
            "w_data": In(8 * dim),
            "w_valid": In(1),
            "w_transpose": In(1),
            "a_data": In(A_WIDE_BITS * dim),
            "a_valid": In(1),
            "out_data": Out(32 * dim),
            "out_valid": Out(1),
        })

    @property
    def latency(self):
        """Cycles from an A row on ``a_data`` to its product on ``out_data``."""
        return 2 * self._dim - 1

    def elaborate(self, platform):
        m = Module()
        dim = self._dim

        # ---------------------------------------------------- weight loading
        # Row/column t of a tile is written in cycle c0+t into the buffer the
        # tile's activations will name. PE (k, n) is first used by the new tile
        # in cycle c0+1+k+n, after its write (c0+k or c0+n); the previous tile
        # on the same buffer (two tiles back) passed it at least dim cycles
        # earlier. So a broadcast write of a whole row (or column) is safe and
        # needs no skew of its own.
        load_t = Signal(range(dim))
        cur_sel = Signal()          # the buffer that A rows entering now use
        with m.If(self.w_valid):
            m.d.sync += load_t.eq(Mux(load_t == dim - 1, 0, load_t + 1))
            with m.If(load_t == 0):
                m.d.sync += cur_sel.eq(~cur_sel)
        # Row 0 goes to the buffer not in use yet; cur_sel has flipped for rows 1..
        w_buf = Signal()
        m.d.comb += w_buf.eq(Mux(load_t == 0, ~cur_sel, cur_sel))

        w_lane = [self.w_data[8 * j:8 * j + 8].as_signed() for j in range(dim)]
        ab = A_WIDE_BITS
        a_lane = [self.a_data[ab * k:ab * k + ab].as_signed() for k in range(dim)]

        # ------------------------------------------------------------- skew
        # Lane k of an A row (with its buffer index) enters array row k k cycles late.
        row_a = []
        row_sel = []
        for k in range(dim):
            a, s = a_lane[k], cur_sel
            for d in range(k):
                a_q = Signal(signed(ab), name=f"skew{k}_{d}")
                s_q = Signal(name=f"skew{k}_{d}_sel")
                m.d.sync += [a_q.eq(a), s_q.eq(s)]
                a, s = a_q, s_q
            row_a.append(a)
            row_sel.append(s)

        # -------------------------------------------------------------- PEs
        psum_in = [C(0, signed(32))] * dim
        for k in range(dim):
            a_in, sel_in = row_a[k], row_sel[k]
            psum_out = []
            for n in range(dim):
                pe = m.submodules[f"pe{k}_{n}"] = ProcessingElement()
                m.d.comb += [
                    pe.a.eq(a_in), pe.a_sel.eq(sel_in), pe.psum_in.eq(psum_in[n]),
                    pe.w_we.eq(self.w_valid & (load_t == Mux(self.w_transpose, n, k))),
                    pe.w_buf.eq(w_buf),
                    pe.w_data.eq(Mux(self.w_transpose, w_lane[k], w_lane[n])),
                ]
                psum_out.append(pe.psum_out)
                a_in, sel_in = pe.a_out, pe.a_sel_out
            psum_in = psum_out

        # ----------------------------------------------------------- de-skew
        # Column n's sum for the A row of cycle c is ready in cycle c+dim+n;
        # delay it to c+2*dim-1, when the last column's is ready.
        for n in range(dim):
            v = psum_in[n]
            for d in range(dim - 1 - n):
                v_q = Signal(signed(32), name=f"deskew{n}_{d}")
                m.d.sync += v_q.eq(v)
                v = v_q
            m.d.comb += self.out_data[32 * n:32 * n + 32].eq(v)

        valid = self.a_valid
        for d in range(self.latency):
            v_q = Signal(name=f"valid_{d}")
            m.d.sync += v_q.eq(valid)
            valid = v_q
        m.d.comb += self.out_valid.eq(valid)
        return m
