"""flashnpu: an attention NPU generator and its software stack.

The distribution maps the repository folders onto one namespace:
``hw/`` is :mod:`flashnpu.hw`, ``sw/`` is :mod:`flashnpu.sw` and ``cosim/`` is
:mod:`flashnpu.cosim`.
"""

from pathlib import Path

__version__ = "0.1.0"

#: The named hardware configurations shipped with the project.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
