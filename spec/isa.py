"""The flashnpu instruction set, defined once, as data.

Every instruction is a 256-bit word viewed through :data:`INSTR_LAYOUT`, an
Amaranth ``data.StructLayout``. The hardware decoder views fetched words
through this layout; the assembler encodes through it; the golden model decodes
through it; ``docs/isa.md`` is generated from it. A field added here appears in
all of them.

Execution model (decoupled access-execute):

* Four queues run concurrently: ``LOAD`` (DRAM to SRAM), ``STORE`` (SRAM to
  DRAM), ``MATRIX`` (systolic array) and ``VECTOR`` (vector unit). The
  sequencer fetches instructions in program order and dispatches each to its
  queue; each queue executes its own instructions in order.
* Queues synchronize only through dependency tokens. There is one counter per
  ordered pair of queues (``src -> dst``). ``wait`` bit *q* makes the
  instruction pop one token from counter ``q -> self`` before it starts (it
  blocks while the counter is zero). ``signal`` bit *q* pushes one token to
  counter ``self -> q`` once the instruction has completed (all its writes are
  visible).
* Tokens are checked in program order, at dispatch: popping a token that no
  earlier instruction pushed is ``TOKEN_UNDERFLOW``, a push that takes a
  counter's program-order count above ``2**token_bits - 1`` is
  ``TOKEN_OVERFLOW``, both at that instruction, before it runs. A program that
  passes them equals sequential execution in program order, which is what the
  golden model does, and cannot deadlock.
* Errors are precise: the NPU stops at the oldest failing instruction (its
  ``ERROR_PC``), every older instruction completes, and no younger STORE writes
  DRAM (a STORE starts only when every older LOAD and STORE has completed).
  Only the failing STORE's own destination may be partly written.
* ``HALT`` waits until every queue has drained, then sets ``done``.
"""

from __future__ import annotations

import enum

from amaranth import signed, unsigned
from amaranth.lib import data

__all__ = [
    "INSTR_BITS", "INSTR_BYTES", "Opcode", "Queue", "Mem", "VectorFunct", "ErrorCode",
    "OPCODE_QUEUE", "DMA_LAYOUT", "MATMUL_LAYOUT", "VECTOR_LAYOUT", "BODY_LAYOUT",
    "INSTR_LAYOUT", "BODY_OF", "FIELD_DOCS", "encode", "decode",
]

INSTR_BITS = 256
INSTR_BYTES = INSTR_BITS // 8


class Opcode(enum.IntEnum):
    """Instruction opcodes. Every value not listed is illegal (the all-zero word is illegal)."""
    LOAD = 0x1    #: DRAM -> scratchpad or accumulator, 2-D strided
    STORE = 0x2   #: scratchpad or accumulator -> DRAM, 2-D strided
    MATMUL = 0x3  #: systolic array: blocks of acc (+)= A @ W
    VECTOR = 0x4  #: vector unit op over accumulator rows (see VectorFunct)
    HALT = 0xF    #: drain every queue, then stop with done


class Queue(enum.IntEnum):
    """The execution queues; also the bit positions of ``wait`` and ``signal``."""
    LOAD = 0
    STORE = 1
    MATRIX = 2
    VECTOR = 3


#: The queue that executes each opcode (HALT is handled by the sequencer).
OPCODE_QUEUE = {
    Opcode.LOAD: Queue.LOAD,
    Opcode.STORE: Queue.STORE,
    Opcode.MATMUL: Queue.MATRIX,
    Opcode.VECTOR: Queue.VECTOR,
}


class Mem(enum.IntEnum):
    """On-chip memory selected by a DMA instruction (``mem``) or by MATMUL for its A rows (``a_mem``)."""
    SPAD = 0  #: scratchpad, rows of ``dim`` INT8 operands
    ACC = 1   #: accumulator, rows of ``dim`` INT32 accumulators (as a MATMUL A operand: saturated to 12 bits)


