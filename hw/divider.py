"""The vector unit's reciprocal: ``recip_fixed(l, mult)`` by restoring division.

See ``docs/vector_unit.md`` ("Divider").
"""

import operator

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flashnpu.spec.numerics import RECIP_MULT_LIMIT, RECIP_SHIFT
from flashnpu.spec.timing import DIVIDER_QUOTIENT_BITS

__all__ = ["Divider"]

_MULT_BITS = (RECIP_MULT_LIMIT - 1).bit_length()            # 16
# Numerator (mult << 31) + (l >> 1) < 2**47 + 2**30: 48 bits; so is the quotient.
_NUM_BITS = DIVIDER_QUOTIENT_BITS
F_BITS = DIVIDER_QUOTIENT_BITS


class Divider(wiring.Component):
    """Compute ``recip_fixed(l, mult) = ((mult << 31) + (l >> 1)) // l`` (0 for ``l <= 0``).

    A restoring divider that retires ``bits_per_cycle`` quotient bits per
    cycle, ``cycles = ceil(48 / bits_per_cycle)`` cycles per division. It runs
    once per row and Q tile, so a small sequential divider is enough.

    Timing: ``start`` in cycle ``c`` samples ``l`` and ``mult`` (the first
    quotient bits are computed from them in that same cycle); ``done`` is high
    in cycle ``c + cycles`` and ``f`` holds the result in that cycle (it
    changes again only after the next ``start``'s first cycle). ``start`` may
    be raised again in the ``done`` cycle, so divisions follow each other
    every ``cycles`` cycles; a ``start`` while ``busy`` restarts the division.

    Parameters
    ----------
    bits_per_cycle : int
        Quotient bits per cycle (1 = radix 2, 2 = radix 4, ...), 1..48.

    Attributes
    ----------
    start : In(1)
    l : In(signed(32))
        The divisor, the running sum L.
    mult : In(16)
        The numerator's multiplier (below ``RECIP_MULT_LIMIT``).
    busy : Out(1)
        A division is in progress (the cycles after ``start`` up to ``done``, excluded).
    done : Out(1)
        One cycle: ``f`` holds the result. A register.
    f : Out(48)
        The quotient, below 2**47.
    """

    #: Quotient bits of one division.
    QUOTIENT_BITS = _NUM_BITS

    def __init__(self, *, bits_per_cycle):
        k = operator.index(bits_per_cycle)
        if not 1 <= k <= _NUM_BITS:
            self._MustUse__used = True      # a failed constructor is not an unused component
            raise ValueError(f"bits_per_cycle = {k}: must be in 1..{_NUM_BITS}")
        self._k = k
        self._cycles = -(-_NUM_BITS // k)
        super().__init__({
            "start": In(1),
            "l": In(signed(32)),
            "mult": In(_MULT_BITS),
            "busy": Out(1),
            "done": Out(1),
            "f": Out(F_BITS),
        })

    @property
    def cycles(self):
        """Cycles from ``start`` to ``done``, and between back-to-back divisions."""
        return self._cycles

    def elaborate(self, platform):
        m = Module()
        k, cycles = self._k, self._cycles
        nb = cycles * k                    # numerator bits shifted in (leading zeros if > 48)

        rem = Signal(32)                   # remainder < divisor <= 2**31 - 1
        num = Signal(nb)                   # numerator bits still to shift in, MSB first
        quo = Signal(nb)
        div = Signal(31)
        zero = Signal()                    # l <= 0: the result is 0
        cnt = Signal(range(cycles + 1))

        # The start cycle iterates on the inputs, later cycles on the registers.
        pos = self.l > 0
        s_rem = Mux(self.start, 0, rem)
        s_num = Mux(self.start, Mux(pos, (self.mult << RECIP_SHIFT) + (self.l >> 1), 0), num)
        s_quo = Mux(self.start, 0, quo)
        s_div = Mux(self.start, Mux(pos, self.l[:31], 1), div)

        r, n, q = s_rem, s_num, s_quo
        for j in range(k):
            r2 = Cat(n[nb - 1], r)                           # 2*r + next numerator bit
            ge = r2 >= s_div
            r_next = Signal(32, name=f"rem_{j}")
            m.d.comb += r_next.eq(Mux(ge, r2 - s_div, r2))
            r = r_next
            n = Cat(C(0, 1), n[:nb - 1])
            q = Cat(ge, q[:nb - 1])

        with m.If(self.start | self.busy):
            m.d.sync += [rem.eq(r), num.eq(n), quo.eq(q)]
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [div.eq(s_div), zero.eq(~pos), cnt.eq(cycles - 1),
                         self.busy.eq(cycles > 1), self.done.eq(cycles == 1)]
        with m.Elif(self.busy):
            m.d.sync += cnt.eq(cnt - 1)
            with m.If(cnt == 1):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]

        m.d.comb += self.f.eq(Mux(zero, 0, quo[:F_BITS]))
        return m
