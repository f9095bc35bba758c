"""Run a program on the Verilated NPU: build (cached), simulate under cocotb, read everything back.

:func:`run_program` is the ``"rtl"`` backend of :mod:`flashnpu.driver`
(``flashnpu run`` is in :mod:`flashnpu.cli`). The cocotb side is
:mod:`flashnpu.cosim.harness`; data crosses in files of the run folder
(``input.npz``/``input.json`` in, ``output.npz``/``result.json`` out).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flashnpu.sw.asm import program_bytes
from flashnpu.spec.config import load_config
from flashnpu.spec.isa import ErrorCode
from flashnpu.spec.memory_timing import MemoryTiming, memory_timing_for
from flashnpu.sw.program import program_grant
from flashnpu.spec.regmap import DramGrant
from flashnpu.cosim.build import BuildResult, RunFolder, build_from_sources, run_cocotb, source_key
from flashnpu.cosim.verilog import to_verilog

__all__ = ["RtlResult", "RtlError", "RtlTimeout", "RunSpec", "build_npu", "default_timeout",
           "run_program", "run_session",
           "compare_outputs", "HARNESS"]

HARNESS = "flashnpu.cosim.harness"


class RtlError(RuntimeError):
    """The simulation did not complete (harness failure, simulator crash)."""


class RtlTimeout(RtlError):
    """The watchdog fired: the NPU was neither done nor in error; the message names each queue's state."""


@dataclass
class RtlResult:
    """What an RTL run leaves.

    Members
    -------
    dram : np.ndarray (uint8)
        The DRAM image after the run (``mem_size`` bytes).
    cycles : int
        ``CYCLES`` counter: cycles from start to done or error.
    counters : dict
        Every counter of ``sw/regmap.COUNTERS``.
    error_code : ErrorCode
        ``NONE`` when the program finished with done.
    error_pc : int
    wall_s : float
        Wall time of the whole call (build included).
    build_s : float
        Wall time of the build step (about 0 when cached).
    sim_wall_s : float
        Wall time from START to done/error inside the simulator.
    status : int
        The last STATUS register value.
    run_dir : Path
        Removed when every result of the run (and any exception it raised) is
        dropped, unless ``waves``, ``FLASHNPU_KEEP_RUNS=1`` or a ``run_dir`` of the caller.
    quiet : bool
        STATUS showed QUIET at the end (no AXI transaction outstanding, no unit busy).
    """
    dram: np.ndarray
    cycles: int
    counters: dict
    error_code: ErrorCode
    error_pc: int
    wall_s: float
    build_s: float
    sim_wall_s: float = 0.0
    status: int = 0
    run_dir: Path | None = None
    build: BuildResult | None = field(default=None, repr=False)
    quiet: bool = False
    run_folder: RunFolder | None = field(default=None, repr=False, compare=False)

    @property
    def done(self) -> bool:
        return self.error_code == ErrorCode.NONE

    @property
    def cycles_per_s(self) -> float:
        return self.cycles / self.sim_wall_s if self.sim_wall_s else 0.0


def build_npu(config, *, waves: bool = False, progress=None) -> BuildResult:
    """Verilate ``NPU(config)`` as module ``npu`` (cached by hash; instant when no source changed), its
    reset input through a register (``cosim/registered_reset.py``: about 3x the simulation speed)."""
    from flashnpu.cosim.registered_reset import RegisteredReset
    from flashnpu.hw.npu import NPU
    cfg = load_config(config)
    key = source_key("NPU", json.dumps(cfg.to_dict(), sort_keys=True))
    return build_from_sources(lambda: to_verilog(RegisteredReset(NPU(cfg)), "npu"), "npu", key, HARNESS,
                              waves=waves, progress=progress)


def fast_mem_bytes(image_bytes: int) -> int:
    """Size of the HDL memory for an image: the next power of two (at least 64 KiB), so that
    images of similar size share one model."""
    return max(1 << 16, 1 << (int(image_bytes) - 1).bit_length())


