"""The vector unit: executes VECTOR (online softmax and requantization) over accumulator rows.

See ``docs/vector_unit.md`` for the pipeline, the hazards and the cycle model.
"""

from amaranth import *
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.hw.divider import F_BITS, Divider
from flashnpu.hw.exp2_lane import Exp2Lane
from flashnpu.hw.signatures import SramReadSignature, SramWriteSignature, UnitSignature
from flashnpu.spec.isa import VectorFunct
from flashnpu.spec.numerics import NEG_INF, P_BITS, P_SCALE
from flashnpu.spec.timing import timing

__all__ = ["VectorUnit"]

SRAM_ADDR_WIDTH = 16

_MUL_SPLIT = 24                                # the 48-bit factor as two 24-bit halves

_TAG = data.StructLayout({
    "valid": 1,
    "funct": 3,
    "first": 1,      # block 0 of its row
    "last": 1,       # last block of its row
    "end": 1,        # last element of the instruction
    "acc": 16,
    "spad": 16,
    "st": 12,
})


def _tree(items, op):
    """Reduce ``items`` pairwise (a balanced tree of depth ceil(log2(n)))."""
    items = list(items)
    while len(items) > 1:
        nxt = [op(items[j], items[j + 1]) for j in range(0, len(items) - 1, 2)]
        if len(items) % 2:
            nxt.append(items[-1])
        items = nxt
    return items[0]


