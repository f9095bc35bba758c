"""Design-space sweeps: a grid of configs x a list of workloads, on any ``concurrent.futures`` executor.

``flashnpu sweep SPACE [--dask local | --dask tcp://host:8786]`` reads a space
file (a path, or a name in ``spec/configs/sweeps/``) and scores every config
of its grid:

* the performance model (exact to the cycle against the RTL) gives each
  workload's cycles, PE utilization and DMA bytes;
* a small instance of each workload runs on the golden model and is checked:
  GEMM bit-exact against exact integer arithmetic, attention within the
  accuracy promise of ``docs/numerics.md`` against float64;
* synthesis (``flashnpu.synth``, cached by RTLIL hash) gives the area.

Every point of the grid is validated before any work starts: a bad field
stops the sweep with one line naming the point and the field. Results go to
``OUT/sweep.json``, ``OUT/sweep.md`` and one Pareto plot per workload
(throughput vs area, ``OUT/pareto-<workload>.png``).

A space file::

    base: tiny                      # the config every point starts from
    grid:                           # the cartesian product of these axes
      dma_data_bits: [32, 64]       # one field ...
      array:                        # ... or linked fields, one mapping per value
        - {array_rows: 4, array_cols: 4, vector_lanes: 4}
        - {array_rows: 8, array_cols: 8, vector_lanes: 8}
    workloads:
      - {name: attn, kind: attention, seq: 128, head_dim: 32, heads: 2, causal: true}
      - {name: gemm, kind: gemm, M: 128, N: 128, K: 128}
    check: {seq: 32, M: 16, N: 16, K: 16}   # the small golden instance (optional; these are the defaults)
    synth: ecp5                     # ecp5, generic or none
    synth_srams: map                # map (the banks synthesized) or blackbox (the logic alone, minutes)
    synth_timeout_s: 1800
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from flashnpu.spec.config import CONFIG_DIR, ConfigError, NPUConfig, load_config

__all__ = ["SweepError", "SweepSpace", "SWEEPS_DIR", "load_space", "evaluate_point", "run_sweep", "pareto",
           "make_executor", "report_md"]

SWEEPS_DIR = CONFIG_DIR / "sweeps"
_SPACE_KEYS = {"base", "grid", "workloads", "check", "synth", "synth_srams", "synth_timeout_s"}
_SRAMS = ("map", "blackbox")
_SYNTH = ("ecp5", "generic", "none")
_CHECK_DEFAULTS = {"seq": 32, "M": 16, "N": 16, "K": 16}
_WORKLOAD_KEYS = {"attention": {"name", "kind", "seq", "seq_q", "seq_k", "head_dim", "heads", "kv_heads",
                                "causal", "batch"},
                  "gemm": {"name", "kind", "M", "N", "K"}}


class SweepError(ValueError):
    """A space file, a point or an executor that cannot work: one line naming what and why."""


@dataclass
class SweepSpace:
    """A validated space: its points (name, field overrides, config) and workloads."""
    name: str
    base: str
    points: list                    # [(point name, overrides dict, NPUConfig)]
    workloads: list                 # [dict], each with "name" and "kind"
    check: dict = field(default_factory=lambda: dict(_CHECK_DEFAULTS))
    synth: str = "ecp5"
    synth_srams: str = "map"
    synth_timeout_s: float = 1800.0


def _workload(spec: dict, check: dict | None = None):
    """The workload object of a space entry; with ``check``, its small golden instance."""
    from flashnpu.sw.workload import AttentionWorkload, GemmWorkload
    if spec["kind"] == "attention":
        seq_q = spec.get("seq_q", spec.get("seq", 256))
        seq_k = spec.get("seq_k", spec.get("seq", 256))
        heads = spec.get("heads", 1)
        kv = spec.get("kv_heads", heads)
        batch = spec.get("batch", 1)
        if check is not None:
            seq_q, seq_k = min(seq_q, check["seq"]), min(seq_k, check["seq"])
            batch, heads, kv = 1, max(heads // kv, 1), 1      # one KV head with its GQA group
        return AttentionWorkload(batch=batch, heads=heads, kv_heads=kv, seq_q=seq_q, seq_k=seq_k,
                                 head_dim=spec.get("head_dim", 64), causal=bool(spec.get("causal", False)))
    m, n, k = spec["M"], spec["N"], spec["K"]
    if check is not None:
        m, n, k = min(m, check["M"]), min(n, check["N"]), min(k, check["K"])
    return GemmWorkload(M=m, N=n, K=k)


def _axis_values(axis: str, values) -> list[dict]:
    if not isinstance(values, list) or not values:
        raise SweepError(f"grid.{axis}: must be a non-empty list of values")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, dict):
            out.append(dict(v))
        elif isinstance(v, (list, tuple, set)):
            raise SweepError(f"grid.{axis}[{i}] = {v!r}: must be a value or a mapping of config fields")
        else:
            out.append({axis: v})
    return out


def _point_name(overrides: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in overrides.items()) or "base"


def load_space(path_or_name) -> SweepSpace:
    """Read and validate a space file (a path, or a name in :data:`SWEEPS_DIR`); raise :class:`SweepError`."""
    p = Path(path_or_name)
    if not p.exists() and (SWEEPS_DIR / f"{path_or_name}.yaml").exists():
        p = SWEEPS_DIR / f"{path_or_name}.yaml"
    if not p.is_file():
        known = ", ".join(sorted(f.stem for f in SWEEPS_DIR.glob("*.yaml")))
        raise SweepError(f"space {str(path_or_name)!r}: no such file, nor a sweep named so (known: {known})")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise SweepError(f"{p}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        raise SweepError(f"{p}: must be a mapping with keys {', '.join(sorted(_SPACE_KEYS))}")
    unknown = set(data) - _SPACE_KEYS
    if unknown:
        raise SweepError(f"{p}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_SPACE_KEYS))})")
    try:
        base = load_config(data.get("base", "default"))
    except ConfigError as e:
        raise SweepError(f"{p}: base: {e}") from None
    grid = data.get("grid") or {}
    if not isinstance(grid, dict):
        raise SweepError(f"{p}: grid: must be a mapping of axis -> list of values")
    axes = [_axis_values(a, v) for a, v in grid.items()]
    points = []
    for index, combo in enumerate(itertools.product(*axes)):
        overrides = {}
        for part in combo:
            overrides.update(part)
        name = _point_name(overrides)
        try:
            fields = {k: v for k, v in base.to_dict().items() if k != "name"}
            cfg = NPUConfig.from_dict({**fields, **overrides}, name=f"{base.name}-{p.stem}-{index}")
        except ConfigError as e:
            raise SweepError(f"{p}: point {name}: {e}") from None
        points.append((name, overrides, cfg))

    workloads = data.get("workloads")
    if not isinstance(workloads, list) or not workloads:
        raise SweepError(f"{p}: workloads: must be a non-empty list")
    check = {**_CHECK_DEFAULTS, **(data.get("check") or {})}
    if set(check) - set(_CHECK_DEFAULTS):
        raise SweepError(f"{p}: check: unknown key {sorted(set(check) - set(_CHECK_DEFAULTS))[0]!r} "
                         f"(known: {', '.join(_CHECK_DEFAULTS)})")
    seen = set()
    for i, w in enumerate(workloads):
        where = f"{p}: workloads[{i}]"
        if not isinstance(w, dict) or w.get("kind") not in _WORKLOAD_KEYS:
            raise SweepError(f"{where}: must be a mapping with kind: attention or gemm")
        bad = set(w) - _WORKLOAD_KEYS[w["kind"]]
        if bad:
            raise SweepError(f"{where}: unknown key {sorted(bad)[0]!r} for kind {w['kind']}")
        w.setdefault("name", f"{w['kind']}{i}")
        if w["name"] in seen:
            raise SweepError(f"{where}: name {w['name']!r} is used twice")
        seen.add(w["name"])
        try:
            _workload(w)
            _workload(w, check)
        except (ValueError, KeyError, TypeError) as e:
            raise SweepError(f"{where}: {e}") from None
        for _, _, cfg in points:        # every workload must compile for every point: fail before the work
            try:
                from flashnpu.sw.compiler import compile_workload
                compile_workload(_workload(w), cfg)
            except ValueError as e:
                raise SweepError(f"{where} ({w['name']}) on point {cfg.name}: {' '.join(str(e).split())}") from None
    synth = data.get("synth", "ecp5")
    if synth not in _SYNTH:
        raise SweepError(f"{p}: synth = {synth!r}: must be one of {', '.join(_SYNTH)}")
    srams = data.get("synth_srams", "map")
    if srams not in _SRAMS:
        raise SweepError(f"{p}: synth_srams = {srams!r}: must be one of {', '.join(_SRAMS)}")
    timeout = data.get("synth_timeout_s", 1800.0)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise SweepError(f"{p}: synth_timeout_s = {timeout!r}: must be a positive number of seconds")
    return SweepSpace(name=p.stem, base=base.name, points=points, workloads=workloads, check=check,
                      synth=synth, synth_srams=srams, synth_timeout_s=float(timeout))


# --------------------------------------------------------------- one point
def _golden_check(spec: dict, check: dict, cfg) -> dict:
    """Run the small instance on the golden model; check it against the reference."""
    import numpy as np
    from flashnpu.driver import run
    from flashnpu.sw import reference as ref
    wl = _workload(spec, check)
    t = ref.make_tensors(wl, seed=0)
    if spec["kind"] == "gemm":
        out = run(wl, t, config=cfg).outputs["C"]
        exact = bool(np.array_equal(out, ref.reference_gemm(t["A"], t["B"])))
        return {"ok": exact, "what": "bit-exact vs integer GEMM" if exact else "NOT bit-exact vs integer GEMM"}
    r = ref.reference_attention(wl, t)
    wl = dataclasses.replace(wl, out_scale=max(float(np.abs(r).max()), 1e-9) / 127)
    err = ref.error_lsb(run(wl, t, config=cfg).outputs["O"], r, wl.out_scale)
    frac, worst = float((err <= 1.0).mean()), float(err.max())
    ok = frac >= ref.ACCURACY_FRAC_WITHIN_1LSB and worst <= ref.ACCURACY_MAX_LSB
    return {"ok": ok, "what": f"{frac:.2%} within 1 LSB, worst {worst:.2f} LSB vs float64"
                              + ("" if ok else " (OUTSIDE the accuracy promise)")}


def evaluate_point(name: str, cfg_dict: dict, workloads: list, check: dict, synth: str, synth_timeout_s: float,
                   synth_dir: str, synth_srams: str = "map") -> dict:
    """Score one config: model, golden check and synthesis. Runs in a worker (arguments are plain data)."""
    from flashnpu.sw.compiler import compile_workload
    from flashnpu.sw.perfmodel import predict
    t0 = time.monotonic()
    cfg = NPUConfig.from_dict(cfg_dict)
    row = {"point": name, "config": cfg_dict, "pes": cfg.pes, "workloads": {}, "errors": []}
    for spec in workloads:
        prog = compile_workload(_workload(spec), cfg)
        perf = predict(cfg, prog.words)
        c = perf.counters
        row["workloads"][spec["name"]] = {
            "cycles": perf.cycles, "macs_useful": prog.macs_useful,
            "util": prog.macs_useful / (cfg.pes * perf.cycles),
            "macs_per_cycle": prog.macs_useful / perf.cycles,
            "dma_bytes": c["BYTES_READ"] + c["BYTES_WRITTEN"],
            "golden": _golden_check(spec, check, cfg),
        }
        if not row["workloads"][spec["name"]]["golden"]["ok"]:
            row["errors"].append(f"{spec['name']}: golden check failed: "
                                 f"{row['workloads'][spec['name']]['golden']['what']}")
    row["area"] = None
    if synth != "none":
        from flashnpu.synth import SynthError, synthesize_config
        try:
            # One yosys at a time per point: the executor already runs one point per core.
            res = synthesize_config(cfg, srams=synth_srams, target=synth, out_dir=synth_dir,
                                    timeout_s=synth_timeout_s, progress=False, parallel=1)
            row["area"] = {"target": synth, "srams": synth_srams, **res.total, "cached": res.cached,
                           "seconds": res.seconds}
        except SynthError as e:
            row["errors"].append(f"synthesis: {' '.join(str(e).split())}")
    row["seconds"] = round(time.monotonic() - t0, 1)
    return row


# ---------------------------------------------------------------- executors
def make_executor(dask: str | None, workers: int | None):
    """``(executor, close)``: a process pool, or a Dask cluster's executor (``"local"`` or a scheduler address)."""
    if dask is None:
        ex = cf.ProcessPoolExecutor(max_workers=workers or os.cpu_count())
        return ex, ex.shutdown
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise SweepError("--dask: dask.distributed is not installed (make setup installs it)") from None
    if dask == "local":
        cluster = LocalCluster(n_workers=workers or os.cpu_count(), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)

        def close():
            client.close()
            cluster.close()
        return client.get_executor(), close
    try:
        client = Client(dask, timeout="5s")
    except (OSError, TimeoutError, ValueError) as e:
        raise SweepError(f"--dask {dask}: cannot reach the scheduler ({' '.join(str(e).split())})") from None
    return client.get_executor(), client.close


