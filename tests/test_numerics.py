"""Every fixed-point operation of spec/numerics.py against exact rational math (fractions.Fraction)."""

import math
import random
from fractions import Fraction

import numpy as np
import pytest

from flashnpu.spec.numerics import (
    EXP_ARG_MIN, EXP_FRAC, INT32_MAX, INT32_MIN, MAX_SEQ_K, ONE_Q15, P_BITS, P_SCALE,
    RECIP_MULT_LIMIT, RECIP_SHIFT, exp2_fixed, exp_arg, fold_scale, mul_q15, quant_p, recip_fixed, requant,
    round_shift, saturate, saturate_a, wrap32,
)

from support import vector_ref

rng = random.Random(2024)


def half_up(q: Fraction) -> int:
    """Round a rational half up (toward +inf), exactly."""
    return math.floor(q + Fraction(1, 2))


def _int32s(n):
    edge = [INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX]
    return edge + [rng.randint(INT32_MIN, INT32_MAX) for _ in range(n)] + [rng.randint(-70000, 70000) for _ in range(n)]


# ------------------------------------------------------------------- exp2
T_ALL = np.arange(-16 * (1 << EXP_FRAC), 1)            # every t whose result is not flushed to 0


def _exp2_errors(t):
    e = exp2_fixed(t).astype(np.float64) / ONE_Q15
    x = np.exp2(t / (1 << EXP_FRAC))
    return np.abs(e - x) / x, np.abs(e - x) * ONE_Q15


def test_exp2_relative_error():
    """The numbers written in docs/numerics.md, measured over every input."""
    rel, _ = _exp2_errors(T_ALL[T_ALL >= -(1 << EXP_FRAC)])
    assert rel.max() <= 1e-3
    assert rel.max() < 6.7e-5                              # docs: 6.67e-5 over [-4096, 0]
    rel, _ = _exp2_errors(T_ALL[T_ALL >= -6 * (1 << EXP_FRAC)])
    assert rel.max() <= 1e-3                               # docs: 9.54e-4 over [-6*4096, 0]


def test_exp2_absolute_error_whole_range():
    """Below 2**-6 the UQ1.15 LSB itself exceeds 1e-3 relative; the absolute error stays < 1.33 LSB."""
    rel, lsb = _exp2_errors(T_ALL)
    assert lsb.max() < 1.33                                # docs: 1.325 LSB, at t = -160
    # Octave s (t in [-s*4096, -(s-1)*4096)): the shift's rounding (0.5 LSB) plus the
    # table-and-interpolation error of the mantissa, divided by 2**s (docs/numerics.md).
    s = -(T_ALL >> EXP_FRAC)
    for k in range(1, 17):
        assert lsb[s == k].max() <= 0.5 + 1.7 * 2.0**-k, k
    assert rel.max() == pytest.approx(1.0)                 # t = -65536: 2**-16 rounds up to 1 LSB


def test_exp2_exact_points_and_flush():
    for k in range(0, 16):
        assert exp2_fixed(-k << EXP_FRAC) == ONE_Q15 >> k     # exact powers of two
    assert exp2_fixed(-16 << EXP_FRAC) == 1
    assert exp2_fixed((-16 << EXP_FRAC) - 1) == 0
    assert exp2_fixed(EXP_ARG_MIN) == 0
    t = np.arange(EXP_ARG_MIN, 1, 37)
    e = exp2_fixed(t)
    assert e.dtype == np.int64 and np.all(np.diff(e) >= 0)     # monotone
    assert e.tolist() == [exp2_fixed(int(v)) for v in t]       # scalar path == array path


# ------------------------------------------------------------- rounding
def test_round_shift_half_up():
    for x in _int32s(300) + [-5, -4, -3, 3, 5, 2**61, -2**61]:
        for s in (0, 1, 2, 7, 15, 31, 40):
            assert round_shift(x, s) == half_up(Fraction(x, 1 << s))
    assert round_shift(-5, 1) == -2 and round_shift(5, 1) == 3 and round_shift(-6, 2) == -1
    xs = np.array(_int32s(100), dtype=np.int64)
    assert round_shift(xs, 9).tolist() == [round_shift(int(v), 9) for v in xs]
    with pytest.raises(ValueError, match="non-negative"):
        round_shift(3, -1)


