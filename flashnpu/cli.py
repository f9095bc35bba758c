"""The ``flashnpu`` command line.

All the command-line code is here: the arguments, and one ``cli_<command>``
per subcommand that turns them into calls of the plain functions of the part
that owns the work (compiler, ``cosim.verilog``, ``cosim.rtl_backend``,
``bench``, ``fuzz``) and prints the outcome. Those parts know nothing of
argparse. Heavy parts (Amaranth, Verilator) are imported only by the
subcommands that need them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from flashnpu.spec.config import ConfigError, load_config
from flashnpu.spec.isa import OPCODE_QUEUE, ErrorCode, Queue
from flashnpu.sw.workload import AttentionWorkload, GemmWorkload

# subcommand -> "module:function" (the cli_<command> below) taking the parsed arguments, returning an exit code
HANDLERS = {
    "compile": "flashnpu.cli:cli_compile",
    "generate": "flashnpu.cli:cli_generate",
    "lint": "flashnpu.cli:cli_lint",
    "run": "flashnpu.cli:cli_run",
    "bench": "flashnpu.cli:cli_bench",
    "fuzz": "flashnpu.cli:cli_fuzz",
    "synth": "flashnpu.cli:cli_synth",
    "sweep": "flashnpu.cli:cli_sweep",
}


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            v = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, not {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, not {text!r}")
        return v
    parse.__name__ = f"integer >= {low}"
    return parse


#: argparse types: a size (``--seq 0`` is named by argparse, not deep in the compiler) and a seed.
count = _int_at_least(1)
seed = _int_at_least(0)


def _add_workload_args(p):
    p.add_argument("kind", choices=["attention", "gemm"], help="workload kind")
    p.add_argument("--config", default="default", help="config name or YAML path")
    p.add_argument("--batch", type=count, default=1)
    p.add_argument("--seq", type=count, default=256,
                   help="attention: query and key length, for each of them that --seq-q / --seq-k "
                        "does not give (default 256)")
    p.add_argument("--seq-q", type=count, default=None,
                   help="attention: query length; overrides --seq for the queries (default: --seq)")
    p.add_argument("--seq-k", type=count, default=None,
                   help="attention: key length; overrides --seq for the keys (default: --seq)")
    p.add_argument("--head-dim", type=count, default=64)
    p.add_argument("--heads", type=count, default=1, help="query heads")
    p.add_argument("--kv-heads", type=count, default=None, help="key/value heads (GQA/MQA); default: --heads")
    p.add_argument("--causal", action="store_true")
    p.add_argument("-M", type=count, default=256, help="GEMM rows")
    p.add_argument("-N", type=count, default=256, help="GEMM columns")
    p.add_argument("-K", type=count, default=256, help="GEMM reduction depth")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random input tensors (default 0)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="flashnpu", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile a workload and print a summary")
    _add_workload_args(p)
    p.add_argument("--listing", metavar="FILE",
                   help="write the disassembled program here (checked writable before compiling)")

    p = sub.add_parser("generate", help="write the Verilog and a report for a config")
    p.add_argument("--config", default="default")
    p.add_argument("-o", "--output", default=None,
                   help="output folder, created if missing (default build/<config>)")

    p = sub.add_parser("lint", help="verilator --lint-only the generated Verilog")
    p.add_argument("--config", default="default")

    p = sub.add_parser("run", help="compile, build and simulate a workload on the RTL")
    _add_workload_args(p)
    p.add_argument("--waves", action="store_true", help="write an FST waveform")
    p.add_argument("--trace", metavar="FILE",
                   help="write a Perfetto trace (JSON) here (checked writable before the run)")
    p.add_argument("--backpressure", action="store_true", help="random AXI delays")
    p.add_argument("--memory", choices=("axiram", "fast"), default=None,
                   help="DRAM model: the HDL ideal slave (docs/axi_memory.md; the default, about 10x "
                        "faster) or cocotbext-axi's AxiRam (the default with --backpressure, which needs it)")

    p = sub.add_parser("bench", help="run the benchmark suite (docs/benchmark.md)")
    p.add_argument("--config", default="default", help="config name or YAML path")
    p.add_argument("--full", action="store_true", help="include the long workloads")
    p.add_argument("--plot", action="store_true", help="draw PNG plots into the result folder")
    p.add_argument("--reuse", action="store_true",
                   help="do not simulate: take the RTL columns from <output>/bench.json, predict the model again")
    p.add_argument("-o", "--output", default="build/bench", help="result folder")
    p.add_argument("--only", default=None, help="run only workloads whose name contains this")

    p = sub.add_parser("fuzz", help="seeded fuzz campaign; prints a table, writes OUT/report.json")
    p.add_argument("--seconds", type=float, default=120, help="time budget, split across the categories")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="build/fuzz", help="result folder")
    p.add_argument("--categories", default=None, help="comma-separated subset (default: all)")
    p.add_argument("--rtl", action=argparse.BooleanOptionalAction, default=True,
                   help="include the Verilator categories (tiny config)")
    p.add_argument("--replay", metavar="CATEGORY:SEED", default=None, help="run one recorded case again")
    p.add_argument("--config", default="tiny", help="config of the program and RTL categories (default tiny)")

    p = sub.add_parser("synth", help="synthesize a config with yosys (per-block area), optionally place and route")
    p.add_argument("--config", default="default", help="config name or YAML path")
    p.add_argument("--target", choices=("generic", "ecp5"), default="ecp5",
                   help="yosys 'synth' (generic gates) or 'synth_ecp5' (LUT4, FF, DSP, block RAM)")
    p.add_argument("--pnr", action="store_true",
                   help="place and route with nextpnr-ecp5 on the smallest ECP5 part that fits; report fmax")
    p.add_argument("--srams", choices=("map", "blackbox"), default="map",
                   help="synthesize the scratchpad and accumulator banks (map), or leave them out (blackbox: "
                        "the logic's area in minutes; their bits are still reported)")
    p.add_argument("--freq", type=float, default=100.0, help="place-and-route target clock in MHz (default 100)")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="seconds before synthesis (and place and route) is stopped (default 3600)")
    p.add_argument("-o", "--output", default="build/synth", help="result folder (and its cache/)")

    p = sub.add_parser("sweep", help="score a grid of configs x workloads: model, golden check, synthesis")
    p.add_argument("space", help="space file (YAML), or the name of one in spec/configs/sweeps/ (e.g. small)")
    p.add_argument("--dask", metavar="ADDRESS", default=None,
                   help="run on Dask: 'local' (a LocalCluster) or a scheduler address tcp://host:8786 "
                        "(default: a local process pool)")
    p.add_argument("--workers", type=_int_at_least(1), default=None, help="workers (default: the CPU count)")
    p.add_argument("--synth", choices=("ecp5", "generic", "none"), default=None,
                   help="override the space's synthesis target")
    p.add_argument("-o", "--output", default="build/sweep", help="result folder")
    p.add_argument("--synth-dir", default="build/synth", help="synthesis cache folder (shared with flashnpu synth)")
    p.add_argument("--no-plot", action="store_true", help="do not draw the Pareto plots")
    return ap


class _PathError(Exception):
    """A command-line path that cannot be written: reported before any work starts."""


def _check_file(option: str, path: str):
    """``path`` can be written as a file: open it (appending, so nothing existing changes) or create
    it, and remove it again if it did not exist."""
    p = Path(path)
    if p.is_dir():
        raise _PathError(f"argument {option}: {path!r} is a folder, not a file")
    if not p.parent.is_dir():
        raise _PathError(f"argument {option}: cannot write {path!r}: folder {str(p.parent)!r} does not exist")
    existed = p.exists()
    try:
        with open(p, "ab"):
            pass
    except OSError as e:
        raise _PathError(f"argument {option}: cannot write {path!r}: {e.strerror or e}") from None
    if not existed:
        p.unlink(missing_ok=True)


def _check_folder(option: str, path) -> None:
    """``path`` is (or can be created as) a folder that files can be written into."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise _PathError(f"argument {option}: {str(p)!r} exists and is not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".flashnpu-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise _PathError(f"argument {option}: cannot write into folder {str(p)!r}: {e.strerror or e}") from None


