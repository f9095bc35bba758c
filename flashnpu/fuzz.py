"""The seeded fuzz campaign: ``flashnpu fuzz --seconds N --seed S --out DIR``.

Each category generates cases from a per-case seed (``random.Random``), runs
them, and sorts every outcome into one of

* ``ok``: the case completed as it should (a valid config generated, a legal
  program finished bit-exact, ...);
* ``errors_reported``: the case was rejected the way the contract says (a
  one-line ``ConfigError`` naming the field, an ``NpuError`` with a code and a
  pc, the same error code and ``ERROR_PC`` on the RTL as in the golden model);
* ``hangs``, ``crashes``, ``silent_corruptions``, ``disagreements``: failures.

Every failure keeps the seed of its case; ``flashnpu fuzz --replay
CATEGORY:SEED`` regenerates that case alone and prints what happened. The
categories live in ``flashnpu/fuzz_configs.py`` (configs), ``flashnpu/fuzz_api.py`` (api),
``flashnpu/fuzz_programs.py`` (golden_programs) and ``flashnpu/fuzz_rtl.py``
(rtl_programs, axi_faults, backpressure, build_cache); the RTL categories run
many cases per simulator launch through the cocotb module
``flashnpu/fuzz_harness.py``. The time budget is split across the selected
categories by :data:`WEIGHTS`; each category loops until its share is used
(a category that finishes early leaves its time to the ones after it).
``DIR/report.json`` holds one entry per category; the exit code is 1 if any
failure count is not zero.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

__all__ = ["CATEGORIES", "RTL_CATEGORIES", "WEIGHTS", "FAILURE_KINDS", "Stats", "Budget", "run_campaign",
           "replay", "case_seed", "one_line"]

#: Outcome counters of a category, in report order (``tried`` is their sum).
OUTCOMES = ("ok", "errors_reported", "hangs", "crashes", "silent_corruptions", "disagreements")
#: The outcomes that are failures.
FAILURE_KINDS = ("hangs", "crashes", "silent_corruptions", "disagreements")

#: Category -> (module, share of the time budget). Golden-only first, then the RTL ones.
CATEGORIES = {
    "configs": ("flashnpu.fuzz_configs", 0.12),
    "api": ("flashnpu.fuzz_api", 0.03),
    "golden_programs": ("flashnpu.fuzz_programs", 0.24),
    "rtl_programs": ("flashnpu.fuzz_rtl", 0.25),
    "axi_faults": ("flashnpu.fuzz_rtl", 0.15),
    "backpressure": ("flashnpu.fuzz_rtl", 0.15),
    "build_cache": ("flashnpu.fuzz_rtl", 0.06),
}
WEIGHTS = {k: w for k, (_, w) in CATEGORIES.items()}
#: Categories that need Verilator (skipped with ``--no-rtl``).
RTL_CATEGORIES = ("rtl_programs", "axi_faults", "backpressure", "build_cache")
#: Failures kept in the report per category (the counts are always exact).
MAX_FAILURES_KEPT = 200


def case_seed(campaign_seed: int, index: int) -> int:
    """The seed of case ``index`` of a campaign: readable, and distinct across campaign seeds."""
    return int(campaign_seed) * 10_000_000 + int(index)


def one_line(text, limit: int = 400) -> str:
    """``text`` as one line of at most ``limit`` characters (for failure messages in the report)."""
    s = " | ".join(line.strip() for line in str(text).splitlines() if line.strip())
    return s if len(s) <= limit else s[:limit - 3] + "..."


def exc_text(e: BaseException) -> str:
    """``Type: message (file:line)`` of an exception, the innermost frame of the project named."""
    tb = traceback.extract_tb(e.__traceback__)
    where = ""
    for fr in reversed(tb):
        if "flashnpu" in fr.filename or "/sw/" in fr.filename or "/hw/" in fr.filename \
                or "/cosim/" in fr.filename:
            where = f" ({Path(fr.filename).name}:{fr.lineno})"
            break
    return f"{type(e).__name__}: {one_line(e, 300)}{where}"


class Stats:
    """The counters and failures of one category."""

    def __init__(self, name: str):
        self.name = name
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.failures: list[dict] = []
        self.info = Counter()          # category-specific counts (information, not failures)
        self.extra: dict = {}          # category-specific figures (e.g. cycle ratios)
        self.seconds = 0.0
        self.not_available: list[str] = []

    @property
    def tried(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        return sum(self.counts[k] for k in FAILURE_KINDS)

    def ok(self, n: int = 1):
        self.counts["ok"] += n

    def reported(self, n: int = 1):
        self.counts["errors_reported"] += n

    def fail(self, outcome: str, seed, kind: str, message: str):
        """Count a failure of ``outcome`` (one of :data:`FAILURE_KINDS`) and keep its seed."""
        assert outcome in FAILURE_KINDS, outcome
        self.counts[outcome] += 1
        if len(self.failures) < MAX_FAILURES_KEPT:
            self.failures.append({"seed": seed, "outcome": outcome, "kind": kind, "message": one_line(message),
                                  "replay": f"flashnpu fuzz --replay {self.name}:{seed}"})

    def unavailable(self, what: str):
        if what not in self.not_available:
            self.not_available.append(what)

    def to_dict(self) -> dict:
        d = {"tried": self.tried, **self.counts, "failures": self.failures, "seconds": round(self.seconds, 2),
             "cases_per_s": round(self.tried / self.seconds, 2) if self.seconds else 0.0,
             "not_available": self.not_available, "info": dict(sorted(self.info.items()))}
        d.update(self.extra)
        return d

    def merge(self, d: dict):
        """Add the counts of a :meth:`to_dict` from another process."""
        for k in OUTCOMES:
            self.counts[k] += d[k]
        self.failures.extend(d["failures"][:max(0, MAX_FAILURES_KEPT - len(self.failures))])
        self.info.update(d["info"])
        self.seconds += d["seconds"]
        for w in d["not_available"]:
            self.unavailable(w)
        for k, v in d.items():
            if k not in self.to_dict():
                self.extra[k] = v


@dataclasses.dataclass
class Budget:
    """A category's time share: loop while :meth:`left` is positive."""
    seconds: float
    t0: float = dataclasses.field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.t0)

    def used(self) -> float:
        return time.monotonic() - self.t0


