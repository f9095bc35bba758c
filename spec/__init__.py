"""The spec layer: every fact that the hardware, the software and the docs share, with one home.

- :mod:`~flashnpu.spec.config`: the hardware configuration schema and loader (``configs/*.yaml``).
- :mod:`~flashnpu.spec.isa`: instruction formats, opcodes, queues, error codes.
- :mod:`~flashnpu.spec.numerics`: every fixed-point operation.
- :mod:`~flashnpu.spec.regmap`: the AXI4-Lite register map and the DRAM grant.
- :mod:`~flashnpu.spec.timing`: the microarchitecture derived from a config: every stage count,
  latency and FIFO depth that both the RTL and the performance model depend on.

It imports nothing else of flashnpu (tests/test_layers.py).
"""