def _check_paths(args, config) -> None:
    """Every output path of the command is writable, before the command does anything."""
    if args.command == "generate":
        _check_folder("-o/--output" if args.output else "--config (default output build/<config>)",
                      args.output or Path("build") / config.name)
    elif args.command == "lint":
        _check_folder("--config (output build/<config>)", Path("build") / config.name)
    elif args.command in ("bench", "synth", "sweep"):
        _check_folder("-o/--output", args.output)
    if getattr(args, "listing", None):
        _check_file("--listing", args.listing)
    if getattr(args, "trace", None):
        _check_file("--trace", args.trace)


# ------------------------------------------------------------ the subcommands
def workload_from_args(args):
    """The workload named by ``flashnpu compile/run`` arguments (``cli._add_workload_args``)."""
    if args.kind == "gemm":
        return GemmWorkload(M=args.M, N=args.N, K=args.K)
    return AttentionWorkload(batch=args.batch, heads=args.heads,
                             kv_heads=args.kv_heads if args.kv_heads is not None else args.heads,
                             seq_q=args.seq_q if args.seq_q is not None else args.seq,
                             seq_k=args.seq_k if args.seq_k is not None else args.seq,
                             head_dim=args.head_dim, causal=bool(args.causal))


def _queue_counts(words):
    from flashnpu.sw.asm import decode_word
    n = {q.name.lower(): 0 for q in Queue}
    for w in words:
        op = decode_word(w)["opcode"]
        if op in OPCODE_QUEUE:
            n[OPCODE_QUEUE[op].name.lower()] += 1
    return n