def _module(category: str):
    import importlib
    return importlib.import_module(CATEGORIES[category][0])


def _git(*args) -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _parse_categories(text) -> list[str]:
    if text is None or text == "":
        return list(CATEGORIES)
    names = [c.strip() for c in str(text).split(",") if c.strip()]
    bad = [c for c in names if c not in CATEGORIES]
    if bad:
        raise ValueError(f"argument '--categories': unknown category {bad[0]!r} (known: {', '.join(CATEGORIES)})")
    return [c for c in CATEGORIES if c in names]


def run_campaign(seconds: float, seed: int, out, categories=None, *, rtl: bool = True, progress=print,
                 config: str = "tiny") -> dict:
    """Run the campaign, write ``out/report.json`` and return the report.

    ``categories`` is a list of names (default: all); ``rtl=False`` leaves out
    :data:`RTL_CATEGORIES`. ``config`` is the config the program and RTL
    categories run on (the configs category mutates every config of
    ``spec/configs/``).
    """
    from flashnpu.spec.config import config_names, load_config
    t_start = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cats = _parse_categories(",".join(categories) if isinstance(categories, (list, tuple)) else categories)
    skipped = [c for c in cats if c in RTL_CATEGORIES and not rtl]
    cats = [c for c in cats if c not in skipped]
    cfg = load_config(config)
    stats = {c: Stats(c) for c in cats}
    left_w = sum(WEIGHTS[c] for c in cats)
    for i, c in enumerate(cats):
        remaining = seconds - (time.monotonic() - t_start)
        share = max(0.0, remaining * WEIGHTS[c] / left_w) if left_w else 0.0
        left_w -= WEIGHTS[c]
        progress(f"[fuzz] {c}: {share:.0f} s")
        st = stats[c]
        t0 = time.monotonic()
        try:
            _module(c).run_category(c, st, Budget(share), seed=int(seed), cfg=cfg, out=out, progress=progress)
        except Exception as e:          # the campaign itself failed: that is a crash of the category
            st.fail("crashes", None, "campaign", f"the {c} loop raised {exc_text(e)}")
            progress(traceback.format_exc())
        st.seconds = time.monotonic() - t0
        progress(f"[fuzz] {c}: {st.tried} cases in {st.seconds:.0f} s, {st.failed} failures")
    report = _report(stats, seconds=seconds, seed=seed, elapsed=time.monotonic() - t_start, cfg=cfg,
                     skipped=skipped, config_names=config_names())
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def _report(stats: dict, *, seconds, seed, elapsed, cfg, skipped, config_names) -> dict:
    cats = {c: s.to_dict() for c, s in stats.items()}
    totals = {k: sum(d[k] for d in cats.values()) for k in ("tried", *OUTCOMES)}
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "seed": int(seed), "seconds": seconds, "elapsed_s": round(elapsed, 1),
        "git_commit": commit, "git_dirty": dirty,
        "config": cfg.name, "config_names": config_names,
        "python": sys.version.split()[0],
        "skipped_categories": skipped,
        "not_available": {c: d["not_available"] for c, d in cats.items() if d["not_available"]},
        "categories": cats,
        "totals": totals,
        "failed": sum(totals[k] for k in FAILURE_KINDS),
    }


