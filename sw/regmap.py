"""The AXI4-Lite register map of the NPU, defined once.

The hardware's control/status block is generated from :data:`REGISTERS`, the
cosim driver reads and writes through it, and ``docs/registers.md`` is
generated from it. All registers are 32 bits. A 64-bit counter is two
registers, ``NAME_LO`` then ``NAME_HI``; reading ``NAME_LO`` latches the high
half, so that ``NAME_HI`` read next belongs to the same value.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Register", "REGISTERS", "COUNTERS", "REG", "NPU_ID", "CONTROL_START",
           "CONTROL_SOFT_RESET", "STATUS_BUSY", "STATUS_DONE", "STATUS_ERROR",
           "STATUS_CODE_SHIFT", "STATUS_CODE_MASK"]

NPU_ID = 0x464E5055  # "FNPU"

CONTROL_START = 1 << 0
CONTROL_SOFT_RESET = 1 << 1
STATUS_BUSY = 1 << 0
STATUS_DONE = 1 << 1
STATUS_ERROR = 1 << 2
STATUS_CODE_SHIFT = 8
STATUS_CODE_MASK = 0xFF


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    access: str   # "ro", "rw", "w1s" (write one to act; reads 0)
    doc: str


#: 64-bit performance counters, in register order. Each counts cycles unless it says bytes.
COUNTERS = (
    ("CYCLES", "cycles from start to done or error"),
    ("MATRIX_BUSY", "cycles the matrix unit has an instruction in flight"),
    ("ARRAY_ACTIVE", "cycles an A row enters the systolic array (useful streaming)"),
    ("VECTOR_BUSY", "cycles the vector unit has an instruction in flight"),
    ("LOAD_BUSY", "cycles the LOAD queue has a DMA read instruction in flight"),
    ("STORE_BUSY", "cycles the STORE queue has a DMA write instruction in flight"),
    ("LOAD_STALL", "cycles the LOAD queue's next instruction waits for a token"),
    ("STORE_STALL", "cycles the STORE queue's next instruction waits for a token"),
    ("MATRIX_STALL", "cycles the MATRIX queue's next instruction waits for a token"),
    ("VECTOR_STALL", "cycles the VECTOR queue's next instruction waits for a token"),
    ("DISPATCH_STALL", "cycles the dispatcher holds an instruction whose queue is full"),
    ("BYTES_READ", "bytes read by DMA LOAD instructions (not counting instruction fetch)"),
    ("BYTES_WRITTEN", "bytes written by DMA STORE instructions"),
    ("INSTRUCTIONS", "instructions dispatched, HALT included"),
)


def _build():
    regs = [
        Register("ID", 0x00, "ro", f"constant 0x{NPU_ID:08X} ('FNPU')"),
        Register("CONFIG", 0x04, "ro", "array side [7:0], log2 DMA beat bytes [11:8], queue depth [23:16]"),
        Register("CONTROL", 0x08, "w1s", "bit 0 START: run the program at PROG_ADDR; "
                 "bit 1 SOFT_RESET: return every unit and counter to reset (registers keep PROG_ADDR)"),
        Register("STATUS", 0x0C, "ro", "bit 0 BUSY, bit 1 DONE, bit 2 ERROR, bits [15:8] ErrorCode"),
        Register("PROG_ADDR", 0x10, "rw", "DRAM byte address of instruction 0 (32-byte aligned)"),
        Register("ERROR_PC", 0x14, "ro", "index of the instruction that stopped the NPU with an error"),
    ]
    off = 0x40
    for name, doc in COUNTERS:
        regs.append(Register(f"{name}_LO", off, "ro", f"{doc} (low 32 bits; latches _HI)"))
        regs.append(Register(f"{name}_HI", off + 4, "ro", f"{doc} (high 32 bits)"))
        off += 8
    return tuple(regs)


REGISTERS = _build()
#: Offsets by name.
REG = {r.name: r.offset for r in REGISTERS}