def _max(a, b):
    return Mux(a > b, a, b)


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
        rows = config.vector_state_rows
        self.state_m = memory.Memory(shape=unsigned(32), depth=rows, init=[])
        self.state_l = memory.Memory(shape=unsigned(32), depth=rows, init=[])
        self.state_f = memory.Memory(shape=unsigned(F_BITS), depth=rows, init=[])

    def elaborate(self, platform):
        m = Module()
        dim = self._cfg.dim
        u = self.unit
        p = u.instr.payload.body.vector
        F = VectorFunct
        # Stage (cycles after an element's issue) of each write; an element is one
        # (row, block) pair, i.e. one accumulator row.
        OUT_STAGE = self._timing.vector_out_write        # SCALE acc write, OUTPUT/REQUANT spad write
        EXP_WR_STAGE = self._timing.vector_exp_write     # EXP acc write (p in place)
        STATE_STAGE = self._timing.vector_state_write    # ROWMAX/EXP state write

        m.submodules.state_m = self.state_m
        m.submodules.state_l = self.state_l
        m.submodules.state_f = self.state_f
        rd_m, wr_m = self.state_m.read_port(), self.state_m.write_port()
        rd_l, wr_l = self.state_l.read_port(), self.state_l.write_port()
        rd_f, wr_f = self.state_f.read_port(), self.state_f.write_port()
        div = m.submodules.div = Divider(bits_per_cycle=self._timing.divider_bits_per_cycle)
        lanes = [Exp2Lane() for _ in range(dim)]
        for l, lane in enumerate(lanes):
            m.submodules[f"exp{l}"] = lane
        row_exp = m.submodules.row_exp = Exp2Lane()

        # ================================================= instruction, issue
        active = Signal()
        done = Signal()
        take = Signal()
        m.d.comb += [
            u.instr.ready.eq(~active | done),
            take.eq(u.instr.valid & u.instr.ready),
            u.busy.eq(active),
            u.done.eq(done),
            u.error.eq(0),
        ]

        i_funct = Signal(3)
        i_rows = Signal(16)
        i_blocks = Signal(8)
        i_acc_stride = Signal(16)
        i_spad_stride = Signal(16)
        i_kv = Signal(16)
        i_causal = Signal()
        i_off = Signal(signed(20))
        i_mult = Signal(32)
        i_shift = Signal(6)          # exp_arg shift (ROWMAX, EXP)
        i_rshift = Signal(6)         # rounding shift of the multiplier path (15 for SCALE)
        i_rshift_m1 = Signal(6)
        i_state = Signal(12)

        i_issuing = Signal()         # elements left to issue (all but RECIP)
        i_i = Signal(16)
        i_b = Signal(8)
        i_row_acc = Signal(16)       # acc_addr + i
        i_acc = Signal(16)           # ... + b*acc_block_stride
        i_row_spad = Signal(16)
        i_spad = Signal(16)
        i_c0 = Signal(range(256 * dim))   # b*dim, the block's first column
        i_st = Signal(12)            # state_addr + i
        stall = Signal()
        issue = Signal()
        last_b = Signal()
        last_i = Signal()
        m.d.comb += [
            issue.eq(i_issuing & ~stall),
            last_b.eq(i_b == i_blocks - 1),
            last_i.eq(i_i == i_rows - 1),
        ]

        rshift = Mux(p.funct == F.SCALE, 15, p.shift)
        with m.If(take):
            m.d.sync += [
                active.eq(1),
                i_funct.eq(p.funct), i_rows.eq(p.rows),
                i_blocks.eq(Mux(p.funct == F.INIT, 1, p.blocks)),   # INIT: one row per cycle
                i_acc_stride.eq(p.acc_block_stride), i_spad_stride.eq(p.spad_block_stride),
                i_kv.eq(p.kv_valid), i_causal.eq(p.causal), i_off.eq(p.causal_offset),
                i_mult.eq(p.mult), i_shift.eq(p.shift),
                i_rshift.eq(rshift), i_rshift_m1.eq(rshift - 1),
                i_state.eq(p.state_addr),
                i_issuing.eq(p.funct != F.RECIP),
                i_i.eq(0), i_b.eq(0), i_c0.eq(0),
                i_row_acc.eq(p.acc_addr), i_acc.eq(p.acc_addr),
                i_row_spad.eq(p.spad_addr), i_spad.eq(p.spad_addr),
                i_st.eq(p.state_addr),
            ]
        with m.Else():
            with m.If(done):
                m.d.sync += active.eq(0)
            with m.If(issue):
                with m.If(last_b):
                    m.d.sync += [
                        i_b.eq(0), i_c0.eq(0), i_i.eq(i_i + 1), i_st.eq(i_st + 1),
                        i_row_acc.eq(i_row_acc + 1), i_acc.eq(i_row_acc + 1),
                        i_row_spad.eq(i_row_spad + 1), i_spad.eq(i_row_spad + 1),
                    ]
                    with m.If(last_i):
                        m.d.sync += i_issuing.eq(0)
                with m.Else():
                    m.d.sync += [
                        i_b.eq(i_b + 1), i_c0.eq(i_c0 + dim),
                        i_acc.eq(i_acc + i_acc_stride), i_spad.eq(i_spad + i_spad_stride),
                    ]

        # Tags travel with each element; tag[k] is the element issued k cycles ago.
        tag = [Signal(_TAG, name="tag0")]
        m.d.comb += [
            tag[0].valid.eq(issue & (i_funct != F.INIT)),
            tag[0].funct.eq(i_funct),
            tag[0].first.eq(i_b == 0),
            tag[0].last.eq(last_b),
            tag[0].end.eq(last_b & last_i),
            tag[0].acc.eq(i_acc),
            tag[0].spad.eq(i_spad),
            tag[0].st.eq(i_st),
        ]
        for k in range(1, STATE_STAGE + 1):
            t = Signal(_TAG, name=f"tag{k}")
            m.d.sync += t.eq(tag[k - 1])
            tag.append(t)

        def at(k, *functs):
            """Tag ``k`` holds a valid element of one of ``functs``."""
            return tag[k].valid & Cat(*(tag[k].funct == f for f in functs)).any()

        # SCALE and EXP read a row only after every earlier write of it has landed:
        # the writes of the elements now in stages 1..OUT_STAGE (SCALE) or
        # 1..EXP_WR_STAGE (EXP) are not visible yet.
        m.d.comb += stall.eq(
            ((i_funct == F.SCALE) & Cat(*(
                at(k, F.SCALE) & (tag[k].acc == i_acc) for k in range(1, OUT_STAGE + 1))).any())
            | ((i_funct == F.EXP) & Cat(*(
                at(k, F.EXP) & (tag[k].acc == i_acc) for k in range(1, EXP_WR_STAGE + 1))).any()))

        # Validity mask of the issued element (ROWMAX, EXP).
        lim = Signal(signed(22))
        m.d.comb += lim.eq(i_i + i_off)
        mask0 = Signal(dim)
        for l in range(dim):
            col = i_c0 + l
            m.d.comb += mask0[l].eq((col < i_kv) & (~i_causal | (col <= lim)))

        # Reads: the element's accumulator row and its state row.
        recip_rd_en = Signal()
        recip_rd_addr = Signal(12)
        m.d.comb += [
            self.acc_rd.en.eq(tag[0].valid),
            self.acc_rd.addr.eq(i_acc),
        ]
        for rd in (rd_m, rd_l, rd_f):
            m.d.comb += [
                rd.en.eq(tag[0].valid | recip_rd_en),
                rd.addr.eq(Mux(recip_rd_en, recip_rd_addr, i_st)),
            ]

        # ============================================== stage 1: data arrives
        x = [self.acc_rd.data[32 * l:32 * l + 32].as_signed() for l in range(dim)]
        s1_m = rd_m.data.as_signed()
        s1_l = rd_l.data.as_signed()
        s1_f = rd_f.data
        mask = [mask0]
        for k in range(1, Exp2Lane.LATENCY + 2):
            mk = Signal(dim, name=f"mask{k}")
            m.d.sync += mk.eq(mask[-1])
            mask.append(mk)

        # ROWMAX: masked tree max (stage 1), across blocks and with M (stage 2).
        s2_tmax = Signal(signed(32))
        s2_m = Signal(signed(32))
        m.d.sync += [
            s2_tmax.eq(_tree([Mux(mask[1][l], x[l], NEG_INF) for l in range(dim)], _max)),
            s2_m.eq(s1_m),
        ]
        run_max = Signal(signed(32))
        rmax = Signal(signed(32))
        mnew = Signal(signed(32))
        m.d.comb += [
            rmax.eq(Mux(tag[2].first, s2_tmax, _max(run_max, s2_tmax))),
            mnew.eq(_max(s2_m, rmax)),
        ]
        with m.If(tag[2].valid):
            m.d.sync += run_max.eq(rmax)
        s3_m = Signal(signed(32))
        s3_diff = Signal(signed(33))
        m.d.sync += [s3_m.eq(mnew), s3_diff.eq(s2_m - mnew)]
        m.d.comb += [row_exp.diff.eq(s3_diff), row_exp.mult.eq(i_mult), row_exp.shift.eq(i_shift)]
        m_pipe = s3_m
        for k in range(4, STATE_STAGE + 1):
            mk = Signal(signed(32), name=f"s{k}_m")
            m.d.sync += mk.eq(m_pipe)
            m_pipe = mk

        # EXP: lanes from stage 1 to 1+LATENCY; quant_p and mask, then the acc write and row sum.
        for l, lane in enumerate(lanes):
            m.d.comb += [lane.diff.eq(x[l] - s1_m), lane.mult.eq(i_mult), lane.shift.eq(i_shift)]
        ke = 1 + Exp2Lane.LATENCY
        s8_p = [Signal(P_BITS, name=f"s8_p{l}") for l in range(dim)]
        for l, lane in enumerate(lanes):
            # numerics.quant_p: (e * P_SCALE + 2**14) >> 15, in 0..P_SCALE.
            m.d.sync += s8_p[l].eq(Mux(mask[ke][l], (lane.e * P_SCALE + (1 << 14)) >> 15, 0))
        sum_bits = (255 * dim * P_SCALE).bit_length()     # a row: <= 255 blocks of dim lanes
        run_sum = Signal(sum_bits)
        rsum = Signal(sum_bits)
        m.d.comb += rsum.eq(Mux(tag[EXP_WR_STAGE].first, 0, run_sum) + _tree(s8_p, lambda a, b: a + b))
        with m.If(tag[EXP_WR_STAGE].valid):
            m.d.sync += run_sum.eq(rsum)
        s9_rsum = Signal(sum_bits)
        m.d.sync += s9_rsum.eq(rsum)

        # wrap32(mul_q15(L, F)) for the L update, beside the lanes (stages 1..3).
        s2_lf_lo = Signal(signed(32 + _MUL_SPLIT + 1))
        s2_lf_hi = Signal(signed(32 + _MUL_SPLIT + 1))
        m.d.sync += [s2_lf_lo.eq(s1_l * s1_f[:_MUL_SPLIT]), s2_lf_hi.eq(s1_l * s1_f[_MUL_SPLIT:])]
        lf = Signal(32, name="s3_lf")
        m.d.sync += lf.eq((s2_lf_lo + (s2_lf_hi << _MUL_SPLIT) + (1 << 14))[15:47])
        for k in range(4, STATE_STAGE + 1):
            lk = Signal(32, name=f"s{k}_lf")
            m.d.sync += lk.eq(lf)
            lf = lk

        # SCALE, OUTPUT, REQUANT: x * factor, full width (stages 1..3), rounded shift, wrap or saturate.
        factor = Signal(F_BITS)
        m.d.comb += factor.eq(Mux((tag[1].funct == F.SCALE) | (tag[1].funct == F.OUTPUT), s1_f, i_mult))
        s4_w = []
        s4_q = []
        for l in range(dim):
            lo = Signal(signed(32 + _MUL_SPLIT + 1), name=f"s2_lo{l}")
            hi = Signal(signed(32 + _MUL_SPLIT + 1), name=f"s2_hi{l}")
            m.d.sync += [lo.eq(x[l] * factor[:_MUL_SPLIT]), hi.eq(x[l] * factor[_MUL_SPLIT:])]
            prod = Signal(signed(32 + F_BITS + 1), name=f"s3_prod{l}")
            m.d.sync += prod.eq(lo + (hi << _MUL_SPLIT))
            # round half up: (x + 2**(s-1)) >> s == ((x >> (s-1)) + 1) >> 1 for s >= 1.
            y = Signal(signed(32 + F_BITS + 1), name=f"s3_y{l}")
            m.d.comb += y.eq(Mux(i_rshift == 0, prod, ((prod >> i_rshift_m1) + 1) >> 1))
            w = Signal(32, name=f"s4_w{l}")
            q = Signal(8, name=f"s4_q{l}")
            m.d.sync += [w.eq(y[:32]), q.eq(Mux(y > 127, 127, Mux(y < -128, -128, y))[:8])]
            s4_w.append(w)
            s4_q.append(q)

        # ============================================================ writes
        # Instructions do not overlap, so the SCALE and EXP writes never meet.
        exp_wr = at(EXP_WR_STAGE, F.EXP)
        out_wr = at(OUT_STAGE, F.OUTPUT, F.REQUANT)
        m.d.comb += [
            self.acc_wr.en.eq(at(OUT_STAGE, F.SCALE) | exp_wr),
            self.acc_wr.addr.eq(Mux(exp_wr, tag[EXP_WR_STAGE].acc, tag[OUT_STAGE].acc)),
            self.acc_wr.data.eq(Mux(exp_wr, Cat(*(Cat(v, C(0, 32 - P_BITS)) for v in s8_p)), Cat(*s4_w))),
            self.spad_wr.en.eq(out_wr),
            self.spad_wr.addr.eq(tag[OUT_STAGE].spad),
            self.spad_wr.data.eq(Cat(*s4_q)),
        ]

        init_wr = Signal()
        rowmax_wr = Signal()
        exp_st_wr = Signal()
        recip_wr = Signal()
        ts = tag[STATE_STAGE]
        m.d.comb += [
            init_wr.eq(issue & (i_funct == F.INIT)),
            rowmax_wr.eq(at(STATE_STAGE, F.ROWMAX) & ts.last),
            exp_st_wr.eq(at(STATE_STAGE, F.EXP) & ts.last),
            wr_m.en.eq(init_wr | rowmax_wr),
            wr_m.addr.eq(Mux(init_wr, i_st, ts.st)),
            wr_m.data.eq(Mux(init_wr, NEG_INF, m_pipe)),
            wr_l.en.eq(init_wr | exp_st_wr),
            wr_l.addr.eq(Mux(init_wr, i_st, ts.st)),
            wr_l.data.eq(Mux(init_wr, 0, (lf + s9_rsum)[:32])),
        ]

        # ============================================================= RECIP
        # Read L of row 0 (cycle 1), start the divider (cycle 2) and prefetch
        # the next row's L; each done writes F and starts the next row at once.
        r_phase = Signal(2)          # 0 idle, 1 read row 0, 2 start row 0, 3 dividing
        r_left = Signal(16)          # rows after the one being divided
        r_wr = Signal(12)            # state row being divided
        div_start = Signal()
        m.d.comb += [
            div.l.eq(s1_l),
            div.mult.eq(i_mult[:16]),
            div.start.eq(div_start),
            recip_wr.eq((r_phase == 3) & div.done),
        ]
        with m.If(take & (p.funct == F.RECIP)):
            m.d.sync += [r_phase.eq(1), r_left.eq(p.rows - 1), r_wr.eq(p.state_addr),
                         recip_rd_addr.eq(p.state_addr)]
        with m.Elif(r_phase == 1):
            m.d.comb += recip_rd_en.eq(1)
            m.d.sync += [r_phase.eq(2), recip_rd_addr.eq(recip_rd_addr + 1)]
        with m.Elif(r_phase == 2):
            m.d.comb += [div_start.eq(1), recip_rd_en.eq(r_left != 0)]
            m.d.sync += [r_phase.eq(3), recip_rd_addr.eq(recip_rd_addr + 1)]
        with m.Elif(recip_wr):
            with m.If(r_left == 0):
                m.d.sync += r_phase.eq(0)
            with m.Else():
                m.d.comb += [div_start.eq(1), recip_rd_en.eq(r_left != 1)]
                m.d.sync += [r_left.eq(r_left - 1), r_wr.eq(r_wr + 1),
                             recip_rd_addr.eq(recip_rd_addr + 1)]
        m.d.comb += [
            wr_f.en.eq(init_wr | rowmax_wr | recip_wr),
            wr_f.addr.eq(Mux(init_wr, i_st, Mux(recip_wr, r_wr, ts.st))),
            wr_f.data.eq(Mux(init_wr, 0, Mux(recip_wr, div.f, row_exp.e))),
        ]

        # ============================================================== done
        m.d.comb += done.eq(
            (at(STATE_STAGE, F.ROWMAX, F.EXP) & ts.end)
            | (at(OUT_STAGE, F.SCALE, F.OUTPUT, F.REQUANT) & tag[OUT_STAGE].end)
            | (init_wr & last_i)
            | (recip_wr & (r_left == 0)))
        return m
