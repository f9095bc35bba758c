"""One lane of the vector unit's exponential: ``exp2_fixed(exp_arg(diff, mult, shift))``.

See ``docs/vector_unit.md`` ("Exp2Lane").
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flashnpu.spec.numerics import EXP_ARG_MIN, EXP_FRAC, EXP_TABLE, EXP_TABLE_BITS
from flashnpu.spec.timing import EXP_LATENCY

__all__ = ["Exp2Lane"]

_INTERP_BITS = EXP_FRAC - EXP_TABLE_BITS
_ARG_BITS = (-EXP_ARG_MIN).bit_length()          # |t| <= 2**20: 21 bits
_FLUSH = 16                                       # 2**-s rounds to 0 for s > 16


class Exp2Lane(wiring.Component):
    """Compute ``exp2_fixed(exp_arg(diff, mult, shift))`` in a free-running pipeline.

    A new argument enters every cycle; its UQ1.15 result leaves ``LATENCY``
    cycles later. There is no enable: the vector unit never stalls a lane
    mid-way, and a result nobody takes is simply dropped.

    Stages (each ends in a register):

    1. ``u = min(-diff, 2**31)`` for a negative ``diff``, else 0 (``t = 0``).
    2. ``X = u * mult``, an unsigned 64-bit product.
    3. ``t = floor(-X / 2**shift)`` computed as ``~((X - 1) >> shift)``,
       clamped to ``EXP_ARG_MIN`` (21-bit signed).
    4. Table: ``T[k]`` and ``T[k+1] - T[k]`` for the top 6 fraction bits.
    5. Interpolation: ``m = T[k] + round_shift(delta * r, 6)``.
    6. Scale by ``2**n``: ``round_shift(m, s)`` as ``((m >> (s-1)) + 1) >> 1``,
       0 for ``s > 16``.

    Attributes
    ----------
    diff : In(signed(33))
        A score difference (INT32 minus INT32).
    mult : In(32)
        Unsigned scale.
    shift : In(6)
        Right shift of the scaled difference (a floor).
    e : Out(16)
        The result for the inputs of ``LATENCY`` cycles ago, in ``[0, 32768]``. A register.
    """

    LATENCY = EXP_LATENCY    #: the six stages below (spec/timing.py)

    def __init__(self):
        super().__init__({
            "diff": In(signed(33)),
            "mult": In(32),
            "shift": In(6),
            "e": Out(16),
        })

    def elaborate(self, platform):
        m = Module()

        # 1. clamp the difference; a difference >= 0 gives t = 0, like u = 0.
        b_u = Signal(32)
        b_mult = Signal(32)
        b_shift = Signal(6)
        m.d.sync += [
            b_u.eq(Mux(self.diff >= 0, 0,
                       Mux(self.diff < -(1 << 31), 1 << 31, (-self.diff)[:32]))),
            b_mult.eq(self.mult),
            b_shift.eq(self.shift),
        ]

        # 2. the product fits 64 bits: u <= 2**31, mult < 2**32.
        c_x = Signal(64)
        c_shift = Signal(6)
        m.d.sync += [c_x.eq(b_u * b_mult), c_shift.eq(b_shift)]

        # 3. floor(-X / 2**s) = -(floor((X-1) / 2**s) + 1) = ~((X-1) >> s) for X >= 1;
        # r >= 2**20 means t < EXP_ARG_MIN.
        c_r = Signal(64)
        m.d.comb += c_r.eq((c_x - 1)[:64] >> c_shift)
        d_t = Signal(signed(_ARG_BITS))
        m.d.sync += d_t.eq(Mux(c_x == 0, 0,
                               Mux(c_r[_ARG_BITS - 1:] != 0, EXP_ARG_MIN, ~c_r[:_ARG_BITS])))

        # 4. split t = 4096*n + f with floors; s = -n in 0..256.
        d_f = d_t[:EXP_FRAC]
        d_n = d_t[EXP_FRAC:].as_signed()
        base = Array(Const(EXP_TABLE[k], 17) for k in range(1 << EXP_TABLE_BITS))
        delta = Array(Const(EXP_TABLE[k + 1] - EXP_TABLE[k], 16) for k in range(1 << EXP_TABLE_BITS))
        e_base = Signal(17)
        e_delta = Signal(16)
        e_r = Signal(_INTERP_BITS)
        e_s = Signal(range(257))
        idx = d_f[_INTERP_BITS:]
        m.d.sync += [
            e_base.eq(base[idx]),
            e_delta.eq(delta[idx]),
            e_r.eq(d_f[:_INTERP_BITS]),
            e_s.eq(-d_n),
        ]

        # 5. mantissa in [32768, 65536).
        f_m = Signal(17)
        f_s = Signal(range(257))
        m.d.sync += [
            f_m.eq(e_base + ((e_delta * e_r + (1 << (_INTERP_BITS - 1))) >> _INTERP_BITS)),
            f_s.eq(e_s),
        ]

        # 6. round half up: (m + 2**(s-1)) >> s == ((m >> (s-1)) + 1) >> 1.
        f_sm1 = Signal(range(_FLUSH))
        m.d.comb += f_sm1.eq(f_s - 1)
        m.d.sync += self.e.eq(Mux(f_s == 0, f_m,
                                  Mux(f_s > _FLUSH, 0, ((f_m >> f_sm1) + 1) >> 1)))
        return m
