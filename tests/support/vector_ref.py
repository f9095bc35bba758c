"""The test-side reference of the vector unit: VECTOR element by element, from spec/numerics.py.

Independent of the golden model's vectorized numpy (sw/golden.py) and of the hardware:
plain Python loops in the order of docs/architecture.md, every arithmetic step one of the
spec's fixed-point functions (``exp_arg``, ``exp2_fixed``, ``quant_p``, ``mul_q15``,
``recip_fixed``, ``requant``, ``wrap32``). The per-element pieces are exported for the
block tests (test_vector_blocks); :func:`execute` is a whole VECTOR instruction
(test_vector_unit, test_golden).

The online-softmax row state of state row ``s`` is ``M[s]`` (running max), ``L[s]``
(running sum of P), ``F[s]`` (the factor: the rescale after ROWMAX, 1/L after RECIP).
"""

from flashnpu.spec.isa import VectorFunct
from flashnpu.spec.numerics import (NEG_INF, exp2_fixed, exp_arg, mul_q15, quant_p, recip_fixed, requant,
                                    round_shift, wrap32)

__all__ = ["valid", "masked_max", "rowmax_update", "exp_p", "l_update", "scale", "rounded_product",
           "output", "requant_q", "recip", "RowState", "execute"]

F = VectorFunct


# ------------------------------------------------------------------ one element / one row
def valid(f, i, c):
    """Whether key column ``c`` of row ``i`` of VECTOR ``f`` is live (kv_valid and the causal mask)."""
    return c < f["kv_valid"] and (not f["causal"] or c <= i + f["causal_offset"])


def masked_max(values, mask):
    """The largest value whose mask bit is set; ``NEG_INF`` if none."""
    return max((int(v) for v, k in zip(values, mask) if k), default=NEG_INF)


def rowmax_update(m_old, block_max, mult, shift):
    """ROWMAX: ``(M', F')`` from the old running max and the max of this instruction's live scores."""
    m_new = max(m_old, block_max)
    return m_new, exp2_fixed(exp_arg(m_old - m_new, mult, shift))


def exp_p(x, m, mult, shift):
    """EXP of one live score ``x`` against the running max ``m``: the P of P@V."""
    return quant_p(exp2_fixed(exp_arg(int(x) - m, mult, shift)))


def l_update(l_old, factor, p_sum):
    """EXP's row sum: the old sum rescaled by ``F``, plus this instruction's P."""
    return wrap32(mul_q15(l_old, factor) + p_sum)


def scale(x, factor):
    """SCALE of one accumulator element by the UQ1.15 factor ``F``."""
    return wrap32(mul_q15(x, factor))


def rounded_product(x, factor, shift):
    """The lanes' rounded wide product, as the accumulator keeps it (SCALE's, with shift 15)."""
    return wrap32(round_shift(int(x) * int(factor), shift))


def output(x, factor, shift):
    """OUTPUT of one element: O / L by the row's factor, to INT8."""
    return requant(x, factor, shift)


def requant_q(x, mult, shift):
    """REQUANT of one element by the instruction's (mult, shift), to INT8."""
    return requant(x, mult, shift)


def recip(l, mult):
    """RECIP: the row's factor from its sum."""
    return recip_fixed(l, mult)


class RowState:
    """One row's online-softmax state, stepped by the VECTOR functions that touch it."""

    def __init__(self, m=NEG_INF, l=0, f=0):
        self.m, self.l, self.f = m, l, f

    def init(self):
        self.m, self.l, self.f = NEG_INF, 0, 0

    def rowmax(self, block_max, mult, shift):
        self.m, self.f = rowmax_update(self.m, block_max, mult, shift)

    def exp(self, scores, mask, mult, shift):
        """P of ``scores`` (0 where masked off); updates L. Returns the P."""
        ps = [exp_p(x, self.m, mult, shift) if k else 0 for x, k in zip(scores, mask)]
        self.l = l_update(self.l, self.f, sum(ps))
        return ps

    def recip(self, mult):
        self.f = recip(self.l, mult)


# ------------------------------------------------------------------ one VECTOR instruction
def execute(f, dim, acc, spad, M, L, Fs):
    """Apply VECTOR ``f`` (decoded fields) in place.

    ``acc`` / ``spad``: row-indexable (lists of lists or 2-D numpy arrays) of ``dim`` lanes;
    ``M``, ``L``, ``Fs``: the state memories (lists of Python ints).
    """
    fn = F(f["funct"])
    for i in range(f["rows"]):
        s = f["state_addr"] + i
        row = RowState(M[s], L[s], Fs[s])
        acc_row = [f["acc_addr"] + b * f["acc_block_stride"] + i for b in range(f["blocks"])]
        spad_row = [f["spad_addr"] + b * f["spad_block_stride"] + i for b in range(f["blocks"])]
        masks = [[valid(f, i, b * dim + l) for l in range(dim)] for b in range(f["blocks"])]
        if fn == F.INIT:
            row.init()
        elif fn == F.RECIP:
            row.recip(f["mult"])
        elif fn == F.ROWMAX:
            mx = max((masked_max(acc[a], mk) for a, mk in zip(acc_row, masks)), default=NEG_INF)
            row.rowmax(mx, f["mult"], f["shift"])
        elif fn == F.EXP:
            total = 0
            for a, mk in zip(acc_row, masks):              # block by block: a block may alias another
                ps = [exp_p(x, row.m, f["mult"], f["shift"]) if k else 0 for x, k in zip(acc[a], mk)]
                acc[a] = ps                                 # in place over the scores
                total += sum(ps)
            row.l = l_update(row.l, row.f, total)
        else:
            for a, sp in zip(acc_row, spad_row):
                x = [int(v) for v in acc[a]]
                if fn == F.SCALE:
                    acc[a] = [scale(v, row.f) for v in x]
                elif fn == F.OUTPUT:
                    spad[sp] = [output(v, row.f, f["shift"]) for v in x]
                else:
                    spad[sp] = [requant_q(v, f["mult"], f["shift"]) for v in x]
        M[s], L[s], Fs[s] = row.m, row.l, row.f
