"""The instruction checker: checks 1-6 of ``docs/architecture.md``, combinational.

Checks 4-6 are built from the tables of ``spec/checks.py`` (the golden model's
``check_fields`` reads the same tables); no field name or limit is written here.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flashnpu.spec.checks import ALIGNED_FIELDS, COUNT_FIELDS, FIELD_LIMITS, ROW_RANGES
from flashnpu.spec.isa import BODY_OF, INSTR_LAYOUT, OPCODE_QUEUE, ErrorCode, Opcode, VectorFunct
from flashnpu.hw.signatures import ERROR_SHAPE

__all__ = ["InstrChecker"]


def _last_row(base, count, steps):
    """``base + (count - 1) + sum((n - 1) * stride)``, the last row an access touches.

    Counts are truncated to their width after the ``- 1``, so a zero count gives a
    large but harmless value: check 4 has already failed for it.
    """
    total = base + count - 1
    for n, stride in steps:
        total = total + (n - 1)[:len(n)] * stride
    return total


class InstrChecker(wiring.Component):
    """Check one instruction word against checks 1-6 of ``docs/architecture.md``.

    The checks run in the documented order and the first failure wins, exactly
    as ``sw/golden.check_fields`` does. The word is viewed through
    ``spec/isa.INSTR_LAYOUT``; no bit position is written here.

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

        # Check 2: the queue's own bit, as a one-hot mask per opcode.
        own = Signal(4)
        with m.Switch(op):
            for o, q in OPCODE_QUEUE.items():
                with m.Case(o):
                    m.d.comb += own.eq(1 << q)
        masks = w.wait | w.signal
        bad_mask = Mux(is_op[Opcode.HALT], masks != 0, (masks & own) != 0)

        vec = w.body.vector
        funct_is = {f: vec.funct == f for f in VectorFunct}
        legal_funct = Cat(*funct_is.values()).any()

        def body(o):
            return getattr(w.body, BODY_OF[o])

        def applies(o, functs):
            """The opcode is ``o`` (and, for VECTOR, the funct is one of ``functs``; None: any)."""
            if functs is None:
                return is_op[o]
            return is_op[o] & Cat(*(funct_is[f] for f in functs)).any()

        # Check 4: zero counts, then the field limits.
        bad_field = Signal()
        m.d.comb += bad_field.eq(Cat(
            *(is_op[o] & (getattr(body(o), name) == 0) for o, names in COUNT_FIELDS.items() for name in names),
            *(applies(lim.opcode, None if lim.funct is None else (lim.funct,))
              & (getattr(body(lim.opcode), lim.field) >= lim.limit) for lim in FIELD_LIMITS)).any())

        # Check 5: the beat is a power of two, so alignment is its low bits.
        lg_beat = cfg.dma_beat_bytes.bit_length() - 1
        misaligned = Cat(*(is_op[o] & (getattr(body(o), name)[:lg_beat] != 0)
                           for o, names in ALIGNED_FIELDS.items() for name in names)).any() \
            if lg_beat else C(0)

        E = ErrorCode
        # The documented order; opcodes are exclusive, so one chain serves them all.
        checks = [
            (~legal_op, E.ILLEGAL_OPCODE),
            (bad_mask, E.BAD_TOKEN_MASK),
            (is_op[Opcode.HALT], E.NONE),
            (is_op[Opcode.VECTOR] & ~legal_funct, E.ILLEGAL_FUNCT),
            (bad_field, E.BAD_FIELD),
            (misaligned, E.DMA_MISALIGNED),
        ]
        # Check 6: last rows touched, from the table.
        for r in ROW_RANGES:
            b = body(r.opcode)
            expr = Value.cast(_last_row(getattr(b, r.base), getattr(b, r.count) if r.count else cfg.dim,
                                        [(getattr(b, n), getattr(b, st)) for n, st in r.steps]))
            last = Signal(expr.shape(), name=f"last_{r.opcode.name.lower()}_{r.what.lower() or 'row'}")
            m.d.comb += last.eq(expr)
            for value, mem in r.memories():
                cond = applies(r.opcode, r.functs) & (last >= getattr(cfg, mem.rows))
                if value is not None:
                    cond = cond & (getattr(b, r.mem_field) == value)
                checks.append((cond, mem.error))
        with m.If(checks[0][0]):
            m.d.comb += self.error.eq(checks[0][1])
        for cond, code in checks[1:]:
            with m.Elif(cond):
                m.d.comb += self.error.eq(code)
        return m
