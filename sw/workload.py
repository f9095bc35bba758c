"""Workload specifications: what the user asks the NPU to compute.

A workload is independent of the hardware; :mod:`flashnpu.sw.compiler` maps it
onto an :class:`~flashnpu.spec.config.NPUConfig` (and raises ``CompileError``, a
:class:`WorkloadError`, when it cannot fit). Invalid specs are rejected here,
with :class:`WorkloadError` naming the field, its value and the limit.

Attention semantics (what :mod:`flashnpu.sw.reference` computes in float64)::

    S[b,h,i,k] = softmax_scale * (q_scale*Q[b,h,i,:]) . (k_scale*K[b,h//g,k,:])     g = heads // kv_heads
    P = softmax over the keys k that query i sees
    out[b,h,i,:] = (sum_k P[i,k] * v_scale*V[b,h//g,k,:]) / out_scale, rounded and saturated to INT8

Query ``i`` sees key ``k`` when ``k < seq_k`` and, if ``causal``, when
``k <= i + (seq_k - seq_q)``: the causal mask is **bottom-right aligned**, so
the last query sees every key (the usual convention for decoding with a KV
cache, and the plain lower triangle when ``seq_q == seq_k``). A query that sees
no key at all (only possible when ``causal`` and ``seq_q > seq_k``) outputs 0.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["WorkloadError", "AttentionWorkload", "GemmWorkload", "MAX_SEQ", "MAX_DIM",
           "as_count", "as_positive_real", "check_tensors"]

#: Longest sequence: the vector unit's ``causal_offset`` is a signed 20-bit field.
MAX_SEQ = (1 << 19) - 1
#: Largest head_dim / GEMM size per dimension that the compiler's tile fields can address.
MAX_DIM = 1 << 16


class WorkloadError(ValueError):
    """An invalid workload. The message names the field, its value and the limit."""


def _short(v) -> str:
    """A one-line ``repr`` of a user's value, at most about 80 characters (numpy scalars as plain values)."""
    if isinstance(v, np.generic) and v.dtype != object:
        v = v.item()
    try:
        r = repr(v)
    except Exception:
        r = f"<{type(v).__name__}>"
    r = " ".join(r.split())
    return r if len(r) <= 80 else r[:77] + "..."


def as_count(v, what: str, *, low: int = 1, high: int | None = None) -> int:
    """``v`` as a Python int in ``[low, high]``: any integral number (``int``, ``np.int64``), not a bool.

    ``what`` names the value in the message (``"field 'seq_q'"``, ``"argument 'seed'"``).
    """
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise WorkloadError(f"{what} = {_short(v)}: must be an integer")
    v = int(v)
    if v < low:
        raise WorkloadError(f"{what} = {v}: must be at least {low}")
    if high is not None and v > high:
        raise WorkloadError(f"{what} = {v}: must be at most {high}")
    return v


def as_positive_real(v, what: str) -> float:
    """``v`` as a positive finite Python float: any real number (``float``, ``np.float32``, ``int``), not a bool."""
    if not isinstance(v, (bool, np.bool_)) and isinstance(v, numbers.Real):
        try:
            f = float(v)
        except (OverflowError, ValueError, TypeError):
            f = math.nan
        if math.isfinite(f) and f > 0:
            return f
    raise WorkloadError(f"{what} = {_short(v)}: must be a positive finite number")


def _check_size(obj, name, limit):
    object.__setattr__(obj, name, as_count(getattr(obj, name), f"field '{name}'", high=limit))


def _check_scale(obj, name):
    object.__setattr__(obj, name, as_positive_real(getattr(obj, name), f"field '{name}'"))


