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

from flashnpu.sw.workload import (AttentionWorkload, GemmWorkload, WorkloadError, as_count, as_positive_real,
                                  check_tensors)

__all__ = ["ACCURACY_FRAC_WITHIN_1LSB", "ACCURACY_MAX_LSB", "error_lsb", "quantize", "attention_float64", "reference_attention", "reference_gemm",
           "make_attention_tensors", "make_gemm_tensors", "make_tensors", "visible_mask"]


#: The accuracy promise of ``docs/numerics.md`` for attention against :func:`attention_float64`, in
#: LSB of the output scale: this fraction of the elements within 1 LSB, and none beyond the maximum.
ACCURACY_FRAC_WITHIN_1LSB = 0.999
ACCURACY_MAX_LSB = 2.0


def error_lsb(out, ref, out_scale: float) -> np.ndarray:
    """``|out * out_scale - ref|`` in LSB of ``out_scale`` (``out``: the NPU's INT8 output)."""
    return np.abs(np.asarray(out, dtype=np.float64) * out_scale - ref) / out_scale


def quantize(x, scale: float) -> np.ndarray:
    """``clip(round(x / scale), -128, 127)`` as INT8 (round half to even, numpy's rule).

    ``x`` must be real and finite (a NaN or infinity has no INT8 value), ``scale``
    a positive finite number.
    """
    scale = as_positive_real(scale, "argument 'scale'")
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise WorkloadError(f"argument 'x' is not an array of real numbers ({type(e).__name__}: "
                            f"{(str(e).splitlines() or [''])[0][:100]})") from None
    q = a / scale
    if not np.isfinite(q).all():
        raise WorkloadError("argument 'x' has a NaN or infinite value (or x / scale overflows): "
                            "expected finite real values")
    return np.clip(np.rint(q), -128, 127).astype(np.int8)


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
    scales = {n: as_positive_real(v_, f"argument '{n}'")
              for n, v_ in (("q_scale", q_scale), ("k_scale", k_scale), ("v_scale", v_scale))}
    arrays = {}
    for n, a in (("q", q), ("k", k), ("v", v)):
        try:
            a = np.asarray(a)
        except Exception as e:
            raise WorkloadError(f"argument '{n}' is not an array ({type(e).__name__})") from None
        real = a.dtype != object and (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating))
        if not real or a.ndim != 4 or (np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all()):
            raise WorkloadError(f"argument '{n}' is a {a.dtype} array of shape {a.shape}: expected a 4-D "
                                "array of finite real values (q [B, H, Sq, D], k and v [B, KVH, Sk, D])")
        arrays[n] = a
    B, H, Sq, D = arrays["q"].shape
    if arrays["k"].shape != arrays["v"].shape or arrays["k"].shape[0] != B or arrays["k"].shape[3] != D:
        raise WorkloadError(f"arguments 'k', 'v' have shapes {arrays['k'].shape}, {arrays['v'].shape}: "
                            f"expected both [B, KVH, Sk, D] = [{B}, KVH, Sk, {D}] for q {arrays['q'].shape}")
    KVH, Sk = arrays["k"].shape[1], arrays["k"].shape[2]
    if KVH == 0 or H % KVH:
        raise WorkloadError(f"argument 'k' has {KVH} heads: must divide q's {H} heads (GQA)")
    softmax_scale = 1.0 / np.sqrt(D) if softmax_scale is None else \
        as_positive_real(softmax_scale, "argument 'softmax_scale'")
    q = arrays["q"].astype(np.float64) * scales["q_scale"]
    k = arrays["k"].astype(np.float64) * scales["k_scale"]
    v = arrays["v"].astype(np.float64) * scales["v_scale"]
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
    """:func:`attention_float64` with the workload's scales, on ``tensors["Q"/"K"/"V"]``.

    ``tensors`` is checked as :func:`flashnpu.driver.run` checks it
    (:func:`~flashnpu.sw.workload.check_tensors`).
    """
    if not isinstance(wl, AttentionWorkload):
        raise WorkloadError(f"argument 'wl' = {type(wl).__name__}: must be an AttentionWorkload")
    tensors = check_tensors(wl, tensors)
    return attention_float64(tensors["Q"], tensors["K"], tensors["V"], q_scale=wl.q_scale, k_scale=wl.k_scale,
                             v_scale=wl.v_scale, causal=wl.causal, softmax_scale=wl.softmax_scale)


def reference_gemm(A, B) -> np.ndarray:
    """``A @ B`` in exact integers, wrapped to INT32 like the accumulators.

    ``A [M, K]`` and ``B [K, N]`` are integer arrays with values in the INT8 range.
    """
    arrays = {}
    for n, x in (("A", A), ("B", B)):
        try:
            x = np.asarray(x)
        except Exception as e:
            raise WorkloadError(f"argument '{n}' is not an array ({type(e).__name__})") from None
        if x.dtype == object or not np.issubdtype(x.dtype, np.integer) or x.ndim != 2:
            raise WorkloadError(f"argument '{n}' is a {x.dtype} array of shape {x.shape}: expected a 2-D "
                                "integer array (A [M, K], B [K, N])")
        if x.size and (x.min() < -128 or x.max() > 127):
            raise WorkloadError(f"argument '{n}' has values in [{x.min()}, {x.max()}]: expected int8 "
                                "values in [-128, 127]")
        arrays[n] = x.astype(np.int64)
    if arrays["A"].shape[1] != arrays["B"].shape[0]:
        raise WorkloadError(f"arguments 'A' {arrays['A'].shape} and 'B' {arrays['B'].shape}: A's columns "
                            "must equal B's rows (A [M, K], B [K, N])")
    c = arrays["A"] @ arrays["B"]
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
    if not isinstance(wl, AttentionWorkload):
        raise WorkloadError(f"argument 'wl' = {type(wl).__name__}: must be an AttentionWorkload")
    _check_rng(rng)
    sigma = as_positive_real(sigma, "argument 'sigma'")
    peak = as_positive_real(peak, "argument 'peak'")
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
        raise WorkloadError(f"argument 'dist' = {dist!r}: must be 'gaussian' or 'peaked'")
    return {"Q": quantize(q, wl.q_scale), "K": quantize(k, wl.k_scale), "V": quantize(v, wl.v_scale)}


def make_gemm_tensors(wl: GemmWorkload, rng: np.random.Generator) -> dict:
    """Uniform INT8 ``A [M,K]`` and ``B [K,N]`` over the full range."""
    if not isinstance(wl, GemmWorkload):
        raise WorkloadError(f"argument 'wl' = {type(wl).__name__}: must be a GemmWorkload")
    _check_rng(rng)
    return {"A": rng.integers(-128, 128, (wl.M, wl.K), dtype=np.int8),
            "B": rng.integers(-128, 128, (wl.K, wl.N), dtype=np.int8)}


def make_tensors(wl, seed: int) -> dict:
    """The default random inputs of a workload (attention: Gaussian; GEMM: uniform), from ``seed`` (an int >= 0)."""
    rng = np.random.default_rng(as_count(seed, "argument 'seed'", low=0))
    if isinstance(wl, AttentionWorkload):
        return make_attention_tensors(wl, rng)
    if isinstance(wl, GemmWorkload):
        return make_gemm_tensors(wl, rng)
    raise WorkloadError(f"argument 'wl' = {type(wl).__name__}: must be an AttentionWorkload or a GemmWorkload")


def _check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise WorkloadError(f"argument 'rng' = {type(rng).__name__}: must be a numpy.random.Generator "
                            "(numpy.random.default_rng(seed))")