def build_sim_top(config, *, mem_bytes: int, memory_timing: MemoryTiming, waves: bool = False,
                  progress=None) -> BuildResult:
    """Verilate ``SimTop`` (the NPU with the HDL memory of ``axi_memory.py``) as module ``sim_top``,
    its memory of timing ``memory_timing``."""
    from flashnpu.cosim.axi_memory import sim_top_verilog
    cfg = load_config(config)
    mt = memory_timing.for_config(cfg)
    key = source_key("SimTop", json.dumps(cfg.to_dict(), sort_keys=True), mem_bytes, mt.lat, mt.queue_depth,
                     mt.r_gap_every)
    return build_from_sources(lambda: sim_top_verilog(cfg, mem_bytes=mem_bytes, memory_timing=mt), "sim_top",
                              key, HARNESS, waves=waves, progress=progress)


def default_timeout(config, program) -> int:
    """A watchdog far above any legal run: every instruction's work done serially, times 8.

    Per instruction: its DMA beats (rows * chunks * row bytes / beat) or its
    array rows (m_rows * k_chunks * n_blocks, plus a fill of 2*dim) or its
    vector rows (rows * blocks), plus a fetch round trip of 64 cycles.
    """
    from flashnpu.sw.asm import decode_word
    from flashnpu.spec.isa import Opcode
    cfg = load_config(config)
    total = 0
    for w in program.words:
        f = decode_word(int(w))
        op = f["opcode"]
        if op in (Opcode.LOAD, Opcode.STORE):
            rb = cfg.acc_row_bytes if f.get("mem") else cfg.spad_row_bytes
            work = f["rows"] * f["chunks"] * max(1, rb // cfg.dma_beat_bytes)
        elif op == Opcode.MATMUL:
            work = f["m_rows"] * f["k_chunks"] * f["n_blocks"] + 2 * cfg.dim * f["k_chunks"] * f["n_blocks"]
        elif op == Opcode.VECTOR:
            work = f["rows"] * f["blocks"] + 64
        else:
            work = 0
        total += work + 64
    return 8 * total + 20_000


def _words(program):
    return [int(w) for w in program.words]


@dataclass
class RunSpec:
    """One run of a simulation session (:func:`run_session`).

    ``program`` (``.words``, ``.prog_addr``) is written into a copy of
    ``image``. ``grant`` is what the host writes into ``PROG_ADDR``,
    ``PROG_END`` and the DMA windows (default: the program's own words as the
    code window, the whole image as DMA window 0). ``faults`` are
    ``(lo, hi, "SLVERR" | "DECERR")`` byte ranges the memory answers with an
    error during this run. ``stop_at`` stops the run that many cycles after
    START with ``stop_kind`` (``"soft_reset"`` or ``"abort"``).
    """
    program: object
    image: np.ndarray
    grant: DramGrant | None = None
    faults: tuple = ()
    stop_at: int | None = None
    stop_kind: str = "soft_reset"
    timeout_cycles: int | None = None


def run_program(program, image, *, config=None, grant: DramGrant | None = None, faults=(),
                **session_opts) -> RtlResult:
    """Run ``program`` (``.words``, ``.prog_addr``) on the Verilated NPU with DRAM ``image``.

    The signature is :func:`flashnpu.driver.run_program`'s (``program, image,
    *, config``; ``config`` defaults to ``program.config``), which calls this
    one for ``backend="rtl"`` and wraps the result in a ``RunResult``.

    One run of :func:`run_session` (see there for the options). The DRAM is
    ``mem_size`` bytes (default: the image); an access at or beyond it answers
    DECERR, one in a ``slverr`` range ``(lo, hi)`` SLVERR, one in a ``faults``
    range ``(lo, hi, resp)`` ``resp``. An NPU error (bad instruction, AXI
    error) is not an exception: it is ``error_code``.
    """
    if config is None:
        config = getattr(program, "config", None)
        if config is None:
            raise ValueError("argument 'config': give the config (the program has none of its own)")
    timeout = session_opts.pop("timeout_cycles", None)
    return run_session(config, [RunSpec(program, image, grant=grant, faults=tuple(faults),
                                        timeout_cycles=timeout)], **session_opts)[0]


def run_session(config, runs, *, backpressure: bool = False, waves: bool = False,
                mem_size: int | None = None, slverr=(), seed: int = 0, memory: str = "axiram",
                lat: int | None = None, memory_timing: MemoryTiming | None = None,
                progress=None, sim_progress=None, run_dir=None,
                wall_timeout_s: float = 7200, pause_p: float = 0.3) -> list[RtlResult]:
    """Run every :class:`RunSpec` of ``runs`` in turn in one simulation of the Verilated NPU.

    Between two runs the harness writes SOFT_RESET and waits for STATUS QUIET
    (no power cycle, no rebuild); each run loads its own image. ``backpressure``
    adds random stalls (probability ``pause_p``) on every AXI channel.
    ``timeout_cycles`` (default :func:`default_timeout`) arms the watchdog:
    :class:`RtlTimeout` then names each queue's state.

    ``memory`` is ``"axiram"`` (cocotbext-axi's ``AxiRam``: random stalls
    possible, about 20k beats/s) or ``"fast"`` (the HDL memory of
    ``cosim/axi_memory.py`` with latency ``lat``, default 1: one beat per
    clock, no backpressure, one SLVERR range; or, instead of ``lat``, with
    ``memory_timing`` (``spec/memory_timing.py``: latency, queue depth, R
    gaps, the description ``perfmodel.predict(..., memory_timing=...)`` reads); its size is
    :func:`fast_mem_bytes` of the largest image unless ``mem_size`` is given,
    and DECERR starts there).

    ``progress(message)`` hears about the build and the start of the
    simulation; ``sim_progress(cycles)`` about the cycles simulated so far,
    about twice a second.
    """
    t0 = time.monotonic()
    cfg = load_config(config)
    if memory not in ("axiram", "fast"):
        raise ValueError(f"memory = {memory!r}: must be 'axiram' or 'fast'")
    if memory == "axiram" and (lat is not None or memory_timing is not None):
        raise ValueError("lat, memory_timing: the AxiRam memory has no timing settings (use memory='fast')")
    mt = memory_timing_for(cfg, lat, memory_timing) if memory == "fast" else None
    if memory == "fast" and backpressure:
        raise ValueError("backpressure needs memory='axiram' (the HDL memory has fixed timing)")
    if memory == "fast" and len(slverr) > 1:
        raise ValueError("memory='fast' has one SLVERR window; give at most one slverr range")
    if not runs:
        raise ValueError("runs: give at least one RunSpec")
    imgs, specs = [], []
    for k, run in enumerate(runs):
        img = np.array(np.asarray(run.image, dtype=np.uint8).reshape(-1), copy=True)
        code = np.frombuffer(program_bytes(_words(run.program)), dtype=np.uint8)
        pa = int(run.program.prog_addr)
        # (no words to place: PROG_ADDR may point anywhere, e.g. outside the memory, to test that)
        if pa % 32 or not 0 <= pa < 1 << 32 or (code.size and pa + code.size > img.size):
            raise ValueError(f"runs[{k}]: program of {code.size} B at prog_addr {pa:#x} does not fit the "
                             f"{img.size}-byte image (or prog_addr is not 32-byte aligned)")
        img[pa:pa + code.size] = code
        grant = run.grant if run.grant is not None else program_grant(run.program, img.size)
        if grant.prog_addr != pa:
            raise ValueError(f"runs[{k}]: grant.prog_addr {grant.prog_addr:#x} is not the program's {pa:#x}")
        for lo, hi, resp in run.faults:
            if resp not in ("SLVERR", "DECERR"):
                raise ValueError(f"runs[{k}].faults: resp {resp!r} must be 'SLVERR' or 'DECERR'")
        if run.stop_kind not in ("soft_reset", "abort"):
            raise ValueError(f"runs[{k}].stop_kind = {run.stop_kind!r}: must be 'soft_reset' or 'abort'")
        timeout = int(run.timeout_cycles if run.timeout_cycles is not None
                      else default_timeout(cfg, run.program))
        imgs.append(img)
        # The NPU can write nothing beyond this (its DMA windows are checked in hardware).
        writable_end = max([img.size, *(min(lim, 1 << 32) for b, lim in grant.windows if b < lim)])
        specs.append({"image": k, "grant": grant.registers(), "timeout_cycles": timeout,
                      "writable_end": int(writable_end),
                      "faults": [[int(lo), int(hi), resp] for lo, hi, resp in run.faults],
                      "stop_at": None if run.stop_at is None else int(run.stop_at),
                      "stop_kind": run.stop_kind})
    biggest = max(img.size for img in imgs)
    if memory == "axiram":
        mem_size = int(mem_size if mem_size is not None else biggest)
    if mem_size is not None and mem_size < biggest:
        raise ValueError(f"mem_size = {mem_size}: smaller than the image ({biggest} B)")
    if memory == "fast":
        mem_size = int(mem_size) if mem_size is not None else fast_mem_bytes(biggest)
        b = build_sim_top(cfg, mem_bytes=mem_size, memory_timing=mt, waves=waves, progress=progress)
    else:
        b = build_npu(cfg, waves=waves, progress=progress)
    folder = None
    if run_dir is None:
        folder = RunFolder(b.dir, keep=waves)   # removed with the results (cosim/build.py)
        run_dir = folder.path
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # The harness clears what an earlier run left beyond each image (the memory is zero there).
    np.savez(run_dir / "input.npz", **{f"dram{k}": img for k, img in enumerate(imgs)})
    (run_dir / "input.json").write_text(json.dumps({
        "mem_size": mem_size, "backpressure": bool(backpressure), "pause_p": float(pause_p),
        "seed": int(seed), "beat": cfg.dma_beat_bytes,
        "slverr": [[int(lo), int(hi)] for lo, hi in slverr], "runs": specs}, indent=2))
    for f in ("output.npz", "result.json"):
        (run_dir / f).unlink(missing_ok=True)
    if progress is not None:
        n = sum(len(r.program.words) for r in runs)
        progress(f"simulating ({len(runs)} run(s), {n} instructions, watchdog "
                 f"{max(sp['timeout_cycles'] for sp in specs)} cycles)")
    res = run_cocotb(b, HARNESS, run_dir=run_dir, waves=waves, timeout_s=wall_timeout_s,
                     on_progress=sim_progress)
    rfile = run_dir / "result.json"
    if not rfile.exists():
        raise RtlError(f"the RTL run did not complete: {res.summary()}")
    rs = json.loads(rfile.read_text())["runs"]
    for r in rs:
        if r.get("timeout"):
            raise RtlTimeout(r["message"] + f" (run folder {run_dir})")
    if not res.passed:
        raise RtlError(f"the cocotb harness failed: {res.summary()}")
    if len(rs) != len(runs):
        raise RtlError(f"the harness reported {len(rs)} of {len(runs)} runs (run folder {run_dir})")
    out = np.load(run_dir / "output.npz")
    results = []
    for k, r in enumerate(rs):
        dram = out[r["dram"]]
        if memory == "fast":
            dram = dram[:imgs[k].size]        # the HDL memory is larger than the image
        try:
            code = ErrorCode(r["error_code"])
        except ValueError:
            raise RtlError(f"STATUS {r['status']:#x} holds an error code {r['error_code']} "
                           "that spec/isa.py does not know")
        results.append(RtlResult(dram=dram, cycles=int(r["cycles"]), counters=r["counters"],
                                 error_code=code, error_pc=int(r["error_pc"]),
                                 wall_s=time.monotonic() - t0, build_s=b.build_s,
                                 sim_wall_s=float(r["sim_wall_s"]), status=int(r["status"]),
                                 run_dir=run_dir, build=b, quiet=bool(r.get("quiet")),
                                 run_folder=folder))
    return results


# ============================================================ comparison
def compare_outputs(program, rtl_dram, golden_dram) -> list[str]:
    """Bit-exact comparison of every output tensor; one line per tensor that differs (empty: match)."""
    outs, gouts = program.unpack(rtl_dram), program.unpack(golden_dram)
    problems = []
    for name in gouts:
        bad = np.argwhere(outs[name] != gouts[name])
        if len(bad):
            i = tuple(int(x) for x in bad[0])
            problems.append(f"{name}: {len(bad)} of {outs[name].size} elements differ; first at {i}: "
                            f"RTL {outs[name][i]}, golden {gouts[name][i]}")
    return problems