@dataclass(frozen=True)
class AttentionWorkload:
    """Multi-head attention with INT8 Q, K, V and INT8 output.

    Q is ``[batch, heads, seq_q, head_dim]``, K and V ``[batch, kv_heads,
    seq_k, head_dim]`` (``kv_heads < heads`` is GQA, ``kv_heads == 1`` MQA:
    query head ``h`` uses key/value head ``h // (heads // kv_heads)``); the
    output is ``[batch, heads, seq_q, head_dim]``. Real value = scale * integer.
    ``softmax_scale`` defaults to ``1/sqrt(head_dim)``. The default scales
    (1/32) suit unit-variance data; ``out_scale == v_scale`` can never
    saturate (the output is a convex combination of V rows).
    """

    batch: int
    heads: int
    kv_heads: int
    seq_q: int
    seq_k: int
    head_dim: int
    causal: bool = False
    q_scale: float = 1 / 32
    k_scale: float = 1 / 32
    v_scale: float = 1 / 32
    out_scale: float = 1 / 32
    softmax_scale: float | None = None

    def __post_init__(self):
        for name, limit in (("batch", 1 << 16), ("heads", 1 << 16), ("kv_heads", 1 << 16),
                            ("seq_q", MAX_SEQ), ("seq_k", MAX_SEQ), ("head_dim", MAX_DIM)):
            _check_size(self, name, limit)
        if self.heads % self.kv_heads:
            raise WorkloadError(f"field 'kv_heads' = {self.kv_heads}: must divide heads = {self.heads} "
                                "(each key/value head serves a whole group of query heads)")
        if not isinstance(self.causal, (bool, np.bool_)):
            raise WorkloadError(f"field 'causal' = {_short(self.causal)}: must be a bool")
        object.__setattr__(self, "causal", bool(self.causal))
        for name in ("q_scale", "k_scale", "v_scale", "out_scale"):
            _check_scale(self, name)
        if self.softmax_scale is None:
            object.__setattr__(self, "softmax_scale", 1.0 / math.sqrt(self.head_dim))
        _check_scale(self, "softmax_scale")

    @property
    def group(self) -> int:
        """Query heads per key/value head."""
        return self.heads // self.kv_heads

    @property
    def causal_shift(self) -> int:
        """Query ``i`` sees keys ``k <= i + causal_shift`` when causal (bottom-right alignment)."""
        return self.seq_k - self.seq_q

    def visible_keys(self, i: int) -> int:
        """How many keys query ``i`` sees."""
        if not self.causal:
            return self.seq_k
        return max(0, min(self.seq_k, i + self.causal_shift + 1))

    @property
    def visible_pairs(self) -> int:
        """(query, key) pairs that enter the softmax, per (batch, head)."""
        if not self.causal:
            return self.seq_q * self.seq_k
        return sum(self.visible_keys(i) for i in range(self.seq_q))

    @property
    def macs(self) -> int:
        """Useful MACs: Q K^T and P V over the visible pairs only."""
        return 2 * self.batch * self.heads * self.visible_pairs * self.head_dim

    def shapes(self) -> dict:
        return {"Q": (self.batch, self.heads, self.seq_q, self.head_dim),
                "K": (self.batch, self.kv_heads, self.seq_k, self.head_dim),
                "V": (self.batch, self.kv_heads, self.seq_k, self.head_dim),
                "O": (self.batch, self.heads, self.seq_q, self.head_dim)}

    #: Input tensors (all INT8) and what their dimensions are.
    INPUTS = {"Q": "[batch, heads, seq_q, head_dim]", "K": "[batch, kv_heads, seq_k, head_dim]",
              "V": "[batch, kv_heads, seq_k, head_dim]"}


@dataclass(frozen=True)
class GemmWorkload:
    """``C[M,N] = A[M,K] @ B[K,N]``: INT8 operands, INT32 result wrapping like the accumulators."""

    M: int
    N: int
    K: int

    def __post_init__(self):
        for name in ("M", "N", "K"):
            _check_size(self, name, MAX_DIM)

    @property
    def macs(self) -> int:
        return self.M * self.N * self.K

    def shapes(self) -> dict:
        return {"A": (self.M, self.K), "B": (self.K, self.N), "C": (self.M, self.N)}

    #: Input tensors (all INT8) and what their dimensions are.
    INPUTS = {"A": "[M, K]", "B": "[K, N]"}


def check_tensors(workload, tensors, argument: str = "tensors") -> dict:
    """``tensors`` checked against ``workload``'s inputs and returned as a new dict of INT8 arrays.

    ``tensors`` must map exactly the workload's input names (``Q``, ``K``,
    ``V`` or ``A``, ``B``) to integer arrays (numpy arrays or nested lists) of
    the shapes in :meth:`shapes`, every value in ``[-128, 127]``; any integer
    dtype is accepted and converted. Anything else raises :class:`WorkloadError`
    (one line, naming ``argument``, the tensor and what was expected).
    """
    if not isinstance(workload, (AttentionWorkload, GemmWorkload)):
        raise WorkloadError(f"argument 'workload' = {_short(workload)}: must be an AttentionWorkload "
                            "or a GemmWorkload")
    kind = "attention" if isinstance(workload, AttentionWorkload) else "GEMM"
    names = list(workload.INPUTS)
    needs = f"{kind} needs {', '.join(names)}: INT8 arrays"
    if not isinstance(tensors, Mapping):
        raise WorkloadError(f"argument '{argument}' = {_short(tensors)}: must be a dict mapping "
                            f"tensor names to arrays ({needs})")
    missing = [n for n in names if n not in tensors]
    if missing:
        raise WorkloadError(f"argument '{argument}': missing tensor{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(map(repr, missing))} ({needs})")
    extra = [k for k in tensors if k not in workload.INPUTS]
    if extra:
        raise WorkloadError(f"argument '{argument}': unexpected tensor {_short(extra[0])} ({needs}, "
                            "nothing else)")
    shapes = workload.shapes()
    out = {}
    for n in names:
        what = f"argument '{argument}': tensor '{n}'"
        want = f"{shapes[n]} = {workload.INPUTS[n]}"
        v = tensors[n]
        try:
            a = np.asarray(v)
        except Exception as e:           # e.g. ragged nested lists
            raise WorkloadError(f"{what} is not an array ({type(e).__name__}): expected an INT8 array "
                                f"of shape {want}") from None
        if a.dtype == object or not (np.issubdtype(a.dtype, np.integer)):
            raise WorkloadError(f"{what} has dtype {a.dtype}: expected int8 (integers in [-128, 127]; "
                                "quantize real values first, e.g. flashnpu.sw.reference.quantize)")
        if tuple(a.shape) != tuple(shapes[n]):
            raise WorkloadError(f"{what} has shape {tuple(a.shape)}: expected {want}")
        if a.dtype != np.int8:
            if a.size and (a.min() < -128 or a.max() > 127):
                bad = np.unravel_index(int(np.argmax((a < -128) | (a > 127))), a.shape)
                raise WorkloadError(f"{what} ({a.dtype}) has value {int(a[bad])} at {tuple(map(int, bad))}: "
                                    "expected int8 values in [-128, 127]")
            a = a.astype(np.int8)
        out[n] = a
    return out
