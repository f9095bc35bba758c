"""Fuzz categories on the Verilated NPU (tiny config): ``rtl_programs``, ``axi_faults``,
``backpressure`` and ``build_cache``.

Cases are batched: one simulator launch runs many jobs through the cocotb
module ``flashnpu/fuzz_harness.py`` (a job's steps share one simulation; a hard
reset starts each job). Every job begins with the scrub program
(``fuzz_programs.scrub_program``: zeroes every SRAM row, INITs every state
row), run by the golden model too, so that a case's outcome does not depend
on the case before it and replays alone.

* ``rtl_programs``: the mutants of ``golden_programs`` (``make_mutant``),
  a quarter of them under backpressure. The RTL must agree with the golden
  model: the same error code and ``ERROR_PC``, DRAM equal except the bytes
  the golden error marks undefined; or done with the same DRAM bit for bit
  (done with other DRAM: silent corruption). A program whose result depends
  on timing by the contract (``fuzz_programs.program_hazards``: conflicting
  accesses of two queues without a token between them, an instruction whose
  own reads and writes alias) is held to the outcome only; a program that
  rewrites its own words, or whose serial work is above :data:`RTL_WORK_LIMIT`,
  is not run (counted in ``info``).
* ``axi_faults``: a compiled program with SLVERR or DECERR on the first, last
  or a random beat of a LOAD's source, an instruction word, or a STORE's
  destination; expected: the golden model's code and pc with the same fault,
  and DRAM outside the failing transfer equal. Then, in the same simulation,
  SOFT_RESET and a clean compiled program, bit-exact.
* ``backpressure``: random ready/valid pauses on all five AXI channels under a
  random compiled workload (attention plain, causal, GQA/MQA, ragged; GEMM),
  bit-exact; RTL cycles against ``perfmodel.predict`` (information).
* ``build_cache``: two concurrent ``flashnpu run`` on one checkout, a build of
  a small component killed at a random point; then
  ``cosim.build.cache_integrity_check`` must report nothing and the next
  build and run must succeed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flashnpu.sw.asm import decode_word
from flashnpu.spec.config import NPUConfig, load_config
from flashnpu.fuzz import Budget, Stats, case_seed, exc_text, one_line, rtl_available
from flashnpu.fuzz_programs import (INSTR_BYTES, GoldenOutcome, Mutant, base_programs, capabilities,
                                       golden_outcome, make_grant, make_mutant, opcode_of, pick_faults,
                                       program_hazards, read_extent, scrub_program, scrubbed_state, _words_at)
from flashnpu.spec.isa import ErrorCode, Mem, Opcode

__all__ = ["RtlJob", "Step", "run_jobs", "run_category", "replay_case", "RTL_WORK_LIMIT"]

#: Largest serial work (DMA beats + array rows + vector rows, the measure of
#: ``rtl_backend.default_timeout``) of a case the RTL categories simulate.
RTL_WORK_LIMIT = 60_000
HARNESS_MODULE = "flashnpu.fuzz_harness"


# ================================================================ jobs
@dataclass
class Step:
    """One program run of a job, with what the golden model expects of it."""
    image: np.ndarray
    prog_addr: int
    grant: object = None
    faults: tuple = ()
    backpressure: bool = False
    reset: str = "hard"
    timeout: int = 100_000
    expect: GoldenOutcome | None = None
    role: str = "case"               # "scrub", "case", "clean"
    hazards: list = field(default_factory=list)
    words: list = field(default_factory=list)

    def spec(self, key: str) -> dict:
        return {"image": key, "mem_size": int(self.image.size), "prog_addr": int(self.prog_addr),
                "grant": self.grant.registers() if self.grant is not None else None,
                "faults": [[int(a), int(b), k] for a, b, k in self.faults],
                "backpressure": bool(self.backpressure), "reset": self.reset,
                "timeout_cycles": int(self.timeout), "counters": "min",
                "pre_reset_cycles": int(getattr(self, "pre", 0))}


@dataclass
class RtlJob:
    id: str
    seed: int
    category: str
    steps: list
    describe: str = ""
    meta: dict = field(default_factory=dict)
    results: list = field(default_factory=list)     # one dict per step that ran
    crash: str | None = None                        # the simulator died or the harness failed in this job


def work(words, cfg: NPUConfig) -> int:
    """Serial work of ``words`` in cycles, as ``rtl_backend.default_timeout`` counts it (before its x8)."""
    total = 0
    for w in words:
        op = opcode_of(w)
        if op is None:
            total += 64
            continue
        f = decode_word(w)
        if op in (Opcode.LOAD, Opcode.STORE):
            rb = cfg.acc_row_bytes if f["mem"] else cfg.spad_row_bytes
            total += f["rows"] * f["chunks"] * max(1, rb // cfg.dma_beat_bytes)
        elif op == Opcode.MATMUL:
            total += f["m_rows"] * f["k_chunks"] * f["n_blocks"] + 2 * cfg.dim * f["k_chunks"] * f["n_blocks"]
        elif op == Opcode.VECTOR:
            total += f["rows"] * f["blocks"] + 64
        total += 64
        if op == Opcode.HALT:
            break
    return total


def _static_words(image: np.ndarray, prog_addr: int, limit: int = 4096) -> list:
    """The words from ``prog_addr`` up to the first HALT (what the RTL may dispatch)."""
    out = []
    for w in _words_at(image, prog_addr, limit):
        out.append(w)
        if opcode_of(w) == Opcode.HALT:
            break
    return out


def _timeout(words, cfg, backpressure: bool) -> int:
    return (3 if backpressure else 1) * (8 * work(words, cfg) + 20_000)


_SCRUB: dict = {}


def scrub_step(cfg: NPUConfig, reads=(None, None, None)) -> Step:
    """The scrub program for the rows ``reads`` = (spad, acc, state) a case reads (None: all rows)."""
    key = (cfg.name, tuple(reads))
    if key not in _SCRUB:
        img, pa, grant = scrub_program(cfg, *reads)
        m = Mutant(0, "scrub", [], img, pa, grant)
        exp = golden_outcome(cfg, m)
        if exp.kind != "done":
            raise RuntimeError(f"the scrub program does not complete on the golden model: {exp.kind} {exp.error}")
        _SCRUB[key] = (img, pa, grant, exp)
    img, pa, grant, exp = _SCRUB[key]
    return Step(img, pa, grant, reset="hard", timeout=_timeout(_static_words(img, pa), cfg, False),
                expect=exp, role="scrub")


_SCRUB_CHECKED: set = set()


def scrubbed_golden(cfg: NPUConfig):
    """A golden model in the state the scrub program leaves (checked once against the program itself)."""
    from flashnpu.sw.golden import GoldenNPU
    g = scrubbed_state(GoldenNPU(cfg))
    if cfg.name not in _SCRUB_CHECKED:
        img, pa, grant = scrub_program(cfg)
        ref = GoldenNPU(cfg)
        ref.spad[:] = 7
        ref.acc[:] = -12345
        ref.M[:] = 5
        ref.L[:] = 6
        ref.F[:] = 1 << 20
        ref.run(img, pa, **({"grant": grant} if grant is not None else {}))
        for name in ("spad", "acc", "M", "L", "F"):
            if not np.array_equal(getattr(ref, name), getattr(g, name)):
                raise RuntimeError(f"the scrub program leaves {name} unlike fuzz_programs.scrubbed_state")
        _SCRUB_CHECKED.add(cfg.name)
    return g


def with_scrub(cfg: NPUConfig, steps: list) -> list:
    """``steps`` after a scrub of the rows the first step reads (none if it reads no row)."""
    first = steps[0]
    reads = read_extent(first.words if first.expect.kind == "done" else first.words[:first.expect.pc or 0], cfg)
    if not any(reads):
        first.reset = "hard"
        return steps
    return [scrub_step(cfg, reads)] + steps


# ================================================================ running batches
def _build(cfg, progress):
    from flashnpu.cosim.rtl_backend import build_npu
    return build_npu(cfg, progress=progress)


def run_jobs(cfg: NPUConfig, jobs: list, root: Path, *, progress=print, wall_per_job_s: float = 120.0) -> int:
    """Run ``jobs`` on the RTL (as few simulator launches as possible); fill each job's results. Returns launches."""
    from flashnpu.cosim.build import run_cocotb
    b = _build(cfg, progress)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    pending = list(jobs)
    launches = 0
    while pending:
        run_dir = Path(tempfile.mkdtemp(prefix="batch-", dir=root))
        images, specs, cap = {}, [], 4096
        for j in pending:
            steps = []
            for k, s in enumerate(j.steps):
                key = f"{j.id}_{k}"
                images[key] = s.image
                steps.append(s.spec(key))
                cap = max(cap, int(s.image.size))
            specs.append({"id": j.id, "seed": j.seed, "steps": steps})
        np.savez(run_dir / "images.npz", **images)
        (run_dir / "jobs.json").write_text(json.dumps({"capacity": -(-cap // 4096) * 4096 + 4096, "jobs": specs}))
        res = run_cocotb(b, HARNESS_MODULE, testcase="fuzz_batch", run_dir=run_dir,
                         timeout_s=60 + wall_per_job_s * len(pending))
        launches += 1
        by_id = {j.id: j for j in pending}
        lines = []
        rfile = run_dir / "results.jsonl"
        if rfile.exists():
            for line in rfile.read_text().splitlines():
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    pass
        started = None
        finished = set()
        for ev in lines:
            e = ev.get("event")
            if e == "start":
                started = (ev["job"], ev["step"])
            elif e == "end":
                j = by_id[ev["job"]]
                npy = run_dir / "out" / f"{ev['job']}_{ev['step']}.npy"
                ev["dram"] = np.load(npy) if npy.exists() else None
                j.results.append(ev)
                started = None
                if ev.get("timeout") or len(j.results) == len(j.steps):
                    finished.add(j.id)
            elif e == "harness-error":
                j = by_id[ev["job"]]
                j.crash = f"the fuzz harness failed at step {ev['step']}: {ev['message']}"
                finished.add(j.id)
                started = None
        if started is not None and started[0] not in finished:
            j = by_id[started[0]]
            tail = ""
            if res.log is not None and Path(res.log).exists():
                tail = " | ".join(Path(res.log).read_text(errors="replace").splitlines()[-6:])
            j.crash = f"the simulator ended during step {started[1]} ({res.summary().splitlines()[0]}): {tail}"
            finished.add(j.id)
        if not finished:
            for j in pending:
                j.crash = f"the simulator ran no job: {one_line(res.summary())}"
            pending = []
        else:
            pending = [j for j in pending if j.id not in finished]
        if not os.environ.get("FLASHNPU_FUZZ_KEEP"):
            shutil.rmtree(run_dir, ignore_errors=True)
    return launches


# ================================================================ judging
def _diff_text(a: np.ndarray, b: np.ndarray, skip=()) -> str | None:
    """Where RTL DRAM ``a`` differs from golden ``b`` outside the ``skip`` byte ranges (None: equal)."""
    if a is None or b is None:
        return "no DRAM image"
    if a.size != b.size:
        return f"DRAM sizes differ: RTL {a.size}, golden {b.size}"
    ne = a != b
    for lo, hi in skip:
        ne[max(0, lo):max(0, min(hi, ne.size))] = False
    idx = np.flatnonzero(ne)
    if not idx.size:
        return None
    k = int(idx[0])
    return f"{idx.size} DRAM bytes differ, first at {k:#x}: RTL {int(a[k]):#04x}, golden {int(b[k]):#04x}"


def _racy(st: Stats, seed, step):
    st.info["racy program, DRAM differs (allowed)"] += 1
    st.info[f"racy: {_hazard_kind(step.hazards)}"] += 1
    seeds = st.extra.setdefault("racy_seeds", [])
    if len(seeds) < 20:
        seeds.append(seed)


def _hazard_kind(hazards) -> str:
    h = hazards[0]
    return "aliasing within an instruction" if "alias" in h else "no token between two queues"


def judge_step(st: Stats, job: RtlJob, k: int, step: Step, r: dict | None) -> bool:
    """Count one step's outcome; True if it agreed with the golden model."""
    seed = job.seed
    where = f"{job.describe}" if step.role == "case" else f"{step.role} step of {job.describe}"
    if r is None:
        st.fail("crashes", seed, "rtl-missing", f"step {k} ({step.role}) has no result; {where}")
        return False
    if r.get("timeout"):
        kind = "soft-reset" if step.reset == "soft" and not r.get("reset_ok", True) else "rtl-watchdog"
        st.fail("hangs", seed, kind, f"{r.get('message', '')}; {where}")
        return False
    exp = step.expect
    rtl_code = r.get("error_code", 0)
    try:
        rtl_name = ErrorCode(rtl_code).name
    except ValueError:
        rtl_name = f"unknown code {rtl_code}"
    dram = r.get("dram")
    racy = bool(step.hazards)
    if exp.kind == "done":
        if r.get("error"):
            st.fail("disagreements", seed, "rtl-error-golden-done",
                    f"RTL {rtl_name} at pc {r.get('error_pc')}, golden done; {where}")
            return False
        if not r.get("done"):
            st.fail("disagreements", seed, "rtl-status", f"RTL STATUS {r.get('status', 0):#x} neither done nor "
                    f"error; {where}")
            return False
        d = _diff_text(dram, exp.dram)
        if d is not None:
            if racy:
                _racy(st, seed, step)
            else:
                st.fail("silent_corruptions", seed, "dram", f"RTL done, golden done, {d}; {where}")
                return False
        n_exp = exp.instructions
        if r.get("counters", {}).get("INSTRUCTIONS") not in (None, n_exp) and not racy:
            st.fail("disagreements", seed, "instructions",
                    f"RTL INSTRUCTIONS {r['counters']['INSTRUCTIONS']}, golden executed {n_exp}; {where}")
            return False
        if step.role == "case":
            st.ok()
        return True
    # golden: error
    if r.get("done") and not r.get("error"):
        st.fail("disagreements", seed, "rtl-done-golden-error",
                f"RTL done, golden {exp.code.name} at pc {exp.pc}; {where}")
        return False
    if rtl_code != int(exp.code) or r.get("error_pc") != exp.pc:
        st.fail("disagreements", seed, "error-code",
                f"RTL {rtl_name} at pc {r.get('error_pc')}, golden {exp.code.name} at pc {exp.pc} "
                f"({one_line(exp.error, 160)}); {where}")
        return False
    d = _diff_text(dram, exp.dram, exp.undefined)
    if d is not None:
        if racy:
            _racy(st, seed, step)
        else:
            st.fail("disagreements", seed, "error-dram",
                    f"both {exp.code.name} at pc {exp.pc}, but {d} (outside the undefined "
                    f"{list(exp.undefined)}); {where}")
            return False
    if step.role == "case":
        st.reported()
        st.info[f"error {exp.code.name}"] += 1
    return True


def judge_job(st: Stats, job: RtlJob) -> bool:
    """Count a job: the scrub must complete, each later step must agree; the case counts once."""
    if job.crash is not None:
        st.fail("crashes", job.seed, "rtl-harness", f"{job.crash}; {job.describe}")
        return False
    ok = True
    for k, step in enumerate(job.steps):
        r = job.results[k] if k < len(job.results) else None
        if not judge_step(st, job, k, step, r):
            return False
    return ok


# ================================================================ the project's own backend
#: Every this many batches, a few of the batch's jobs also run through ``rtl_backend.run_session``.
OFFICIAL_EVERY = 4
OFFICIAL_JOBS = 8


def official_available() -> str | None:
    """None if ``rtl_backend.run_session`` (runs with grants and faults, SOFT_RESET between) is there."""
    try:
        import inspect
        from flashnpu.cosim import rtl_backend
        fields = {f.name for f in __import__("dataclasses").fields(rtl_backend.RunSpec)}
        if not {"grant", "faults", "timeout_cycles"} <= fields:
            return "rtl_backend.RunSpec(grant, faults, timeout_cycles)"
        inspect.signature(rtl_backend.run_session)
    except (ImportError, AttributeError, TypeError):
        return "rtl_backend.run_session / RunSpec"
    return None


def _official_ok(job: RtlJob) -> bool:
    """The job fits a session: every step has a grant, no step but the first needs a hard reset, and the
    steps after the first agree on backpressure (a session has one setting)."""
    return (all(s.grant is not None for s in job.steps)
            and all(s.reset != "hard" for s in job.steps[1:])
            and len({s.backpressure for s in job.steps[1:]} or {False}) == 1)


def run_official(cfg: NPUConfig, jobs: list, st: Stats, progress=print) -> int:
    """Run ``jobs`` again through ``rtl_backend.run_session`` (one session, SOFT_RESET between runs) and
    judge them like the fuzz harness's runs; a session that raises is retried job by job."""
    from types import SimpleNamespace
    from flashnpu.cosim import rtl_backend
    todo = [j for j in jobs if _official_ok(j)]
    if not todo:
        return 0
    groups = {}
    for j in todo:
        groups.setdefault(j.steps[-1].backpressure, []).append(j)
    n = 0
    for bp, group in groups.items():
        pending = [group]
        while pending:
            part = pending.pop()
            runs, owners = [], []
            # The session's memory is as large as its largest image (DECERR only beyond that), each
            # image padded with zeros: the golden model's expectation is taken on the padded image.
            size = max(s.image.size for j in part for s in j.steps)
            padded = {}
            for j in part:
                steps = []
                for k, s in enumerate(j.steps):
                    img = np.concatenate([s.image, np.zeros(size - s.image.size, dtype=np.uint8)])
                    m = Mutant(j.seed, "", [], img, s.prog_addr, s.grant, tuple(s.faults))
                    npu = scrubbed_golden(cfg) if s.role == "case" else _fresh_golden(cfg)
                    exp = golden_outcome(cfg, m, npu=npu)
                    steps.append(Step(img, s.prog_addr, s.grant, tuple(s.faults), s.backpressure, "soft", s.timeout,
                                      exp, s.role, s.hazards, s.words))
                    runs.append(rtl_backend.RunSpec(SimpleNamespace(words=[], prog_addr=s.prog_addr), img,
                                                    grant=s.grant, faults=tuple(s.faults), timeout_cycles=s.timeout))
                    owners.append((j, k))
                padded[j.id] = steps
            try:
                res = rtl_backend.run_session(cfg, runs, backpressure=bp, seed=part[0].seed % (1 << 31))
            except Exception as e:
                if len(part) > 1:
                    pending += [[j] for j in part]
                    continue
                j = part[0]
                outcome = "hangs" if isinstance(e, rtl_backend.RtlTimeout) else "crashes"
                st.fail(outcome, j.seed, "official-session", f"rtl_backend.run_session: {exc_text(e)}; {j.describe}")
                n += 1
                continue
            copies = {}
            for (j, k), r in zip(owners, res):
                c = copies.setdefault(j.id, RtlJob(j.id, j.seed, j.category, padded[j.id],
                                                   "via rtl_backend.run_session: " + j.describe, dict(j.meta)))
                c.results.append({"done": r.error_code == ErrorCode.NONE, "error": r.error_code != ErrorCode.NONE,
                                  "error_code": int(r.error_code), "error_pc": r.error_pc, "dram": r.dram,
                                  "cycles": r.cycles, "counters": r.counters, "status": r.status})
            for c in copies.values():
                judge_job(st, c)
                n += 1
    st.info["cases also run through rtl_backend.run_session"] += n
    return n


# ================================================================ case makers
def _grant_for(m_image_size: int, prog_addr: int, n_words: int):
    if not capabilities()["grant"]:
        return None
    return make_grant(prog_addr, prog_addr + INSTR_BYTES * n_words, ((0, m_image_size),))


def _case_step(cfg, m: Mutant, *, backpressure: bool, reset: str = "none", npu=None) -> tuple[Step | None, str]:
    """A step for mutant ``m`` with the golden expectation; (None, why) if it is not run on the RTL."""
    exp = golden_outcome(cfg, m, npu=npu if npu is not None else scrubbed_golden(cfg))
    if exp.kind in ("hang", "crash"):
        return None, f"golden-{exp.kind}: {exp.message}"
    executed = exp.words if exp.kind == "done" else exp.words[:max(0, (exp.pc or 0))]
    hz = program_hazards(executed, cfg, m.prog_addr)
    if any("self-modifying" in h for h in hz):
        return None, "skip: the program rewrites its own words"
    static = _static_words(m.image, m.prog_addr)
    w = max(work(static, cfg), work(exp.words, cfg))
    if w > RTL_WORK_LIMIT:
        return None, "skip: serial work above RTL_WORK_LIMIT"
    t = (3 if backpressure else 1) * (8 * w + 20_000)
    return Step(m.image, m.prog_addr, m.grant, tuple(m.faults), backpressure, reset, t, exp, "case", hz,
                exp.words), ""


def rtl_program_job(seed: int, cfg) -> tuple[RtlJob | None, str]:
    m = make_mutant(seed, cfg)
    rng = random.Random(f"rtl:{seed}")
    bp = rng.random() < 0.25
    step, why = _case_step(cfg, m, backpressure=bp)
    if step is None:
        return None, why
    job = RtlJob(f"r{seed}", seed, "rtl_programs", with_scrub(cfg, [step]),
                 describe=m.describe() + ("; backpressure" if bp else ""))
    return job, ""


def _plain_mutant(seed, cfg, base, image=None) -> Mutant:
    img = base.image if image is None else image
    return Mutant(seed, base.name, [], img, base.prog_addr, _grant_for(img.size, base.prog_addr, len(base.words)),
                  (), len(base.words), base.prog_addr)


def axi_fault_job(seed: int, cfg) -> tuple[RtlJob | None, str]:
    if not capabilities()["faults"]:
        return None, "n/a"
    rng = random.Random(f"axi:{seed}")
    bases = base_programs(cfg)
    base = rng.choice(bases)
    m = _plain_mutant(seed, cfg, base)
    target = rng.choice(("load", "store", "fetch"))
    m.faults = tuple(pick_faults(rng, cfg, m, target=target))
    if not m.faults:
        return None, f"skip: no {target} in {base.name}"
    fa = m.meta["fault"]
    m.muts.append(f"{fa['kind']} on the {fa['beat']} beat of the {fa['target']} of pc {fa['pc']} "
                  f"[{m.faults[0][0]:#x}, {m.faults[0][1]:#x})")
    bp = rng.random() < 0.2
    step, why = _case_step(cfg, m, backpressure=bp)
    if step is None:
        return None, why
    clean_base = rng.choice(bases)
    cm = _plain_mutant(seed, cfg, clean_base)
    clean, why = _case_step(cfg, cm, backpressure=False, reset="soft", npu=_fresh_golden(cfg))
    if clean is None:
        return None, why
    clean.role = "clean"
    job = RtlJob(f"a{seed}", seed, "axi_faults", with_scrub(cfg, [step, clean]),
                 describe=m.describe() + ("; backpressure" if bp else "") + f"; then SOFT_RESET and "
                 f"{clean_base.name}")
    job.meta["fault"] = fa
    return job, ""


def _fresh_golden(cfg):
    from flashnpu.sw.golden import GoldenNPU
    return GoldenNPU(cfg)


def random_workload(rng: random.Random):
    """A small workload of a random kind: attention plain, causal, GQA/MQA, ragged, or GEMM."""
    from flashnpu.sw.workload import AttentionWorkload, GemmWorkload
    kind = rng.choice(("attention", "causal", "gqa", "ragged", "gemm", "gemm"))
    if kind == "gemm":
        return kind, GemmWorkload(rng.randint(1, 20), rng.randint(1, 20), rng.randint(1, 24))
    d = rng.choice((1, 2, 3, 4, 5, 8, 12, 16))
    if kind == "gqa":
        kvh = rng.choice((1, 2))
        h = kvh * rng.choice((2, 3, 4))
        s = rng.randint(1, 12)
        return kind, AttentionWorkload(1, h, kvh, s, s, d, rng.random() < 0.5)
    if kind == "ragged":
        return kind, AttentionWorkload(rng.randint(1, 2), 1, 1, rng.randint(1, 17), rng.randint(1, 17), d,
                                       rng.random() < 0.7)
    s = rng.randint(1, 16)
    return kind, AttentionWorkload(1, rng.randint(1, 2), 1, s, s, d, kind == "causal")


def backpressure_job(seed: int, cfg) -> tuple[RtlJob | None, str]:
    from flashnpu.sw.compiler import compile_workload
    from flashnpu.sw.reference import make_tensors
    from flashnpu.sw.workload import AttentionWorkload
    rng = random.Random(f"bp:{seed}")
    kind, wl = random_workload(rng)
    if isinstance(wl, AttentionWorkload) and wl.heads % wl.kv_heads:
        return None, "skip"
    prog = compile_workload(wl, cfg)
    img = prog.pack(make_tensors(wl, seed % (1 << 31)))
    m = Mutant(seed, kind, [str(wl)], img, int(prog.prog_addr),
               _grant_for(img.size, int(prog.prog_addr), len(prog.words)), (), len(prog.words), int(prog.prog_addr))
    step, why = _case_step(cfg, m, backpressure=True)
    if step is None:
        return None, why
    job = RtlJob(f"b{seed}", seed, "backpressure", with_scrub(cfg, [step]), describe=f"{wl} under backpressure")
    job.meta.update(kind=kind, words=[int(w) for w in prog.words])
    return job, ""


MAKERS = {"rtl_programs": rtl_program_job, "axi_faults": axi_fault_job, "backpressure": backpressure_job}
#: Seed index offsets, so that rtl_programs explores other mutants than golden_programs.
OFFSETS = {"rtl_programs": 5_000_000, "axi_faults": 0, "backpressure": 0}


def _case_index(job: RtlJob) -> int:
    return next(k for k, s in enumerate(job.steps) if s.role == "case")


def _predict_ratio(st: Stats, job: RtlJob, cfg):
    from flashnpu.sw.perfmodel import predict
    k = _case_index(job)
    if len(job.results) <= k or not job.results[k].get("done"):
        return
    try:
        p = predict(cfg, job.meta["words"])
    except Exception as e:
        st.fail("crashes", job.seed, "predict", f"{exc_text(e)}; {job.describe}")
        return
    rtl = job.results[k].get("cycles") or 0
    ratios = st.extra.setdefault("_ratios", [])
    ratios.append((rtl / p.cycles) if p.cycles else float("nan"))
    st.info[f"kind {job.meta['kind']}"] += 1


def _finish_ratios(st: Stats):
    ratios = st.extra.pop("_ratios", [])
    if ratios:
        st.extra["cycles_rtl_over_model"] = {"n": len(ratios), "min": round(min(ratios), 3),
                                            "median": round(statistics.median(ratios), 3),
                                            "max": round(max(ratios), 3)}


# ================================================================ categories
def run_category(name: str, st: Stats, budget: Budget, *, seed: int, cfg: NPUConfig, out, progress=print):
    if name == "build_cache":
        return run_build_cache(st, budget, seed=seed, out=Path(out), progress=progress)
    why = rtl_available()
    if why:
        st.unavailable(why)
        return
    if name == "axi_faults" and not capabilities()["faults"]:
        st.unavailable("golden GoldenNPU.run(faults=...): the expected outcome of an AXI fault")
        return
    if not capabilities()["grant"]:
        st.unavailable("golden GoldenNPU.run(grant=...) / regmap PROG_END: cases run without a DramGrant")
    t0 = time.monotonic()
    _build(cfg, progress)
    st.extra["build_s"] = round(time.monotonic() - t0, 1)
    budget.t0 += time.monotonic() - t0         # a cold build does not eat the share
    root = Path(out) / "rtl-runs"
    maker = MAKERS[name]
    i = 0
    per_job = None
    batch = 6
    batches = 0
    while budget.left() > 5 or i == 0:
        jobs = []
        t_make = time.monotonic()
        while len(jobs) < batch:
            s = case_seed(seed, OFFSETS[name] + i)
            i += 1
            try:
                job, why = maker(s, cfg)
            except Exception as e:
                st.fail("crashes", s, "generator", f"the case generator raised {exc_text(e)}")
                continue
            if job is None:
                if why.startswith("golden-"):
                    kind = "hangs" if why.startswith("golden-hang") else "crashes"
                    st.fail(kind, s, "golden", why)
                else:
                    st.info[why] += 1
                continue
            jobs.append(job)
            if time.monotonic() - t_make > max(10.0, budget.left() / 4):
                break
        t_run = time.monotonic()
        launches = run_jobs(cfg, jobs, root, progress=progress)
        st.info["simulator launches"] += launches
        for job in jobs:
            if judge_job(st, job) and name == "backpressure":
                _predict_ratio(st, job, cfg)
        batches += 1
        if batches % OFFICIAL_EVERY == 1 and budget.left() > 10:
            why = official_available()
            if why:
                st.unavailable(f"{why}: no cross-check through the project's RTL backend")
            else:
                run_official(cfg, jobs[:OFFICIAL_JOBS], st, progress)
        dt = time.monotonic() - t_run
        per_job = dt / max(1, len(jobs))
        # Next batch: about 30 s of simulation, within what is left of the share.
        batch = int(max(1, min(200, min(30.0, budget.left() - 5) / max(per_job, 1e-3))))
        progress(f"[fuzz] {name}: {st.tried} cases, {per_job:.2f} s per case, {st.failed} failures")
    _finish_ratios(st)
    shutil.rmtree(root, ignore_errors=True)


def replay_case(name: str, st: Stats, seed: int, *, cfg, out, progress=print):
    if name == "build_cache":
        return run_build_cache(st, Budget(0), seed=seed, out=Path(out), progress=progress, tries=[seed])
    job, why = MAKERS[name](seed, cfg)
    if job is None:
        progress(f"case {name}:{seed} is not run on the RTL: {why}")
        if why.startswith("golden-"):
            st.fail("hangs" if why.startswith("golden-hang") else "crashes", seed, "golden", why)
        return
    progress(f"case: {job.describe}")
    for k, s in enumerate(job.steps):
        e = s.expect
        progress(f"  step {k} ({s.role}, reset {s.reset}): golden {e.kind}"
                 + (f" {e.code.name} at pc {e.pc}, undefined {list(e.undefined)}" if e.error is not None else "")
                 + (f"; hazards: {s.hazards}" if s.hazards else ""))
    run_jobs(cfg, [job], Path(out) / "rtl-runs", progress=progress)
    for k, r in enumerate(job.results):
        progress(f"  step {k} RTL: " + ", ".join(f"{a}={r.get(a)}" for a in
                                                  ("done", "error", "error_code", "error_pc", "cycles", "timeout")))
    if job.crash:
        progress(f"  crash: {job.crash}")
    judge_job(st, job)
    if official_available() is None and _official_ok(job):
        progress("  again through rtl_backend.run_session:")
        run_official(cfg, [job], st, progress)
    if name == "backpressure":
        _predict_ratio(st, job, cfg)
        _finish_ratios(st)
    from flashnpu.sw.asm import disassemble
    case = job.steps[_case_index(job)]
    if case.words:
        progress("golden executed:\n" + disassemble(case.words, pc=True))


# ================================================================ build cache
_COMPONENT = '''
from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

class Counter(wiring.Component):
    en: In(1)
    count: Out(16)

    def __init__(self, step):
        self.step = step
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.count.eq(self.count + self.step)
        return m
'''

_BUILD_SCRIPT = '''
import sys, types
from flashnpu.cosim.build import build, run_cocotb
ns = {}
exec(%(component)r, ns)
root, step, run = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "run"
b = build(ns["Counter"](step), "counter", "flashnpu.fuzz_harness", root=root)
print("BUILT", b.dir, b.cached, flush=True)
if run:
    import os
    os.environ["FUZZ_COUNTER_STEP"] = str(step)
    r = run_cocotb(b, "flashnpu.fuzz_harness", testcase="counter_check",
                   extra_env={"FUZZ_COUNTER_STEP": str(step)})
    print("RUN", r.passed, r.summary().splitlines()[0], flush=True)
    sys.exit(0 if r.passed else 3)
'''


def _integrity(root) -> tuple[list | None, str]:
    try:
        from flashnpu.cosim.build import cache_integrity_check
    except ImportError:
        return None, "cosim.build.cache_integrity_check"
    return list(cache_integrity_check(root)), ""


def _kill_group(p: subprocess.Popen):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def run_build_cache(st: Stats, budget: Budget, *, seed: int, out: Path, progress=print, tries=None):
    """A few tries: concurrent ``flashnpu run`` on the real (cached) tiny NPU, and killed builds of a
    small component in a private cache folder (the real cache is never wiped)."""
    why = rtl_available()
    if why:
        st.unavailable(why)
        return
    root = (out / "build-cache-fuzz").resolve()
    root.mkdir(parents=True, exist_ok=True)
    exe = [sys.executable, "-m", "flashnpu.cli"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    i = 0
    seeds = list(tries) if tries is not None else None
    took = {"concurrent-run": 15.0, "killed-build": 40.0}     # last duration of a try of each kind
    build_s = 20.0                                             # a cold build of the component, measured
    while (seeds is None and (budget.left() > 0 or i == 0)) or (seeds is not None and i < len(seeds)):
        s = seeds[i] if seeds is not None else case_seed(seed, i)
        kind = "concurrent-run" if s % 2 == 0 else "killed-build"
        if seeds is None and i > 0 and budget.left() < took[kind]:
            break
        i += 1
        rng = random.Random(f"build:{s}")
        t0 = time.monotonic()
        try:
            if kind == "concurrent-run":
                # Two runs of the tiny NPU at once on this checkout: both must match the golden model.
                cmd = exe + ["run", "gemm", "--config", "tiny", "-M", str(rng.randint(1, 8)), "-N",
                             str(rng.randint(1, 8)), "-K", str(rng.randint(1, 8)), "--seed", str(rng.randrange(100))]
                ps = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                       start_new_session=True) for _ in range(2)]
                outs = []
                for p in ps:
                    try:
                        o, _ = p.communicate(timeout=900)
                    except subprocess.TimeoutExpired:
                        _kill_group(p)
                        o = "timed out after 900 s"
                    outs.append((p.returncode, o))
                bad = [(rc, o) for rc, o in outs if rc != 0 or "RESULT: match" not in o]
                if bad:
                    rc, o = bad[0]
                    st.fail("crashes", s, "concurrent-run", f"flashnpu run exit {rc}: {one_line(o[-600:])}")
                    continue
                # The real cache is shared with other work on this checkout: check the entry these
                # runs used (a lock or a build folder of someone else's build is not theirs).
                from flashnpu.cosim.build import DEFAULT_ROOT
                entry = _build(load_config("tiny"), None).dir.name
                problems, missing = _integrity(DEFAULT_ROOT)
                if problems is not None:
                    problems = [x for x in problems if x.startswith(entry)]
            else:
                # A build killed at a random point, then the same build again, then a run.
                step = rng.randrange(1, 1 << 12)
                script = _BUILD_SCRIPT % {"component": _COMPONENT}
                p = subprocess.Popen([sys.executable, "-c", script, str(root), str(step), "build"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     start_new_session=True)
                delay = rng.uniform(0.0, 1.2 * build_s)
                try:
                    p.communicate(timeout=delay)
                    st.info["killed-build: finished before the kill"] += 1
                except subprocess.TimeoutExpired:
                    _kill_group(p)
                    st.info["killed-build: killed"] += 1
                # After a SIGKILL nothing of the killed process can clean up: its compilers (their own
                # process group) may still run in its tmp folder until the next build of the cache
                # sweeps them (docs/cosim.md). So the cache is checked after that next build.
                t_b = time.monotonic()
                q = subprocess.run([sys.executable, "-c", script, str(root), str(step), "run"],
                                   capture_output=True, text=True, env=env, timeout=900)
                problems, missing = _integrity(root)
                if q.returncode != 0 or "RUN True" not in q.stdout:
                    st.fail("crashes", s, "build-after-kill",
                            f"the build after a kill at {delay:.1f} s failed (exit {q.returncode}): "
                            f"{one_line((q.stdout + q.stderr)[-600:])}")
                    continue
                if "BUILT" in q.stdout and "False" in q.stdout.split("BUILT", 1)[1].splitlines()[0]:
                    build_s = max(1.0, time.monotonic() - t_b)
        except Exception as e:
            st.fail("crashes", s, kind, exc_text(e))
            continue
        if problems is None:
            st.unavailable(f"{missing}: the cache was not checked after the {kind} tries")
            st.info[f"{kind}: ran, cache not checked (not counted)"] += 1
            continue
        if problems:
            st.fail("crashes", s, f"{kind}-integrity", f"cache_integrity_check: {'; '.join(problems[:3])}")
        else:
            st.ok()
        st.info[kind] += 1
        took[kind] = time.monotonic() - t0
        progress(f"[fuzz] build_cache: {kind} try in {took[kind]:.0f} s")
    shutil.rmtree(root, ignore_errors=True)
