"""The vector unit's per-row state M, L, F and the row side of ROWMAX and EXP.

See ``docs/vector_unit.md`` ("Structure", "Execution").
"""

from amaranth import *
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.hw.divider import F_BITS
from flashnpu.hw.exp2_lane import Exp2Lane
from flashnpu.hw.vector_issue import PARAMS_LAYOUT, STATE_ROW_BITS
from flashnpu.hw.vector_lanes import ROWMAX_LAYOUT, exp_out_layout, max_of
from flashnpu.spec.isa import VectorFunct
from flashnpu.spec.numerics import NEG_INF, P_SCALE
from flashnpu.spec.timing import timing

__all__ = ["VectorRowState", "StateReadSignature", "STATE_ROW_LAYOUT", "UPDATE_LAYOUT", "RECIP_WRITE_LAYOUT"]

_MUL_SPLIT = 24

#: One state row as read.
STATE_ROW_LAYOUT = data.StructLayout({"m": signed(32), "l": signed(32), "f": unsigned(F_BITS)})

#: A row update of the element pipeline: ``op`` INIT (M, L, F = NEG_INF, 0, 0), ROWMAX (M, F) or EXP (L).
UPDATE_LAYOUT = data.StructLayout({"op": unsigned(3), "row": unsigned(STATE_ROW_BITS)})

#: RECIP's F of one row; ``last``: the instruction's last row.
RECIP_WRITE_LAYOUT = data.StructLayout({"row": unsigned(STATE_ROW_BITS), "f": unsigned(F_BITS),
                                        "last": unsigned(1)})


class StateReadSignature(wiring.Signature):
    """A read of the three state memories, seen from the reader: ``data`` holds row ``addr`` the cycle after ``en``."""

    def __init__(self):
        super().__init__({
            "addr": Out(STATE_ROW_BITS),
            "en": Out(1),
            "data": In(STATE_ROW_LAYOUT),
        })

    def __eq__(self, other):
        return type(other) is StateReadSignature

    def __hash__(self):
        return hash(StateReadSignature)