def test_saturate_and_wrap():
    assert [saturate(v) for v in (-1000, -129, -128, 0, 127, 128, 10**20)] == [-128, -128, -128, 0, 127, 127, 127]
    assert saturate(40000, 16) == 32767 and saturate(-40000, 16) == -32768
    assert saturate(np.array([-300, 5, 300])).tolist() == [-128, 5, 127]
    for v in _int32s(50) + [2**31, -2**31 - 1, 2**40 + 5, -(2**79) + 3]:
        assert wrap32(v) == (v + 2**31) % 2**32 - 2**31
    obj = np.array([2**70 + 7, -(2**75) - 1, 5], dtype=object)
    assert wrap32(obj).tolist() == [wrap32(int(v)) for v in obj]
    assert wrap32(np.array([2**31, -2**31 - 1])).tolist() == [INT32_MIN, INT32_MAX]


def test_exp_arg_exact():
    for _ in range(2000):
        d = rng.randint(2 * INT32_MIN, 2 * INT32_MAX)
        mult, shift = rng.choice([rng.getrandbits(32), rng.getrandbits(14)]), rng.randint(0, 63)
        want = min(max(math.floor(Fraction(max(d, INT32_MIN) * mult, 1 << shift)), EXP_ARG_MIN), 0)
        assert exp_arg(d, mult, shift) == want
        assert exp_arg(np.array([d]), mult, shift)[0] == want     # the int64 path never overflows
    # The worst products: the largest positive and negative differences with the largest mult.
    d = np.array([2 * INT32_MAX + 1, INT32_MAX - INT32_MIN, 2 * INT32_MIN, -1])
    assert exp_arg(d, 2**32 - 1, 0).tolist() == [0, 0, EXP_ARG_MIN, EXP_ARG_MIN]
    assert exp_arg(d, 2**32 - 1, 63).tolist() == [0, 0, -1, -1]
    for bad in ((1, 2**32, 0), (1, 1, 64), (1, -1, 0)):
        with pytest.raises(ValueError, match="mult"):
            exp_arg(*bad)


def test_quant_p_exact():
    for e in range(0, ONE_Q15 + 1):
        assert quant_p(e) == half_up(Fraction(e * P_SCALE, ONE_Q15))
    assert quant_p(ONE_Q15) == P_SCALE
    assert quant_p(np.arange(ONE_Q15 + 1)).tolist() == [quant_p(e) for e in range(ONE_Q15 + 1)]


def test_p_fits_the_wide_a_operand():
    """Every P (quant_p of every UQ1.15 exp) is in 0..P_SCALE, P_BITS wide, and the signed A_WIDE_BITS
    operand holds it: saturate_a leaves it alone."""
    p = quant_p(np.arange(ONE_Q15 + 1))
    assert p.min() == 0 and p.max() == P_SCALE
    assert int(p.max()).bit_length() == P_BITS
    assert np.array_equal(saturate_a(p), p)
    assert len(np.unique(p)) == P_SCALE + 1                    # every level is used


def test_saturate_a():
    xs = _int32s(200) + [-2049, -2048, -2047, 2046, 2047, 2048]
    for x in xs:
        assert saturate_a(x) == min(max(x, -2048), 2047)
    assert saturate_a(np.array(xs)).tolist() == [saturate_a(x) for x in xs]


def _pv_accumulate(keys, v, factor):
    """O after ``keys`` keys of the largest P times ``v``, SCALEd by ``factor`` before each: (wrapped, exact)."""
    row = vector_ref.RowState(m=0)
    (p,) = row.exp([0], [1], 1, 0)            # a score equal to the running max: the largest P
    o_wrapped = o_exact = 0
    for _ in range(keys):
        o_wrapped = wrap32(vector_ref.scale(o_wrapped, factor) + p * v)
        o_exact = mul_q15(o_exact, factor) + p * v
    return o_wrapped, o_exact


