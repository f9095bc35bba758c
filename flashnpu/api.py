"""Arrays in, arrays out: :func:`attention` and :func:`gemm` for people who have tensors, not workloads.

Both take numpy arrays, or torch tensors when torch is installed (``pip
install 'flashnpu[torch]'``), build the workload, run it on a backend of
:mod:`flashnpu.driver` and give the result back in the kind of array they got.

Inputs and scales
-----------------
The NPU computes on INT8 values; a real value is ``scale * integer``.

* A **float** array (float16/32/64, torch bfloat16 too) is quantized here,
  per tensor, symmetric: ``scale = max|x| / 127`` (1.0 for an all-zero
  array), unless its scale argument (``q_scale``, ``k_scale``, ``v_scale``,
  ``a_scale``, ``b_scale``) is given, which then is the quantization step
  (values beyond ``127 * scale`` saturate).
* An **integer** array (int8, or any integer dtype with values in
  ``[-128, 127]``) is taken as it is; its scale argument is then required.

The scales used are reported back in :attr:`Result.scales`.

Shapes (as ``torch.nn.functional.scaled_dot_product_attention``)
-----------------------------------------------------------------
* ``attention``: ``q`` is ``(batch, heads, seq_q, head_dim)``, ``k`` and ``v``
  ``(batch, kv_heads, seq_k, head_dim)``; ``kv_heads`` is read from ``k`` and
  must divide ``heads`` (``kv_heads < heads`` is GQA, 1 is MQA: query head
  ``h`` uses key/value head ``h // (heads // kv_heads)``, torch's
  ``enable_gqa=True``). 3-D arrays ``(heads, seq, head_dim)`` mean batch 1.
  The output has ``q``'s shape.
* ``gemm``: ``a`` is ``(M, K)``, ``b`` ``(K, N)``, the output ``(M, N)``.

Semantics
---------
``scale`` is the softmax scale (default ``1/sqrt(head_dim)``). ``causal``
masks are **bottom-right aligned** (query ``i`` sees keys ``k <= i + seq_k -
seq_q``, see :mod:`flashnpu.sw.workload`): the same as torch's ``is_causal``
when ``seq_q == seq_k``; torch aligns top-left otherwise. A query that sees no
key outputs 0. The attention output is INT8 with ``out_scale`` (default
``v_scale``: it can never saturate, the output being a convex combination of
V rows); the GEMM output is the exact INT32 product, its real value
``a_scale * b_scale * C``.

Output
------
By default the float output (the array kind of ``q`` / ``a``; dtype that of
the input if it is floating, else float32). With ``return_raw=True`` a
:class:`Result`: the float output, the raw integers (INT8 for attention,
INT32 for GEMM), the scales, and the backend's
:class:`~flashnpu.driver.RunResult` (cycles, counters, program).
``backend="perf"`` predicts cycles without computing anything, so it needs
``return_raw=True`` and its ``output`` and ``raw`` are ``None``.

Bad input raises :class:`~flashnpu.sw.workload.WorkloadError` (a
``ValueError``), one line that names the argument.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from flashnpu.driver import BACKENDS, RunResult, run
from flashnpu.sw.reference import quantize
from flashnpu.sw.workload import AttentionWorkload, GemmWorkload, WorkloadError, as_positive_real

__all__ = ["Result", "attention", "gemm"]


@dataclass
class Result:
    """What :func:`attention` / :func:`gemm` return with ``return_raw=True``.

    ``output``: the float result (``None`` for ``backend="perf"``), numpy or
    torch like the input; ``raw``: the NPU's integers (attention INT8 with
    ``scales["out"]``, GEMM INT32 with ``scales["out"] = a_scale * b_scale``),
    same kind; ``scales``: every scale used, by tensor name (``q``, ``k``,
    ``v``, ``out`` or ``a``, ``b``, ``out``) plus ``softmax`` for attention;
    ``run``: the backend's :class:`~flashnpu.driver.RunResult`
    (``backend``, ``cycles``, ``counters``, ``program``).
    """
    output: object
    raw: object
    scales: dict
    run: RunResult
    workload: object = field(default=None, repr=False)

    @property
    def cycles(self) -> int | None:
        """The backend's cycle count (``None`` for ``"golden"``)."""
        return self.run.cycles


