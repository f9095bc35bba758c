"""The vector unit's issue stage: takes a VECTOR instruction and walks its elements, one per cycle.

See ``docs/vector_unit.md`` ("Structure", "Execution").
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.spec.isa import VECTOR_LAYOUT, VectorFunct

__all__ = ["VectorIssue", "element_layout", "PARAMS_LAYOUT", "RECIP_START_LAYOUT", "STATE_ROW_BITS"]

#: Width of a state row index (the ISA's ``state_addr``).
STATE_ROW_BITS = 12

#: The fields of the instruction that every stage of the pipeline reads while it runs.
PARAMS_LAYOUT = data.StructLayout({
    "mult": unsigned(32),
    "shift": unsigned(6),          # exp_arg shift (ROWMAX, EXP)
    "rshift": unsigned(6),         # rounding shift of the multiplier path (15 for SCALE)
    "rshift_m1": unsigned(6),      # rshift - 1, a register (no subtract on the rounding path)
})

#: A RECIP instruction, for the reciprocal block.
RECIP_START_LAYOUT = data.StructLayout({
    "rows": unsigned(16),
    "row": unsigned(STATE_ROW_BITS),
    "mult": unsigned(16),
})


def element_layout(dim):
    """One element ``(i, b)``: where it reads and writes, where it sits in its row, its lane mask."""
    return data.StructLayout({
        "funct": unsigned(3),
        "first": unsigned(1),      # block 0 of its row
        "last": unsigned(1),       # last block of its row
        "end": unsigned(1),        # last element of the instruction
        "acc": unsigned(16),
        "spad": unsigned(16),
        "st": unsigned(STATE_ROW_BITS),
        "mask": data.ArrayLayout(unsigned(1), dim),   # valid(i, c) per lane (ROWMAX, EXP)
    })


class VectorIssue(wiring.Component):
    """Take VECTOR instructions and issue their elements, row ``i`` outer, block ``b`` inner.

    ``instr.ready`` is high when idle or in the ``done`` cycle (instructions do
    not overlap). ROWMAX, EXP, SCALE, OUTPUT, REQUANT and INIT (one row per
    element) offer ``elem`` from the cycle after the take; the element advances
    when ``elem.ready`` (low: a SCALE/EXP hazard stall). RECIP issues no element:
    it goes to ``recip`` in the take cycle.

    Members
    -------
    instr : In(stream.Signature(VECTOR_LAYOUT))
    done : In(1)
        The current instruction's last write (from the pipeline): the unit is free.
    busy : Out(1)
        From the cycle after a take to its ``done``.
    elem : Out(stream.Signature(element_layout(dim)))
        Acc row ``acc_addr + b*acc_block_stride + i``, spad row ``spad_addr +
        b*spad_block_stride + i``, state row ``state_addr + i``.
    params : Out(PARAMS_LAYOUT)
        The running instruction's ``mult`` and shifts (registers).
    recip : Out(stream.Signature(RECIP_START_LAYOUT, always_ready=True))
        A RECIP taken (valid for one cycle).
    """

    def __init__(self, dim):
        self._dim = dim
        super().__init__({
            "instr": In(stream.Signature(VECTOR_LAYOUT)),
            "done": In(1),
            "busy": Out(1),
            "elem": Out(stream.Signature(element_layout(dim))),
            "params": Out(PARAMS_LAYOUT),
            "recip": Out(stream.Signature(RECIP_START_LAYOUT, always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        dim = self._dim
        F = VectorFunct
        p = self.instr.payload
        e = self.elem.payload
        take = Signal()
        m.d.comb += [
            self.instr.ready.eq(~self.busy | self.done),
            take.eq(self.instr.valid & self.instr.ready),
            self.recip.valid.eq(take & (p.funct == F.RECIP)),
            self.recip.payload.rows.eq(p.rows),
            self.recip.payload.row.eq(p.state_addr),
            self.recip.payload.mult.eq(p.mult[:16]),
        ]

        i_rows = Signal(16)
        i_blocks = Signal(8)
        i_acc_stride = Signal(16)
        i_spad_stride = Signal(16)
        i_kv = Signal(16)
        i_causal = Signal()
        i_off = Signal(signed(20))
        i_i = Signal(16)
        i_b = Signal(8)
        i_row_acc = Signal(16)       # acc_addr + i
        i_row_spad = Signal(16)      # spad_addr + i
        i_c0 = Signal(range(256 * dim))   # b*dim, the block's first column
        issue = Signal()
        last_b = Signal()
        last_i = Signal()
        m.d.comb += [
            issue.eq(self.elem.valid & self.elem.ready),
            last_b.eq(i_b == i_blocks - 1),
            last_i.eq(i_i == i_rows - 1),
            e.first.eq(i_b == 0),
            e.last.eq(last_b),
            e.end.eq(last_b & last_i),
        ]

        rshift = Mux(p.funct == F.SCALE, 15, p.shift)
        with m.If(take):
            m.d.sync += [
                self.busy.eq(1),
                e.funct.eq(p.funct), i_rows.eq(p.rows),
                i_blocks.eq(Mux(p.funct == F.INIT, 1, p.blocks)),   # INIT: one row per cycle
                i_acc_stride.eq(p.acc_block_stride), i_spad_stride.eq(p.spad_block_stride),
                i_kv.eq(p.kv_valid), i_causal.eq(p.causal), i_off.eq(p.causal_offset),
                self.params.mult.eq(p.mult), self.params.shift.eq(p.shift),
                self.params.rshift.eq(rshift), self.params.rshift_m1.eq(rshift - 1),
                self.elem.valid.eq(p.funct != F.RECIP),
                i_i.eq(0), i_b.eq(0), i_c0.eq(0),
                i_row_acc.eq(p.acc_addr), e.acc.eq(p.acc_addr),
                i_row_spad.eq(p.spad_addr), e.spad.eq(p.spad_addr),
                e.st.eq(p.state_addr),
            ]
        with m.Else():
            with m.If(self.done):
                m.d.sync += self.busy.eq(0)
            with m.If(issue):
                with m.If(last_b):
                    m.d.sync += [
                        i_b.eq(0), i_c0.eq(0), i_i.eq(i_i + 1), e.st.eq(e.st + 1),
                        i_row_acc.eq(i_row_acc + 1), e.acc.eq(i_row_acc + 1),
                        i_row_spad.eq(i_row_spad + 1), e.spad.eq(i_row_spad + 1),
                    ]
                    with m.If(last_i):
                        m.d.sync += self.elem.valid.eq(0)
                with m.Else():
                    m.d.sync += [
                        i_b.eq(i_b + 1), i_c0.eq(i_c0 + dim),
                        e.acc.eq(e.acc + i_acc_stride), e.spad.eq(e.spad + i_spad_stride),
                    ]

        # valid(i, c): column c = b*dim + l inside kv_valid and, if causal, c <= i + offset.
        lim = Signal(signed(22))
        m.d.comb += lim.eq(i_i + i_off)
        for l in range(dim):
            col = i_c0 + l
            m.d.comb += e.mask[l].eq((col < i_kv) & (~i_causal | (col <= lim)))
        return m
