"""The static field checks of an instruction (checks 4-6 of ``docs/architecture.md``), as one table.

``sw/golden.check_fields``, ``hw/decoder.InstrChecker`` and the "Field
checks" section of ``docs/isa.md`` are all built from these tables; nothing
else states which field is checked against what. Checks 1-3 (opcode, token
masks, funct) are about the header and the enums of ``spec/isa.py``.

Order matters: the checks run in table order and the first failure wins, on
the golden model and in hardware alike. Within one opcode:

1. :data:`COUNT_FIELDS`, then :data:`FIELD_LIMITS` -> ``BAD_FIELD`` (check 4);
2. :data:`ALIGNED_FIELDS` -> ``DMA_MISALIGNED`` (check 5);
3. :data:`ROW_RANGES` in order -> the memory's range error (check 6).
"""

from __future__ import annotations

from dataclasses import dataclass

from flashnpu.spec.isa import ErrorCode, Mem, Opcode, VectorFunct
from flashnpu.spec.numerics import RECIP_MULT_LIMIT

__all__ = ["COUNT_FIELDS", "FieldLimit", "FIELD_LIMITS", "ALIGNED_FIELDS", "Memory", "MEMORIES",
           "MEM_FIELD_VALUES", "RowRange", "ROW_RANGES", "ranges_of", "check_rows"]

#: Fields that must be at least 1 (check 4), per opcode.
COUNT_FIELDS = {
    Opcode.LOAD: ("rows", "chunks"),
    Opcode.STORE: ("rows", "chunks"),
    Opcode.MATMUL: ("m_rows", "k_chunks", "n_blocks"),
    Opcode.VECTOR: ("rows", "blocks"),
}


@dataclass(frozen=True)
class FieldLimit:
    """``field < limit`` for ``opcode`` (and ``funct``, for VECTOR), else ``BAD_FIELD`` (check 4)."""
    opcode: Opcode
    funct: VectorFunct | None
    field: str
    limit: int
    why: str


#: Upper limits of fields (check 4), after the counts.
FIELD_LIMITS = (
    FieldLimit(Opcode.VECTOR, VectorFunct.RECIP, "mult", RECIP_MULT_LIMIT,
               "RECIP's numerator must fit the divider"),
)

#: Fields that must be a multiple of the AXI beat, ``dma_beat_bytes`` (check 5).
ALIGNED_FIELDS = {
    Opcode.LOAD: ("dram_addr", "dram_stride"),
    Opcode.STORE: ("dram_addr", "dram_stride"),
}


@dataclass(frozen=True)
class Memory:
    """An on-chip memory an access must stay inside: ``rows`` is the config field of its size."""
    name: str
    rows: str
    error: ErrorCode


#: The memories of check 6, by name.
MEMORIES = {
    "spad": Memory("spad", "spad_rows", ErrorCode.SPAD_RANGE),
    "acc": Memory("acc", "acc_rows", ErrorCode.ACC_RANGE),
    "state": Memory("state", "vector_state_rows", ErrorCode.STATE_RANGE),
}

#: What a ``Mem`` field selects: scratchpad, then accumulator (this is also the order of their checks).
MEM_FIELD_VALUES = ((Mem.SPAD, MEMORIES["spad"]), (Mem.ACC, MEMORIES["acc"]))


