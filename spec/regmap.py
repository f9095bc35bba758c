"""The AXI4-Lite register map of the NPU, defined once.

The hardware's control/status block is generated from :data:`REGISTERS`, the
cosim driver reads and writes through it, and ``docs/registers.md`` is
generated from it. All registers are 32 bits. A 64-bit counter is two
registers, ``NAME_LO`` then ``NAME_HI``; reading ``NAME_LO`` latches the high
half, so that ``NAME_HI`` read next belongs to the same value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Register", "REGISTERS", "COUNTERS", "REG", "NPU_ID", "CONTROL_START",
           "CONTROL_SOFT_RESET", "CONTROL_ABORT", "STATUS_BUSY", "STATUS_DONE", "STATUS_ERROR",
           "STATUS_QUIET", "STATUS_RESETTING", "STATUS_CODE_SHIFT", "STATUS_CODE_MASK",
           "DMA_WINDOWS", "window_registers", "DramGrant", "CONFIG_FIELDS", "config_fields"]

NPU_ID = 0x464E5055  # "FNPU"

CONTROL_START = 1 << 0
CONTROL_SOFT_RESET = 1 << 1
CONTROL_ABORT = 1 << 2
STATUS_BUSY = 1 << 0
STATUS_DONE = 1 << 1
STATUS_ERROR = 1 << 2
STATUS_QUIET = 1 << 3
STATUS_RESETTING = 1 << 4
STATUS_CODE_SHIFT = 8
STATUS_CODE_MASK = 0xFF

#: The CONFIG register's fields: name -> (low bit, width). The hardware packs the
#: word from this and the docs string below names the same bits; 9 bits of queue
#: depth because ``queue_depth`` may be 256.
CONFIG_FIELDS = {
    "dim": (0, 8),
    "log2_dma_beat_bytes": (8, 4),
    "queue_depth": (16, 9),
}


def config_fields(config) -> dict[str, int]:
    """The values the CONFIG register reports for ``config`` (an NPUConfig)."""
    return {"dim": config.dim, "log2_dma_beat_bytes": config.dma_beat_bytes.bit_length() - 1,
            "queue_depth": config.queue_depth}


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    access: str   # "ro", "rw", "w1s" (write one to act; reads 0)
    doc: str


#: DRAM windows the host can grant to LOAD and STORE (``DMA_BASEi`` / ``DMA_LIMITi``).
DMA_WINDOWS = 2


def window_registers(i: int) -> tuple[str, str]:
    """Names of the base and limit registers of DMA window ``i``."""
    return f"DMA_BASE{i}", f"DMA_LIMIT{i}"


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
        Register("CONFIG", 0x04, "ro", "array side [7:0], log2 DMA beat bytes [11:8], queue depth [24:16]"),
        Register("CONTROL", 0x08, "w1s", "bit 0 START: run the program at PROG_ADDR (ignored unless "
                 "STATUS is QUIET and not BUSY); bit 1 SOFT_RESET: stop at any moment, let every AXI "
                 "transaction in flight finish, then return every unit and counter to reset (the "
                 "registers keep their values); bit 2 ABORT: stop at any moment, let every AXI "
                 "transaction in flight finish, then stop with ErrorCode ABORTED"),
        Register("STATUS", 0x0C, "ro", "bit 0 BUSY (a program runs or is stopping), bit 1 DONE, "
                 "bit 2 ERROR, bit 3 QUIET (no AXI transaction outstanding and no unit busy), "
                 "bit 4 RESETTING (a SOFT_RESET waits for the bus to go quiet), bits [15:8] ErrorCode"),
        Register("PROG_ADDR", 0x10, "rw", "DRAM byte address of instruction 0 (32-byte aligned)"),
        Register("ERROR_PC", 0x14, "ro", "index of the instruction that stopped the NPU with an error"),
        Register("PROG_END", 0x18, "rw", "end of the code window (exclusive byte address): instruction "
                 "words are fetched only from [PROG_ADDR, PROG_END), dispatching past it is "
                 "FETCH_WINDOW, and a STORE into it is CODE_WRITE. Resets to 0 (no code window)"),
    ]
    for i in range(DMA_WINDOWS):
        base, limit = window_registers(i)
        regs.append(Register(base, 0x20 + 8 * i, "rw", f"first byte of DMA window {i}; resets to 0"))
        regs.append(Register(limit, 0x24 + 8 * i, "rw", f"end (exclusive) of DMA window {i}: a LOAD "
                             f"or STORE must lie wholly inside one window with base < limit, else "
                             f"DMA_WINDOW before any bus transaction. Resets to 0 (window closed)"))
    off = 0x40
    for name, doc in COUNTERS:
        regs.append(Register(f"{name}_LO", off, "ro", f"{doc} (low 32 bits; latches _HI)"))
        regs.append(Register(f"{name}_HI", off + 4, "ro", f"{doc} (high 32 bits)"))
        off += 8
    return tuple(regs)


REGISTERS = _build()
#: Offsets by name.
REG = {r.name: r.offset for r in REGISTERS}


@dataclass(frozen=True)
class DramGrant:
    """What the host lets one run of the NPU touch: the code window and the DMA windows.

    The host writes it into ``PROG_ADDR``, ``PROG_END`` and ``DMA_BASEi`` /
    ``DMA_LIMITi`` before ``START``; the golden model and the performance model
    take the same object. Instruction words are fetched only from
    ``[prog_addr, prog_end)``; a LOAD or STORE must lie wholly inside one
    window ``[base, limit)`` with ``base < limit``, and a STORE must not touch
    the code window. Limits are exclusive; a window with ``base >= limit`` is
    closed.
    """
    prog_addr: int
    prog_end: int
    windows: tuple = field(default_factory=tuple)   # ((base, limit), ...), at most DMA_WINDOWS

    def __post_init__(self):
        if len(self.windows) > DMA_WINDOWS:
            raise ValueError(f"windows: {len(self.windows)} given, the NPU has {DMA_WINDOWS}")
        for name, v in (("prog_addr", self.prog_addr), ("prog_end", self.prog_end),
                        *((f"windows[{i}]", x) for i, w in enumerate(self.windows) for x in w)):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 32:
                raise ValueError(f"{name} = {v!r}: must be an integer in [0, 2**32)")
        if self.prog_addr % 32:
            raise ValueError(f"prog_addr = {self.prog_addr:#x}: must be a multiple of 32")

    @classmethod
    def for_program(cls, prog_addr: int, words: int, image_bytes: int) -> "DramGrant":
        """The grant a driver gives a compiled program: its own words as code, the whole image as data."""
        return cls(int(prog_addr), int(prog_addr) + 32 * int(words), ((0, int(image_bytes)),))

    def registers(self) -> dict:
        """Register name -> value to write before START (closed windows for the unused ones)."""
        regs = {"PROG_ADDR": self.prog_addr, "PROG_END": self.prog_end}
        for i in range(DMA_WINDOWS):
            base, limit = self.windows[i] if i < len(self.windows) else (0, 0)
            regs[window_registers(i)[0]], regs[window_registers(i)[1]] = base, limit
        return regs

    def dma_allowed(self, lo: int, hi: int) -> bool:
        """``[lo, hi)`` lies wholly inside one open window."""
        return any(b < lim and b <= lo and hi <= lim for b, lim in self.windows)

    def touches_code(self, lo: int, hi: int) -> bool:
        return lo < self.prog_end and self.prog_addr < hi