def format_table(report: dict) -> str:
    """The report as a plain aligned text table, one row per category and a total."""
    cols = ("tried", "ok", "errors_reported", "hangs", "crashes", "silent_corruptions", "disagreements")
    heads = ("category", "tried", "ok", "errors", "hangs", "crashes", "silent", "disagree", "cases/s")
    rows = []
    for c, d in report["categories"].items():
        rows.append((c, *(f"{d[k]:,}" for k in cols), f"{d['cases_per_s']:.1f}"))
    t = report["totals"]
    rows.append(("total", *(f"{t[k]:,}" for k in cols), ""))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
    fmt = lambda r: "  ".join(s.ljust(w) if i == 0 else s.rjust(w) for i, (s, w) in enumerate(zip(r, widths)))
    lines = [fmt(heads), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in rows[:-1]] + ["  ".join("-" * w for w in widths), fmt(rows[-1])]
    for c, d in report["categories"].items():
        for what in d["not_available"]:
            lines.append(f"NOT AVAILABLE ({c}): {what}")
    for c in report.get("skipped_categories", ()):
        lines.append(f"skipped ({c}): --no-rtl")
    shown = 0
    for c, d in report["categories"].items():
        for f in d["failures"]:
            if shown < 20:
                lines.append(f"FAIL {c} seed {f['seed']} {f['outcome']}/{f['kind']}: {f['message'][:200]}")
            shown += 1
    if shown > 20:
        lines.append(f"... {shown - 20} more failures in report.json")
    return "\n".join(lines)


def replay(spec: str, *, cfg=None, out=None, progress=print) -> int:
    """Run the one case ``CATEGORY:SEED`` again and print what happened; 1 if it fails."""
    from flashnpu.spec.config import load_config
    try:
        category, seed_text = str(spec).rsplit(":", 1)
        seed = int(seed_text)
    except ValueError:
        raise ValueError(f"argument '--replay' = {spec!r}: must be CATEGORY:SEED, e.g. golden_programs:10000042") \
            from None
    _parse_categories(category)
    cfg = load_config(cfg or "tiny")
    out = Path(out or "build/fuzz-replay")
    out.mkdir(parents=True, exist_ok=True)
    st = Stats(category)
    _module(category).replay_case(category, st, seed, cfg=cfg, out=out, progress=progress)
    d = st.to_dict()
    progress(f"replay {category}:{seed}: " + ", ".join(f"{k} {d[k]}" for k in OUTCOMES if d[k]))
    for f in d["failures"]:
        progress(f"  {f['outcome']}/{f['kind']}: {f['message']}")
    for w in d["not_available"]:
        progress(f"  NOT AVAILABLE: {w}")
    return 1 if st.failed else 0


def rtl_available() -> str | None:
    """``None`` if Verilator and cocotb can be used, else why not (one line)."""
    try:
        from flashnpu.cosim.toolchain import find_toolchain
        find_toolchain()
    except Exception as e:
        return f"Verilator toolchain not usable: {exc_text(e)}"
    return None