@dataclass(frozen=True)
class RowRange:
    """Check 6: the last row an access touches must lie inside its memory.

    The last row is ``base + (count - 1) + sum((n - 1) * stride for n, stride in steps)``,
    with ``count`` a field, or ``None`` for a weight tile (``dim`` rows). The
    memory is ``memory``: a name of :data:`MEMORIES`, or ``"field:<name>"``, a
    ``Mem`` field that selects the scratchpad or the accumulator. ``functs``
    (VECTOR): the functs the access belongs to (``None``: all of them).
    ``what`` names the access in messages and docs ("" for the only one).
    """
    opcode: Opcode
    what: str
    base: str
    count: str | None
    steps: tuple = ()
    memory: str = "spad"
    functs: frozenset | None = None

    @property
    def mem_field(self) -> str | None:
        """The ``Mem`` field that selects the memory, or None for a fixed memory."""
        return self.memory[len("field:"):] if self.memory.startswith("field:") else None

    def memories(self) -> tuple:
        """``((mem value or None, Memory), ...)`` in check order."""
        if self.mem_field is not None:
            return MEM_FIELD_VALUES
        return ((None, MEMORIES[self.memory]),)

    def formula(self) -> str:
        """The last row as text (docs and messages)."""
        terms = [self.base] + [f"({n}-1)*{s}" for n, s in self.steps]
        return " + ".join(terms) + f" + {self.count or 'dim'} - 1"


#: VECTOR functs that read or write accumulator rows, and those that write scratchpad rows.
_ACC_FUNCTS = frozenset(VectorFunct) - {VectorFunct.INIT, VectorFunct.RECIP}
_SPAD_FUNCTS = frozenset({VectorFunct.OUTPUT, VectorFunct.REQUANT})

#: Check 6, in order (ranges of different opcodes never meet: an instruction has one opcode).
ROW_RANGES = (
    RowRange(Opcode.LOAD, "", "sram_addr", "rows", (("chunks", "sram_chunk_stride"),), "field:mem"),
    RowRange(Opcode.STORE, "", "sram_addr", "rows", (("chunks", "sram_chunk_stride"),), "field:mem"),
    RowRange(Opcode.MATMUL, "A", "a_addr", "m_rows", (("k_chunks", "a_kstride"),), "field:a_mem"),
    RowRange(Opcode.MATMUL, "W", "w_addr", None, (("k_chunks", "w_kstride"), ("n_blocks", "w_nstride")),
             "spad"),
    RowRange(Opcode.MATMUL, "out", "out_addr", "m_rows", (("n_blocks", "out_nstride"),), "acc"),
    RowRange(Opcode.VECTOR, "state", "state_addr", "rows", (), "state"),
    RowRange(Opcode.VECTOR, "acc", "acc_addr", "rows", (("blocks", "acc_block_stride"),), "acc",
             _ACC_FUNCTS),
    RowRange(Opcode.VECTOR, "spad", "spad_addr", "rows", (("blocks", "spad_block_stride"),), "spad",
             _SPAD_FUNCTS),
)


def _applies(r: RowRange, opcode, funct) -> bool:
    return r.opcode == opcode and (r.functs is None or funct in r.functs)


# (opcode, funct) -> its ranges: the golden model checks every word, so the filter runs once.
_RANGES_OF = {(op, f): tuple(r for r in ROW_RANGES if _applies(r, op, f))
              for op in Opcode for f in (None, *VectorFunct)}


def ranges_of(opcode: Opcode, funct: VectorFunct | None = None) -> tuple:
    """The :data:`ROW_RANGES` that apply to an instruction, in check order."""
    return _RANGES_OF[opcode, funct]


def check_rows(fields: dict, config, opcode: Opcode, funct: VectorFunct | None = None
               ) -> tuple[ErrorCode, str]:
    """Check 6 on decoded ``fields``: ``(code, reason)`` of the first range that fails, else NONE.

    The counts must have passed check 4 (they are at least 1).
    """
    for r in _RANGES_OF[opcode, funct]:
        last = fields[r.base] + (fields[r.count] if r.count else config.dim) - 1
        for n, stride in r.steps:
            last += (fields[n] - 1) * fields[stride]
        for value, mem in r.memories():
            if value is not None and fields[r.mem_field] != value:
                continue
            limit = getattr(config, mem.rows)
            if last >= limit:
                return mem.error, f"{r.what + ' ' if r.what else ''}last row {last} >= {mem.rows} {limit}"
    return ErrorCode.NONE, ""
