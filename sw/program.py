"""A compiled program: microcode, DRAM layout, and the packing of tensors into a DRAM image.

The DRAM image produced by :meth:`Program.pack` holds, in this order, every
input tensor, every output tensor (zero) and the program words (instruction
*k* at ``prog_addr + 32*k``, little-endian). Each tensor is stored row-major
in its *padded* shape (``TensorPlacement.padded_shape``; the padding is zero)
so that every DMA row is whole SRAM rows: the last dimension is padded to a
multiple of the array side ``dim``. Every tensor base address and row stride is
a multiple of the AXI beat (``config.dma_beat_bytes``), so every LOAD/STORE
address the compiler emits is aligned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flashnpu.sw.asm import disassemble, program_bytes
from flashnpu.spec.config import NPUConfig
from flashnpu.spec.regmap import DramGrant

__all__ = ["TensorPlacement", "Program", "align_up", "program_grant"]


def align_up(x: int, a: int) -> int:
    return -(-x // a) * a


@dataclass(frozen=True)
class TensorPlacement:
    """Where one tensor lives in DRAM.

    ``shape`` is the user's shape; ``padded_shape`` the stored one (same rank,
    each dimension at least as large, the padding zero); ``row_stride_bytes``
    the bytes between consecutive rows (the last dimension).
    """
    name: str
    addr: int
    shape: tuple
    padded_shape: tuple
    dtype: str                 # "int8" or "int32" (little-endian)
    output: bool = False

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    @property
    def row_stride_bytes(self) -> int:
        return self.padded_shape[-1] * self.itemsize

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.padded_shape)) * self.itemsize

    def offset(self, *index) -> int:
        """Byte address of element ``index`` (leading indices; missing ones are 0) in the padded layout."""
        idx = tuple(index) + (0,) * (len(self.padded_shape) - len(index))
        return self.addr + int(np.ravel_multi_index(idx, self.padded_shape)) * self.itemsize


def program_grant(program, image_bytes: int | None = None) -> DramGrant:
    """The grant a driver gives ``program`` (``.words``, ``.prog_addr``): its own words as the code
    window, the whole image (``image_bytes``, default ``program.dram_bytes``) as DMA window 0."""
    size = image_bytes if image_bytes is not None else program.dram_bytes
    return DramGrant.for_program(int(program.prog_addr), len(program.words), int(size))


@dataclass
class Program:
    """Microcode plus everything needed to run it and read its results.

    Members
    -------
    words : list[int]
        256-bit instruction words, ending with HALT.
    layout : dict name -> TensorPlacement
        Inputs and outputs in DRAM.
    prog_addr : int
        Byte address of instruction 0.
    dram_bytes : int
        Size of the DRAM image.
    onchip : dict
        On-chip memory used: ``spad_rows``, ``acc_rows``, ``state_rows`` and the
        same in bytes (``spad_bytes``, ``acc_bytes``, ``state_bytes``); it does not depend on the
        sequence length. ``regions`` maps buffer names to ``(memory, first row, rows)``.
    macs_useful, macs_issued : int
        MACs the workload needs (no padding, no masked pairs) and MACs the
        array performs (every MATMUL's ``m_rows*k_chunks*n_blocks*dim*dim``).
    tiling : dict
        The tile sizes the compiler chose (``Br``, ``Bc`` or ``Mt``, ``Nt``, ``Kt``, ...).
    """
    words: list
    layout: dict
    prog_addr: int
    dram_bytes: int
    onchip: dict
    macs_useful: int
    macs_issued: int
    config: NPUConfig
    workload: object = None
    tiling: dict = field(default_factory=dict)

    @property
    def instructions(self) -> int:
        return len(self.words)

    @property
    def inputs(self) -> list:
        return [p for p in self.layout.values() if not p.output]

    @property
    def outputs(self) -> list:
        return [p for p in self.layout.values() if p.output]

    def listing(self) -> str:
        """The disassembled program, one instruction per line with its index."""
        return disassemble(self.words, pc=True)

    def pack(self, tensors: dict) -> np.ndarray:
        """The DRAM image (uint8) with ``tensors`` (name -> array of the user's shape) and the program."""
        img = np.zeros(self.dram_bytes, dtype=np.uint8)
        missing = [p.name for p in self.inputs if p.name not in tensors]
        if missing:
            raise ValueError(f"missing input tensors {missing} (needs {[p.name for p in self.inputs]})")
        for p in self.inputs:
            a = np.asarray(tensors[p.name])
            if tuple(a.shape) != tuple(p.shape):
                raise ValueError(f"tensor '{p.name}' has shape {tuple(a.shape)}, the workload needs {tuple(p.shape)}")
            if a.dtype != np.dtype(p.dtype):
                if not np.issubdtype(a.dtype, np.integer):
                    raise ValueError(f"tensor '{p.name}' has dtype {a.dtype}, needs {p.dtype}")
                info = np.iinfo(p.dtype)
                if a.size and (a.min() < info.min or a.max() > info.max):
                    raise ValueError(f"tensor '{p.name}': values outside the {p.dtype} range [{info.min}, {info.max}]")
            padded = np.zeros(p.padded_shape, dtype=np.dtype(p.dtype).newbyteorder("<"))
            padded[tuple(slice(0, n) for n in p.shape)] = a
            img[p.addr:p.addr + p.nbytes] = padded.reshape(-1).view(np.uint8)
        code = np.frombuffer(program_bytes(self.words), dtype=np.uint8)
        img[self.prog_addr:self.prog_addr + code.size] = code
        return img

    def unpack(self, dram) -> dict:
        """The output tensors (name -> numpy array of the user's shape) read from a DRAM image."""
        dram = np.asarray(dram, dtype=np.uint8) if not isinstance(dram, (bytes, bytearray)) \
            else np.frombuffer(dram, dtype=np.uint8)
        if dram.size < self.dram_bytes:
            raise ValueError(f"DRAM image of {dram.size} bytes is smaller than the program's {self.dram_bytes}")
        out = {}
        for p in self.outputs:
            raw = dram[p.addr:p.addr + p.nbytes].view(np.dtype(p.dtype).newbyteorder("<"))
            arr = raw.reshape(p.padded_shape)[tuple(slice(0, n) for n in p.shape)]
            out[p.name] = arr.astype(p.dtype)
        return out

    def summary(self) -> dict:
        """Headline numbers (what ``flashnpu compile`` prints)."""
        return {
            "instructions": self.instructions,
            "dram_bytes": self.dram_bytes,
            "spad_bytes": self.onchip["spad_bytes"],
            "acc_bytes": self.onchip["acc_bytes"],
            "state_rows": self.onchip["state_rows"],
            "macs_useful": self.macs_useful,
            "macs_issued": self.macs_issued,
            "tiling": dict(self.tiling),
        }
