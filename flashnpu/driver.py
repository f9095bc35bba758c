"""Run a workload end to end: compile, pack the DRAM image, execute on a backend, unpack.

One interface, three backends, one result type (:class:`RunResult`):

* ``"golden"``: :class:`flashnpu.sw.golden.GoldenNPU` (bit-exact outputs, no cycles).
* ``"perf"``: :func:`flashnpu.sw.perfmodel.predict` (cycles and counters,
  equal to the RTL's on the benchmark programs; nothing is executed, so
  ``outputs`` and ``dram`` are ``None``). Options: ``lat`` (the timing is the config's, ``spec.timing``).
* ``"rtl"``: the Verilated NPU through
  :func:`flashnpu.cosim.rtl_backend.run_program` (imported only when used):
  outputs, cycles and counters; its options (``memory``, ``backpressure``,
  ``waves``, ``grant``, ...) are passed on. With ``check_golden=True`` (a
  driver option, not passed on) the golden model runs too and
  ``RunResult.golden_match`` says whether every output bit agrees.

``run_program(program, image, *, backend=..., config=..., **options)`` is the
one signature of running a compiled program: the RTL backend's own
``run_program`` takes the same ``(program, image, *, config=...)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from flashnpu.spec.config import load_config
from flashnpu.sw.workload import WorkloadError, check_tensors

__all__ = ["BACKENDS", "RunResult", "run", "run_program"]

#: The backends of :func:`run` and :func:`run_program`.
BACKENDS = ("golden", "perf", "rtl")


@dataclass
class RunResult:
    """What one backend returns.

    ``outputs`` maps output names to arrays of the user's shapes (``None`` for
    ``"perf"``, which executes nothing); ``cycles`` and ``counters`` (register
    names of ``spec/regmap.COUNTERS``) are ``None`` for ``"golden"``, which has
    no timing. ``raw`` is the backend's own result (``GoldenResult``,
    ``PerfResult`` or ``RtlResult``).
    """
    outputs: dict | None
    program: object
    cycles: int | None = None
    counters: dict | None = None
    dram: np.ndarray | None = None
    backend: str = "golden"
    golden_match: bool | None = None
    sim_wall_s: float | None = None
    raw: object = None                  # the backend's own result object


def _golden(config, program, image):
    from flashnpu.sw.golden import GoldenNPU
    from flashnpu.sw.program import program_grant
    return GoldenNPU(config).run(image, grant=program_grant(program, np.asarray(image).size))


def _check_backend(backend):
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise WorkloadError(f"argument backend = {backend!r}: must be 'golden', 'perf' or 'rtl'")


def _check_program(program):
    if not hasattr(program, "unpack") or not hasattr(program, "dram_bytes"):
        raise WorkloadError(f"argument 'program' = {type(program).__name__}: must be a compiled Program "
                            "(flashnpu.sw.compiler.compile_workload)")


def _check_image(program, image) -> np.ndarray:
    if isinstance(image, (bytes, bytearray)):
        image = np.frombuffer(image, dtype=np.uint8).copy()
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 1:
        what = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) \
            else type(image).__name__
        raise WorkloadError(f"argument 'image' is a {what}: must be a 1-D uint8 array (Program.pack)")
    if image.size < program.dram_bytes:
        raise WorkloadError(f"argument 'image' has {image.size} bytes: the program needs at least "
                            f"{program.dram_bytes} (Program.pack)")
    return image


def _perf(cfg, program, image_bytes, opts) -> RunResult:
    from flashnpu.sw.perfmodel import predict
    from flashnpu.sw.program import program_grant
    bad = sorted(set(opts) - {"lat", "memory_timing"})
    if bad:
        raise ValueError(f"backend 'perf' takes the options lat and memory_timing (the rest of its "
                         f"timing is the config's, spec.timing), got {bad}")
    t0 = time.perf_counter()
    perf = predict(cfg, [int(w) for w in program.words], grant=program_grant(program, image_bytes), **opts)
    return RunResult(outputs=None, program=program, cycles=perf.cycles, counters=dict(perf.counters),
                     backend="perf", sim_wall_s=time.perf_counter() - t0, raw=perf)


def run_program(program, image, *, backend: str = "golden", config=None, **backend_opts) -> RunResult:
    """Execute an already compiled ``program`` on the DRAM ``image`` (see :func:`run`).

    ``image`` is a 1-D uint8 array (or bytes) of at least ``program.dram_bytes``
    bytes, as :meth:`Program.pack` makes it (``"perf"`` reads only its size).
    ``config`` defaults to the program's own.
    """
    _check_backend(backend)
    _check_program(program)
    image = _check_image(program, image)
    cfg = load_config(config if config is not None else program.config)
    check_golden = bool(backend_opts.pop("check_golden", False))
    if backend == "perf":
        if check_golden:
            raise ValueError("check_golden: backend 'perf' has no outputs to compare")
        return _perf(cfg, program, image.size, backend_opts)
    if backend == "golden":
        if backend_opts:
            raise ValueError(f"backend 'golden' takes no options, got {sorted(backend_opts)}")
        t0 = time.perf_counter()
        gres = _golden(cfg, program, image)
        res = RunResult(outputs=program.unpack(gres.dram), program=program, dram=gres.dram, backend="golden",
                        sim_wall_s=time.perf_counter() - t0, raw=gres)
        if check_golden:
            res.golden_match = True
        return res
    from flashnpu.cosim.rtl_backend import run_program as rtl_run   # needs Verilator: import lazily
    t0 = time.perf_counter()
    raw = rtl_run(program, image, config=cfg, **backend_opts)
    wall = time.perf_counter() - t0
    dram = np.asarray(raw.dram, dtype=np.uint8) if not isinstance(raw.dram, (bytes, bytearray)) \
        else np.frombuffer(raw.dram, dtype=np.uint8)
    res = RunResult(outputs=program.unpack(dram), program=program, cycles=raw.cycles,
                    counters=getattr(raw, "counters", None), dram=dram, backend="rtl",
                    sim_wall_s=getattr(raw, "sim_wall_s", None) or wall, raw=raw)
    if check_golden:
        gold = program.unpack(_golden(cfg, program, image).dram)
        res.golden_match = all(np.array_equal(gold[k], res.outputs[k]) for k in gold)
    return res


def run(workload, tensors: dict | None, backend: str = "golden", config="default", **backend_opts) -> RunResult:
    """Compile ``workload`` for ``config``, run it on ``backend`` with ``tensors``, return a :class:`RunResult`.

    ``tensors`` maps exactly the workload's input names (``Q``, ``K``, ``V`` or
    ``A``, ``B``) to integer arrays of the user's shapes (``workload.shapes()``)
    with values in the INT8 range; backend ``"perf"`` (which predicts cycles
    without executing) also takes ``tensors=None``. The arguments are checked
    before anything is compiled: a bad one raises
    :class:`~flashnpu.sw.workload.WorkloadError` (or
    :class:`~flashnpu.spec.config.ConfigError` for ``config``), one line that
    names the argument and what it expects.
    """
    from flashnpu.sw.compiler import compile_workload
    _check_backend(backend)
    if not (backend == "perf" and tensors is None):
        tensors = check_tensors(workload, tensors)
    elif not hasattr(workload, "shapes"):
        check_tensors(workload, {})          # names the bad workload argument
    cfg = load_config(config)
    program = compile_workload(workload, cfg)
    if tensors is None:
        return run_program(program, np.zeros(program.dram_bytes, dtype=np.uint8), backend=backend,
                           config=cfg, **backend_opts)
    image = program.pack(tensors)
    return run_program(program, image, backend=backend, config=cfg, **backend_opts)
