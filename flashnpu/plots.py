"""Benchmark pictures (matplotlib, PNG): utilization, model against RTL, one tile's timeline.

``flashnpu bench --plot`` writes them next to ``bench.json``:

* ``utilization.png``: PE utilization against sequence length (attention,
  head dim 64): the RTL points of the run, the model's curve over 128..4096
  (cheap: compile and predict only), the targets.
* ``model_vs_rtl.png``: model cycles against RTL cycles per workload, and the
  model's error per workload.
* ``timeline.png``: the units during a few KV steps of an attention tile in the
  steady state (the model's timeline, one lane per instruction in flight).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_bench", "plot_utilization", "plot_model_vs_rtl", "plot_timeline"]

_UNIT_COLORS = {"load": "#4c72b0", "store": "#64b5cd", "matrix": "#c44e52",
                "vector": "#55a868", "sequencer": "#8c8c8c"}

#: Width of the timeline's axes in pixels and of one label character (fontsize 7), to fit labels in bars.
_PLOT_WIDTH_PX = 1500
_CHAR_PX = 6.8

#: Sequence lengths of the model's utilization curve.
_MODEL_SEQS = (128, 256, 512, 1024, 2048, 4096)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _draw_units(ax, perf, words, t0: int, t1: int, *, regions=None, labels=True):
    """One row per unit over cycles ``[t0, t1)``. An instruction is a solid bar from the cycle its unit
    took it until the unit takes the next one (or its done), and a thin bar for the rest of the time it
    is in flight (pipeline latency, outstanding DMA bursts) while the next one already runs."""
    from flashnpu.sw.trace import UNITS, instruction_label
    units = [u for u in UNITS if u != "sequencer"]
    length = t1 - t0
    for unit in units:
        y = len(units) - 1 - units.index(unit)
        mine = sorted((a, max(d, a + 1), pc) for u, pc, a, d in perf.timeline if u == unit)
        for i, (a, d, pc) in enumerate(mine):
            solid_end = min(d, mine[i + 1][0]) if i + 1 < len(mine) else d
            if d <= t0 or a >= t1:
                continue
            lo, hi = max(a, t0), min(solid_end, t1)
            color = _UNIT_COLORS[unit]
            if hi > lo:
                ax.broken_barh([(lo, hi - lo)], (y - 0.36, 0.72), facecolors=color, edgecolor="black",
                               linewidth=0.5)
            if d > solid_end and solid_end < t1:
                tlo = max(solid_end, t0)
                ax.broken_barh([(tlo, min(d, t1) - tlo)], (y - 0.36, 0.12), facecolors=color,
                               edgecolor="none", alpha=0.55)
            if not labels or hi <= lo:
                continue
            text = instruction_label(words[pc], regions).removeprefix("vector.")
            width_px = (hi - lo) / length * _PLOT_WIDTH_PX
            if width_px < _CHAR_PX * len(text):              # two lines if one does not fit
                text = text.replace(" ", "\n", 1)
            if width_px >= _CHAR_PX * max(len(t) for t in text.split("\n")):
                ax.text((lo + hi) / 2, y + 0.05, text, ha="center", va="center", fontsize=7,
                        color="white", linespacing=0.9)
    ax.set_yticks(range(len(units)), list(reversed(units)))
    ax.set_ylim(-0.6, len(units) - 0.4)
    ax.set_xlim(t0, t1)
    ax.grid(axis="x", linestyle=":", linewidth=0.5)


def plot_timeline(perf, words, path, *, windows, regions: dict | None = None, title: str = "") -> Path:
    """Per-unit Gantt charts of ``perf.timeline``, one panel per ``(start, length, caption)`` of
    ``windows``; only the last panel names its instructions (``trace.instruction_label``), and the
    others shade the range of the next panel."""
    plt = _plt()
    fig, axes = plt.subplots(len(windows), 1, figsize=(13, 2.6 * len(windows) + 0.6), squeeze=False)
    for k, (ax, (start, length, caption)) in enumerate(zip(axes[:, 0], windows)):
        last = k == len(windows) - 1
        _draw_units(ax, perf, words, start, start + length, regions=regions, labels=last)
        if not last:
            nxt = windows[k + 1]
            ax.axvspan(nxt[0], nxt[0] + nxt[1], color="gold", alpha=0.25, zorder=0)
        ax.set_title(caption, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("cycle")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return Path(path)


def plot_utilization(rows, config, path) -> Path:
    """PE utilization against sequence length: attention, head dim 64, one head (RTL and model)."""
    from flashnpu.bench import SUITE
    from flashnpu.sw.compiler import compile_workload
    from flashnpu.sw.perfmodel import predict
    from flashnpu.sw.workload import AttentionWorkload
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for causal, color, marker in ((False, "tab:blue", "o"), (True, "tab:orange", "s")):
        kind = "causal" if causal else "non-causal"
        model = []
        for seq in _MODEL_SEQS:
            prog = compile_workload(AttentionWorkload(batch=1, heads=1, kv_heads=1, seq_q=seq, seq_k=seq,
                                                      head_dim=64, causal=causal), config)
            perf = predict(config, prog.words)
            model.append(prog.macs_useful / (config.pes * perf.cycles))
        ax.plot(_MODEL_SEQS, model, ":", color=color, linewidth=1.2, label=f"{kind}, model")
        pts = sorted((r["params"]["seq"], r["util"]) for r in rows
                     if r["kind"] == "attention" and r["params"]["head_dim"] == 64
                     and r["params"]["heads"] == 1 and r["params"]["causal"] == causal)
        if pts:
            ax.plot(*zip(*pts), marker + "-", color=color, label=f"{kind}, RTL")
            for x, y in pts:
                ax.annotate(f"{y:.2%}" if y > 0.995 else f"{y:.1%}", (x, y), textcoords="offset points",
                            xytext=(6, -11) if causal else (0, 7), ha="left" if causal else "center",
                            fontsize=8, color=color)
        for c in SUITE:
            if c.target is not None and c.kind == "attention" and c.params["head_dim"] == 64 \
                    and c.params["causal"] == causal:
                x = c.params["seq"]
                # Left of the point, so that the RTL labels (above, right) stay clear.
                ax.plot([x / 1.3, x / 1.04], [c.target] * 2, "--", color=color, linewidth=1.5)
                ax.annotate(f"target {c.target:.0%}", (x / 1.3, c.target), textcoords="offset points",
                            xytext=(-3, 0), ha="right", va="center", fontsize=7, color=color)
    ax.plot([], [], "--", color="gray", linewidth=1.5, label="target (RTL must reach)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(_MODEL_SEQS, [str(s) for s in _MODEL_SEQS])
    ax.set_xlim(_MODEL_SEQS[0] / 1.3, _MODEL_SEQS[-1] * 1.6)
    ax.set_ylim(0.4, 1.05)
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_xlabel("sequence length (seq_q = seq_k)")
    ax.set_ylabel("PE utilization")
    ax.set_title(f"Attention, head dim 64, one head, config {config.name} ({config.dim}x{config.dim})",
                 fontsize=10)
    ax.grid(linestyle=":", linewidth=0.5)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return Path(path)


def plot_model_vs_rtl(rows, path) -> Path:
    """Model cycles against RTL cycles (log-log, y = x dotted) and the model's error per workload."""
    plt = _plt()
    rows = [r for r in rows if r.get("model_cycles") is not None]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 0.32 * len(rows) + 3.2),
                                 gridspec_kw={"width_ratios": [1, 1.3]})
    xs = [r["rtl_cycles"] for r in rows]
    ys = [r["model_cycles"] for r in rows]
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    ax.loglog(xs, ys, "o", color="tab:blue")
    lo, hi = min(xs + ys) / 1.5, max(xs + ys) * 1.5
    ax.loglog([lo, hi], [lo, hi], "k:", linewidth=0.8, label="model = RTL")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 3.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        axis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlabel("RTL cycles")
    ax.set_ylabel("model cycles")
    ax.set_title("Performance model against the RTL", fontsize=10)
    ax.grid(which="major", linestyle=":", linewidth=0.5)
    ax.legend(fontsize=8, loc="upper left")
    errs = [100 * r["model_error"] for r in rows]
    names = [r["name"] for r in rows]
    pos = range(len(rows))[::-1]
    bx.barh(list(pos), errs, color=["tab:red" if abs(e) > 5 else "tab:blue" for e in errs])
    bx.set_yticks(list(pos), names, fontsize=8)
    bx.axvline(0, color="black", linewidth=0.8)
    for p, e, r in zip(pos, errs, rows):
        diff = r["model_cycles"] - r["rtl_cycles"]
        bx.annotate(f"{e:+.1f}% ({diff:+,} cycles)", (e, p), textcoords="offset points", xytext=(4 if e >= 0 else -4, 0),
                    ha="left" if e >= 0 else "right", va="center", fontsize=8)
    span = max(5.0, max(abs(e) for e in errs) * 1.35) if errs else 5.0
    bx.set_xlim(-span, span)
    bx.set_xlabel("model error (model - RTL) / RTL, %")
    bx.set_title("Model error per workload (red: beyond 5 %)", fontsize=10)
    bx.grid(axis="x", linestyle=":", linewidth=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return Path(path)


def plot_bench(rows, config, out) -> list[Path]:
    """The three pictures of a bench result (see the module docstring); returns their paths."""
    from flashnpu.bench import SUITE
    from flashnpu.sw.compiler import compile_workload
    from flashnpu.sw.perfmodel import predict
    out = Path(out)
    paths = [plot_utilization(rows, config, out / "utilization.png"),
             plot_model_vs_rtl(rows, out / "model_vs_rtl.png")]
    case = next(c for c in SUITE if c.name == "attn-s1024-d64")
    prog = compile_workload(case.workload(), config)
    perf = predict(config, prog.words)
    # One Q tile from the middle of the run: from the previous tile's STORE to its own (one STORE
    # per Q tile), and a zoom on its end, where RECIP/OUTPUT/STORE run under the next tile's MATMULs.
    stores = sorted((a, d) for u, _pc, a, d in perf.timeline if u == "store")
    mats = sorted(a for u, _pc, a, _d in perf.timeline if u == "matrix")
    t = len(stores) // 2
    tile = (stores[t - 1][0], stores[t][1] - stores[t - 1][0])
    j = max(i for i, a in enumerate(mats) if a <= stores[t][0])
    zoom_start = mats[max(0, j - 3)] - 200
    zoom = (zoom_start, mats[min(len(mats) - 1, j + 3)] + 200 - zoom_start)
    tiling = prog.tiling
    paths.append(plot_timeline(
        perf, prog.words, out / "timeline.png", regions=prog.onchip["regions"],
        title=f"{case.name} (Br={tiling['Br']}, Bc={tiling['Bc']}), performance model timeline, "
              f"{perf.cycles:,} cycles in all",
        windows=[(*tile, f"Q tile {t} (of 0..{len(stores) - 1}): cycles {tile[0]:,}..{tile[0] + tile[1]:,} "
                         "(solid: unit busy with the instruction; thin: still in flight)"),
                 (*zoom, f"zoom: the end of Q tile {t} (cycles {zoom[0]:,}..{zoom[0] + zoom[1]:,})")]))
    return paths
