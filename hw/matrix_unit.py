"""The matrix unit: executes MATMUL on the systolic array.

See ``docs/matrix_unit.md`` for the pipeline, the hazards and the cycle model.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flashnpu.hw.signatures import SramReadSignature, SramWriteSignature, UnitSignature
from flashnpu.hw.systolic_array import SystolicArray
from flashnpu.spec.isa import Mem
from flashnpu.spec.numerics import A_WIDE_BITS

__all__ = ["MatrixUnit"]

SRAM_ADDR_WIDTH = 16


class MatrixUnit(wiring.Component):
    """Execute MATMUL instructions: reads of W and A, the array, accumulator writes.

    For each tile (``nb`` outer, ``kc`` inner) the unit reads the ``dim`` weight
    rows of the tile through ``w_rd`` (one per cycle) and the ``m_rows`` A rows
    (one per cycle), one cycle behind: from the scratchpad through ``a_rd``
    (INT8 lanes, sign-extended) or, with ``a_mem = ACC``, from the accumulator
    through ``acc_a_rd`` (each INT32 lane saturated to ``A_WIDE_BITS`` bits). A
    tile takes ``max(m_rows, dim)`` issue cycles and the next tile (of the same
    or the next instruction) follows at once. Each product row is written to the
    accumulator: overwritten on the first k-chunk of a non-accumulating
    MATMUL, else read (``acc_rd``), added (wrap32) and written back. A read
    sees every earlier write of the unit: the two writes that the SRAM cannot
    show yet are forwarded; a tile that reads A rows from the accumulator
    waits at its start while an earlier row to one of them is still in flight.

    Parameters
    ----------
    config : NPUConfig
        ``dim`` sets the array and the row widths.

    Attributes
    ----------
    unit : In(UnitSignature())
        MATMUL instructions (body viewed as ``matmul``; fields already checked).
        ``instr.ready`` is high when the unit is idle or in the last issue
        cycle of its current instruction, so a stream of MATMULs keeps the
        array busy. ``done`` pulses once per instruction, in order, in the
        cycle of its last accumulator write; ``busy`` is high while an
        accepted instruction has not reached ``done``; ``error`` is always 0.
    a_rd, w_rd : Out(SramReadSignature(addr_width=16, data_width=8*dim))
        Scratchpad reads of A rows and weight rows.
    acc_a_rd : Out(SramReadSignature(addr_width=16, data_width=32*dim))
        Accumulator reads of A rows (``a_mem = ACC``: P of P@V).
    acc_rd : Out(SramReadSignature(addr_width=16, data_width=32*dim))
        Accumulator reads for read-modify-write.
    acc_wr : Out(SramWriteSignature(addr_width=16, data_width=32*dim))
        Accumulator writes, one product row per cycle at most. Registers.
    array_active : Out(1)
        An A row enters the array in this cycle.
    """

    def __init__(self, config):
        self._cfg = config
        dim = config.dim
        super().__init__({
            "unit": In(UnitSignature()),
            "a_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=8 * dim)),
            "w_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=8 * dim)),
            "acc_a_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=32 * dim)),
            "acc_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=32 * dim)),
            "acc_wr": Out(SramWriteSignature(addr_width=SRAM_ADDR_WIDTH, data_width=32 * dim)),
            "array_active": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        dim = self._cfg.dim
        u = self.unit
        p = u.instr.payload.body.matmul
        array = m.submodules.array = SystolicArray(self._cfg)

        # ============================================================== issue
        # i_* : the instruction being issued; one tile cycle per clock.
        i_active = Signal()
        i_accumulate = Signal()
        i_transpose = Signal()
        i_a_acc = Signal()               # A rows from the accumulator
        i_m_rows = Signal(16)
        i_k_chunks = Signal(8)
        i_n_blocks = Signal(8)
        i_a_addr = Signal(16)
        i_a_kstride = Signal(16)
        i_w_kstride = Signal(16)
        i_w_nstride = Signal(16)
        i_out_nstride = Signal(16)
        i_tile_len = Signal(16)          # max(m_rows, dim)
        i_t = Signal(16)                 # cycle within the tile
        i_kc = Signal(8)
        i_nb = Signal(8)
        i_w_nbase = Signal(16)           # w_addr + nb*w_nstride
        i_w_base = Signal(16)            # ... + kc*w_kstride
        i_a_base = Signal(16)            # a_addr + kc*a_kstride
        i_out_base = Signal(16)          # out_addr + nb*out_nstride

        last_t = Signal()
        last_kc = Signal()
        last_nb = Signal()
        last_cycle = Signal()
        m.d.comb += [
            last_t.eq(i_t == i_tile_len - 1),
            last_kc.eq(i_kc == i_k_chunks - 1),
            last_nb.eq(i_nb == i_n_blocks - 1),
            last_cycle.eq(i_active & last_t & last_kc & last_nb),
            u.instr.ready.eq(~i_active | last_cycle),
            u.error.eq(0),
        ]
        take = Signal()
        m.d.comb += take.eq(u.instr.valid & u.instr.ready)
        # A tile reading A from the accumulator waits at its first issue cycle
        # while a row it reads is still to be written (driven below).
        a_wait = Signal()

        with m.If(take):
            m.d.sync += [
                i_active.eq(1),
                i_accumulate.eq(p.accumulate), i_transpose.eq(p.transpose_w),
                i_a_acc.eq(p.a_mem == Mem.ACC),
                i_m_rows.eq(p.m_rows), i_k_chunks.eq(p.k_chunks), i_n_blocks.eq(p.n_blocks),
                i_a_addr.eq(p.a_addr), i_a_kstride.eq(p.a_kstride),
                i_w_kstride.eq(p.w_kstride), i_w_nstride.eq(p.w_nstride),
                i_out_nstride.eq(p.out_nstride),
                i_tile_len.eq(Mux(p.m_rows > dim, p.m_rows, dim)),
                i_t.eq(0), i_kc.eq(0), i_nb.eq(0),
                i_w_nbase.eq(p.w_addr), i_w_base.eq(p.w_addr),
                i_a_base.eq(p.a_addr), i_out_base.eq(p.out_addr),
            ]
        with m.Elif(i_active & ~a_wait):
            with m.If(last_t):
                m.d.sync += i_t.eq(0)
                with m.If(last_kc):
                    m.d.sync += [
                        i_kc.eq(0), i_nb.eq(i_nb + 1),
                        i_w_nbase.eq(i_w_nbase + i_w_nstride), i_w_base.eq(i_w_nbase + i_w_nstride),
                        i_a_base.eq(i_a_addr), i_out_base.eq(i_out_base + i_out_nstride),
                    ]
                    with m.If(last_nb):
                        m.d.sync += i_active.eq(0)
                with m.Else():
                    m.d.sync += [
                        i_kc.eq(i_kc + 1),
                        i_w_base.eq(i_w_base + i_w_kstride), i_a_base.eq(i_a_base + i_a_kstride),
                    ]
            with m.Else():
                m.d.sync += i_t.eq(i_t + 1)

        # Weight row t is read in tile cycle t and reaches the array in t+1
        # (cycle c0+t of the array's contract); A row i is read one cycle
        # later, so it reaches the array in c0+1+i, right behind its weights.
        w_issue = Signal()
        m.d.comb += [
            w_issue.eq(i_active & (i_t < dim) & ~a_wait),
            self.w_rd.en.eq(w_issue),
            self.w_rd.addr.eq(i_w_base + i_t),
        ]
        w_valid = Signal()
        w_transpose = Signal()
        m.d.sync += [w_valid.eq(w_issue), w_transpose.eq(i_transpose)]
        m.d.comb += [
            array.w_valid.eq(w_valid),
            array.w_transpose.eq(w_transpose),
            array.w_data.eq(self.w_rd.data),
        ]

        # ------------------------------------------------ A read (a_ stage)
        # Every A row carries where its product goes (dst), whether it is
        # added (rmw) and whether it is the instruction's last row.
        a_valid = Signal()
        a_acc = Signal()
        a_addr = Signal(16)
        a_dst = Signal(16)
        a_rmw = Signal()
        a_last = Signal()
        m.d.sync += [
            a_valid.eq(i_active & (i_t < i_m_rows) & ~a_wait),
            a_acc.eq(i_a_acc),
            a_addr.eq(i_a_base + i_t),
            a_dst.eq(i_out_base + i_t),
            a_rmw.eq(i_accumulate | (i_kc != 0)),
            a_last.eq(last_kc & last_nb & (i_t == i_m_rows - 1)),
        ]
        m.d.comb += [
            self.a_rd.en.eq(a_valid & ~a_acc), self.a_rd.addr.eq(a_addr),
            self.acc_a_rd.en.eq(a_valid & a_acc), self.acc_a_rd.addr.eq(a_addr),
        ]
        e_valid = Signal()               # the row enters the array
        e_acc = Signal()
        m.d.sync += [e_valid.eq(a_valid), e_acc.eq(a_acc)]
        # A lanes for the array: INT8 sign-extended, or INT32 saturated (numerics.saturate_a).
        a_hi, a_lo = (1 << (A_WIDE_BITS - 1)) - 1, -(1 << (A_WIDE_BITS - 1))
        a_lanes = []
        for k in range(dim):
            sp = self.a_rd.data[8 * k:8 * k + 8].as_signed()
            ac = self.acc_a_rd.data[32 * k:32 * k + 32].as_signed()
            lane = Signal(signed(A_WIDE_BITS), name=f"a_lane{k}")
            m.d.comb += lane.eq(Mux(e_acc, Mux(ac > a_hi, a_hi, Mux(ac < a_lo, a_lo, ac)), sp))
            a_lanes.append(lane)
        m.d.comb += [
            array.a_valid.eq(e_valid),
            array.a_data.eq(Cat(*a_lanes)),
            self.array_active.eq(e_valid),
        ]

        # The row's tags travel beside the array; they reach the r_ stage one
        # cycle before its product leaves the array.
        v, dst, rmw, last = a_valid, a_dst, a_rmw, a_last
        pending = [(a_valid, a_dst)]     # rows whose accumulator write is not visible next cycle
        for d in range(array.latency):
            v_q, dst_q, rmw_q, last_q = (Signal(name=f"tag{d}_valid"), Signal(16, name=f"tag{d}_dst"),
                                         Signal(name=f"tag{d}_rmw"), Signal(name=f"tag{d}_last"))
            m.d.sync += [v_q.eq(v), dst_q.eq(dst), rmw_q.eq(rmw), last_q.eq(last)]
            v, dst, rmw, last = v_q, dst_q, rmw_q, last_q
            pending.append((v, dst))
        r_valid, r_dst, r_rmw, r_last = v, dst, rmw, last

        # ====================================================== write-back
        # r_: accumulator read; x_: product and old row meet, sum; w_: write.
        x_valid = Signal()
        x_dst = Signal(16)
        x_rmw = Signal()
        x_last = Signal()
        x_fwd_w = Signal()               # the old row is the one w_ writes now
        x_fwd_w2 = Signal()              # ... or the one w_ wrote last cycle
        w_valid_ = Signal()
        w_dst = Signal(16)
        w_data = Signal(32 * dim)
        w_last = Signal()
        w2_data = Signal(32 * dim)

        m.d.comb += [self.acc_rd.en.eq(r_valid & r_rmw), self.acc_rd.addr.eq(r_dst)]
        # The read in cycle q-1 sees writes up to cycle q-2: the rows now in
        # x_ (written in q) and w_ (written in q-1) must be forwarded.
        m.d.sync += [
            x_valid.eq(r_valid), x_dst.eq(r_dst), x_rmw.eq(r_rmw), x_last.eq(r_last),
            x_fwd_w.eq(x_valid & (x_dst == r_dst)),
            x_fwd_w2.eq(w_valid_ & (w_dst == r_dst)),
        ]
        old = Signal(32 * dim)
        m.d.comb += old.eq(Mux(x_fwd_w, w_data, Mux(x_fwd_w2, w2_data, self.acc_rd.data)))
        pending.append((x_valid, x_dst))

        # A from the accumulator: the tile's first A read (next cycle) sees the
        # writes up to this cycle's (stage w). Rows in stages a .. x are later:
        # wait while one of them is in the tile's A rows.
        a_lo_row = i_a_base
        a_end_row = Signal(17)
        m.d.comb += a_end_row.eq(i_a_base + i_m_rows)
        m.d.comb += a_wait.eq(i_active & i_a_acc & (i_t == 0) & Cat(*(
            pv & (pd >= a_lo_row) & (pd < a_end_row) for pv, pd in pending)).any())
        total = Signal(32 * dim)
        for n in range(dim):
            lane = slice(32 * n, 32 * n + 32)
            prod = array.out_data[lane]
            m.d.comb += total[lane].eq(Mux(x_rmw, old[lane] + prod, prod))
        m.d.sync += [
            w_valid_.eq(x_valid), w_dst.eq(x_dst), w_data.eq(total), w_last.eq(x_valid & x_last),
            w2_data.eq(w_data),
        ]
        m.d.comb += [
            self.acc_wr.en.eq(w_valid_), self.acc_wr.addr.eq(w_dst), self.acc_wr.data.eq(w_data),
            u.done.eq(w_last),
        ]

        # In flight: taken and not done. At most about 3*dim+2 cycles of latency
        # over at least dim cycles per instruction, so a few at a time.
        inflight = Signal(range(16))
        m.d.sync += inflight.eq(inflight + take - w_last)
        m.d.comb += u.busy.eq(inflight != 0)
        return m
