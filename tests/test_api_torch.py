"""flashnpu.attention against torch.nn.functional.scaled_dot_product_attention (torch is the 'torch' extra).

``make setup`` installs ``flashnpu[torch]``, so torch is a requirement of this
file, not an optional skip.

Tolerance, measured: on N(0, 1) float32 inputs (absmax INT8 quantization,
``out_scale = v_scale``), 12 cases (GQA, MHA, causal, seq_q != seq_k, d 16-64,
3 seeds each) gave a worst error of 1.47 output LSBs against float64 SDPA on
the original floats, a worst mean of 0.27 LSB, and at most 0.52 LSB against
float64 attention on the quantized inputs (the NPU's own error: 0.5 is the
output rounding). The error budget that INT8 gives: 0.5 LSB output rounding +
0.5 LSB from rounding V (its step is the output step) + the Q/K rounding that
moves the softmax weights (up to about 0.5 LSB here): so 2 LSB max, 0.35 LSB mean.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import flashnpu
from flashnpu.sw.reference import attention_float64, quantize

CASES = [  # (batch, heads, kv_heads, seq_q, seq_k, head_dim, causal)
    (2, 4, 2, 64, 64, 32, False),
    (2, 4, 2, 64, 64, 32, True),
    (1, 2, 1, 40, 72, 16, True),
    (1, 4, 4, 128, 128, 64, False),
]


def _sdpa(q, k, v, causal):
    Sq, Sk = q.shape[2], k.shape[2]
    if causal and Sq != Sk:
        # flashnpu aligns the causal mask bottom-right; torch's is_causal aligns it top-left
        mask = torch.arange(Sk)[None, :] <= torch.arange(Sq)[:, None] + (Sk - Sq)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}h{}kv{}q{}k{}d{}{}".format(*c[:6], "c" if c[6] else ""))
def test_attention_matches_torch_sdpa_within_int8_error(case, seed):
    B, H, KVH, Sq, Sk, D, causal = case
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, Sq, D, generator=g), torch.randn(B, KVH, Sk, D, generator=g),
               torch.randn(B, KVH, Sk, D, generator=g))
    r = flashnpu.attention(q, k, v, causal=causal, config="default", return_raw=True)
    assert isinstance(r.output, torch.Tensor) and r.output.dtype == torch.float32 and r.output.shape == q.shape
    assert r.raw.dtype == torch.int8
    lsb = r.scales["out"]
    ref = _sdpa(q.double(), k.double(), v.double(), causal)
    err = (r.output.double() - ref).abs() / lsb
    assert err.max().item() <= 2.0, f"max {err.max().item():.3f} LSB"
    assert err.mean().item() <= 0.35, f"mean {err.mean().item():.3f} LSB"
    # the NPU's own part: against float64 attention on the very INT8 inputs it got
    qi, ki, vi = (quantize(x.double().numpy(), r.scales[n]) for x, n in ((q, "q"), (k, "k"), (v, "v")))
    own = attention_float64(qi, ki, vi, q_scale=r.scales["q"], k_scale=r.scales["k"], v_scale=r.scales["v"],
                            causal=causal)
    assert np.abs(r.raw.numpy() * lsb - own).max() / lsb <= 1.0


def test_torch_in_torch_out_and_dtypes():
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(1, 2, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    out = flashnpu.attention(q, k, v, config="tiny")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    bf = flashnpu.attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), config="tiny")
    assert bf.dtype == torch.bfloat16
    qi = torch.randint(-128, 128, (1, 2, 8, 8), dtype=torch.int8, generator=g)
    r = flashnpu.attention(qi, qi, qi, q_scale=0.01, k_scale=0.01, v_scale=0.01, config="tiny", return_raw=True)
    assert r.output.dtype == torch.float32 and r.raw.dtype == torch.int8
    c = flashnpu.gemm(qi[0, 0], qi[0, 1], a_scale=1, b_scale=1, config="tiny", return_raw=True)
    assert c.raw.dtype == torch.int32
    assert torch.equal(c.raw, qi[0, 0].int() @ qi[0, 1].int())


def test_torch_errors_name_the_argument():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match="argument 'v' has the non-finite value nan"):
        flashnpu.attention(q, q, torch.full_like(q, float("nan")), config="tiny")
    with pytest.raises(ValueError, match="argument 'k' has dtype torch.bool"):
        flashnpu.attention(q, q > 0, q, config="tiny")
    with pytest.raises(ValueError, match="argument 'q' has dtype torch.complex64"):
        flashnpu.attention(q.to(torch.complex64), q, q, config="tiny")
