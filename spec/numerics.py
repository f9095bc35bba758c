"""Every fixed-point operation of flashnpu, implemented once.

The golden model, the tests, the compiler's scale folding and the docs use these
functions; the hardware implements the same arithmetic bit for bit (and its
unit tests compare against these functions). ``docs/numerics.md`` explains the
formats. All functions accept Python ints or numpy integer arrays and return
the same kind; they never overflow silently (see the bound in each docstring).

Formats
-------
* operands: INT8; accumulators and scores: INT32 (wrapping, like the array).
* exp2 argument ``t``: signed fixed point with ``EXP_FRAC`` fraction bits, ``t <= 0``.
* exp2 result and per-row factor ``alpha``: UQ1.15 (``ONE_Q15`` is 1.0).
* P for P@V: ``quant_p(e)`` in [0, ``P_SCALE``] (11 bits), kept in the accumulator;
  a MATMUL A operand read from the accumulator is ``saturate_a(x)``, a signed
  ``A_WIDE_BITS``-bit integer.
* reciprocal: ``F = round((mult << RECIP_SHIFT) / L)``, below 2**47.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "EXP_FRAC", "EXP_TABLE_BITS", "EXP_TABLE", "ONE_Q15", "P_SCALE", "P_BITS", "A_WIDE_BITS", "MAX_SEQ_K",
    "RECIP_SHIFT", "NEG_INF", "INT32_MIN", "INT32_MAX", "EXP_ARG_MIN", "RECIP_MULT_LIMIT",
    "wrap32", "round_shift", "saturate", "saturate_a", "exp_arg", "exp2_fixed", "quant_p", "mul_q15",
    "recip_fixed", "requant", "fold_scale",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
#: The running row max before any valid score: the smallest INT32.
NEG_INF = INT32_MIN

#: Fraction bits of the exp2 argument.
EXP_FRAC = 12
#: The fraction's top bits index the table; the rest interpolate linearly.
EXP_TABLE_BITS = 6
_INTERP_BITS = EXP_FRAC - EXP_TABLE_BITS
#: 2**(k/64) in UQ1.15 for k = 0..64 (the last entry is 2.0 = 65536).
EXP_TABLE = tuple(int(round(2.0 ** (k / (1 << EXP_TABLE_BITS)) * (1 << 15)))
                  for k in range((1 << EXP_TABLE_BITS) + 1))
ONE_Q15 = 1 << 15
#: exp2 arguments below this give 0; clamping keeps products in range.
EXP_ARG_MIN = -(1 << 20)
#: P = 1.0 quantizes to this value: 11-bit probabilities, 0..2047 (docs/numerics.md, "Why P has 11 bits").
P_SCALE = 2047
#: Bits of a probability p in 0..P_SCALE.
P_BITS = P_SCALE.bit_length()
#: Width of a MATMUL A operand read from the accumulator (saturated, signed): holds every p.
A_WIDE_BITS = 12
assert P_SCALE <= (1 << (A_WIDE_BITS - 1)) - 1
#: Longest key sequence of attention: the output accumulator O = sum p*v (0 <= p <= P_SCALE,
#: |v| <= 128, plus at most 1/2 per SCALE rounding) must not wrap INT32:
#: 8192 * 2047 * 128 = 2**31 - 2**20.
MAX_SEQ_K = 8192
assert MAX_SEQ_K * P_SCALE * 128 + MAX_SEQ_K <= INT32_MAX
#: Reciprocal numerator shift; RECIP's mult must be below RECIP_MULT_LIMIT.
RECIP_SHIFT = 31
RECIP_MULT_LIMIT = 1 << 16

_EXP_TABLE_NP = np.array(EXP_TABLE, dtype=np.int64)


def _is_array(x):
    return isinstance(x, np.ndarray)


def _i64(x):
    return np.asarray(x, dtype=np.int64) if _is_array(x) else int(x)


def wrap32(x):
    """Wrap to INT32 (two's complement), as the accumulators do."""
    if _is_array(x):
        if x.dtype == object:   # exact wide products from _mul_round_shift
            return (((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)).astype(np.int64)
        return ((np.asarray(x, dtype=np.int64) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
    return ((int(x) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def round_shift(x, s):
    """``x / 2**s`` rounded half up (toward +inf): ``(x + 2**(s-1)) >> s``; ``x`` if ``s == 0``.

    ``s`` is a non-negative scalar. numpy inputs must keep ``|x| < 2**62``.
    """
    s = int(s)
    if s < 0:
        raise ValueError(f"shift {s} must be non-negative")
    if s == 0:
        return x
    return (x + (1 << (s - 1))) >> s


def saturate(x, bits=8):
    """Clamp to a signed ``bits``-bit integer."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if _is_array(x):
        return np.clip(x, lo, hi)
    return max(lo, min(hi, int(x)))


def saturate_a(x):
    """A MATMUL A operand read from the accumulator: clamp INT32 to a signed ``A_WIDE_BITS``-bit integer."""
    return saturate(x, A_WIDE_BITS)


def exp_arg(diff, mult, shift):
    """Scale a score difference (``<= 0``) into an exp2 argument.

    ``t = max((max(diff, INT32_MIN) * mult) >> shift, EXP_ARG_MIN)``, then
    ``min(t, 0)``. ``diff`` is a 33-bit signed difference of INT32 values,
    ``mult`` an unsigned 32-bit multiplier, ``shift`` in 0..63. The product of
    the clamped difference and ``mult`` always fits 64 signed bits.
    """
    mult, shift = int(mult), int(shift)
    if not 0 <= mult < (1 << 32) or not 0 <= shift < 64:
        raise ValueError(f"exp_arg: mult {mult} must be < 2**32 and shift {shift} in 0..63")
    if _is_array(diff):
        # A positive difference gives t >= 0, hence 0: clamp it first so the
        # int64 product cannot overflow (2**32 * 2**32 would).
        d = np.clip(np.asarray(diff, dtype=np.int64), INT32_MIN, 0)
        t = (d * np.int64(mult)) >> shift
        return np.minimum(np.maximum(t, EXP_ARG_MIN), 0)
    d = max(int(diff), INT32_MIN)
    return min(max((d * mult) >> shift, EXP_ARG_MIN), 0)


def exp2_fixed(t):
    """``2**(t / 2**EXP_FRAC)`` for ``EXP_ARG_MIN <= t <= 0``, in UQ1.15.

    The integer part of ``t`` becomes a rounding right shift; the fraction
    indexes :data:`EXP_TABLE` with its top ``EXP_TABLE_BITS`` bits and
    interpolates linearly with the rest. Results below 2**-16 are 0.
    """
    arr = _is_array(t)
    t = _i64(t)
    n = t >> EXP_FRAC                      # floor: 0 or negative
    f = t & ((1 << EXP_FRAC) - 1)
    idx = f >> _INTERP_BITS
    r = f & ((1 << _INTERP_BITS) - 1)
    if arr:
        base = _EXP_TABLE_NP[idx]
        nxt = _EXP_TABLE_NP[idx + 1]
    else:
        base, nxt = EXP_TABLE[idx], EXP_TABLE[idx + 1]
    m = base + (((nxt - base) * r + (1 << (_INTERP_BITS - 1))) >> _INTERP_BITS)
    s = -n                                  # 0..256
    if arr:
        sc = np.minimum(s, 17)
        half = np.where(sc > 0, np.left_shift(np.int64(1), np.maximum(sc - 1, 0)), 0)
        e = (m + half) >> sc
        return np.where(s > 16, 0, e).astype(np.int64)
    if s == 0:
        return m
    if s > 16:
        return 0
    return (m + (1 << (s - 1))) >> s


def quant_p(e):
    """UQ1.15 probability to the P of P@V, in ``[0, P_SCALE]``: ``(e*P_SCALE + 2**14) >> 15``."""
    return (_i64(e) * P_SCALE + (1 << 14)) >> 15


def _mul_round_shift(x, f, s):
    """Exact ``round_shift(x * f, s)`` for INT32 ``x`` and ``0 <= f < 2**48`` (the product may need 80 bits)."""
    if not _is_array(x) and not _is_array(f):
        return round_shift(int(x) * int(f), s)
    x = np.asarray(x, dtype=np.int64)
    f = np.broadcast_to(np.asarray(f, dtype=np.int64), x.shape)
    big = np.abs(x).astype(np.float64) * f.astype(np.float64) >= 2.0 ** 61
    if not big.any():
        return round_shift(x * f, s)
    out = np.empty(x.shape, dtype=object)
    ok = ~big
    out[ok] = round_shift(x[ok] * f[ok], s)
    out[big] = [round_shift(a * b, s) for a, b in zip(x[big].tolist(), f[big].tolist())]
    return out


def mul_q15(x, a):
    """``x * a`` for a UQ1.15 factor ``a``, rounded half up: ``(x*a + 2**14) >> 15``.

    Exact for INT32 ``x`` and any ``0 <= a < 2**48``; for ``a <= 2**15`` the
    result is INT32. Callers that store the result wrap it with :func:`wrap32`.
    """
    return _mul_round_shift(x, a, 15)


def recip_fixed(l, mult):
    """Reciprocal factor ``round((mult << RECIP_SHIFT) / l)``, and 0 where ``l <= 0``.

    ``mult`` must be below :data:`RECIP_MULT_LIMIT`, so the result is below 2**47.
    Rounding is half up: ``((mult << RECIP_SHIFT) + (l >> 1)) // l``.
    """
    mult = int(mult)
    if not 0 <= mult < RECIP_MULT_LIMIT:
        raise ValueError(f"recip_fixed: mult {mult} must be in [0, {RECIP_MULT_LIMIT})")
    num = mult << RECIP_SHIFT
    if _is_array(l):
        l = np.asarray(l, dtype=np.int64)
        safe = np.where(l > 0, l, 1)
        return np.where(l > 0, (num + (safe >> 1)) // safe, 0).astype(np.int64)
    l = int(l)
    return (num + (l >> 1)) // l if l > 0 else 0


def requant(x, factor, shift, bits=8):
    """``saturate(round_shift(x * factor, shift), bits)`` computed exactly.

    ``x`` is INT32 and ``factor`` below 2**48 (a scalar or an array that
    broadcasts against ``x``). The product may need 80 bits; it is computed
    exactly, as by the hardware's full-width multiplier.
    """
    shift = int(shift)
    if not 0 <= shift < 64:
        raise ValueError(f"requant: shift {shift} must be in 0..63")
    out = saturate(_mul_round_shift(x, factor, shift), bits)
    return np.asarray(out, dtype=np.int64) if _is_array(out) else out


def fold_scale(real: float, mult_bits: int, *, max_shift: int = 63, what: str = "scale") -> tuple[int, int]:
    """Fold a positive real factor into ``(mult, shift)`` with ``real ~= mult / 2**shift``.

    ``mult`` is normalized into ``[2**(mult_bits-1), 2**mult_bits)`` for the
    most precision. Raises ``ValueError`` naming ``what`` if the factor is not
    positive and finite or needs a shift outside ``0..max_shift``.
    """
    if not (real > 0 and math.isfinite(real)):
        raise ValueError(f"{what} = {real!r}: must be positive and finite")
    m, e = math.frexp(real)                 # real = m * 2**e, 0.5 <= m < 1
    shift = mult_bits - e
    mult = int(round(m * (1 << mult_bits)))
    if mult == 1 << mult_bits:
        mult >>= 1
        shift -= 1
    if shift < 0:
        raise ValueError(f"{what} = {real!r}: too large to fold (needs a negative shift {shift})")
    if shift > max_shift:
        raise ValueError(f"{what} = {real!r}: too small to fold (needs shift {shift} > {max_shift})")
    return mult, shift
