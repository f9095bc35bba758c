"""Benchmark pictures (matplotlib, PNG): utilization, model accuracy, one tile's timeline."""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_bench", "plot_timeline"]

_UNIT_COLORS = {"load": "tab:blue", "store": "tab:cyan", "matrix": "tab:red",
                "vector": "tab:green", "sequencer": "tab:gray"}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_timeline(perf, path, *, start: int | None = None, length: int | None = None, title=""):
    """Gantt chart of the units from ``perf.timeline`` over ``[start, start + length)`` cycles."""
    plt = _plt()
    units = ["load", "store", "matrix", "vector"]
    t0 = start if start is not None else 0
    t1 = t0 + length if length is not None else perf.cycles
    fig, ax = plt.subplots(figsize=(10, 2.8))
    for unit, _pc, a, d in perf.timeline:
        if unit not in units or d < t0 or a > t1:
            continue
        ax.broken_barh([(max(a, t0), min(d, t1) - max(a, t0))], (units.index(unit) - 0.4, 0.8),
                       facecolors=_UNIT_COLORS[unit], edgecolor="black", linewidth=0.3)
    ax.set_yticks(range(len(units)), units)
    ax.set_xlim(t0, t1)
    ax.set_xlabel("cycle")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_bench(rows, config, out) -> list[Path]:
    """Utilization against sequence length, model against RTL cycles, and one attention timeline."""
    from flashnpu.sw.bench import SUITE
    from flashnpu.sw.perfmodel import predict
    plt = _plt()
    out = Path(out)
    paths = []

    attn = [r for r in rows if r["kind"] == "attention" and r["params"].get("head_dim") == 64
            and r["params"].get("heads") == 1]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for causal, style in ((False, "o-"), (True, "s--")):
        pts = sorted((r["params"]["seq"], r["util"]) for r in attn if r["params"]["causal"] == causal)
        if pts:
            ax.plot(*zip(*pts), style, label="causal" if causal else "non-causal")
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, 1)
    ax.set_xlabel("sequence length")
    ax.set_ylabel("PE utilization (RTL)")
    ax.set_title(f"attention, head dim 64, {config.name}")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "utilization.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.5, 4))
    xs = [r["rtl_cycles"] for r in rows]
    ys = [r["model_cycles"] for r in rows]
    ax.loglog(xs, ys, "o")
    lo, hi = min(xs + ys), max(xs + ys)
    ax.loglog([lo, hi], [lo, hi], "k:", linewidth=0.8)
    ax.set_xlabel("RTL cycles")
    ax.set_ylabel("model cycles")
    ax.set_title("performance model against RTL")
    fig.tight_layout()
    paths.append(out / "model_vs_rtl.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    case = next((c for c in SUITE if c.name == "attn-s256-d64"), None)
    if case is not None:
        from flashnpu.sw.compiler import compile_attention
        prog = compile_attention(case.workload(), config)
        perf = predict(config, prog.words)
        # A window in the middle of the run: the steady state of the tile pipeline.
        mats = [(a, d) for u, _pc, a, d in perf.timeline if u == "matrix"]
        mid = mats[len(mats) // 2][0] if mats else 0
        span = 4 * (mats[len(mats) // 2][1] - mid) if mats else perf.cycles
        paths.append(plot_timeline(perf, out / "timeline.png", start=mid, length=span,
                                   title=f"{case.name}: units in the steady state (model)"))
    return paths