def test_pv_sum_fits_int32_up_to_max_seq_k():
    """The attention output accumulator over MAX_SEQ_K keys of the largest P and |v|, SCALEd before
    every key, does not wrap INT32; over twice as many it does (the limit is not loose by 2x). The
    row sum L of MAX_SEQ_K largest P stays below 2**24 (the reciprocal's precision)."""
    for v in (-128, 127):
        for factor in (ONE_Q15, ONE_Q15 - 1):
            wrapped, exact = _pv_accumulate(MAX_SEQ_K, v, factor)
            assert wrapped == exact, (v, factor)
    wrapped, exact = _pv_accumulate(2 * MAX_SEQ_K, -128, ONE_Q15)
    assert wrapped != exact
    row = vector_ref.RowState(m=0, l=0, f=ONE_Q15)
    for _ in range(MAX_SEQ_K // 64):           # 64-key blocks
        row.exp([0] * 64, [1] * 64, 1, 0)
    assert row.l == MAX_SEQ_K * P_SCALE and row.l < 1 << 24


@pytest.mark.parametrize("fbits", [15, 16, 32, 47, 48])
def test_mul_q15_exact_for_big_factors(fbits):
    xs = _int32s(60)
    fs = [0, 1, (1 << fbits) - 1] + [rng.getrandbits(fbits) for _ in range(30)]
    for f in fs:
        want = [half_up(Fraction(x * f, 1 << 15)) for x in xs]
        assert [mul_q15(x, f) for x in xs] == want
        got = mul_q15(np.array(xs, dtype=np.int64), f)
        assert [int(v) for v in got] == want                    # object array where the product is wide
        assert wrap32(got).tolist() == [wrap32(w) for w in want]
    # factor arrays broadcasting against x
    x = np.array(xs[:20], dtype=np.int64)[:, None].repeat(5, axis=1)
    f = np.array(fs[:5], dtype=np.int64)[None, :]
    got = mul_q15(x, f)
    assert [[int(v) for v in r] for r in got] == [[half_up(Fraction(int(a) * int(b), 1 << 15))
                                                  for b in f[0]] for a in x[:, 0]]
    assert mul_q15(INT32_MIN, ONE_Q15) == INT32_MIN and mul_q15(INT32_MAX, ONE_Q15) == INT32_MAX


def test_recip_exact():
    ls = [1, 2, 3, 127, 128, 1000, 2**20 + 1, INT32_MAX] + [rng.randint(1, INT32_MAX) for _ in range(200)]
    for mult in (0, 1, 127, 1000, RECIP_MULT_LIMIT - 1):
        want = [half_up(Fraction(mult << RECIP_SHIFT, l)) for l in ls]
        assert [recip_fixed(l, mult) for l in ls] == want
        assert recip_fixed(np.array(ls), mult).tolist() == want
        assert max(want) < 2**47
        assert recip_fixed(0, mult) == 0 and recip_fixed(-5, mult) == 0
        assert recip_fixed(np.array([0, -1, INT32_MIN]), mult).tolist() == [0, 0, 0]
    for bad in (RECIP_MULT_LIMIT, -1):
        with pytest.raises(ValueError, match="mult"):
            recip_fixed(3, bad)


@pytest.mark.parametrize("fbits", [8, 31, 32, 47, 48])
def test_requant_exact_for_big_factors(fbits):
    xs = _int32s(60)
    for _ in range(20):
        f, s = rng.getrandbits(fbits), rng.randint(0, 63)
        want = [saturate(half_up(Fraction(x * f, 1 << s))) for x in xs]
        assert [requant(x, f, s) for x in xs] == want
        got = requant(np.array(xs, dtype=np.int64), f, s)
        assert got.dtype == np.int64 and got.tolist() == want
        assert requant(xs[9], f, s, bits=16) == saturate(half_up(Fraction(xs[9] * f, 1 << s)), 16)
    # Products just above 2**61 (the exact path) and around saturation
    x, f = INT32_MAX, (1 << 48) - 1
    for s in (63, 72 - 10, 40):
        want = [saturate(half_up(Fraction(v * f, 1 << s)), 32) for v in (x, -x)]
        assert requant(np.array([x, -x]), f, s, bits=32).tolist() == want
        assert [requant(v, f, s, bits=32) for v in (x, -x)] == want
    with pytest.raises(ValueError, match="shift"):
        requant(1, 1, 64)


def test_fold_scale():
    for real in (1e-9, 0.0123, 0.5, 1.0, 3.7, 1234.5):
        mult, shift = fold_scale(real, 16)
        assert 2**15 <= mult < 2**16 and 0 <= shift <= 63
        assert abs(mult / 2**shift - real) <= real * 2**-16
    assert fold_scale(1.0, 16) == (32768, 15)
    assert fold_scale(0.99999999, 16) == (32768, 15)             # rounding up to the next power
    for bad, msg in ((0.0, "positive"), (float("inf"), "positive"), (2.0**20, "too large"),
                     (1e-30, "too small")):
        with pytest.raises(ValueError, match=msg):
            fold_scale(bad, 16, what="scale")