def cli_compile(args, out=None) -> int:
    """``flashnpu compile``: compile, print a summary, optionally write the listing."""
    from flashnpu.sw.compiler import compile_workload
    out = out or sys.stdout
    cfg = load_config(args.config)
    wl = workload_from_args(args)
    prog = compile_workload(wl, cfg)
    oc = prog.onchip
    qc = _queue_counts(prog.words)
    if isinstance(wl, AttentionWorkload):
        what = (f"attention batch={wl.batch} heads={wl.heads} kv_heads={wl.kv_heads} seq_q={wl.seq_q} "
                f"seq_k={wl.seq_k} head_dim={wl.head_dim} causal={wl.causal}")
        tiles = f"Br={prog.tiling['Br']} Bc={prog.tiling['Bc']} (head_dim padded to {prog.tiling['head_dim_padded']})"
    else:
        what = f"gemm M={wl.M} N={wl.N} K={wl.K}"
        tiles = f"Mt={prog.tiling['Mt']} Nt={prog.tiling['Nt']} Kt={prog.tiling['Kt']}"
    lines = [
        f"{what} on config '{cfg.name}' ({cfg.dim}x{cfg.dim})",
        f"tiles:        {tiles}",
        f"instructions: {prog.instructions} (load {qc['load']}, store {qc['store']}, "
        f"matrix {qc['matrix']}, vector {qc['vector']}, halt 1)",
        f"DRAM bytes:   {prog.dram_bytes} (program at {prog.prog_addr:#x})",
        f"on-chip:      spad {oc['spad_bytes']} B ({oc['spad_rows']}/{cfg.spad_rows} rows), "
        f"acc {oc['acc_bytes']} B ({oc['acc_rows']}/{cfg.acc_rows} rows), "
        f"state {oc['state_rows']}/{cfg.vector_state_rows} rows",
        f"MACs:         useful {prog.macs_useful}, issued {prog.macs_issued} "
        f"({prog.macs_useful / prog.macs_issued:.1%} useful)",
    ]
    if getattr(args, "listing", None):
        with open(args.listing, "w") as f:
            f.write(prog.listing())
        lines.append(f"listing:      {args.listing}")
    print("\n".join(lines), file=out)
    return 0


def _out_dir(args, config) -> Path:
    return Path(args.output) if getattr(args, "output", None) else Path("build") / config.name


def cli_generate(args) -> int:
    """``flashnpu generate``: the Verilog and its report."""
    from flashnpu.cosim.verilog import generate
    config = load_config(args.config)
    res = generate(config, _out_dir(args, config))
    r = res.report
    print(f"wrote {res.verilog} ({r['verilog_lines']} lines, {r['modules']} modules)")
    print(f"  {r['pes']} PEs ({r['array']}), peak {r['peak_macs_per_cycle']} MACs/cycle, "
          f"SRAM {r['sram_bytes']} B (spad {r['spad_bytes']} + acc {r['acc_bytes']}), "
          f"DMA {r['dma_bytes_per_cycle']} B/cycle")
    print(f"  report: {res.verilog.parent / 'report.md'}")
    return 0


