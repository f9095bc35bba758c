"""The ``flashnpu`` command line.

Each subcommand's work lives with the part that owns it; this module only
declares the arguments and dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path

from flashnpu.spec.config import ConfigError, load_config

# subcommand -> "module:function" taking the parsed arguments, returning an exit code
HANDLERS = {
    "compile": "flashnpu.sw.compiler:cli_compile",
    "generate": "flashnpu.cosim.verilog:cli_generate",
    "lint": "flashnpu.cosim.verilog:cli_lint",
    "run": "flashnpu.cosim.rtl_backend:cli_run",
    "bench": "flashnpu.bench:cli_bench",
    "fuzz": "flashnpu.fuzz:cli_fuzz",
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
    p.add_argument("--config", default="tiny", help="config of the program and RTL categories (default tiny)")
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
    elif args.command == "bench":
        _check_folder("-o/--output", args.output)
    if getattr(args, "listing", None):
        _check_file("--listing", args.listing)
    if getattr(args, "trace", None):
        _check_file("--trace", args.trace)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    mod, fn = HANDLERS[args.command].split(":")
    try:
        config = load_config(args.config)   # reject a bad config before any work starts
        _check_paths(args, config)
        return int(getattr(importlib.import_module(mod), fn)(args) or 0)
    except (ConfigError, ValueError, _PathError) as e:
        print(f"flashnpu {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