# ------------------------------------------------------------ input handling
def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def _to_numpy(x, name: str):
    """(numpy array, was it a torch tensor, its float dtype name or None)."""
    if _is_torch(x):
        import torch
        t = x.detach().cpu()
        if t.is_complex():
            raise WorkloadError(f"argument '{name}' has dtype {t.dtype}: expected a real float or int8 tensor")
        if t.dtype == torch.bool:
            raise WorkloadError(f"argument '{name}' has dtype torch.bool: expected a float or int8 tensor")
        if t.is_floating_point():
            return t.to(torch.float64).numpy(), True, t.dtype
        return t.numpy(), True, None
    if isinstance(x, (str, bytes)) or x is None or isinstance(x, numbers.Number):
        raise WorkloadError(f"argument '{name}' = {type(x).__name__}: expected an array "
                            "(numpy array or torch tensor)")
    try:
        a = np.asarray(x)
    except Exception as e:
        raise WorkloadError(f"argument '{name}' is not an array ({type(e).__name__})") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise WorkloadError(f"argument '{name}' has dtype {a.dtype}: expected a float or int8 array")
    return a, False, (a.dtype if np.issubdtype(a.dtype, np.floating) else None)


def _quantized(a: np.ndarray, name: str, scale, scale_name: str):
    """(INT8 array, scale) of one input: float arrays quantized, integer arrays checked."""
    if np.issubdtype(a.dtype, np.integer):
        if scale is None:
            raise WorkloadError(f"argument '{scale_name}' is missing: '{name}' is an integer ({a.dtype}) "
                                "array, give the real value of one step")
        scale = as_positive_real(scale, f"argument '{scale_name}'")
        if a.size and (a.min() < -128 or a.max() > 127):
            raise WorkloadError(f"argument '{name}' ({a.dtype}) has values in [{a.min()}, {a.max()}]: "
                                "expected int8 values in [-128, 127] (or pass float values to quantize)")
        return a.astype(np.int8), scale
    x = a.astype(np.float64)
    if not np.isfinite(x).all():
        bad = np.unravel_index(int(np.argmax(~np.isfinite(x))), x.shape)
        raise WorkloadError(f"argument '{name}' has the non-finite value {x[bad]} at "
                            f"{tuple(int(i) for i in bad)}: expected finite values")
    if scale is None:
        amax = float(np.max(np.abs(x))) if x.size else 0.0
        scale = amax / 127.0 if amax > 0 else 1.0
    else:
        scale = as_positive_real(scale, f"argument '{scale_name}'")
    return quantize(x, scale), scale


def _out(values: np.ndarray, torch_like: bool, dtype):
    """The float output in the caller's kind of array."""
    if torch_like:
        import torch
        return torch.from_numpy(np.ascontiguousarray(values)).to(dtype or torch.float32)
    return values.astype(dtype or np.float32)


def _raw(values: np.ndarray, torch_like: bool):
    if torch_like:
        import torch
        return torch.from_numpy(np.ascontiguousarray(values))
    return values


def _check_common(backend, return_raw):
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise WorkloadError(f"argument 'backend' = {backend!r}: must be 'golden', 'perf' or 'rtl'")
    if not isinstance(return_raw, (bool, np.bool_)):
        raise WorkloadError(f"argument 'return_raw' = {return_raw!r}: must be a bool")
    if backend == "perf" and not return_raw:
        raise WorkloadError("argument 'backend' = 'perf' predicts cycles and computes no output: "
                            "pass return_raw=True to get the Result (output None, cycles, counters)")


def _shape4(a: np.ndarray, name: str, dims: str) -> np.ndarray:
    if a.ndim == 3:
        return a[None]
    if a.ndim != 4:
        raise WorkloadError(f"argument '{name}' has shape {tuple(a.shape)}: expected 4-D {dims} "
                            "(or 3-D without the batch)")
    return a