class VectorFunct(enum.IntEnum):
    """Vector unit operations. ``i`` is a row (0..rows-1), ``c = b*dim + lane`` a column."""
    INIT = 0     #: M[i] = NEG_INF, L[i] = 0, F[i] = 0
    ROWMAX = 1   #: m = max(M[i], max of valid acc); F[i] = exp2(scale(M[i] - m)); M[i] = m
    EXP = 2      #: p = quant_p(exp2(scale(acc - M[i]))) (0 if not valid) -> acc, in place; L[i] = L[i]*F[i] + sum p
    SCALE = 3    #: acc = acc * F[i] (Q1.15, rounded) for every column
    RECIP = 4    #: F[i] = round((mult << RECIP_SHIFT) / L[i]) (0 if L[i] = 0)
    OUTPUT = 5   #: spad = sat8(round_shift(acc * F[i], shift))
    REQUANT = 6  #: spad = sat8(round_shift(acc * mult, shift))


class ErrorCode(enum.IntEnum):
    """Why the NPU stopped. Reported in the status register and by the golden model."""
    NONE = 0
    ILLEGAL_OPCODE = 1   #: opcode not in Opcode
    ILLEGAL_FUNCT = 2    #: vector funct not in VectorFunct
    BAD_TOKEN_MASK = 3   #: wait/signal names the instruction's own queue, or HALT has a mask
    BAD_FIELD = 4        #: a count is zero, or a field is beyond its documented limit
    SPAD_RANGE = 5       #: a scratchpad row beyond spad_rows
    ACC_RANGE = 6        #: an accumulator row beyond acc_rows
    STATE_RANGE = 7      #: a vector state row beyond vector_state_rows
    DMA_MISALIGNED = 8   #: DRAM address or stride not a multiple of the AXI beat
    AXI_SLVERR = 9       #: a DMA read or write answered SLVERR
    AXI_DECERR = 10      #: a DMA read or write answered DECERR (or beyond the DRAM image)
    FETCH_ERROR = 11     #: an instruction fetch answered SLVERR or DECERR
    TOKEN_OVERFLOW = 12  #: a token counter passed 2**token_bits - 1
    TOKEN_UNDERFLOW = 13 #: a token popped before it was pushed in program order (checked at dispatch)
    DEADLOCK = 14        #: every queue waits on a token that nothing can push (a safety net: the dispatch checks leave none)
    TOKENS_LEFT = 15     #: HALT found a token counter that is not zero
    DMA_WINDOW = 16      #: a LOAD/STORE not wholly inside one granted DMA window, or past the AXI address range
    FETCH_WINDOW = 17    #: dispatch reached an instruction outside [PROG_ADDR, PROG_END) (or past the AXI address range)
    CODE_WRITE = 18      #: a STORE that would write into the code window [PROG_ADDR, PROG_END)
    ABORTED = 19         #: the host wrote ABORT; ERROR_PC is the first instruction not dispatched


_HEADER = {
    "opcode": unsigned(4),
    "wait": unsigned(4),
    "signal": unsigned(4),
}

DMA_LAYOUT = data.StructLayout({
    "mem": unsigned(1),
    "dram_addr": unsigned(32),
    "dram_stride": unsigned(32),
    "rows": unsigned(16),
    "chunks": unsigned(8),
    "sram_addr": unsigned(16),
    "sram_chunk_stride": unsigned(16),
})

MATMUL_LAYOUT = data.StructLayout({
    "accumulate": unsigned(1),
    "transpose_w": unsigned(1),
    "a_mem": unsigned(1),
    "m_rows": unsigned(16),
    "k_chunks": unsigned(8),
    "n_blocks": unsigned(8),
    "a_addr": unsigned(16),
    "a_kstride": unsigned(16),
    "w_addr": unsigned(16),
    "w_kstride": unsigned(16),
    "w_nstride": unsigned(16),
    "out_addr": unsigned(16),
    "out_nstride": unsigned(16),
})

