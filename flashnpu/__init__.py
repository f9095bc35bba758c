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
  on top of all of them.
"""

__version__ = "0.1.0"
