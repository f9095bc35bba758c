"""Float64 reference attention and test-tensor generators.

The reference works on the *dequantized* INT8 inputs (``scale * int``), so
the only differences from the NPU's result are the NPU's fixed-point
arithmetic and its INT8 output; that is the error ``tests/test_accuracy.py``
bounds. Its semantics (softmax scale, GQA head mapping, bottom-right causal
alignment, zero output for a query that sees no key) are those documented in
:mod:`flashnpu.sw.workload`.
"""

from __future__ import annotations

import numpy as np

from flashnpu.sw.workload import AttentionWorkload, GemmWorkload

__all__ = ["quantize", "attention_float64", "reference_attention", "reference_gemm",
           "make_attention_tensors", "make_gemm_tensors", "make_tensors", "visible_mask"]


def quantize(x, scale: float) -> np.ndarray:
    """``clip(round(x / scale), -128, 127)`` as INT8 (round half to even, numpy's rule)."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) / scale), -128, 127).astype(np.int8)


def visible_mask(seq_q: int, seq_k: int, causal: bool) -> np.ndarray:
    """``[seq_q, seq_k]`` bool: query i sees key k (causal: ``k <= i + seq_k - seq_q``)."""
    if not causal:
        return np.ones((seq_q, seq_k), dtype=bool)
    i = np.arange(seq_q)[:, None]
    k = np.arange(seq_k)[None, :]
    return k <= i + (seq_k - seq_q)


def attention_float64(q, k, v, *, q_scale: float, k_scale: float, v_scale: float, causal: bool = False,
                      softmax_scale: float | None = None) -> np.ndarray:
    """Real-valued attention of INT8 ``q [B,H,Sq,D]``, ``k, v [B,KVH,Sk,D]`` (float64, ``[B,H,Sq,D]``).

    ``out = softmax(softmax_scale * qr kr^T, masked) vr`` with ``qr = q_scale*q`` etc.;
    query head ``h`` uses key/value head ``h // (H // KVH)``. Rows that see no key give 0.
    """
    q = np.asarray(q, dtype=np.float64) * q_scale
    k = np.asarray(k, dtype=np.float64) * k_scale
    v = np.asarray(v, dtype=np.float64) * v_scale
    B, H, Sq, D = q.shape
    KVH, Sk = k.shape[1], k.shape[2]
    if H % KVH:
        raise ValueError(f"heads {H} is not a multiple of kv_heads {KVH}")
    if softmax_scale is None:
        softmax_scale = 1.0 / np.sqrt(D)
    g = H // KVH
    kk = np.repeat(k, g, axis=1)
    vv = np.repeat(v, g, axis=1)
    s = softmax_scale * np.einsum("bhid,bhkd->bhik", q, kk)
    vis = visible_mask(Sq, Sk, causal)
    s = np.where(vis, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(vis, np.exp(s - m), 0.0)
    l = e.sum(axis=-1, keepdims=True)
    p = e / np.where(l > 0, l, 1.0)
    return np.einsum("bhik,bhkd->bhid", p, vv)


def reference_attention(wl: AttentionWorkload, tensors: dict) -> np.ndarray:
    """:func:`attention_float64` with the workload's scales, on ``tensors["Q"/"K"/"V"]``."""
    return attention_float64(tensors["Q"], tensors["K"], tensors["V"], q_scale=wl.q_scale, k_scale=wl.k_scale,
                             v_scale=wl.v_scale, causal=wl.causal, softmax_scale=wl.softmax_scale)


def reference_gemm(A, B) -> np.ndarray:
    """``A @ B`` in exact integers, wrapped to INT32 like the accumulators."""
    c = np.asarray(A, dtype=np.int64) @ np.asarray(B, dtype=np.int64)
    return (((c + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)).astype(np.int32)


def make_attention_tensors(wl: AttentionWorkload, rng: np.random.Generator, dist: str = "gaussian",
                           sigma: float = 1.0, peak: float = 20.0) -> dict:
    """INT8 ``Q, K, V`` for ``wl``: real values drawn, then quantized with the workload's scales.

    * ``"gaussian"``: every real element ~ N(0, sigma**2). With unit scales
      ``softmax_scale = 1/sqrt(D)``, the score spread is about ``sigma**2``.
    * ``"peaked"``: K, V ~ N(0, sigma**2); query row i of head h is a copy of one
      random key row of its kv head, scaled so that its score with that key is
      ``peak`` (in softmax units, before the workload's ``softmax_scale``
      rounding) while the other scores spread by about ``peak / sqrt(D)``: near
      one-hot softmax rows. The key is drawn among the keys the query sees.
    """
    B, H, KVH, Sq, Sk, D = wl.batch, wl.heads, wl.kv_heads, wl.seq_q, wl.seq_k, wl.head_dim
    k = rng.normal(0.0, sigma, (B, KVH, Sk, D))
    v = rng.normal(0.0, sigma, (B, KVH, Sk, D))
    if dist == "gaussian":
        q = rng.normal(0.0, sigma, (B, H, Sq, D))
    elif dist == "peaked":
        q = np.zeros((B, H, Sq, D))
        g = wl.group
        for i in range(Sq):
            n_vis = wl.visible_keys(i)
            idx = rng.integers(0, max(n_vis, 1), (B, H))
            for b in range(B):
                for h in range(H):
                    kr = k[b, h // g, idx[b, h]]
                    q[b, h, i] = kr * (peak / (wl.softmax_scale * float(kr @ kr)))
    else:
        raise ValueError(f"dist = {dist!r}: must be 'gaussian' or 'peaked'")
    return {"Q": quantize(q, wl.q_scale), "K": quantize(k, wl.k_scale), "V": quantize(v, wl.v_scale)}


def make_gemm_tensors(wl: GemmWorkload, rng: np.random.Generator) -> dict:
    """Uniform INT8 ``A [M,K]`` and ``B [K,N]`` over the full range."""
    return {"A": rng.integers(-128, 128, (wl.M, wl.K), dtype=np.int8),
            "B": rng.integers(-128, 128, (wl.K, wl.N), dtype=np.int8)}


def make_tensors(wl, seed: int) -> dict:
    """The default random inputs of a workload (attention: Gaussian; GEMM: uniform), from ``seed``."""
    rng = np.random.default_rng(seed)
    if isinstance(wl, AttentionWorkload):
        return make_attention_tensors(wl, rng)
    return make_gemm_tensors(wl, rng)