VECTOR_LAYOUT = data.StructLayout({
    "funct": unsigned(4),
    "rows": unsigned(16),
    "blocks": unsigned(8),
    "acc_addr": unsigned(16),
    "acc_block_stride": unsigned(16),
    "state_addr": unsigned(12),
    "spad_addr": unsigned(16),
    "spad_block_stride": unsigned(16),
    "kv_valid": unsigned(16),
    "causal": unsigned(1),
    "causal_offset": signed(20),
    "mult": unsigned(32),
    "shift": unsigned(6),
})

BODY_LAYOUT = data.UnionLayout({
    "dma": DMA_LAYOUT,
    "matmul": MATMUL_LAYOUT,
    "vector": VECTOR_LAYOUT,
})

INSTR_LAYOUT = data.StructLayout({
    **_HEADER,
    "body": BODY_LAYOUT,
    "reserved": unsigned(INSTR_BITS - 12 - BODY_LAYOUT.size),
})
assert INSTR_LAYOUT.size == INSTR_BITS

#: Which body view each opcode uses.
BODY_OF = {
    Opcode.LOAD: "dma",
    Opcode.STORE: "dma",
    Opcode.MATMUL: "matmul",
    Opcode.VECTOR: "vector",
    Opcode.HALT: None,
}

#: One line per field, for the generated docs and the disassembler's help.
FIELD_DOCS = {
    "opcode": "operation (Opcode); any other value stops the NPU with ILLEGAL_OPCODE",
    "wait": "bit q: pop one token from counter q -> this queue before starting",
    "signal": "bit q: push one token to counter this queue -> q after completing",
    "dma.mem": "0: scratchpad (rows of dim INT8), 1: accumulator (rows of dim INT32, little-endian)",
    "dma.dram_addr": "byte address of row 0, chunk 0; a multiple of the AXI beat",
    "dma.dram_stride": "bytes between DRAM rows; a multiple of the AXI beat",
    "dma.rows": "DRAM rows to move (>= 1)",
    "dma.chunks": "SRAM rows per DRAM row (>= 1); the chunks of one DRAM row are contiguous in DRAM",
    "dma.sram_addr": "SRAM row of row 0, chunk 0; row r, chunk c is sram_addr + c*sram_chunk_stride + r",
    "dma.sram_chunk_stride": "SRAM rows between chunks of one DRAM row",
    "matmul.accumulate": "1: add into the accumulator; 0: the first k-chunk overwrites it",
    "matmul.transpose_w": "1: weight tile W[k][n] = spad[w + n][k] (for K^T); 0: W[k][n] = spad[w + k][n]",
    "matmul.a_mem": "where A rows come from (Mem): 0 scratchpad (INT8); 1 accumulator, each INT32 element "
                    "saturated to a signed 12-bit operand (saturate_a; P of P@V)",
    "matmul.m_rows": "A rows streamed per tile (>= 1)",
    "matmul.k_chunks": "reduction chunks of dim (>= 1), accumulated in order",
    "matmul.n_blocks": "output column blocks of dim (>= 1)",
    "matmul.a_addr": "row of A (k-chunk 0, row 0) in the memory a_mem selects",
    "matmul.a_kstride": "rows between k-chunks of A",
    "matmul.w_addr": "scratchpad row of the weight tile (k-chunk 0, n-block 0)",
    "matmul.w_kstride": "scratchpad rows between k-chunks of W",
    "matmul.w_nstride": "scratchpad rows between n-blocks of W",
    "matmul.out_addr": "accumulator row of output block 0, row 0",
    "matmul.out_nstride": "accumulator rows between output blocks",
    "vector.funct": "operation (VectorFunct); any other value stops the NPU with ILLEGAL_FUNCT",
    "vector.rows": "rows i = 0..rows-1 (>= 1)",
    "vector.blocks": "column blocks b = 0..blocks-1 of dim columns (>= 1)",
    "vector.acc_addr": "accumulator row of block 0, row 0; block b, row i is acc_addr + b*acc_block_stride + i",
    "vector.acc_block_stride": "accumulator rows between blocks",
    "vector.state_addr": "per-row state entry of row 0; row i uses state_addr + i",
    "vector.spad_addr": "scratchpad row written for block 0, row 0 (OUTPUT, REQUANT)",
    "vector.spad_block_stride": "scratchpad rows between written blocks",
    "vector.kv_valid": "columns c < kv_valid are valid (ROWMAX, EXP)",
    "vector.causal": "1: column c is valid only if c <= i + causal_offset (ROWMAX, EXP)",
    "vector.causal_offset": "signed offset of the causal diagonal",
    "vector.mult": "unsigned multiplier: exp-argument scale (ROWMAX, EXP), numerator (RECIP, < 2**16), requant (REQUANT)",
    "vector.shift": "right shift paired with mult (0..63)",
}


