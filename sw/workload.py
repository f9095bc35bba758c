"""Workload specifications: what the user asks the NPU to compute.

A workload is independent of the hardware; :mod:`flashnpu.sw.compiler` maps it
onto an :class:`~flashnpu.sw.config.NPUConfig` (and raises ``CompileError``, a
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
from dataclasses import dataclass

__all__ = ["WorkloadError", "AttentionWorkload", "GemmWorkload", "MAX_SEQ", "MAX_DIM"]

#: Longest sequence: the vector unit's ``causal_offset`` is a signed 20-bit field.
MAX_SEQ = (1 << 19) - 1
#: Largest head_dim / GEMM size per dimension that the compiler's tile fields can address.
MAX_DIM = 1 << 16


class WorkloadError(ValueError):
    """An invalid workload. The message names the field, its value and the limit."""


def _check_size(obj, name, limit):
    v = getattr(obj, name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise WorkloadError(f"field '{name}' = {v!r}: must be an integer")
    if v < 1:
        raise WorkloadError(f"field '{name}' = {v}: must be at least 1")
    if v > limit:
        raise WorkloadError(f"field '{name}' = {v}: must be at most {limit}")


def _check_scale(obj, name):
    v = getattr(obj, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
        raise WorkloadError(f"field '{name}' = {v!r}: must be a positive finite number")


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
        if not isinstance(self.causal, bool):
            raise WorkloadError(f"field 'causal' = {self.causal!r}: must be a bool")
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