def cli_lint(args) -> int:
    """``flashnpu lint``: ``verilator --lint-only`` of the generated Verilog."""
    from flashnpu.cosim.verilog import LINT_WAIVERS, generate, lint
    config = load_config(args.config)
    res = generate(config, Path("build") / config.name)
    lr = lint(res.verilog, res.top)
    waived = ", ".join(LINT_WAIVERS)
    if lr.ok:
        style = ", ".join(f"{k} {v}" for k, v in sorted(lr.style.items())) or "none"
        print(f"lint {res.verilog}: clean (waived by name: {waived}; -Wall style notes: {style})")
        return 0
    print(lr.output, file=sys.stderr)
    print(f"lint {res.verilog}: FAILED (waived by name only: {waived})", file=sys.stderr)
    return 1


def _float_error(wl, tensors, outputs):
    """(max abs error, in units of the output scale) of the RTL outputs against float64."""
    from flashnpu.sw import reference
    from flashnpu.sw.workload import AttentionWorkload
    if isinstance(wl, AttentionWorkload):
        ref = reference.reference_attention(wl, tensors) / wl.out_scale
        got = outputs["O"].astype(np.float64)
        return float(np.max(np.abs(got - ref))), "output LSBs vs float64 attention"
    ref = reference.reference_gemm(tensors["A"], tensors["B"])
    got = outputs["C"]
    return float(np.max(np.abs(got.astype(np.int64) - ref.astype(np.int64)))), "vs exact integer GEMM"


