"""The vector unit: executes VECTOR (online softmax and requantization) over accumulator rows.

See ``docs/vector_unit.md`` for the blocks, the pipeline, the hazards and the cycle model.
"""

from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.hw.signatures import SramReadSignature, SramWriteSignature, UnitSignature
from flashnpu.hw.vector_issue import STATE_ROW_BITS, VectorIssue
from flashnpu.hw.vector_lanes import VectorLanes
from flashnpu.hw.vector_reciprocal import VectorReciprocal
from flashnpu.hw.vector_row_state import VectorRowState
from flashnpu.spec.isa import VectorFunct
from flashnpu.spec.numerics import P_BITS
from flashnpu.spec.timing import timing

__all__ = ["VectorUnit"]

SRAM_ADDR_WIDTH = 16

#: What travels with an element down the pipeline; ``tag[k]`` is the element issued k cycles ago.
_TAG = data.StructLayout({
    "valid": 1,
    "funct": 3,
    "first": 1,      # block 0 of its row
    "last": 1,       # last block of its row
    "end": 1,        # last element of the instruction
    "acc": 16,
    "spad": 16,
    "st": STATE_ROW_BITS,
})


class VectorUnit(wiring.Component):
    """Execute VECTOR instructions: ``dim`` lanes, one accumulator row per cycle, per-row state.

    ROWMAX, EXP, SCALE, OUTPUT and REQUANT issue one element (accumulator row
    ``acc_addr + b*acc_block_stride + i``, ``i`` outer, ``b`` inner) per cycle
    into a free-running pipeline (EXP writes p back over the row it read, SCALE
    the rescaled row); INIT writes one state row per cycle; RECIP
    runs a sequential divider per row. The per-row state ``M``, ``L``, ``F``
    lives in three memories of ``vector_state_rows`` entries.

    Instructions do not overlap: the next one is taken in the cycle the
    current one is ``done`` (its last write), so every read of an instruction
    sees all writes of the previous ones. Inside a SCALE or EXP, an element that
    reads an accumulator row whose write is still in the pipeline waits
    (see ``docs/vector_unit.md``).

    Parameters
    ----------
    config : NPUConfig
        ``dim`` lanes (``vector_lanes``), ``vector_state_rows`` state entries.

    Attributes
    ----------
    unit : In(UnitSignature())
        VECTOR instructions (body viewed as ``vector``; fields already checked).
        ``instr.ready`` is high when idle or in the ``done`` cycle. ``done``
        pulses once per instruction in the cycle of its last write; ``busy``
        is high from the cycle after the take to ``done``; ``error`` is 0.
    acc_rd : Out(SramReadSignature(addr_width=16, data_width=32*dim))
        Accumulator reads, one row per issue cycle.
    acc_wr : Out(SramWriteSignature(addr_width=16, data_width=32*dim))
        SCALE and EXP writes (EXP: p in ``0..P_SCALE`` per lane). Driven from registers.
    spad_wr : Out(SramWriteSignature(addr_width=16, data_width=8*dim))
        OUTPUT and REQUANT writes. Driven from registers.
    state_m, state_l, state_f : Memory
        The per-row state (for testbenches that preload or inspect it).
    """

    def __init__(self, config):
        self._cfg = config
        self._timing = timing(config)
        dim = config.dim
        super().__init__({
            "unit": In(UnitSignature()),
            "acc_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=32 * dim)),
            "acc_wr": Out(SramWriteSignature(addr_width=SRAM_ADDR_WIDTH, data_width=32 * dim)),
            "spad_wr": Out(SramWriteSignature(addr_width=SRAM_ADDR_WIDTH, data_width=8 * dim)),
        })
        self._issue = VectorIssue(dim)
        self._lanes = VectorLanes(config)
        self._row_state = VectorRowState(config)
        self._recip = VectorReciprocal(config)
        rs = self._row_state
        self.state_m, self.state_l, self.state_f = rs.state_m, rs.state_l, rs.state_f

    def elaborate(self, platform):
        m = Module()
        F = VectorFunct
        t = self._timing
        # Stage (cycles after an element's issue) of each write; an element is one
        # (row, block) pair, i.e. one accumulator row.
        OUT_STAGE = t.vector_out_write        # SCALE acc write, OUTPUT/REQUANT spad write
        EXP_WR_STAGE = t.vector_exp_write     # EXP acc write (p in place)
        STATE_STAGE = t.vector_state_write    # ROWMAX/EXP state write
        issue_blk = m.submodules.issue = self._issue
        lanes = m.submodules.lanes = self._lanes
        rs = m.submodules.row_state = self._row_state
        recip = m.submodules.recip = self._recip
        u = self.unit

        # Instructions: the issue block takes them; RECIP goes to the reciprocal block.
        done = Signal()
        m.d.comb += [
            issue_blk.instr.valid.eq(u.instr.valid),
            issue_blk.instr.payload.eq(u.instr.payload.body.vector),
            u.instr.ready.eq(issue_blk.instr.ready),
            issue_blk.done.eq(done),
            u.busy.eq(issue_blk.busy),
            u.done.eq(done),
            u.error.eq(0),
            lanes.params.eq(issue_blk.params),
            rs.params.eq(issue_blk.params),
        ]
        wiring.connect(m, issue_blk.recip, recip.start)
        wiring.connect(m, recip.rd, rs.recip_rd)
        wiring.connect(m, recip.wr, rs.recip_wr)
        wiring.connect(m, lanes.rowmax, rs.rowmax)
        wiring.connect(m, lanes.exp, rs.exp)

        e = issue_blk.elem.payload
        issue = Signal()
        stall = Signal()
        m.d.comb += [issue_blk.elem.ready.eq(~stall), issue.eq(issue_blk.elem.valid & ~stall)]
        tag = [Signal(_TAG, name="tag0")]
        m.d.comb += [
            tag[0].valid.eq(issue & (e.funct != F.INIT)),
            tag[0].funct.eq(e.funct), tag[0].first.eq(e.first), tag[0].last.eq(e.last),
            tag[0].end.eq(e.end), tag[0].acc.eq(e.acc), tag[0].spad.eq(e.spad), tag[0].st.eq(e.st),
        ]
        for k in range(1, STATE_STAGE + 1):
            tk = Signal(_TAG, name=f"tag{k}")
            m.d.sync += tk.eq(tag[k - 1])
            tag.append(tk)

        def at(k, *functs):
            """Tag ``k`` holds a valid element of one of ``functs``."""
            return tag[k].valid & Cat(*(tag[k].funct == f for f in functs)).any()

        # SCALE and EXP read a row only after every earlier write of it has landed:
        # the writes of the elements now in stages 1..OUT_STAGE (SCALE) or
        # 1..EXP_WR_STAGE (EXP) are not visible yet.
        m.d.comb += stall.eq(
            ((e.funct == F.SCALE) & Cat(*(
                at(k, F.SCALE) & (tag[k].acc == e.acc) for k in range(1, OUT_STAGE + 1))).any())
            | ((e.funct == F.EXP) & Cat(*(
                at(k, F.EXP) & (tag[k].acc == e.acc) for k in range(1, EXP_WR_STAGE + 1))).any()))

        # Stage 0 reads the element's accumulator row and state row; stage 1 gives them to the lanes.
        mask1 = Signal(self._cfg.dim)
        m.d.sync += mask1.eq(e.mask)
        row = rs.elem_rd.data
        li = lanes.elem.payload
        m.d.comb += [
            self.acc_rd.en.eq(tag[0].valid),
            self.acc_rd.addr.eq(e.acc),
            rs.elem_rd.en.eq(tag[0].valid),
            rs.elem_rd.addr.eq(e.st),
            lanes.elem.valid.eq(tag[1].valid),
            li.x.eq(self.acc_rd.data), li.m.eq(row.m), li.mask.eq(mask1), li.first.eq(tag[1].first),
            li.factor.eq(Mux((tag[1].funct == F.SCALE) | (tag[1].funct == F.OUTPUT),
                             row.f, issue_blk.params.mult)),
        ]

        # Writes. Instructions do not overlap, so the SCALE and EXP writes never meet.
        exp_wr = at(EXP_WR_STAGE, F.EXP)
        p = lanes.exp.payload.p
        m.d.comb += [
            self.acc_wr.en.eq(at(OUT_STAGE, F.SCALE) | exp_wr),
            self.acc_wr.addr.eq(Mux(exp_wr, tag[EXP_WR_STAGE].acc, tag[OUT_STAGE].acc)),
            self.acc_wr.data.eq(Mux(exp_wr, Cat(*(Cat(p[l], C(0, 32 - P_BITS)) for l in range(len(p)))),
                                    lanes.requant.payload.w.as_value())),
            self.spad_wr.en.eq(at(OUT_STAGE, F.OUTPUT, F.REQUANT)),
            self.spad_wr.addr.eq(tag[OUT_STAGE].spad),
            self.spad_wr.data.eq(lanes.requant.payload.q.as_value()),
        ]
        init_wr = Signal()
        ts = tag[STATE_STAGE]
        m.d.comb += [
            init_wr.eq(issue & (e.funct == F.INIT)),
            rs.update.valid.eq(init_wr | (at(STATE_STAGE, F.ROWMAX, F.EXP) & ts.last)),
            rs.update.payload.op.eq(Mux(init_wr, F.INIT, ts.funct)),
            rs.update.payload.row.eq(Mux(init_wr, e.st, ts.st)),
        ]

        m.d.comb += done.eq(
            (at(STATE_STAGE, F.ROWMAX, F.EXP) & ts.end)
            | (at(OUT_STAGE, F.SCALE, F.OUTPUT, F.REQUANT) & tag[OUT_STAGE].end)
            | (init_wr & e.end)
            | (recip.wr.valid & recip.wr.payload.last))
        return m
