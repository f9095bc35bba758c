"""flashnpu: an attention NPU generator and its software stack.

The distribution maps the repository folders onto one namespace, in layers
that import only downwards (tests/test_layers.py checks it):

- ``spec/`` is :mod:`flashnpu.spec`: every fact the others share (config,
  ISA, numerics, register map, microarchitecture timing); imports nothing of
  flashnpu.
- ``hw/`` is :mod:`flashnpu.hw` (Amaranth): imports only the spec.
- ``sw/`` is :mod:`flashnpu.sw` (compiler, assembler, golden model,
  performance model): imports only the spec.
- ``cosim/`` is :mod:`flashnpu.cosim` (Verilator + cocotb): the spec, hw, sw.
- ``flashnpu/`` itself: the driver, the CLI, the bench and the fuzz campaign,
  on top of all of them, with :mod:`flashnpu.api`: :func:`attention` and
  :func:`gemm` on arrays (numpy, or torch), loaded on first use.
"""

__version__ = "0.1.0"

__all__ = ["attention", "gemm", "Result", "run", "__version__"]


def __getattr__(name):
    # Lazy, so that ``import flashnpu.spec`` (every layer does) does not load the driver.
    if name in ("attention", "gemm", "Result"):
        from flashnpu import api
        return getattr(api, name)
    if name == "run":
        from flashnpu.driver import run
        return run
    raise AttributeError(f"module 'flashnpu' has no attribute {name!r}")