def _flatten(layout, prefix=""):
    for name, member in layout:
        shape = member.shape
        if isinstance(shape, data.Layout):
            yield from _flatten(shape, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", member.offset, shape


def field_table(layout) -> list[tuple[str, int, int, bool]]:
    """(name, bit offset, width, signed) for every leaf field of ``layout``."""
    out = []
    for name, offset, shape in _flatten(layout):
        s = shape if not hasattr(shape, "as_shape") else shape.as_shape()
        s = unsigned(s) if isinstance(s, int) else s
        out.append((name, offset, s.width, s.signed))
    return out


def encode(opcode: int, wait: int = 0, signal: int = 0, **body) -> int:
    """Encode one instruction word through :data:`INSTR_LAYOUT`.

    ``body`` holds the fields of the opcode's body view (see :data:`BODY_OF`).
    Values out of a field's range raise ``ValueError`` naming the field.
    """
    try:
        opcode = Opcode(opcode)
    except ValueError:
        raise ValueError(f"opcode {opcode!r} is not an Opcode") from None
    view = BODY_OF[opcode]
    fields = {"opcode": int(opcode), "wait": wait, "signal": signal}
    for k, v in (("wait", wait), ("signal", signal)):
        if not 0 <= v < 16:
            raise ValueError(f"field '{k}' = {v}: must be a 4-bit queue mask")
    if view is None:
        if body:
            raise ValueError(f"{opcode.name} takes no fields, got {sorted(body)}")
    else:
        layout = BODY_LAYOUT[view].shape
        known = {name for name, _ in layout}
        for k, v in body.items():
            if k not in known:
                raise ValueError(f"{opcode.name} has no field '{k}' (fields: {', '.join(sorted(known))})")
            shape = layout[k].shape
            lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed \
                else (0, (1 << shape.width) - 1)
            if not lo <= int(v) <= hi:
                raise ValueError(f"{opcode.name} field '{k}' = {v}: must be in [{lo}, {hi}]")
        fields["body"] = {view: {k: int(v) for k, v in body.items()}}
    return INSTR_LAYOUT.const(fields).as_value().value


def decode(word: int) -> dict:
    """Decode one instruction word into ``{"opcode", "wait", "signal", <body fields>}``.

    An unknown opcode decodes with ``opcode`` as the raw integer and no body.
    """
    view = INSTR_LAYOUT.from_bits(word)
    raw_op = int(view.opcode)
    out = {"opcode": raw_op, "wait": int(view.wait), "signal": int(view.signal)}
    try:
        op = Opcode(raw_op)
    except ValueError:
        return out
    out["opcode"] = op
    body = BODY_OF[op]
    if body is not None:
        bview = getattr(view.body, body)
        for name, _ in BODY_LAYOUT[body].shape:
            out[name] = int(getattr(bview, name))
    return out