def cli_run(args) -> int:
    """``flashnpu run``: compile, build, simulate, compare with the golden model, report."""
    from flashnpu.cosim.rtl_backend import RtlError, compare_outputs, run_program
    from flashnpu.sw.compiler import compile_workload
    from flashnpu.sw.golden import GoldenNPU, NpuError
    from flashnpu.sw.program import program_grant
    from flashnpu.sw.reference import make_tensors

    cfg = load_config(args.config)
    wl = workload_from_args(args)
    prog = compile_workload(wl, cfg)
    tensors = make_tensors(wl, args.seed)
    image = prog.pack(tensors)
    print(f"compiled: {prog.instructions} instructions, DRAM image {prog.dram_bytes} B, "
          f"tiling {prog.tiling}")

    def progress(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    try:
        gold = GoldenNPU(cfg).run(image, grant=program_grant(prog)).dram
        gold_err = None
    except NpuError as e:
        gold, gold_err = None, e
    from tqdm import tqdm
    from flashnpu.sw.perfmodel import predict
    # The bar's total is the performance model's estimate; the run may take a little more or less.
    perf = predict(cfg, prog.words)
    bar = tqdm(total=perf.cycles, unit="cycle", unit_scale=True,
               desc="simulating", leave=False, disable=None)

    def sim_progress(cycles):
        bar.update(cycles - bar.n)

    try:
        memory = args.memory or ("axiram" if args.backpressure else "fast")
        rtl = run_program(prog, image, config=cfg, backpressure=args.backpressure, waves=args.waves,
                          seed=args.seed, progress=progress, sim_progress=sim_progress, memory=memory)
    except RtlError as e:
        print(f"RTL run failed: {e}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    print(f"build {rtl.build_s:.1f} s ({'cached' if rtl.build.cached else 'cold'}), "
          f"simulation {rtl.sim_wall_s:.1f} s ({rtl.cycles_per_s:,.0f} cycles/s)")
    if args.waves:
        print(f"waves: {rtl.run_dir / 'dump.fst'}")
    ok = True
    if rtl.error_code != ErrorCode.NONE or gold_err is not None:
        print(f"RTL stopped with {rtl.error_code.name} at pc {rtl.error_pc}; golden: "
              f"{gold_err if gold_err is not None else 'done'}")
        ok = gold_err is not None and gold_err.code == rtl.error_code and gold_err.pc == rtl.error_pc
    else:
        problems = compare_outputs(prog, rtl.dram, gold)
        ok = not problems
        for line in problems:
            print(f"MISMATCH {line}")
        outs = prog.unpack(rtl.dram)
        if ok:
            print("match: " + ", ".join(f"{n} {a.shape}" for n, a in outs.items())
                  + " bit-exact with the golden model")
        err, what = _float_error(wl, tensors, outs)
        print(f"max error {err:g} ({what})")
    util = prog.macs_useful / (cfg.dim * cfg.dim * rtl.cycles) if rtl.cycles else 0.0
    print(f"RTL cycles {rtl.cycles:,}; PE utilization {util:.1%} "
          f"({prog.macs_useful:,} useful MACs on {cfg.dim}x{cfg.dim})")
    for k, v in rtl.counters.items():
        frac = f" ({v / rtl.cycles:.1%})" if rtl.cycles and not k.startswith("BYTES") \
            and k not in ("CYCLES", "INSTRUCTIONS") else ""
        print(f"  {k:<15} {v:>14,}{frac}")
    # The RESULT line first: a trace that cannot be written must not lose it.
    print("RESULT: " + ("match" if ok else "MISMATCH"), flush=True)
    if args.trace:
        from flashnpu.sw.trace import write_trace
        try:
            p = write_trace(args.trace, perf, prog.words, title=f"flashnpu {wl} (performance model)",
                            regions=prog.onchip.get("regions"), rtl_counters=rtl.counters)
        except OSError as e:
            print(f"flashnpu run: error: argument --trace: cannot write {args.trace}: {e.strerror}",
                  file=sys.stderr)
            return 2
        print(f"trace (performance model timeline; RTL cycles {rtl.cycles:,}, model "
              f"{perf.cycles:,}): {p}")
    return 0 if ok else 1


def cli_fuzz(args) -> int:
    """``flashnpu fuzz``: the campaign, or ``--replay CATEGORY:SEED``."""
    from flashnpu.fuzz import format_table, replay, run_campaign
    out = Path(args.out)
    config = getattr(args, "config", None) or "tiny"
    if getattr(args, "replay", None):
        return replay(args.replay, cfg=config, out=out / "replay")
    if not args.seconds > 0:
        raise ValueError(f"argument '--seconds' = {args.seconds}: must be positive")

    def progress(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    report = run_campaign(args.seconds, args.seed, out, args.categories, rtl=args.rtl, progress=progress,
                          config=config)
    print(format_table(report))
    print(f"report: {out / 'report.json'}")
    return 1 if report["failed"] else 0


def cli_synth(args) -> int:
    """``flashnpu synth``: :func:`flashnpu.synth.synthesize_config`, written as JSON and markdown."""
    from flashnpu.synth import SynthError, report_md, synthesize_config
    if args.pnr and args.target != "ecp5":
        raise ValueError("--pnr needs --target ecp5")
    config = load_config(args.config)
    try:
        res = synthesize_config(config, target=args.target, pnr=args.pnr, freq_mhz=args.freq, srams=args.srams,
                                out_dir=args.output, timeout_s=args.timeout)
    except SynthError as e:
        print(f"flashnpu synth: error: {e}", file=sys.stderr)
        return 1
    out = Path(args.output)
    stem = out / f"{config.name}-{args.target}" if args.srams == "map" else out / f"{config.name}-{args.target}-nosram"
    text = report_md(res)
    stem.with_suffix(".json").write_text(json.dumps(res.to_dict(), indent=1) + "\n")
    stem.with_suffix(".md").write_text(text)
    print(text + ("(cached)\n" if res.cached else ""), end="")
    print(f"wrote {stem}.json and {stem}.md")
    return 0


def cli_sweep(args) -> int:
    """``flashnpu sweep``: :func:`flashnpu.sweep.run_sweep` on a space file."""
    import dataclasses
    from flashnpu.sweep import SweepError, load_space, report_md, run_sweep
    try:
        space = load_space(args.space)
        if args.synth:
            space = dataclasses.replace(space, synth=args.synth)
        result = run_sweep(space, args.output, dask=args.dask, workers=args.workers, synth_dir=args.synth_dir,
                           plot=not args.no_plot)
    except SweepError as e:
        print(f"flashnpu sweep: error: {e}", file=sys.stderr)
        return 2
    print(report_md(result), end="")
    print(f"wrote {Path(args.output) / 'sweep.json'}, sweep.md" + "".join(f", {Path(p).name}" for p in result["plots"]))
    return 1 if any(r["errors"] for r in result["rows"]) else 0


def cli_bench(args) -> int:
    """``flashnpu bench``: :func:`flashnpu.bench.run_bench`."""
    from flashnpu.bench import run_bench
    return run_bench(args.config, args.output, full=args.full, only=args.only, reuse=args.reuse, plot=args.plot)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(getattr(args, "config", "default"))   # reject a bad config before any work starts
        _check_paths(args, config)
        mod, fn = HANDLERS[args.command].split(":")
        return int(getattr(importlib.import_module(mod), fn)(args) or 0)
    except (ConfigError, ValueError, _PathError) as e:
        print(f"flashnpu {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
