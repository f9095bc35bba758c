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

from flashnpu.spec.config import load_config
from flashnpu.sw.workload import WorkloadError, check_tensors

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
    from flashnpu.sw.program import program_grant
    return GoldenNPU(config).run(image, grant=program_grant(program, np.asarray(image).size)).dram


def _check_backend(backend):
    if not isinstance(backend, str) or backend not in ("golden", "rtl"):
        raise WorkloadError(f"argument backend = {backend!r}: must be 'golden' or 'rtl'")


def run_program(program, image, backend: str = "golden", config=None, **backend_opts) -> RunResult:
    """Execute an already compiled ``program`` on the DRAM ``image`` (see :func:`run`).

    ``image`` is a 1-D uint8 array (or bytes) of at least ``program.dram_bytes``
    bytes, as :meth:`Program.pack` makes it.
    """
    _check_backend(backend)
    if not hasattr(program, "unpack") or not hasattr(program, "dram_bytes"):
        raise WorkloadError(f"argument 'program' = {type(program).__name__}: must be a compiled Program "
                            "(flashnpu.sw.compiler.compile_workload)")
    if isinstance(image, (bytes, bytearray)):
        image = np.frombuffer(image, dtype=np.uint8).copy()
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 1:
        what = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) \
            else type(image).__name__
        raise WorkloadError(f"argument 'image' is a {what}: must be a 1-D uint8 array (Program.pack)")
    if image.size < program.dram_bytes:
        raise WorkloadError(f"argument 'image' has {image.size} bytes: the program needs at least "
                            f"{program.dram_bytes} (Program.pack)")
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
    raise AssertionError(backend)       # _check_backend let it through


def run(workload, tensors: dict, backend: str = "golden", config="default", **backend_opts) -> RunResult:
    """Compile ``workload`` for ``config``, run it on ``backend`` with ``tensors``, return the outputs.

    ``tensors`` maps exactly the workload's input names (``Q``, ``K``, ``V`` or
    ``A``, ``B``) to integer arrays of the user's shapes (``workload.shapes()``)
    with values in the INT8 range. The arguments are checked before anything is
    compiled: a bad one raises :class:`~flashnpu.sw.workload.WorkloadError`
    (or :class:`~flashnpu.spec.config.ConfigError` for ``config``), one line that
    names the argument and what it expects.
    """
    from flashnpu.sw.compiler import compile_workload
    tensors = check_tensors(workload, tensors)
    _check_backend(backend)
    cfg = load_config(config)
    program = compile_workload(workload, cfg)
    image = program.pack(tensors)
    return run_program(program, image, backend=backend, config=cfg, **backend_opts)
