"""The vector unit's ``dim`` lanes: masked row max, exp2 and quant_p, and the x * factor requantizer.

See ``docs/vector_unit.md`` ("Structure", "Execution").
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.hw.divider import F_BITS
from flashnpu.hw.exp2_lane import Exp2Lane
from flashnpu.hw.vector_issue import PARAMS_LAYOUT
from flashnpu.spec.numerics import NEG_INF, P_BITS, P_SCALE
from flashnpu.spec.timing import timing

__all__ = ["VectorLanes", "lanes_in_layout", "ROWMAX_LAYOUT", "exp_out_layout", "requant_out_layout",
           "OUT_REGS", "tree", "max_of"]

_MUL_SPLIT = 24                # the 48-bit factor as two 24-bit halves
#: Registers of the x * factor path: the partial products, their sum, the rounded and clamped result.
OUT_REGS = 3

#: The masked maximum of one element's lanes, the stage after the lanes take it.
ROWMAX_LAYOUT = data.StructLayout({"max": signed(32), "first": unsigned(1)})


def lanes_in_layout(dim):
    """An element as the lanes take it: the accumulator row, its row's M, the factor, the mask."""
    return data.StructLayout({
        "x": data.ArrayLayout(signed(32), dim),
        "m": signed(32),               # M of the row: EXP's exp2(x - M)
        "factor": unsigned(F_BITS),    # SCALE/OUTPUT: F of the row; REQUANT: mult
        "mask": data.ArrayLayout(unsigned(1), dim),
        "first": unsigned(1),          # block 0 of its row
    })


def exp_out_layout(dim):
    """EXP's p per lane (0 where masked) and their sum."""
    return data.StructLayout({
        "p": data.ArrayLayout(unsigned(P_BITS), dim),
        "sum": unsigned((dim * P_SCALE).bit_length()),
        "first": unsigned(1),
    })


def requant_out_layout(dim):
    """SCALE's wrapped 32-bit lanes and OUTPUT/REQUANT's saturated INT8 lanes of one element."""
    return data.StructLayout({
        "w": data.ArrayLayout(unsigned(32), dim),
        "q": data.ArrayLayout(unsigned(8), dim),
    })


def tree(items, op):
    """Reduce ``items`` pairwise (a balanced tree of depth ceil(log2(n)))."""
    items = list(items)
    while len(items) > 1:
        nxt = [op(items[j], items[j + 1]) for j in range(0, len(items) - 1, 2)]
        if len(items) % 2:
            nxt.append(items[-1])
        items = nxt
    return items[0]


def max_of(a, b):
    return Mux(a > b, a, b)


