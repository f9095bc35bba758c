"""The benchmark suite: RTL cycles against the performance model, utilization, DMA traffic.

``make bench`` (``flashnpu bench``) runs every default workload of
:data:`SUITE` on the default config: it compiles it, runs it on the Verilated
NPU with the HDL DRAM (``memory="fast"``, latency :data:`BENCH_LAT`; every
output bit is compared with the golden model, the ``bit-exact`` column),
predicts it with ``sw/perfmodel.py`` and prints one table row. Long workloads
run only with ``--full``. Results go to ``<output>/bench.json`` and
``<output>/bench.md``; ``--reuse`` re-predicts the model columns of an
existing ``bench.json`` without simulating again. ``docs/benchmark.md``
defines every column. This is not a test: it prints numbers, with the targets
beside them.

Where the cycles go (the ``bottleneck`` column) is derived, not stated per
workload: the RTL counters split the cycles the array does not spend on
useful MACs into masked/padded MACs (``ARRAY_ACTIVE`` minus the useful
MACs), MATMUL fill and latency (``MATRIX_BUSY - ARRAY_ACTIVE``) and array
idle (``CYCLES - MATRIX_BUSY``); the idle cycles are then shared out by the
cause the performance model's timeline gives for each gap of the array (the
unit whose token the next MATMUL waited for, the first loads, or the chain of
instructions after the last MATMUL).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flashnpu.spec.config import load_config

__all__ = ["BenchCase", "SUITE", "BENCH_LAT", "suite_mem_bytes", "min_dma_bytes",
           "array_idle_causes", "bottleneck", "measure_rtl", "add_model", "run_case",
           "markdown_table", "pipelined_tiles", "TOOL_SPEED", "measure_tool_speed", "run_bench"]

#: AXI latency of the HDL DRAM in the benchmark (the ideal slave of docs/dma.md; AxiRam behaves as 1).
BENCH_LAT = 1

#: Utilization at or above which a run counts as compute-bound.
COMPUTE_BOUND = 0.97
#: Simulation speed target (issue 17): RTL cycles per second of simulator wall time, START to done.
SIM_SPEED_TARGET = 150_000
#: Model speed target (issue 17): the simulation's wall time over the model's, first call included.
MODEL_SPEEDUP_TARGET = 10_000
#: Busy fraction at or above which a unit other than the array counts as a bound of its own.
SATURATED = 0.90


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
    _attn("attn-s256-d64-causal", 256, causal=True, target=0.85),
    # Edge shapes (issue 17): short sequences, small heads, several heads back to back.
    _attn("attn-h12-s128-d32", 128, heads=12, head_dim=32, target=0.85),
    _attn("attn-h8-s64-d64", 64, heads=8, target=0.85),
    _attn("attn-h16-s256-d32-causal", 256, heads=16, head_dim=32, causal=True, target=0.85),
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


def _case_from_row(row) -> BenchCase:
    """The case a result row was measured for (the suite's, or one rebuilt from the row)."""
    for c in SUITE:
        if c.name == row["name"]:
            return c
    return BenchCase(row["name"], row["kind"], dict(row["params"]), target=row.get("target"))


def suite_mem_bytes(config) -> int:
    """The HDL DRAM size for every case of the suite: one Verilated model serves the default and
    the ``--full`` runs (the size is part of the model's build key)."""
    from flashnpu.cosim.rtl_backend import fast_mem_bytes
    from flashnpu.sw.compiler import compile_workload
    cfg = load_config(config)
    return fast_mem_bytes(max(compile_workload(c.workload(), cfg).dram_bytes for c in SUITE))


def program_hash(words) -> str:
    """Identifies a compiled program (``--reuse`` refuses model rows for a changed program)."""
    h = hashlib.sha256()
    for w in words:
        h.update(int(w).to_bytes(32, "little"))
    return h.hexdigest()[:16]


def min_dma_bytes(program) -> int:
    """Bytes the workload must move at least: every input read once and every output written
    once, at the user's shapes (no padding) and the stored element size."""
    return sum(int(np.prod(p.shape)) * p.itemsize for p in program.layout.values())


# ------------------------------------------------------------ where the cycles go
def array_idle_causes(perf, words, config) -> dict:
    """Why the array idles in the model's timeline: cause -> cycles.

    A gap before a MATMUL goes to the producer whose token arrived last
    (``"<unit>: <instruction>"``, e.g. ``"vector: vector.exp"``) or to
    ``"sequencer: dispatch"`` when no token held it; the gap before the first
    MATMUL is ``"fill: ..."``; the cycles after the last MATMUL's stream go to
    the chain of instructions that ends the program (``"drain: ..."``).
    """
    from flashnpu.spec.isa import decode
    from flashnpu.sw.perfmodel import MatrixModel
    from flashnpu.sw.trace import instruction_label
    cfg = load_config(config)
    tile_cycles = MatrixModel(cfg).tile_cycles
    t = perf.timing                       # the latencies this prediction used
    visible_after = t.done_to_token + t.head_to_offer
    producers = perf.producers        # pc -> the pcs whose tokens its wait pops
    at = {pc: (unit, a, d) for unit, pc, a, d in perf.timeline}
    label = {pc: instruction_label(words[pc]) for pc in at}

    def binding_producer(pc):
        """The producer whose token made ``pc`` start when it did, or None."""
        accept = at[pc][1]
        best = max(producers[pc], key=lambda p: at[p][2], default=None)
        if best is not None and at[best][2] + visible_after >= accept:
            return best
        return None

    causes = Counter()
    mats = sorted((a, pc) for pc, (u, a, _d) in at.items() if u == "matrix")
    stream_end = 0
    for i, (a, pc) in enumerate(mats):
        gap = a - stream_end
        if gap > 0:
            p = binding_producer(pc)
            who = f"{at[p][0]}: {label[p]}" if p is not None else "sequencer: dispatch"
            causes[("fill: " + who) if i == 0 else who] += gap
        stream_end = max(stream_end, a + tile_cycles(decode(int(words[pc]))))
    if not mats:
        return {}
    # After the last stream: follow the chain back from the instruction that finishes last.
    last = max((pc for pc in at if at[pc][0] != "sequencer"), key=lambda pc: at[pc][2])
    queue_prev, seen = {}, {}
    for pc in sorted(at):
        u = at[pc][0]
        queue_prev[pc] = seen.get(u)
        seen[u] = pc
    chain, x = [], last
    while x is not None and at[x][0] != "matrix" and at[x][2] > stream_end:
        chain.append(x)
        p = binding_producer(x)
        x = p if p is not None else queue_prev[x]
    covered = stream_end
    for pc in reversed(chain):
        unit, a, d = at[pc]
        span = max(0, d - max(a, covered))
        covered = max(covered, d)
        if span:
            causes[f"drain: {label[pc]}"] += span
    rest = perf.cycles - stream_end - sum(v for k, v in causes.items() if k.startswith("drain: "))
    if rest > 0:
        causes["drain: sequencer"] += rest
    return dict(causes)


def _idle_groups(idle_causes: dict) -> list:
    """The causes grouped as ``(kind, unit, instructions, model cycles)``: one group for the fill,
    one for the drain (its unit: the one with most drain cycles), one per waited-for unit."""
    groups: dict = {}
    for cause, cycles in idle_causes.items():
        kind, _, who = cause.partition(": ")
        if kind == "fill":
            unit, _, inst = who.partition(": ")
        elif kind == "drain":
            inst = who
            unit = inst.split(".")[0].split(" ")[0].replace("matmul", "matrix")
        else:
            unit, inst = kind, who
            kind = "wait"
        key = (kind, unit) if kind == "wait" else (kind, None)
        g = groups.setdefault(key, {"units": Counter(), "insts": [], "cycles": 0})
        g["units"][unit] += cycles
        g["cycles"] += cycles
        if inst not in g["insts"]:
            g["insts"].append(inst)
    return [(kind, g["units"].most_common(1)[0][0], g["insts"], g["cycles"])
            for (kind, _), g in groups.items()]


def bottleneck(row, idle_causes: dict, model_idle: int) -> tuple[str, list]:
    """The table's ``bottleneck`` text and the loss list ``[(unit, why, fraction of cycles)]``.

    Magnitudes come from the RTL counters of ``row``; the split of the array's
    idle cycles follows ``idle_causes`` (model cycles, scaled to the RTL's idle).
    """
    c, cyc = row["counters"], row["rtl_cycles"]
    useful = row["macs_useful"] / row["pes"]
    busy = {"load": c["LOAD_BUSY"] / cyc, "store": c["STORE_BUSY"] / cyc, "vector": c["VECTOR_BUSY"] / cyc}
    losses = []
    masked = c["ARRAY_ACTIVE"] - useful
    if masked > 0:
        what = "masked or padded entries" if row["params"].get("causal") else "padding"
        losses.append(("array", f"MACs on {what}", masked / cyc))
    overhead = c["MATRIX_BUSY"] - c["ARRAY_ACTIVE"]
    if overhead > 0:
        losses.append(("array", "MATMUL pipeline latency not overlapped", overhead / cyc))
    idle = cyc - c["MATRIX_BUSY"]
    total = sum(idle_causes.values())

    def short(inst):
        return inst.split(".")[-1].split(" ")[0]

    for kind, unit, insts, cycles in _idle_groups(idle_causes):
        names = "/".join(dict.fromkeys(short(i) for i in insts))
        if kind == "fill":
            why = f"fill: the array waits for the first {names}"
        elif kind == "drain":
            why = "drain: " + "->".join(short(i) for i in insts if i != "sequencer") + " after the last MATMUL"
        elif unit == "sequencer":
            why = "the array waits for instructions (dispatch)"
        else:
            why = f"the array waits for {names}"
        if kind == "wait" and unit in busy:
            why += f" ({unit} busy {busy[unit]:.0%})"
        losses.append((unit, why, idle * cycles / total / cyc))
    losses.sort(key=lambda l: -l[2])
    if row["util"] >= COMPUTE_BOUND or not losses:
        text = "array: compute-bound"
        if losses and losses[0][2] >= 0.01:
            text += f" (largest loss: {losses[0][0]}: {losses[0][1]}, {losses[0][2]:.0%})"
        return text, losses
    top = [l for l in losses[:2] if l[2] >= 0.01 or l == losses[0]]
    top.sort(key=lambda l: busy.get(l[0], 0) < SATURATED)      # a saturated unit first
    # A unit as busy as the array shares its bound, whatever the idle split says.
    saturated = [u for u, b in busy.items() if b >= SATURATED]
    parts = [f"{u}: saturated, busy {busy[u]:.0%}" for u in saturated if u not in [l[0] for l in top]]
    for u, why, frac in top:
        if u in saturated:
            why = f"saturated, busy {busy[u]:.0%}: " + why.split(" (")[0]
        parts.append(f"{u}: {why} ({frac:.0%})")
    text = "; ".join(parts)
    approx = abs(model_idle - idle) > 0.2 * idle + 0.005 * cyc
    if approx and any(l[1].startswith(("fill", "drain", "the array waits")) for l in losses[:2]):
        text += f" [idle split from the model: model idle {model_idle / cyc:.0%}, RTL {idle / cyc:.0%}]"
    return text, losses


# ------------------------------------------------------------------- one row
def _git_state() -> dict:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "hw", "sw", "cosim"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
        return {"commit": head, "dirty": [ln[3:] for ln in dirty if ln.strip()]}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": []}


def measure_rtl(case: BenchCase, config, *, seed: int = 0, mem_size: int | None = None) -> dict:
    """Compile ``case``, run it on the Verilated NPU (HDL DRAM) and the golden model; the RTL part of a row."""
    from flashnpu.sw import reference
    from flashnpu.driver import run
    cfg = load_config(config)
    wl = case.workload()
    tensors = reference.make_tensors(wl, seed)
    t0 = time.perf_counter()
    res = run(wl, tensors, backend="rtl", config=cfg, memory="fast", lat=BENCH_LAT, mem_size=mem_size,
              check_golden=True)
    total = time.perf_counter() - t0
    raw, prog = res.raw, res.program
    return {
        "name": case.name, "kind": case.kind, "params": dict(case.params), "target": case.target,
        "seed": seed, "program_hash": program_hash(prog.words), "instructions": prog.instructions,
        "tiling": prog.tiling, "pes": cfg.pes, "macs_useful": prog.macs_useful,
        "macs_issued": prog.macs_issued, "rtl_cycles": res.cycles, "counters": dict(res.counters),
        "bit_exact": bool(res.golden_match), "dma_bytes_min": min_dma_bytes(prog),
        "build_s": raw.build_s, "build_cached": bool(raw.build.cached),
        # The simulator process: start-up, image load, START..done, read-back (no build).
        "sim_wall_s": raw.wall_s - raw.build_s,
        "sim_run_s": raw.sim_wall_s,            # START..done inside the simulator
        "golden_s": total - raw.wall_s,
    }


def add_model(row: dict, config) -> dict:
    """Compile the row's case again, predict it with the performance model, fill the derived columns."""
    from flashnpu.sw.compiler import compile_workload
    from flashnpu.sw.perfmodel import clear_cache, predict
    cfg = load_config(config)
    case = _case_from_row(row)
    prog = compile_workload(case.workload(), cfg)
    row = dict(row)
    cyc, c = row["rtl_cycles"], row["counters"]
    row.update(
        util=row["macs_useful"] / (row["pes"] * cyc),
        matrix_busy=c["MATRIX_BUSY"] / cyc, vector_busy=c["VECTOR_BUSY"] / cyc,
        load_busy=c["LOAD_BUSY"] / cyc, store_busy=c["STORE_BUSY"] / cyc,
        dma_bytes=c["BYTES_READ"] + c["BYTES_WRITTEN"],
        sim_cycles_per_s=cyc / row["sim_run_s"] if row.get("sim_run_s") else None)
    row["dma_ratio"] = row["dma_bytes"] / row["dma_bytes_min"]
    row["target_met"] = None if row.get("target") is None else row["util"] >= row["target"]
    if program_hash(prog.words) != row["program_hash"]:
        # The compiler changed since the RTL run: the model would predict another program.
        row.update(model_cycles=None, model_error=None, model_counters=None, losses=None,
                   bottleneck="stale: the program changed since this RTL run (run the case again)")
        return row
    clear_cache()                       # a first call, as a new program's (issue 17: first call included)
    t0 = time.perf_counter()
    perf = predict(cfg, prog.words, lat=BENCH_LAT)
    row["model_s"] = time.perf_counter() - t0
    row["model_speedup"] = row["sim_run_s"] / row["model_s"] if row.get("sim_run_s") else None
    causes = array_idle_causes(perf, prog.words, cfg)
    model_idle = perf.cycles - perf.busy["matrix"]
    text, losses = bottleneck(row, causes, model_idle)
    row.update(model_cycles=perf.cycles, model_error=(perf.cycles - cyc) / cyc,
               model_counters=dict(perf.counters), model_idle_causes=causes, losses=losses,
               bottleneck=text)
    return row


def run_case(case: BenchCase, config, *, seed: int = 0, mem_size: int | None = None) -> dict:
    """One full row: RTL run, golden check, model prediction, derived columns."""
    return add_model(measure_rtl(case, config, seed=seed, mem_size=mem_size), config)


# ------------------------------------------------------------ tool speed
#: The four instructions of one tile of :func:`pipelined_tiles` (assembly, without tokens).
TILE_STEPS = ("load mem=spad dram_addr=0 dram_stride=16 rows=4 chunks=1 sram_addr={a}",
              "matmul m_rows=4 k_chunks=1 n_blocks=1 a_addr={a} w_addr=100 out_addr={o}",
              "vector.requant rows=4 blocks=1 acc_addr={o} spad_addr={s} mult=1 shift=0",
              "store mem=spad dram_addr=0x1000 dram_stride=16 rows=4 chunks=1 sram_addr={s}")


def pipelined_tiles(n: int, *, double_buffer: bool = True) -> list[int]:
    """``n`` tiles of LOAD -> MATMUL -> VECTOR -> STORE with tokens between every pair of
    neighbouring queues (two buffers per stage when ``double_buffer``), then HALT: ``4n+1`` words."""
    from flashnpu.sw.asm import assemble
    ld, mm, ve, st = TILE_STEPS
    lines = []
    for i in range(n):
        a, o, s = 8 * (i % 2), 16 * (i % 2), 200 + 8 * (i % 2)
        back = double_buffer and i >= 2          # waits for the tile two back to free its buffer
        ahead = double_buffer and i < n - 2      # frees a buffer for the tile two ahead
        lines.append(ld.format(a=a) + (" wait=matrix" if back else "") + " signal=matrix")
        lines.append(mm.format(a=a, o=o) + " wait=load" + (",vector" if back else "")
                     + " signal=vector" + (",load" if ahead else ""))
        lines.append(ve.format(o=o, s=s) + " wait=matrix" + (",store" if back else "")
                     + " signal=store" + (",matrix" if ahead else ""))
        lines.append(st.format(s=s) + " wait=vector" + (" signal=vector" if ahead else ""))
    lines.append("halt")
    return assemble("\n".join(lines))


def _speed_tokens(cfg):
    from flashnpu.sw.tokens import check_tokens
    words = pipelined_tiles(7500)                # 30,001 instructions
    t0 = time.perf_counter()
    check_tokens(words, cfg)
    return time.perf_counter() - t0


def _speed_predict(cfg):
    from flashnpu.sw.compiler import compile_workload
    from flashnpu.sw.perfmodel import predict
    from flashnpu.sw.workload import AttentionWorkload
    wl = AttentionWorkload(batch=1, heads=1, kv_heads=1, seq_q=1024, seq_k=1024, head_dim=64)
    words = compile_workload(wl, cfg).words
    predict(cfg, words)                          # the decode cache warm, as a sweep sees it
    t0 = time.perf_counter()
    predict(cfg, words)
    return time.perf_counter() - t0


#: Software speed targets: (name, what, seconds target, measure(cfg) -> seconds). Wall time on
#: this machine, so they live here and not in the tests (a loaded CI machine is slower).
TOOL_SPEED = [
    ("check_tokens 30k", "static token check of a 30,001-instruction pipelined program", 1.0, _speed_tokens),
    ("predict s1024", "performance model on the s1024 d64 attention program, words decoded", 0.05,
     _speed_predict),
]


def measure_tool_speed(cfg) -> list[dict]:
    """Each :data:`TOOL_SPEED` entry measured once: its seconds beside the target."""
    rows = []
    for name, what, target_s, measure in TOOL_SPEED:
        s = measure(cfg)
        rows.append({"name": name, "what": what, "seconds": s, "target_s": target_s, "met": s < target_s})
    return rows


# ------------------------------------------------------------------- output
def _target(r):
    if r.get("target") is None:
        return None
    return f">={r['target']:.0%} " + ("met" if r["target_met"] else "MISSED")


def _dma(r):
    return f"{r['dma_bytes'] / 1024:,.0f} KiB = {r['dma_ratio']:.2f}x"


COLUMNS = (
    ("workload", lambda r: r["name"]),
    ("RTL cycles", lambda r: f"{r['rtl_cycles']:,}"),
    ("model cycles", lambda r: None if r.get("model_cycles") is None else f"{r['model_cycles']:,}"),
    ("model err", lambda r: None if r.get("model_error") is None else f"{r['model_error']:+.1%}"),
    ("PE util", lambda r: f"{r['util']:.2%}"),
    ("target", _target),
    ("matrix busy", lambda r: f"{r['matrix_busy']:.1%}"),
    ("vector busy", lambda r: f"{r['vector_busy']:.1%}"),
    ("DMA busy load/store", lambda r: f"{r['load_busy']:.1%} / {r['store_busy']:.1%}"),
    ("DMA bytes vs min", _dma),
    ("bottleneck", lambda r: r.get("bottleneck")),
    ("MACs/cycle per 1k LUT4", lambda r: None if r.get("macs_per_klut") is None else f"{r['macs_per_klut']:.2f}"),
    ("bit-exact", lambda r: "yes" if r["bit_exact"] else "NO"),
    ("sim wall", lambda r: f"{r['sim_wall_s']:.1f} s"),
    ("sim cycles/s (>=150k)", lambda r: None if r.get("sim_cycles_per_s") is None
     else f"{r['sim_cycles_per_s'] / 1000:,.0f}k "
     + ("met" if r["sim_cycles_per_s"] >= SIM_SPEED_TARGET else "MISSED")),
    ("model speedup (>=10,000x)", lambda r: None if r.get("model_speedup") is None
     else f"{r['model_speedup']:,.0f}x " + ("met" if r["model_speedup"] >= MODEL_SPEEDUP_TARGET else "MISSED")),
)


def markdown_table(rows) -> str:
    head = "| " + " | ".join(c[0] for c in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for _, cell in COLUMNS:
            v = cell(r)
            cells.append("-" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def area_of(cfg) -> dict | None:
    """The config's ECP5 area from the synthesis cache (``flashnpu synth``), or None: nothing is synthesized here."""
    from flashnpu.synth import cached_area
    res = cached_area(cfg)
    if res is None:
        return None
    return {"LUT4": res.total["LUT4"], "FF": res.total["FF"], "DSP": res.total["DSP"], "BRAM": res.total["BRAM"],
            "key": res.key, "black_boxes": res.black_boxes}


def add_area(row: dict, area: dict | None) -> dict:
    """Area-normalized throughput: useful MACs per RTL cycle per 1,000 LUT4 of the cached synthesis."""
    row["macs_per_klut"] = None if area is None else row["macs_useful"] / row["rtl_cycles"] / (area["LUT4"] / 1000)
    return row


def _area_note(result: dict) -> str:
    a = result.get("area")
    cmd = f"flashnpu synth --config {result['config']} --target ecp5"
    if a is None:
        return f"Area: no cached synthesis of {result['config']} (run `{cmd} --srams blackbox`, or without it)."
    what = (f"logic only, SRAM banks {', '.join(a['black_boxes'])} not synthesized" if a["black_boxes"]
            else "SRAM banks included")
    return (f"Area: ECP5 {a['LUT4']:,} LUT4, {a['FF']:,} FF, {a['DSP']} DSP, {a['BRAM']} DP16KD ({what}; "
            f"cache key `{a['key']}`, `{cmd}`). FPGA LUTs, not ASIC area: docs/synthesis.md.")


def _machine() -> str:
    return f"{platform.node() or 'host'}, {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"


def render(result: dict) -> str:
    """The Markdown page of a result (``bench.md``)."""
    rows = result["rows"]
    lines = [f"# flashnpu bench: config {result['config']}", "",
             f"Measured {result['date']} on {result['machine']}; commit {result['git']['commit']}"
             + (f" (uncommitted changes in {', '.join(result['git']['dirty'])})" if result["git"]["dirty"] else "")
             + f". RTL: Verilated NPU with the HDL DRAM, latency {result['lat']}; "
             f"total wall time {result['wall_s']:.0f} s (Verilator build included)"
             + (f", model columns re-predicted {result['repredicted']}" if result.get("repredicted") else "")
             + ".", "", markdown_table(rows), "", _area_note(result), ""]
    missed = [r for r in rows if r.get("target_met") is False]
    met = [r for r in rows if r.get("target_met")]
    if met or missed:
        lines.append("Targets: " + ", ".join(
            f"{r['name']} {r['util']:.2%} {_target(r)}" for r in met + missed) + ".")
    if result.get("not_run"):
        lines.append("Not run (long; use --full): " + ", ".join(result["not_run"]) + ".")
    if result.get("tool_speed"):
        lines += ["", "| tool | what | seconds | target |", "|---|---|---|---|"]
        lines += [f"| {t['name']} | {t['what']} | {t['seconds']:.3f} | <{t['target_s']} s "
                  + ("met" if t["met"] else "MISSED") + " |" for t in result["tool_speed"]]
        lines.append("")
    failed = [r["name"] for r in rows if not r["bit_exact"]]
    if failed:
        lines.append("NOT bit-exact with the golden model: " + ", ".join(failed) + ".")
    return "\n".join(lines) + "\n"


def _write(out: Path, result: dict) -> str:
    (out / "bench.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    text = render(result)
    (out / "bench.md").write_text(text)
    return text


def run_bench(config="default", output="build/bench", *, full: bool = False, only: str | None = None,
              reuse: bool = False, plot: bool = False) -> int:
    """The benchmark suite (``flashnpu bench``): table on stdout, ``bench.json``/``bench.md`` into
    ``output``; 0 only if every row is bit-exact. ``reuse`` takes the RTL columns from
    ``<output>/bench.json`` and predicts the model columns again."""
    from types import SimpleNamespace
    args = SimpleNamespace(full=full, only=only, plot=plot)
    cfg = load_config(config or "default")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    if reuse:
        return _cli_reuse(args, cfg, out)
    cases = [c for c in SUITE if (args.full or not c.full_only)
             and (not args.only or args.only in c.name)]
    if not cases:
        raise ValueError(f"--only {args.only!r}: no workload of the suite matches "
                         f"({', '.join(c.name for c in SUITE)})")
    result = {"config": cfg.name, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": _machine(),
              "git": _git_state(), "lat": BENCH_LAT, "wall_s": 0.0, "rows": [],
              "not_run": [c.name for c in SUITE if c.full_only and not args.full]}
    mem = suite_mem_bytes(cfg)
    t0 = time.perf_counter()
    result["area"] = area_of(cfg)
    result["tool_speed"] = measure_tool_speed(cfg)
    for t in result["tool_speed"]:
        print(f"[bench] {t['name']}: {t['seconds']:.3f} s (target <{t['target_s']} s)", flush=True)
    for case in cases:
        print(f"[bench] {case.name} ...", flush=True)
        row = add_area(run_case(case, cfg, mem_size=mem), result["area"])
        result["rows"].append(row)
        result["wall_s"] = time.perf_counter() - t0
        build = "" if row["build_cached"] else f" (after a {row['build_s']:.0f} s Verilator build)"
        print(f"[bench] {case.name}: {row['rtl_cycles']:,} cycles, util {row['util']:.1%}, "
              f"model err {row['model_error']:+.1%}, sim {row['sim_wall_s']:.1f} s{build}", flush=True)
        _write(out, result)
    return _finish(args, cfg, out, result)


def _finish(args, cfg, out: Path, result: dict) -> int:
    """Write and print the table, draw the plots if asked; exit status 0 only if every row is bit-exact."""
    text = _write(out, result)
    print(text)
    if getattr(args, "plot", False):
        from flashnpu.plots import plot_bench
        for p in plot_bench(result["rows"], cfg, out):
            print(f"[bench] wrote {p}")
    return 0 if all(r["bit_exact"] for r in result["rows"]) else 1


def _cli_reuse(args, cfg, out: Path) -> int:
    """``--reuse``: the RTL columns from ``<output>/bench.json``, the model columns predicted again."""
    src = out / "bench.json"
    if not src.exists():
        raise ValueError(f"--reuse: {src} does not exist (run flashnpu bench first)")
    result = json.loads(src.read_text())
    if result.get("config") != cfg.name:
        raise ValueError(f"--reuse: {src} holds config {result.get('config')!r}, not {cfg.name!r}")
    result["area"] = area_of(cfg)
    result["rows"] = [add_area(add_model(r, cfg) if not args.only or args.only in r["name"] else r, result["area"])
                      for r in result["rows"]]
    result["repredicted"] = time.strftime("%Y-%m-%d %H:%M %Z")
    return _finish(args, cfg, out, result)
