"""Run a workload end to end: compile, pack the DRAM image, execute on a backend, unpack.

Backends:

* ``"golden"``: :class:`flashnpu.sw.golden.GoldenNPU` (bit-exact, no cycles).
* ``"rtl"``: the Verilated NPU through
  ``flashnpu.cosim.rtl_backend.run_program(config, program, dram_image, **backend_opts)``
  (imported only when used), which returns an object with ``.dram``,
  ``.cycles`` and ``.counters``. With ``check_golden=True`` (a driver option,
  not passed on) the golden model runs too and ``RunResult.golden_match``
  says whether every output bit agrees.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from flashnpu.sw.config import load_config

__all__ = ["RunResult", "run", "run_program"]


@dataclass
class RunResult:
    """The outputs (name -> array, the user's shapes), the program, and what the backend measured."""
    outputs: dict
    program: object
    cycles: int | None = None
    counters: dict | None = None
    dram: np.ndarray | None = None
    backend: str = "golden"
    golden_match: bool | None = None
    sim_wall_s: float | None = None
    raw: object = None                  # the backend's own result object


def _golden_dram(config, program, image):
    from flashnpu.sw.golden import GoldenNPU
    return GoldenNPU(config).run(image, program.prog_addr).dram


def run_program(program, image, backend: str = "golden", config=None, **backend_opts) -> RunResult:
    """Execute an already compiled ``program`` on the DRAM ``image`` (see :func:`run`)."""
    cfg = load_config(config if config is not None else program.config)
    check_golden = bool(backend_opts.pop("check_golden", False))
    if backend == "golden":
        if backend_opts:
            raise ValueError(f"backend 'golden' takes no options, got {sorted(backend_opts)}")
        t0 = time.perf_counter()
        dram = _golden_dram(cfg, program, image)
        res = RunResult(outputs=program.unpack(dram), program=program, dram=dram, backend="golden",
                        sim_wall_s=time.perf_counter() - t0)
        if check_golden:
            res.golden_match = True
        return res
    if backend == "rtl":
        from flashnpu.cosim.rtl_backend import run_program as rtl_run   # needs Verilator: import lazily
        t0 = time.perf_counter()
        raw = rtl_run(cfg, program, image, **backend_opts)
        wall = time.perf_counter() - t0
        dram = np.asarray(raw.dram, dtype=np.uint8) if not isinstance(raw.dram, (bytes, bytearray)) \
            else np.frombuffer(raw.dram, dtype=np.uint8)
        res = RunResult(outputs=program.unpack(dram), program=program, cycles=raw.cycles,
                        counters=getattr(raw, "counters", None), dram=dram, backend="rtl",
                        sim_wall_s=getattr(raw, "sim_wall_s", None) or wall, raw=raw)
        if check_golden:
            gold = program.unpack(_golden_dram(cfg, program, image))
            res.golden_match = all(np.array_equal(gold[k], res.outputs[k]) for k in gold)
        return res
    raise ValueError(f"backend = {backend!r}: must be 'golden' or 'rtl'")


def run(workload, tensors: dict, backend: str = "golden", config="default", **backend_opts) -> RunResult:
    """Compile ``workload`` for ``config``, run it on ``backend`` with ``tensors``, return the outputs.

    ``tensors`` maps the workload's input names (``Q``, ``K``, ``V`` or ``A``,
    ``B``) to integer arrays of the user's shapes.
    """
    from flashnpu.sw.compiler import compile_workload
    cfg = load_config(config)
    program = compile_workload(workload, cfg)
    image = program.pack(tensors)
    return run_program(program, image, backend=backend, config=cfg, **backend_opts)
