"""The benchmark suite: RTL cycles against the performance model, utilization, DMA traffic.

``make bench`` (``flashnpu bench``) runs every default workload on the
default config: it compiles it, runs it on the Verilated NPU (bit-exact
against the golden model, or the row is marked failed), predicts it with
``sw/perfmodel.py`` and prints one table row. Long workloads run only with
``--full``. Results go to ``<output>/bench.json`` and ``<output>/bench.md``.
This is not a test: it prints numbers; the targets are shown beside them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flashnpu.sw.config import load_config

__all__ = ["BenchCase", "SUITE", "run_case", "cli_bench"]


@dataclass(frozen=True)
class BenchCase:
    name: str
    kind: str                      # "attention" or "gemm"
    params: dict
    full_only: bool = False        # too long for a routine run
    target: float | None = None    # PE utilization target (issue 6), if any

    def workload(self):
        if self.kind == "attention":
            from flashnpu.sw.workload import AttentionWorkload
            p = dict(self.params)
            seq = p.pop("seq")
            return AttentionWorkload(seq_q=seq, seq_k=seq, **p)
        from flashnpu.sw.workload import GemmWorkload
        return GemmWorkload(**self.params)


def _attn(name, seq, head_dim=64, causal=False, heads=1, kv_heads=None, **kw):
    return BenchCase(name, "attention", dict(seq=seq, head_dim=head_dim, causal=causal, heads=heads,
                                             kv_heads=kv_heads or heads, batch=1), **kw)


SUITE = (
    _attn("attn-s256-d64", 256),
    _attn("attn-s256-d64-causal", 256, causal=True),
    _attn("attn-s1024-d64", 1024, target=0.90),
    _attn("attn-s1024-d64-causal", 1024, causal=True, target=0.85),
    _attn("attn-s512-d128", 512, head_dim=128),
    _attn("attn-gqa-h4-kv1-s256-d64", 256, heads=4, kv_heads=1),
    _attn("attn-s4096-d64", 4096, full_only=True, target=0.95),
    _attn("attn-s4096-d64-causal", 4096, causal=True, full_only=True),
    BenchCase("gemm-256x256x256", "gemm", dict(M=256, N=256, K=256)),
    BenchCase("gemm-skinny-16x1024x1024", "gemm", dict(M=16, N=1024, K=1024)),
    BenchCase("gemm-skinny-1024x64x1024", "gemm", dict(M=1024, N=64, K=1024)),
    BenchCase("gemm-1024x1024x1024", "gemm", dict(M=1024, N=1024, K=1024), full_only=True, target=0.95),
)


def min_dma_bytes(case: BenchCase, workload) -> int:
    """Bytes the workload must move at least: every input once, every output once."""
    if case.kind == "gemm":
        w = workload
        return w.M * w.K + w.K * w.N + 4 * w.M * w.N
    w = workload
    q = w.batch * w.heads * w.seq_q * w.head_dim
    kv = 2 * w.batch * w.kv_heads * w.seq_k * w.head_dim
    return q + kv + q


def _bottleneck(row) -> str:
    """The unit that limits a run: the busiest one, or the tokens if none is busy."""
    fr = {"array": row["util"], "vector": row["vector_busy"], "dma": row["dma_busy"]}
    unit, val = max(fr.items(), key=lambda kv: kv[1])
    if val < 0.6:
        return "latency/tokens"
    return unit


def run_case(case: BenchCase, config, *, lat: int = 1, memory: str = "fast", seed: int = 0) -> dict:
    """Compile, simulate on the RTL, predict with the model; return one result row."""
    from flashnpu.sw import compiler, reference
    from flashnpu.sw.driver import run
    from flashnpu.sw.perfmodel import predict

    cfg = load_config(config)
    wl = case.workload()
    rng = np.random.default_rng(seed)
    if case.kind == "attention":
        tensors = reference.make_attention_tensors(wl, rng)
    else:
        tensors = {"A": rng.integers(-128, 128, (wl.M, wl.K), dtype=np.int8),
                   "B": rng.integers(-128, 128, (wl.K, wl.N), dtype=np.int8)}
    t0 = time.perf_counter()
    rtl = run(wl, tensors, backend="rtl", config=cfg, memory=memory, lat=lat, check_golden=True)
    wall = time.perf_counter() - t0
    prog = rtl.program
    t1 = time.perf_counter()
    model = predict(cfg, prog.words, lat=lat)
    model_s = time.perf_counter() - t1
    c = rtl.counters
    cycles = rtl.cycles
    row = {
        "name": case.name, "kind": case.kind, "params": case.params,
        "rtl_cycles": cycles, "model_cycles": model.cycles,
        "model_error": (model.cycles - cycles) / cycles,
        "util": prog.macs_useful / (cfg.pes * cycles),
        "target": case.target,
        "matrix_busy": c["MATRIX_BUSY"] / cycles,
        "vector_busy": c["VECTOR_BUSY"] / cycles,
        "load_busy": c["LOAD_BUSY"] / cycles, "store_busy": c["STORE_BUSY"] / cycles,
        "dma_busy": max(c["LOAD_BUSY"], c["STORE_BUSY"]) / cycles,
        "dma_bytes": c["BYTES_READ"] + c["BYTES_WRITTEN"],
        "dma_bytes_min": min_dma_bytes(case, wl),
        "bit_exact": rtl.golden_match,
        "sim_wall_s": wall, "sim_cycles_per_s": cycles / rtl.sim_wall_s if rtl.sim_wall_s else None,
        "model_wall_s": model_s, "model_speedup": (rtl.sim_wall_s / model_s) if model_s else None,
        "counters": c,
    }
    row["bottleneck"] = _bottleneck(row)
    return row


COLUMNS = (
    ("workload", "name", "{}"),
    ("RTL cycles", "rtl_cycles", "{:,}"),
    ("model cycles", "model_cycles", "{:,}"),
    ("model err", "model_error", "{:+.2%}"),
    ("PE util", "util", "{:.1%}"),
    ("target", "target", "{:.0%}"),
    ("vector busy", "vector_busy", "{:.1%}"),
    ("DMA busy", "dma_busy", "{:.1%}"),
    ("DMA bytes / min", "dma_ratio", "{:.2f}x"),
    ("bottleneck", "bottleneck", "{}"),
    ("bit-exact", "bit_exact", "{}"),
    ("sim wall", "sim_wall_s", "{:.1f} s"),
)


def markdown_table(rows) -> str:
    head = "| " + " | ".join(c[0] for c in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    lines = [head, sep]
    for r in rows:
        r = dict(r, dma_ratio=r["dma_bytes"] / r["dma_bytes_min"])
        cells = []
        for _, key, fmt in COLUMNS:
            v = r.get(key)
            cells.append("-" if v is None else fmt.format(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cli_bench(args) -> int:
    cfg = load_config(getattr(args, "config", None) or "default")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    cases = [c for c in SUITE if (args.full or not c.full_only)
             and (not args.only or args.only in c.name)]
    skipped = [c.name for c in SUITE if c.full_only and not args.full]
    rows = []
    t0 = time.perf_counter()
    for case in cases:
        print(f"[bench] {case.name} ...", flush=True)
        row = run_case(case, cfg)
        rows.append(row)
        print(f"[bench] {case.name}: {row['rtl_cycles']:,} cycles, util {row['util']:.1%}, "
              f"model err {row['model_error']:+.2%}, {row['sim_wall_s']:.1f} s", flush=True)
        (out / "bench.json").write_text(json.dumps({"config": cfg.name, "rows": rows}, indent=1, default=str))
    table = markdown_table(rows)
    note = ""
    if skipped:
        note = "\n\nNot run (long; use --full): " + ", ".join(skipped)
    text = f"# flashnpu bench ({cfg.name}, {time.perf_counter() - t0:.0f} s)\n\n{table}{note}\n"
    (out / "bench.md").write_text(text)
    print(text)
    if getattr(args, "plot", False):
        from flashnpu.sw.plots import plot_bench
        for p in plot_bench(rows, cfg, out):
            print(f"[bench] wrote {p}")
    return 0 if all(r["bit_exact"] for r in rows) else 1
