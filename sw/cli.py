"""The ``flashnpu`` command line.

Each subcommand's work lives with the part that owns it; this module only
declares the arguments and dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from flashnpu.sw.config import ConfigError, load_config

# subcommand -> "module:function" taking the parsed arguments, returning an exit code
HANDLERS = {
    "compile": "flashnpu.sw.compiler:cli_compile",
    "generate": "flashnpu.cosim.verilog:cli_generate",
    "lint": "flashnpu.cosim.verilog:cli_lint",
    "run": "flashnpu.cosim.rtl_backend:cli_run",
    "bench": "flashnpu.sw.bench:cli_bench",
    "fuzz": "flashnpu.sw.fuzz:cli_fuzz",
}


def _add_workload_args(p):
    p.add_argument("kind", choices=["attention", "gemm"], help="workload kind")
    p.add_argument("--config", default="default", help="config name or YAML path")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=256, help="query and key length (attention)")
    p.add_argument("--seq-q", type=int, default=None, help="query length, if not --seq")
    p.add_argument("--seq-k", type=int, default=None, help="key length, if not --seq")
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--heads", type=int, default=1, help="query heads")
    p.add_argument("--kv-heads", type=int, default=None, help="key/value heads (GQA/MQA); default: --heads")
    p.add_argument("--causal", action="store_true")
    p.add_argument("-M", type=int, default=256, help="GEMM rows")
    p.add_argument("-N", type=int, default=256, help="GEMM columns")
    p.add_argument("-K", type=int, default=256, help="GEMM reduction depth")
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="flashnpu", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile a workload and print a summary")
    _add_workload_args(p)
    p.add_argument("--listing", metavar="FILE", help="write the disassembled program here")

    p = sub.add_parser("generate", help="write the Verilog and a report for a config")
    p.add_argument("--config", default="default")
    p.add_argument("-o", "--output", default=None, help="output folder (default build/<config>)")

    p = sub.add_parser("lint", help="verilator --lint-only the generated Verilog")
    p.add_argument("--config", default="default")

    p = sub.add_parser("run", help="compile, build and simulate a workload on the RTL")
    _add_workload_args(p)
    p.add_argument("--waves", action="store_true", help="write an FST waveform")
    p.add_argument("--trace", metavar="FILE", help="write a Perfetto trace (JSON)")
    p.add_argument("--backpressure", action="store_true", help="random AXI delays")
    p.add_argument("--memory", choices=("axiram", "fast"), default="axiram",
                   help="DRAM model: cocotbext-axi AxiRam, or the faster HDL ideal slave (docs/axi_memory.md)")

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
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    mod, fn = HANDLERS[args.command].split(":")
    try:
        if getattr(args, "config", None) is not None:
            load_config(args.config)   # reject a bad config before any work starts
        return int(getattr(importlib.import_module(mod), fn)(args) or 0)
    except (ConfigError, ValueError) as e:
        print(f"flashnpu {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