class VectorLanes(wiring.Component):
    """``dim`` free-running lanes; each output stream carries its element's ``valid``, no stalls.

    An element taken in cycle ``c`` (stage 1 of the unit) comes out on
    ``rowmax`` in ``c + 1``, on ``requant`` in ``c + OUT_REGS`` and on ``exp``
    in ``c + Exp2Lane.LATENCY + 1``; the unit writes from those stages, which
    ``spec.timing`` states (``vector_out_write``, ``vector_exp_write``), and the
    constructor checks that they agree.

    Members
    -------
    elem : In(stream.Signature(lanes_in_layout(dim), always_ready=True))
    params : In(PARAMS_LAYOUT)
        ``mult``, ``shift`` for the exp2 lanes; ``rshift`` (``rshift_m1``) of the
        requantizer. Read in the stage that needs them (they hold for an instruction).
    rowmax : Out(stream.Signature(ROWMAX_LAYOUT, always_ready=True))
        Max over the lanes, ``NEG_INF`` where masked.
    exp : Out(stream.Signature(exp_out_layout(dim), always_ready=True))
        ``quant_p(exp2_fixed(exp_arg(x - m, mult, shift)))`` per lane, 0 where masked.
    requant : Out(stream.Signature(requant_out_layout(dim), always_ready=True))
        ``round_shift(x * factor, rshift)``: wrapped to 32 bits and saturated to INT8.
    """

    def __init__(self, config):
        t = timing(config)
        self._dim = dim = config.dim
        self.exp_regs = Exp2Lane.LATENCY + 1           # the lanes, then quant_p
        if (t.vector_out_write, t.vector_exp_write) != (1 + OUT_REGS, 1 + self.exp_regs):
            raise ValueError(f"spec.timing has vector_out_write {t.vector_out_write}, vector_exp_write "
                             f"{t.vector_exp_write}; the lanes write in {1 + OUT_REGS}, {1 + self.exp_regs}")
        super().__init__({
            "elem": In(stream.Signature(lanes_in_layout(dim), always_ready=True)),
            "params": In(PARAMS_LAYOUT),
            "rowmax": Out(stream.Signature(ROWMAX_LAYOUT, always_ready=True)),
            "exp": Out(stream.Signature(exp_out_layout(dim), always_ready=True)),
            "requant": Out(stream.Signature(requant_out_layout(dim), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        dim = self._dim
        e = self.elem.payload
        prm = self.params

        def delayed(value, n, name):
            """``value`` of ``n`` cycles ago."""
            for k in range(1, n + 1):
                reg = Signal.like(value, name=f"{name}_d{k}")
                m.d.sync += reg.eq(value)
                value = reg
            return value

        # Valid and first travel beside the data (only the outputs' copies are used).
        m.d.comb += [
            self.rowmax.valid.eq(delayed(self.elem.valid, 1, "valid")),
            self.rowmax.payload.first.eq(delayed(e.first, 1, "first")),
            self.requant.valid.eq(delayed(self.elem.valid, OUT_REGS, "valid")),
            self.exp.valid.eq(delayed(self.elem.valid, self.exp_regs, "valid")),
            self.exp.payload.first.eq(delayed(e.first, self.exp_regs, "first")),
        ]

        # ROWMAX: a max tree over the masked lanes.
        m.d.sync += self.rowmax.payload.max.eq(
            tree([Mux(e.mask[l], e.x[l], NEG_INF) for l in range(dim)], max_of))

        # EXP: the exp2 lanes, then quant_p where valid: (e * P_SCALE + 2**14) >> 15, in 0..P_SCALE.
        mask_e = delayed(e.mask.as_value(), Exp2Lane.LATENCY, "mask")
        for l in range(dim):
            lane = m.submodules[f"exp{l}"] = Exp2Lane()
            m.d.comb += [lane.diff.eq(e.x[l] - e.m), lane.mult.eq(prm.mult), lane.shift.eq(prm.shift)]
            m.d.sync += self.exp.payload.p[l].eq(Mux(mask_e[l], (lane.e * P_SCALE + (1 << 14)) >> 15, 0))
        p = self.exp.payload.p
        m.d.comb += self.exp.payload.sum.eq(tree([p[l] for l in range(dim)], lambda a, b: a + b))

        # SCALE, OUTPUT, REQUANT: x * factor exact (81 bits) as two 32x24 products, rounded shift,
        # then wrap32 or saturate to INT8.
        out = self.requant.payload
        for l in range(dim):
            lo = Signal(signed(32 + _MUL_SPLIT + 1), name=f"lo{l}")
            hi = Signal(signed(32 + _MUL_SPLIT + 1), name=f"hi{l}")
            m.d.sync += [lo.eq(e.x[l] * e.factor[:_MUL_SPLIT]), hi.eq(e.x[l] * e.factor[_MUL_SPLIT:])]
            prod = Signal(signed(32 + F_BITS + 1), name=f"prod{l}")
            m.d.sync += prod.eq(lo + (hi << _MUL_SPLIT))
            # round half up: (x + 2**(s-1)) >> s == ((x >> (s-1)) + 1) >> 1 for s >= 1.
            y = Signal(signed(32 + F_BITS + 1), name=f"y{l}")
            m.d.comb += y.eq(Mux(prm.rshift == 0, prod, ((prod >> prm.rshift_m1) + 1) >> 1))
            m.d.sync += [out.w[l].eq(y[:32]), out.q[l].eq(Mux(y > 127, 127, Mux(y < -128, -128, y))[:8])]
        return m
