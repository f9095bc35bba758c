"""The instruction checker: checks 1-6 of ``docs/architecture.md``, combinational."""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flashnpu.spec.isa import INSTR_LAYOUT, OPCODE_QUEUE, ErrorCode, Mem, Opcode, VectorFunct
from flashnpu.spec.numerics import RECIP_MULT_LIMIT
from flashnpu.hw.signatures import ERROR_SHAPE

__all__ = ["InstrChecker"]

#: VECTOR functs that read or write accumulator rows, and those that write scratchpad rows (EXP writes p in place).
ACC_FUNCTS = tuple(f for f in VectorFunct if f not in (VectorFunct.INIT, VectorFunct.RECIP))
SPAD_FUNCTS = (VectorFunct.OUTPUT, VectorFunct.REQUANT)


def _last_row(base, count, *terms):
    """``base + sum((n - 1) * stride) + count - 1``, the last row an access touches.

    Counts are truncated to their width after the ``- 1``, so a zero count gives a
    large but harmless value: check 4 has already failed for it.
    """
    total = base + count - 1
    for n, stride in terms:
        total = total + (n - 1)[:len(n)] * stride
    return total


class InstrChecker(wiring.Component):
    """Check one instruction word against checks 1-6 of ``docs/architecture.md``.

    The checks run in the documented order and the first failure wins, exactly
    as ``sw/golden.check`` does. The word is viewed through
    ``sw/isa.INSTR_LAYOUT``; no bit position is written here.

    Parameters
    ----------
    config : NPUConfig
        Memory sizes (``spad_rows``, ``acc_rows``, ``vector_state_rows``), the
        array side ``dim`` (rows of a weight tile) and the AXI beat.

    Members
    -------
    word : In(INSTR_LAYOUT)
        The instruction word.
    error : Out(ERROR_SHAPE)
        Combinational: the ``ErrorCode`` of the first failing check, 0 if legal.
    """

    def __init__(self, config):
        self._cfg = config
        super().__init__({
            "word": In(INSTR_LAYOUT),
            "error": Out(ERROR_SHAPE),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        w = self.word
        op = w.opcode

        is_op = {o: Signal(name=f"is_{o.name.lower()}") for o in Opcode}
        for o, s in is_op.items():
            m.d.comb += s.eq(op == o)
        legal_op = Cat(*is_op.values()).any()
        is_dma = is_op[Opcode.LOAD] | is_op[Opcode.STORE]

        # Check 2: the queue's own bit, as a one-hot mask per opcode.
        own = Signal(4)
        with m.Switch(op):
            for o, q in OPCODE_QUEUE.items():
                with m.Case(o):
                    m.d.comb += own.eq(1 << q)
        masks = w.wait | w.signal
        bad_mask = Mux(is_op[Opcode.HALT], masks != 0, (masks & own) != 0)

        dma, mm, vec = w.body.dma, w.body.matmul, w.body.vector
        funct_is = {f: vec.funct == f for f in VectorFunct}
        legal_funct = Cat(*funct_is.values()).any()

        # Check 4: zero counts, and RECIP's numerator limit.
        zero_dma = (dma.rows == 0) | (dma.chunks == 0)
        zero_mm = (mm.m_rows == 0) | (mm.k_chunks == 0) | (mm.n_blocks == 0)
        zero_vec = (vec.rows == 0) | (vec.blocks == 0)
        bad_field = Signal()
        m.d.comb += bad_field.eq(
            (is_dma & zero_dma) | (is_op[Opcode.MATMUL] & zero_mm)
            | (is_op[Opcode.VECTOR] & (zero_vec | (funct_is[VectorFunct.RECIP]
                                                   & (vec.mult >= RECIP_MULT_LIMIT)))))

        # Check 5: the beat is a power of two, so alignment is its low bits.
        lg_beat = cfg.dma_beat_bytes.bit_length() - 1
        misaligned = (dma.dram_addr[:lg_beat] != 0) | (dma.dram_stride[:lg_beat] != 0) \
            if lg_beat else C(0)

        # Check 6: last rows touched.
        dma_last = _last_row(dma.sram_addr, dma.rows, (dma.chunks, dma.sram_chunk_stride))
        mm_a_last = _last_row(mm.a_addr, mm.m_rows, (mm.k_chunks, mm.a_kstride))
        mm_w_last = _last_row(mm.w_addr, cfg.dim, (mm.k_chunks, mm.w_kstride), (mm.n_blocks, mm.w_nstride))
        mm_o_last = _last_row(mm.out_addr, mm.m_rows, (mm.n_blocks, mm.out_nstride))
        vec_s_last = vec.state_addr + vec.rows - 1
        vec_a_last = _last_row(vec.acc_addr, vec.rows, (vec.blocks, vec.acc_block_stride))
        vec_p_last = _last_row(vec.spad_addr, vec.rows, (vec.blocks, vec.spad_block_stride))
        acc_funct = Cat(*(funct_is[f] for f in ACC_FUNCTS)).any()
        spad_funct = Cat(*(funct_is[f] for f in SPAD_FUNCTS)).any()

        is_mm, is_vec = is_op[Opcode.MATMUL], is_op[Opcode.VECTOR]
        E = ErrorCode
        # The documented order; opcodes are exclusive, so one chain serves them all.
        checks = [
            (~legal_op, E.ILLEGAL_OPCODE),
            (bad_mask, E.BAD_TOKEN_MASK),
            (is_op[Opcode.HALT], E.NONE),
            (is_vec & ~legal_funct, E.ILLEGAL_FUNCT),
            (bad_field, E.BAD_FIELD),
            (is_dma & misaligned, E.DMA_MISALIGNED),
            (is_dma & (dma.mem == Mem.SPAD) & (dma_last >= cfg.spad_rows), E.SPAD_RANGE),
            (is_dma & (dma.mem == Mem.ACC) & (dma_last >= cfg.acc_rows), E.ACC_RANGE),
            (is_mm & (mm.a_mem == Mem.SPAD) & (mm_a_last >= cfg.spad_rows), E.SPAD_RANGE),
            (is_mm & (mm.a_mem == Mem.ACC) & (mm_a_last >= cfg.acc_rows), E.ACC_RANGE),
            (is_mm & (mm_w_last >= cfg.spad_rows), E.SPAD_RANGE),
            (is_mm & (mm_o_last >= cfg.acc_rows), E.ACC_RANGE),
            (is_vec & (vec_s_last >= cfg.vector_state_rows), E.STATE_RANGE),
            (is_vec & acc_funct & (vec_a_last >= cfg.acc_rows), E.ACC_RANGE),
            (is_vec & spad_funct & (vec_p_last >= cfg.spad_rows), E.SPAD_RANGE),
        ]
        with m.If(checks[0][0]):
            m.d.comb += self.error.eq(checks[0][1])
        for cond, code in checks[1:]:
            with m.Elif(cond):
                m.d.comb += self.error.eq(code)
        return m