class VectorRowState(wiring.Component):
    """The state memories and the row side of the element pipeline (no stalls, free-running).

    An element reads its state row through ``elem_rd`` in its issue cycle (stage
    0). Beside the lanes, for that row: stage 2 takes the lanes' ``rowmax``
    (running max across blocks, ``m = max(M, rowmax)``), stage 3 starts the row
    exp2 lane on ``M - m``, stages 1..3 compute ``wrap32(mul_q15(L, F))``, stage
    ``vector_exp_write`` takes the lanes' ``exp`` sum (running sum across blocks).
    An ``update`` in stage ``vector_state_write`` of that element writes
    ``M = m, F = exp2`` (ROWMAX) or ``L = mul_q15(L, F) + sum p`` (EXP). INIT's
    update writes at once; ``recip_wr`` writes F.

    Members
    -------
    elem_rd, recip_rd : In(StateReadSignature())
        The element pipeline's and RECIP's reads (RECIP's wins; they never meet).
    params : In(PARAMS_LAYOUT)
        ``mult``, ``shift`` of the row exp2 lane.
    rowmax : In(stream.Signature(ROWMAX_LAYOUT, always_ready=True))
    exp : In(stream.Signature(exp_out_layout(dim), always_ready=True))
    update : In(stream.Signature(UPDATE_LAYOUT, always_ready=True))
    recip_wr : In(stream.Signature(RECIP_WRITE_LAYOUT, always_ready=True))
    """

    def __init__(self, config):
        t = timing(config)
        self._state_stage = t.vector_state_write
        self._exp_stage = t.vector_exp_write
        # The row exp2 lane starts in stage 3 (rowmax in 2, m in 3) and F is written as it ends.
        if self._state_stage != 3 + Exp2Lane.LATENCY or self._exp_stage + 1 != self._state_stage:
            raise ValueError(f"spec.timing has vector_state_write {t.vector_state_write}; the row state "
                             f"writes in {3 + Exp2Lane.LATENCY}, one after EXP's sum")
        dim, rows = config.dim, config.vector_state_rows
        super().__init__({
            "elem_rd": In(StateReadSignature()),
            "recip_rd": In(StateReadSignature()),
            "params": In(PARAMS_LAYOUT),
            "rowmax": In(stream.Signature(ROWMAX_LAYOUT, always_ready=True)),
            "exp": In(stream.Signature(exp_out_layout(dim), always_ready=True)),
            "update": In(stream.Signature(UPDATE_LAYOUT, always_ready=True)),
            "recip_wr": In(stream.Signature(RECIP_WRITE_LAYOUT, always_ready=True)),
        })
        self._sum_bits = (255 * dim * P_SCALE).bit_length()     # a row: <= 255 blocks of dim lanes
        self.state_m = memory.Memory(shape=unsigned(32), depth=rows, init=[])
        self.state_l = memory.Memory(shape=unsigned(32), depth=rows, init=[])
        self.state_f = memory.Memory(shape=unsigned(F_BITS), depth=rows, init=[])

    def elaborate(self, platform):
        m = Module()
        F = VectorFunct
        S = self._state_stage
        m.submodules.state_m = self.state_m
        m.submodules.state_l = self.state_l
        m.submodules.state_f = self.state_f
        rd_m, wr_m = self.state_m.read_port(), self.state_m.write_port()
        rd_l, wr_l = self.state_l.read_port(), self.state_l.write_port()
        rd_f, wr_f = self.state_f.read_port(), self.state_f.write_port()
        row_exp = m.submodules.row_exp = Exp2Lane()

        def pipe(value, first, last, name):
            """``value`` (stage ``first - 1``) registered up to stage ``last``."""
            for k in range(first, last + 1):
                reg = Signal.like(value, name=f"s{k}_{name}")
                m.d.sync += reg.eq(value)
                value = reg
            return value

        # Reads: one address for the three memories.
        er, rr = self.elem_rd, self.recip_rd
        s1_m, s1_l, s1_f = rd_m.data.as_signed(), rd_l.data.as_signed(), rd_f.data
        for rd in (rd_m, rd_l, rd_f):
            m.d.comb += [rd.en.eq(er.en | rr.en), rd.addr.eq(Mux(rr.en, rr.addr, er.addr))]
        for port in (er, rr):
            m.d.comb += [port.data.m.eq(s1_m), port.data.l.eq(s1_l), port.data.f.eq(s1_f)]

        # ROWMAX: the running max across blocks (reset on block 0), then m = max(M, rowmax).
        s2_m = pipe(s1_m, 2, 2, "m")
        run_max = Signal(signed(32))
        rmax = Signal(signed(32))
        mnew = Signal(signed(32))
        rm = self.rowmax.payload
        m.d.comb += [
            rmax.eq(Mux(rm.first, rm.max, max_of(run_max, rm.max))),
            mnew.eq(max_of(s2_m, rmax)),
        ]
        with m.If(self.rowmax.valid):
            m.d.sync += run_max.eq(rmax)
        s3_diff = Signal(signed(33))
        m.d.sync += s3_diff.eq(s2_m - mnew)
        m.d.comb += [row_exp.diff.eq(s3_diff), row_exp.mult.eq(self.params.mult),
                     row_exp.shift.eq(self.params.shift)]
        m_new = pipe(mnew, 3, S, "mnew")

        # EXP: the running sum of p across blocks; wrap32(mul_q15(L, F)) is bits 15..46 of L*F + 2**14.
        run_sum = Signal(self._sum_bits)
        rsum = Signal(self._sum_bits)
        m.d.comb += rsum.eq(Mux(self.exp.payload.first, 0, run_sum) + self.exp.payload.sum)
        with m.If(self.exp.valid):
            m.d.sync += run_sum.eq(rsum)
        row_sum = pipe(rsum, self._exp_stage + 1, S, "rsum")
        lf_lo = Signal(signed(32 + _MUL_SPLIT + 1), name="s2_lf_lo")
        lf_hi = Signal(signed(32 + _MUL_SPLIT + 1), name="s2_lf_hi")
        m.d.sync += [lf_lo.eq(s1_l * s1_f[:_MUL_SPLIT]), lf_hi.eq(s1_l * s1_f[_MUL_SPLIT:])]
        s3_lf = Signal(32)
        m.d.sync += s3_lf.eq((lf_lo + (lf_hi << _MUL_SPLIT) + (1 << 14))[15:47])
        lf = pipe(s3_lf, 4, S, "lf")

        # Writes.
        up, rw = self.update, self.recip_wr
        init = Signal()
        rowmax_wr = Signal()
        exp_wr = Signal()
        m.d.comb += [
            init.eq(up.valid & (up.payload.op == F.INIT)),
            rowmax_wr.eq(up.valid & (up.payload.op == F.ROWMAX)),
            exp_wr.eq(up.valid & (up.payload.op == F.EXP)),
            wr_m.en.eq(init | rowmax_wr),
            wr_m.addr.eq(up.payload.row),
            wr_m.data.eq(Mux(init, NEG_INF, m_new)),
            wr_l.en.eq(init | exp_wr),
            wr_l.addr.eq(up.payload.row),
            wr_l.data.eq(Mux(init, 0, (lf + row_sum)[:32])),
            wr_f.en.eq(init | rowmax_wr | rw.valid),
            wr_f.addr.eq(Mux(init, up.payload.row, Mux(rw.valid, rw.payload.row, up.payload.row))),
            wr_f.data.eq(Mux(init, 0, Mux(rw.valid, rw.payload.f, row_exp.e))),
        ]
        return m