# ------------------------------------------------------------ the operations
def attention(q, k, v, *, causal: bool = False, scale: float | None = None, backend: str = "golden",
              config="default", q_scale=None, k_scale=None, v_scale=None, out_scale=None,
              return_raw: bool = False, **backend_opts):
    """``softmax(scale * q k^T [, causal]) v`` on the NPU (see the module docstring for shapes and scales).

    ``kv_heads`` is ``k.shape[-3]`` (GQA/MQA when fewer than ``q``'s heads).
    ``backend_opts`` go to the backend (e.g. ``memory="fast"`` for ``"rtl"``).
    Returns the float output, or a :class:`Result` with ``return_raw=True``.
    """
    _check_common(backend, return_raw)
    arrays = {}
    for name, x in (("q", q), ("k", k), ("v", v)):
        arrays[name] = _to_numpy(x, name)
    nd = arrays["q"][0].ndim
    Q = _shape4(arrays["q"][0], "q", "(batch, heads, seq_q, head_dim)")
    K = _shape4(arrays["k"][0], "k", "(batch, kv_heads, seq_k, head_dim)")
    V = _shape4(arrays["v"][0], "v", "(batch, kv_heads, seq_k, head_dim)")
    if arrays["k"][0].ndim != nd or arrays["v"][0].ndim != nd:
        raise WorkloadError(f"arguments 'q', 'k', 'v' have {nd}, {arrays['k'][0].ndim}, {arrays['v'][0].ndim} "
                            "dimensions: give all three 4-D (or all 3-D)")
    B, H, Sq, D = Q.shape
    if K.shape[0] != B or K.shape[3] != D:
        raise WorkloadError(f"argument 'k' has shape {tuple(arrays['k'][0].shape)}: expected batch {B} and "
                            f"head_dim {D} as q {tuple(arrays['q'][0].shape)} (batch, kv_heads, seq_k, head_dim)")
    if V.shape != K.shape:
        raise WorkloadError(f"argument 'v' has shape {tuple(arrays['v'][0].shape)}: expected k's shape "
                            f"{tuple(arrays['k'][0].shape)}")
    KVH, Sk = K.shape[1], K.shape[2]
    if 0 in (B, H, Sq, D, KVH, Sk):
        raise WorkloadError(f"argument 'q' or 'k' has an empty dimension: q {tuple(Q.shape)}, k {tuple(K.shape)}")
    if H % KVH:
        raise WorkloadError(f"argument 'k' has {KVH} heads: must divide q's {H} heads (GQA)")
    if not isinstance(causal, (bool, np.bool_)):
        raise WorkloadError(f"argument 'causal' = {causal!r}: must be a bool")
    softmax_scale = 1.0 / math.sqrt(D) if scale is None else as_positive_real(scale, "argument 'scale'")
    qi, qs = _quantized(Q, "q", q_scale, "q_scale")
    ki, ks = _quantized(K, "k", k_scale, "k_scale")
    vi, vs = _quantized(V, "v", v_scale, "v_scale")
    os_ = vs if out_scale is None else as_positive_real(out_scale, "argument 'out_scale'")
    wl = AttentionWorkload(batch=B, heads=H, kv_heads=KVH, seq_q=Sq, seq_k=Sk, head_dim=D, causal=bool(causal),
                           q_scale=qs, k_scale=ks, v_scale=vs, out_scale=os_, softmax_scale=softmax_scale)
    res = run(wl, {"Q": qi, "K": ki, "V": vi}, backend=backend, config=config, **backend_opts)
    torch_like, dtype = arrays["q"][1], arrays["q"][2]
    scales = {"q": qs, "k": ks, "v": vs, "out": os_, "softmax": softmax_scale}
    if res.outputs is None:
        return Result(output=None, raw=None, scales=scales, run=res, workload=wl)
    o = res.outputs["O"]
    if nd == 3:
        o = o[0]
    out = _out(o.astype(np.float64) * os_, torch_like, dtype)
    if not return_raw:
        return out
    return Result(output=out, raw=_raw(o, torch_like), scales=scales, run=res, workload=wl)


def gemm(a, b, *, backend: str = "golden", config="default", a_scale=None, b_scale=None,
         return_raw: bool = False, **backend_opts):
    """``a @ b`` on the NPU: ``a (M, K)``, ``b (K, N)``, INT8 operands, exact INT32 product.

    The float output is ``a_scale * b_scale * C``; see the module docstring for
    the scales. Returns the float output, or a :class:`Result` with ``return_raw=True``.
    """
    _check_common(backend, return_raw)
    A, a_torch, a_dtype = _to_numpy(a, "a")
    Bm, _, _ = _to_numpy(b, "b")
    for name, x, dims in (("a", A, "(M, K)"), ("b", Bm, "(K, N)")):
        if x.ndim != 2 or 0 in x.shape:
            raise WorkloadError(f"argument '{name}' has shape {tuple(x.shape)}: expected a non-empty 2-D {dims}")
    if A.shape[1] != Bm.shape[0]:
        raise WorkloadError(f"argument 'b' has shape {tuple(Bm.shape)}: its rows must equal a's columns "
                            f"{A.shape[1]} (a (M, K) {tuple(A.shape)}, b (K, N))")
    ai, as_ = _quantized(A, "a", a_scale, "a_scale")
    bi, bs = _quantized(Bm, "b", b_scale, "b_scale")
    wl = GemmWorkload(M=A.shape[0], N=Bm.shape[1], K=A.shape[1])
    res = run(wl, {"A": ai, "B": bi}, backend=backend, config=config, **backend_opts)
    scales = {"a": as_, "b": bs, "out": as_ * bs}
    if res.outputs is None:
        return Result(output=None, raw=None, scales=scales, run=res, workload=wl)
    c = res.outputs["C"]
    out = _out(c.astype(np.float64) * (as_ * bs), a_torch, a_dtype)
    if not return_raw:
        return out
    return Result(output=out, raw=_raw(c, a_torch), scales=scales, run=res, workload=wl)