# ------------------------------------------------------------------ results
def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (area, throughput) that no other point beats: no more area and more throughput,
    or less area and no less throughput."""
    keep = []
    for i, (a, t) in enumerate(points):
        if not any((a2 <= a and t2 > t) or (a2 < a and t2 >= t) for j, (a2, t2) in enumerate(points) if j != i):
            keep.append(i)
    return keep


def _area_value(row) -> tuple[str, float] | None:
    a = row.get("area")
    if not a:
        return None
    return ("LUT4", a["LUT4"]) if a["target"] == "ecp5" else ("cells", a["cells"])


def report_md(result: dict) -> str:
    """The sweep's table: one row per point and workload."""
    out = [f"# Sweep `{result['space']}` (base `{result['base']}`, synthesis {result['synth']})", "",
           "| point | workload | cycles | PE util | MACs/cycle | DMA bytes | golden check | area | MACs/cycle per 1k area |",
           "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for row in result["rows"]:
        av = _area_value(row)
        for wname, w in row["workloads"].items():
            area = f"{av[1]:,} {av[0]}" if av else "-"
            per = f"{w['macs_per_cycle'] / av[1] * 1000:.2f}" if av and av[1] else "-"
            out.append(f"| {row['point']} | {wname} | {w['cycles']:,} | {w['util']:.1%} | "
                       f"{w['macs_per_cycle']:.1f} | {w['dma_bytes']:,} | {w['golden']['what']} | {area} | {per} |")
    errs = [f"- {row['point']}: {e}" for row in result["rows"] for e in row["errors"]]
    if errs:
        out += ["", "Errors:", "", *errs]
    out += ["", f"{len(result['rows'])} points in {result['seconds']:.0f} s on {result['executor']}."]
    return "\n".join(out) + "\n"


def _plot(result: dict, out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    files = []
    rows = [r for r in result["rows"] if _area_value(r)]
    if not rows:
        return files
    for wname in result["workloads"]:
        pts = [(_area_value(r)[1], r["workloads"][wname]["macs_per_cycle"]) for r in rows]
        front = set(pareto(pts))
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, (r, (a, t)) in enumerate(zip(rows, pts)):
            ax.scatter([a], [t], color="C3" if i in front else "C0")
            ax.annotate(r["point"], (a, t), fontsize=6, xytext=(3, 3), textcoords="offset points")
        fr = sorted(pts[i] for i in front)
        ax.plot([a for a, _ in fr], [t for _, t in fr], color="C3", lw=1, label="Pareto front")
        ax.set_xlabel(f"area ({_area_value(rows[0])[0]}, {result['synth']})")
        ax.set_ylabel("useful MACs / cycle (performance model)")
        ax.set_title(f"{result['space']}: {wname}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        f = out / f"pareto-{wname}.png"
        fig.savefig(f, dpi=120)
        plt.close(fig)
        files.append(f)
    return files


def run_sweep(space: SweepSpace, out_dir="build/sweep", *, dask: str | None = None, workers: int | None = None,
              synth_dir="build/synth", progress: bool = True, plot: bool = True) -> dict:
    """Score every point of ``space`` on the executor; write ``sweep.json``, ``sweep.md`` and the plots."""
    from tqdm import tqdm
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    ex, close = make_executor(dask, workers)
    rows = []
    try:
        futs = {ex.submit(evaluate_point, name, cfg.to_dict(), space.workloads, space.check, space.synth,
                          space.synth_timeout_s, str(Path(synth_dir).resolve()), space.synth_srams): name
                for name, _, cfg in space.points}
        for f in tqdm(cf.as_completed(futs), total=len(futs), desc=f"sweep {space.name}", disable=not progress):
            rows.append(f.result())
    finally:
        close()
    order = {name: i for i, (name, _, _) in enumerate(space.points)}
    rows.sort(key=lambda r: order[r["point"]])
    synth = space.synth if space.synth == "none" or space.synth_srams == "map" else \
        f"{space.synth}, SRAM banks not synthesized (logic only)"
    result = {"space": space.name, "base": space.base, "synth": synth,
              "workloads": [w["name"] for w in space.workloads], "rows": rows,
              "executor": f"dask {dask}" if dask else "a process pool",
              "seconds": round(time.monotonic() - t0, 1)}
    (out / "sweep.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "sweep.md").write_text(report_md(result))
    result["plots"] = [str(p) for p in (_plot(result, out) if plot else [])]
    return result
