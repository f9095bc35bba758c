"""The golden model's attention against float64 attention on the same (dequantized) INT8 inputs.

Bound (promise 2 of the design): at least 99.9 % of the output elements within
1 LSB of the INT8 output scale, and every element within 2 LSB.

Output scale: calibrated from the data, per tensor, as ``max|ref| / 127``
(the float64 reference's largest magnitude maps to 127), the usual
post-training calibration and the strictest honest choice: the LSB is as
small as the data allows. Inputs: real values drawn, quantized with
``q/k/v_scale = 4*sigma/127`` (clip at 4 sigma); the reference sees the
dequantized integers, so input quantization is not part of the error.

Cases (default config): Gaussian inputs at sigma 0.25, 0.5, 1, 1.5, 2 and 3
(score spread about 0.06 to 9: near-uniform rows to rows with many keys at a
few percent of the max) and peaked (near one-hot) rows; head_dim 32, 64, 128;
causal and not; GQA and MQA; ragged lengths (77, 200). The bound holds for
all of them because P has 11 bits (``numerics.P_SCALE = 2047``), kept in the
accumulator and read by P@V as a 12-bit operand: with a 7-bit P (127) the
same programs miss it for sigma >= 1 (docs/numerics.md, "Why P has 11 bits";
:func:`test_p_bits_decide_the_bound` shows it with a float64 model whose only
approximation is the rounding of P).
"""

import dataclasses
import zlib

import numpy as np
import pytest

from flashnpu.driver import run
from flashnpu.spec.numerics import P_SCALE
from flashnpu.sw.reference import (ACCURACY_FRAC_WITHIN_1LSB, ACCURACY_MAX_LSB, error_lsb, make_attention_tensors,
                                   reference_attention, visible_mask)
from flashnpu.sw.workload import AttentionWorkload

FRAC_1LSB = ACCURACY_FRAC_WITHIN_1LSB
MAX_LSB = ACCURACY_MAX_LSB


def _workload(batch, heads, kv_heads, seq_q, seq_k, head_dim, causal, dist, sigma, peak=20.0):
    s = 4 * sigma / 127
    q_scale = s
    if dist == "peaked":        # query = key * peak/(softmax_scale*|k|^2): elements ~ peak/(sqrt(D)*sigma)
        q_scale = 4 * peak / (np.sqrt(head_dim) * sigma) / 127
    return AttentionWorkload(batch, heads, kv_heads, seq_q, seq_k, head_dim, causal,
                             q_scale=q_scale, k_scale=s, v_scale=s)


def _errors(wl, dist, sigma, seed):
    """(|golden - ref| in output LSB, the calibrated workload, the tensors, ref, golden output)."""
    rng = np.random.default_rng(seed)
    t = make_attention_tensors(wl, rng, dist=dist, sigma=sigma)
    ref = reference_attention(wl, t)
    wl = dataclasses.replace(wl, out_scale=float(np.abs(ref).max()) / 127)
    out = run(wl, t, config="default").outputs["O"]
    return error_lsb(out, ref, wl.out_scale), wl, t, ref, out


def _assert_bound(err):
    frac = float((err <= 1.0).mean())
    assert frac >= FRAC_1LSB, f"only {frac:.4%} of elements within 1 LSB (max {err.max():.2f} LSB)"
    assert err.max() <= MAX_LSB, f"max error {err.max():.2f} LSB > {MAX_LSB}"


SEEDS = range(5)
GAUSSIAN = [("gaussian", sigma) for sigma in (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)]
DISTS = GAUSSIAN + [("peaked", 1.0)]
CASES = []
for d in (32, 64, 128):
    for causal in (False, True):
        for dist, sigma in DISTS:
            CASES.append(((1, 2, 2, 256, 256, d, causal), dist, sigma))
for causal in (False, True):
    for dist, sigma in DISTS:
        CASES.append(((1, 4, 2, 128, 128, 64, causal), dist, sigma))           # GQA
    for dist, sigma in (("gaussian", 0.5), ("gaussian", 1.5), ("peaked", 1.0)):
        CASES.append(((2, 4, 1, 96, 96, 64, causal), dist, sigma))             # MQA, batch 2
    for dist, sigma in (("gaussian", 0.5), ("gaussian", 1.5), ("gaussian", 3.0), ("peaked", 1.0)):
        for sq, sk in ((77, 77), (200, 200), (77, 200), (200, 77)):            # ragged
            CASES.append(((1, 2, 1, sq, sk, 64, causal), dist, sigma))


