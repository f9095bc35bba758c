"""Generate the NPU's Verilog with a short report, and lint it with Verilator.

``flashnpu generate --config NAME [-o DIR]`` writes ``DIR/npu.v`` (top module
``npu``), ``DIR/report.md`` and ``DIR/report.json``; ``flashnpu lint --config
NAME`` runs ``verilator --lint-only`` on it. Amaranth's Verilog trips a few
Verilator lint warnings by construction (it relies on Verilog's width rules and
writes ``case`` statements without ``default``); they are waived by name in
:data:`LINT_WAIVERS`, nothing else is.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.back import verilog as amaranth_verilog
from amaranth.lib import wiring

from flashnpu.spec.config import NPUConfig, load_config
from flashnpu.cosim.toolchain import build_env, find_toolchain

__all__ = ["LINT_WAIVERS", "GenerateResult", "LintResult", "to_verilog", "generate", "lint"]

#: Verilator warnings waived for Amaranth's output, by name, and why.
LINT_WAIVERS = {
    "WIDTHEXPAND": "Amaranth lets Verilog zero/sign-extend operands; the widths are its own",
    "WIDTHTRUNC": "Amaranth truncates on assignment as its semantics say",
    "CASEINCOMPLETE": "Amaranth's case statements cover only the values it switches on",
    "UNSIGNED": "range checks with a lower bound of 0 become 'addr >= 0' (always true) in the Verilog",
}


def waiver_flags() -> list[str]:
    return [f"-Wno-{name}" for name in LINT_WAIVERS]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def to_verilog(component: wiring.Component, name: str) -> str:
    """Convert ``component`` to Verilog with top module ``name`` (no source locations, so the
    text, and the build cache key made from it, does not change when only Python lines move)."""
    return amaranth_verilog.convert(component, name=name, emit_src=False)


@dataclass
class GenerateResult:
    """What :func:`generate` wrote: the Verilog file, its top module name and the report."""
    verilog: Path
    top: str
    report: dict = field(default_factory=dict)


def _report(component, config: NPUConfig | None, top: str, text: str) -> dict:
    rep = {
        "top": top,
        "component": type(component).__name__,
        "verilog_lines": text.count("\n"),
        "verilog_bytes": len(text.encode()),
        "verilog_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "modules": len(re.findall(r"^module ", text, flags=re.M)),
        "top_ports": sum(1 for _ in component.signature.flatten(component)),
    }
    if config is not None:
        s = config.summary()
        rep.update({
            "config": config.name,
            "pes": s["pes"],
            "array": f"{config.array_rows}x{config.array_cols}",
            "peak_macs_per_cycle": s["peak_macs_per_cycle"],
            "spad_bytes": s["spad_bytes"],
            "acc_bytes": s["acc_bytes"],
            "sram_bytes": s["sram_bytes"],
            "dma_bytes_per_cycle": s["dma_bytes_per_cycle"],
            "config_fields": config.to_dict(),
        })
    return rep


def _report_md(rep: dict) -> str:
    lines = [f"# Generated design: `{rep['top']}` ({rep['component']})", ""]
    if "config" in rep:
        lines += [
            f"Config `{rep['config']}`.", "",
            "| quantity | value |", "|---|---|",
            f"| processing elements | {rep['pes']} ({rep['array']}) |",
            f"| peak MACs / cycle | {rep['peak_macs_per_cycle']} |",
            f"| SRAM bytes (scratchpad + accumulator) | {rep['sram_bytes']} "
            f"({rep['spad_bytes']} + {rep['acc_bytes']}) |",
            f"| DMA bytes / cycle | {rep['dma_bytes_per_cycle']} |",
            "",
            "Config fields: " + ", ".join(f"`{k}={v}`" for k, v in rep["config_fields"].items()
                                          if k != "name"),
            "",
        ]
    lines += [f"Verilog: {rep['verilog_lines']} lines, {rep['modules']} modules, "
              f"{rep['top_ports']} top-level ports, sha256 `{rep['verilog_sha256'][:16]}`."]
    return "\n".join(lines) + "\n"


def _elaborate(component_or_config, name):
    """(component, config or None, top name) for a config (the NPU) or any component."""
    if isinstance(component_or_config, (NPUConfig, str, Path)):
        config = load_config(component_or_config)
        from flashnpu.hw.npu import NPU    # here: the rest of this module works without the NPU
        return NPU(config), config, name or "npu"
    comp = component_or_config
    if not isinstance(comp, wiring.Component):
        raise TypeError(f"generate() takes an NPUConfig, a config name or a wiring.Component, "
                        f"not {type(comp).__name__}")
    config = getattr(comp, "config", None) or getattr(comp, "_config", None) \
        or getattr(comp, "_cfg", None)
    if not isinstance(config, NPUConfig):
        config = None
    return comp, config, name or _snake(type(comp).__name__)


def generate(component_or_config, out_dir, *, name: str | None = None) -> GenerateResult:
    """Write ``<top>.v``, ``report.md`` and ``report.json`` into ``out_dir``.

    ``component_or_config`` is an :class:`NPUConfig` or config name (top
    ``NPU(config)``, module ``npu``) or any ``wiring.Component`` (module
    ``name``, default the class name in snake case).
    """
    comp, config, top = _elaborate(component_or_config, name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = to_verilog(comp, top)
    vpath = out / f"{top}.v"
    vpath.write_text(text)
    rep = _report(comp, config, top, text)
    (out / "report.json").write_text(json.dumps(rep, indent=2) + "\n")
    (out / "report.md").write_text(_report_md(rep))
    return GenerateResult(vpath, top, rep)


@dataclass
class LintResult:
    ok: bool
    output: str
    #: Warnings of the ``-Wall`` style set, by name and count (information only).
    style: dict = field(default_factory=dict)


def lint(verilog_path, top: str) -> LintResult:
    """``verilator --lint-only`` with Verilator's default warnings, only :data:`LINT_WAIVERS` waived.

    ``ok`` is False if Verilator reports any warning or error. The ``-Wall``
    style warnings (unused signals and the like, which Amaranth's output has by
    construction) are counted into ``style`` but do not fail the lint.
    """
    tc = find_toolchain()
    env = build_env()
    base = [str(tc.verilator), "--lint-only", "--top-module", top, *waiver_flags(), str(verilog_path)]
    p = subprocess.run(base, capture_output=True, text=True, env=env)
    out = (p.stdout + p.stderr).strip()
    ok = p.returncode == 0 and "%Warning" not in out and "%Error" not in out
    q = subprocess.run(base[:2] + ["-Wall", "-Wno-fatal"] + base[2:], capture_output=True,
                       text=True, env=env)
    style = {}
    for w in re.findall(r"%Warning-([A-Z0-9_]+)", q.stdout + q.stderr):
        style[w] = style.get(w, 0) + 1
    return LintResult(ok, out, style)