@pytest.mark.parametrize("shape,dist,sigma", CASES,
                         ids=[f"b{s[0]}h{s[1]}kv{s[2]}-q{s[3]}k{s[4]}-d{s[5]}-{'causal' if s[6] else 'full'}-{d}{g:g}"
                              for s, d, g in CASES])
def test_attention_within_bound(shape, dist, sigma):
    wl = _workload(*shape, dist, sigma)
    for seed in SEEDS:
        err, *_ = _errors(wl, dist, sigma, seed=zlib.crc32(repr((shape, dist, sigma, seed)).encode()))
        _assert_bound(err)


def test_fully_masked_rows_output_zero():
    """Causal with seq_q > seq_k: the first seq_q - seq_k queries see no key and output exactly 0."""
    wl = _workload(1, 2, 2, 200, 77, 64, True, "gaussian", 0.5)
    err, wl, t, ref, out = _errors(wl, "gaussian", 0.5, seed=5)
    assert not out[:, :, :123].any() and not ref[:, :, :123].any()
    assert out[:, :, 123:].any()


def _online_p_quant_model(wl, t, Bc, p_scale=P_SCALE):
    """Float64 online softmax over key tiles of ``Bc`` whose only approximation is P = round(p_scale * e)."""
    g = wl.group
    q = t["Q"] * wl.q_scale
    k = np.repeat(t["K"] * wl.k_scale, g, axis=1)
    v = np.repeat(t["V"] * wl.v_scale, g, axis=1)
    s = wl.softmax_scale * np.einsum("bhid,bhkd->bhik", q, k)
    vis = visible_mask(wl.seq_q, wl.seq_k, wl.causal)
    m = np.full(s.shape[:-1] + (1,), -np.inf)
    O = np.zeros(q.shape)
    L = np.zeros(m.shape)
    for k0 in range(0, wl.seq_k, Bc):
        sj = np.where(vis[:, k0:k0 + Bc], s[..., k0:k0 + Bc], -np.inf)
        m_new = np.maximum(m, sj.max(axis=-1, keepdims=True))
        alpha = np.where(np.isfinite(m), np.exp(m - np.where(np.isfinite(m_new), m_new, 0)), 1.0)
        p = np.where(np.isfinite(sj), np.floor(p_scale * np.exp(sj - m_new) + 0.5), 0.0)
        O = alpha * O + np.einsum("bhik,bhkd->bhid", p, v[:, :, k0:k0 + Bc])
        L = alpha * L + p.sum(axis=-1, keepdims=True)
        m = m_new
    return O / np.where(L > 0, L, 1)


def _model_errors(wl, t, ref, p_scale):
    """|model - ref| in output LSB of the P-rounding model, output rounded to INT8 like the NPU's."""
    from flashnpu.sw.compiler import attention_tiles
    Bc = attention_tiles(wl, "default")[1]
    model_q = np.clip(np.floor(_online_p_quant_model(wl, t, Bc, p_scale) / wl.out_scale + 0.5), -128, 127)
    return model_q, np.abs(model_q * wl.out_scale - ref) / wl.out_scale


@pytest.mark.parametrize("head_dim,causal,sigma", [(64, False, 1.0), (32, False, 1.5), (64, True, 2.0),
                                                     (128, False, 3.0)])
def test_p_bits_decide_the_bound(head_dim, causal, sigma):
    """Gaussian scores with a spread of about 1..9: the rounding of P decides the bound.

    A float64 online softmax with the NPU's key tiles whose only approximation is
    P = round(p_scale * exp(s - max)) (no exp2 table, no fixed-point exp argument,
    no Q15 rescale, exact reciprocal), output rounded to INT8:

    1. with a 7-bit P (p_scale = 127, an INT8 operand) it misses the promise;
    2. with the NPU's P_SCALE = 2047 it meets it, and the golden model's rounded
       output equals the model's for at least 98 % of the elements (never more
       than 1 apart): the other fixed-point steps only flip some output roundings.
    """
    wl = _workload(1, 2, 2, 256, 256, head_dim, causal, "gaussian", sigma)
    err, wl, t, ref, out = _errors(wl, "gaussian", sigma, seed=11)
    _assert_bound(err)
    _, err7 = _model_errors(wl, t, ref, 127)
    assert (err7 <= 1.0).mean() < FRAC_1LSB or err7.max() > MAX_LSB, \
        f"a 7-bit P would pass here: {(err7 <= 1).mean():.4%} within 1 LSB, max {err7.max():.2f}"
    model_q, err11 = _model_errors(wl, t, ref, P_SCALE)
    _assert_bound(err11)
    diff = np.abs(model_q - out)
    assert diff.max() <= 1 and (diff == 0).mean() >= 0.98, ((diff == 0).mean(), diff.max())
