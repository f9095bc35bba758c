"""The DMA engine: LOAD and STORE instructions and instruction fetch over one AXI4 master.

See ``docs/dma.md`` for the pipeline, the burst rules, the IDs, the error
handling and the cycle model.
"""

from amaranth import *
from amaranth.lib import data, fifo, memory, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.spec.isa import DMA_LAYOUT, INSTR_BYTES, ErrorCode, Mem
from flashnpu.hw.axi import AXI4Signature, BURST_INCR
from flashnpu.hw.signatures import (ERROR_SHAPE, FetchSignature, SramReadSignature,
                                    SramWriteSignature, UnitSignature)

__all__ = ["DmaEngine"]

SRAM_ADDR_WIDTH = 16


def _log2(n):
    assert n > 0 and n & (n - 1) == 0, n
    return n.bit_length() - 1


class _BurstPlanner(Elaboratable):
    """Cut a 2-D strided DRAM transfer into INCR bursts.

    ``start`` latches the DMA fields; from the second cycle after it, ``valid``
    offers one burst (``addr``, ``len`` in beats) per cycle, taken by ``take``.
    A burst never crosses a 4 KiB boundary, never exceeds ``burst_len`` beats and
    never spans two DRAM rows unless the rows are contiguous
    (``dram_stride == chunks * row_bytes``), in which case the whole transfer is
    one segment and bursts run across rows. ``last`` marks the transfer's
    last burst. ``abort`` stops it.
    """

    def __init__(self, *, beat_bytes, burst_len, spad_row_bytes, acc_row_bytes):
        self._beat = beat_bytes
        self._burst_len = burst_len
        self._rb = (spad_row_bytes, acc_row_bytes)

        self.start = Signal()
        self.abort = Signal()
        self.mem = Signal()
        self.dram_addr = Signal(32)
        self.dram_stride = Signal(32)
        self.rows = Signal(16)
        self.chunks = Signal(8)

        self.valid = Signal()
        self.addr = Signal(32)
        self.len = Signal(range(burst_len + 1))
        self.take = Signal()
        self.last = Signal()
        self.busy = Signal()

    def elaborate(self, platform):
        m = Module()
        lg_beat = _log2(self._beat)
        lg_rb = [_log2(rb) for rb in self._rb]

        setup = Signal()
        run = Signal()
        mem = Signal()
        stride = Signal(32)
        rows = Signal(16)
        chunks = Signal(8)
        row_addr = Signal(32)
        seg_beats = Signal(32)
        seg_left = Signal(32)
        rows_left = Signal(16)

        m.d.comb += self.busy.eq(setup | run)

        # Beats to the next 4 KiB boundary (1 .. 4096/beat).
        to_4k = Signal(range(4096 // self._beat + 1))
        m.d.comb += to_4k.eq((4096 - self.addr[:12]) >> lg_beat)
        cap = Signal(range(self._burst_len + 1))
        m.d.comb += cap.eq(Mux(to_4k < self._burst_len, to_4k, self._burst_len))
        m.d.comb += [
            self.valid.eq(run),
            self.len.eq(Mux(seg_left < cap, seg_left, cap)),
            self.last.eq(run & (seg_left == self.len) & (rows_left == 0)),
        ]

        with m.If(self.start):
            m.d.sync += [
                setup.eq(1), run.eq(0), mem.eq(self.mem),
                self.addr.eq(self.dram_addr), row_addr.eq(self.dram_addr),
                stride.eq(self.dram_stride), rows.eq(self.rows), chunks.eq(self.chunks),
            ]
        with m.Elif(setup):
            # The row length in beats, and whether consecutive rows touch.
            row_bytes = Signal(32)
            m.d.comb += row_bytes.eq(Mux(mem, chunks << lg_rb[Mem.ACC], chunks << lg_rb[Mem.SPAD]))
            row_beats = Signal(32)
            m.d.comb += row_beats.eq(row_bytes >> lg_beat)
            m.d.sync += [setup.eq(0), run.eq((rows != 0) & (chunks != 0))]
            with m.If(stride == row_bytes):
                m.d.sync += [seg_beats.eq(rows * row_beats), seg_left.eq(rows * row_beats),
                             rows_left.eq(0)]
            with m.Else():
                m.d.sync += [seg_beats.eq(row_beats), seg_left.eq(row_beats),
                             rows_left.eq(rows - 1)]
        with m.Elif(run & self.take):
            m.d.sync += [self.addr.eq(self.addr + (self.len << lg_beat)),
                         seg_left.eq(seg_left - self.len)]
            with m.If(seg_left == self.len):
                with m.If(rows_left != 0):
                    m.d.sync += [row_addr.eq(row_addr + stride), self.addr.eq(row_addr + stride),
                                 seg_left.eq(seg_beats), rows_left.eq(rows_left - 1)]
                with m.Else():
                    m.d.sync += run.eq(0)
        with m.If(self.abort):
            m.d.sync += [setup.eq(0), run.eq(0)]
        return m


class _RowWalker:
    """Step through the SRAM side of a DMA transfer, one AXI beat per ``step``.

    Beat ``sub`` of chunk ``c`` of DRAM row ``r`` goes to SRAM row
    ``cur = sram_addr + c*sram_chunk_stride + r``. ``last_sub`` is high on the
    last beat of an SRAM row, ``final`` on the last beat of the transfer.
    """

    def __init__(self, name, *, sub_bits):
        self.sub = Signal(max(sub_bits, 1), name=f"{name}_sub")
        self.sub_max = Signal(max(sub_bits, 1), name=f"{name}_sub_max")
        self.c_rem = Signal(8, name=f"{name}_c_rem")
        self.r_rem = Signal(16, name=f"{name}_r_rem")
        self.chunks_m1 = Signal(8, name=f"{name}_chunks_m1")
        self.stride = Signal(16, name=f"{name}_cs")
        self.row_base = Signal(16, name=f"{name}_row_base")
        self.cur = Signal(16, name=f"{name}_cur")
        self.last_sub = Signal(name=f"{name}_last_sub")
        self.final = Signal(name=f"{name}_final")

    def elaborate_into(self, m):
        m.d.comb += [
            self.last_sub.eq(self.sub == self.sub_max),
            self.final.eq(self.last_sub & (self.c_rem == 0) & (self.r_rem == 0)),
        ]

    def init(self, m, *, sub_max, sram_addr, stride, rows, chunks):
        m.d.sync += [
            self.sub.eq(0), self.sub_max.eq(sub_max),
            self.c_rem.eq(chunks - 1), self.chunks_m1.eq(chunks - 1),
            self.r_rem.eq(rows - 1), self.stride.eq(stride),
            self.row_base.eq(sram_addr), self.cur.eq(sram_addr),
        ]

    def step(self, m):
        with m.If(self.last_sub):
            m.d.sync += self.sub.eq(0)
            with m.If(self.c_rem == 0):
                m.d.sync += [self.c_rem.eq(self.chunks_m1), self.r_rem.eq(self.r_rem - 1),
                             self.row_base.eq(self.row_base + 1), self.cur.eq(self.row_base + 1)]
            with m.Else():
                m.d.sync += [self.c_rem.eq(self.c_rem - 1), self.cur.eq(self.cur + self.stride)]
        with m.Else():
            m.d.sync += self.sub.eq(self.sub + 1)


def _resp_error(resp):
    """The ErrorCode of an AXI response (0 for OKAY and EXOKAY)."""
    return Mux(resp[1], Mux(resp[0], ErrorCode.AXI_DECERR, ErrorCode.AXI_SLVERR), ErrorCode.NONE)


class DmaEngine(wiring.Component):
    """Execute LOAD and STORE instructions and serve instruction fetch over one AXI4 master.

    Parameters
    ----------
    config : NPUConfig
        Sets the AXI widths (``axi_addr_bits``, ``dma_data_bits``,
        ``axi_id_bits``), the burst length, the number of outstanding read
        bursts and the SRAM row widths (``dim`` bytes and ``4*dim`` bytes).
    fetch_depth : int
        Instruction words the fetch path may have requested and not yet
        handed over (its response buffer).

    Attributes
    ----------
    m_axi : Out(AXI4Signature)
        The AXI4 master. Read ID 0 is instruction fetch; read IDs
        ``1..dma_max_outstanding`` are LOAD bursts, one per burst in flight.
        Writes use ID 0. ``rready`` and ``bready`` are always high; every other
        output is a register.
    load, store : In(UnitSignature)
        The LOAD and STORE units, as the sequencer sees them. A LOAD is taken
        as soon as the previous one has issued all its bursts (LOADs overlap);
        a STORE when the STORE unit is idle. ``done`` pulses once per
        instruction, in order, when its last SRAM row is written (LOAD) or its
        last write response has arrived (STORE); ``error`` holds an ErrorCode
        until reset, and a unit with an error takes no more instructions.
    fetch : In(FetchSignature)
        32-byte instruction reads, in order, up to ``fetch_depth`` in flight.
    spad_wr, acc_wr : Out(SramWriteSignature)
        LOAD writes one full SRAM row per cycle at most.
    spad_rd, acc_rd : Out(SramReadSignature)
        STORE reads.
    bytes_read_inc, bytes_written_inc : Out(range(beat_bytes + 1))
        LOAD data bytes received on R / STORE data bytes sent on W this cycle.
    stop : In(1)
        Level: start no new AXI transaction (no AR, no AW); the transactions
        already started finish (every R beat is taken, the W beats of every
        AW issued are sent, every B is taken). For an abort; a reset follows.
    bus_busy : Out(1)
        An AXI transaction is outstanding or being offered (a request not yet
        taken, R beats or B responses still due, W beats still to send).
    """

    def __init__(self, config, *, fetch_depth=4):
        self._cfg = config
        self._fetch_depth = fetch_depth
        dim = config.dim
        beat = config.dma_beat_bytes
        super().__init__({
            "m_axi": Out(AXI4Signature(addr_width=config.axi_addr_bits,
                                       data_width=config.dma_data_bits,
                                       id_width=config.axi_id_bits)),
            "load": In(UnitSignature()),
            "store": In(UnitSignature()),
            "fetch": In(FetchSignature()),
            "spad_wr": Out(SramWriteSignature(addr_width=SRAM_ADDR_WIDTH, data_width=dim * 8)),
            "acc_wr": Out(SramWriteSignature(addr_width=SRAM_ADDR_WIDTH, data_width=dim * 32)),
            "spad_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=dim * 8)),
            "acc_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=dim * 32)),
            "bytes_read_inc": Out(range(beat + 1)),
            "bytes_written_inc": Out(range(beat + 1)),
            "stop": In(1),
            "bus_busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        axi = self.m_axi
        dim = cfg.dim
        beat = cfg.dma_beat_bytes
        bb = cfg.dma_data_bits
        lg_beat = _log2(beat)
        bpr = {Mem.SPAD: dim // beat, Mem.ACC: 4 * dim // beat}   # beats per SRAM row
        sub_bits = _log2(bpr[Mem.ACC])
        burst_len = cfg.dma_burst_len
        n_slots = cfg.dma_max_outstanding
        slot_lg = max(1, (burst_len - 1).bit_length())             # beats of one slot, as a power of two
        fdepth = self._fetch_depth

        # ------------------------------------------------------------ constants
        m.d.comb += [
            axi.arsize.eq(lg_beat), axi.arburst.eq(BURST_INCR),
            axi.awsize.eq(lg_beat), axi.awburst.eq(BURST_INCR),
            axi.arcache.eq(0b0011), axi.awcache.eq(0b0011),
            axi.awid.eq(0), axi.wstrb.eq(~0),
            # Every R and B beat is accepted at once: the read reorder buffer
            # always has room for what was requested, and B needs no storage.
            axi.rready.eq(1), axi.bready.eq(1),
        ]

        # ============================================================ READ side
        # R and B inputs are registered before anything looks at them.
        q_valid = Signal()
        q_id = Signal(cfg.axi_id_bits)
        q_data = Signal(bb)
        q_resp = Signal(2)
        q_last = Signal()
        m.d.sync += [q_valid.eq(axi.rvalid), q_id.eq(axi.rid), q_data.eq(axi.rdata),
                     q_resp.eq(axi.rresp), q_last.eq(axi.rlast)]

        # ------------------------------------------------------------ LOAD unit
        ld = self.load
        ld_p = ld.instr.payload.body.dma
        # LOADs are pipelined: the planner takes the next instruction as soon as it
        # has issued every burst of the previous one; the SRAM side finds each
        # instruction's parameters in ld_q, in order. Every instruction in ld_q
        # but the one being planned holds at least one read slot, so
        # n_slots + 1 entries never fill up.
        ld_inflight = Signal(range(n_slots + 3))
        ld_err = Signal(ERROR_SHAPE)
        ld_mem = Signal()
        ld_done = Signal()
        rplan = m.submodules.rplan = _BurstPlanner(
            beat_bytes=beat, burst_len=burst_len,
            spad_row_bytes=cfg.spad_row_bytes, acc_row_bytes=cfg.acc_row_bytes)
        sram_fields = ("mem", "sram_addr", "sram_chunk_stride", "rows", "chunks")
        ld_q_layout = data.StructLayout({f: DMA_LAYOUT[f].shape for f in sram_fields})
        ld_q = m.submodules.ld_q = fifo.SyncFIFO(width=ld_q_layout.size, depth=n_slots + 1)
        m.d.comb += [ld.instr.ready.eq(~rplan.busy & ld_q.w_rdy & (ld_err == 0)),
                     ld.busy.eq(ld_inflight != 0), ld.error.eq(ld_err), ld.done.eq(ld_done)]
        ld_start = Signal()
        m.d.comb += ld_start.eq(ld.instr.valid & ld.instr.ready)
        ld_q_in = Signal(ld_q_layout)
        ld_q_out = Signal(ld_q_layout)
        m.d.comb += [*(getattr(ld_q_in, f).eq(getattr(ld_p, f)) for f in sram_fields),
                     ld_q.w_en.eq(ld_start), ld_q.w_data.eq(ld_q_in),
                     ld_q_out.eq(ld_q.r_data)]
        m.d.comb += [rplan.start.eq(ld_start), rplan.mem.eq(ld_p.mem),
                     rplan.dram_addr.eq(ld_p.dram_addr), rplan.dram_stride.eq(ld_p.dram_stride),
                     rplan.rows.eq(ld_p.rows), rplan.chunks.eq(ld_p.chunks)]

        # Read slots: slot s is AXI ID s+1 and owns buffer beats [s*2**slot_lg, +burst_len).
        # Slots are used round-robin and retired in the same order, so the SRAM
        # sees beats in order whatever order the slave answers in.
        slot_busy = Array(Signal(name=f"slot{i}_busy") for i in range(n_slots))
        # (range(max(2, n)): a one-value counter would be a zero-width wire, which fails lint)
        slot_last = Array(Signal(range(max(2, burst_len)), name=f"slot{i}_last") for i in range(n_slots))
        slot_cnt = Array(Signal(range(burst_len + 1), name=f"slot{i}_cnt") for i in range(n_slots))
        # The first error response of each slot's burst. It is reported when the
        # beat retires, not when it arrives, so that every older LOAD has signalled
        # done by then and the sequencer blames the LOAD the beat belongs to.
        slot_err = Array(Signal(ERROR_SHAPE, name=f"slot{i}_err") for i in range(n_slots))
        iptr = Signal(range(max(2, n_slots)))
        rptr = Signal(range(max(2, n_slots)))
        rbeat = Signal(range(max(2, burst_len)))
        any_busy = Signal()
        m.d.comb += any_busy.eq(Cat(*slot_busy).any())

        rob = m.submodules.rob = memory.Memory(shape=unsigned(bb), depth=n_slots << slot_lg, init=[])
        rob_w = rob.write_port()
        rob_r = rob.read_port()

        # ----------------------------------------------------------- fetch path
        fe = self.fetch
        fbeats = max(1, INSTR_BYTES // beat)
        fifo_resp = m.submodules.fetch_resp = fifo.SyncFIFO(width=INSTR_BYTES * 8 + 1, depth=fdepth)
        f_inflight = Signal(range(fdepth + 1))
        f_can = Signal()
        m.d.comb += f_can.eq(fe.req.valid & (f_inflight + fifo_resp.level < fdepth) & ~self.stop)
        m.d.comb += [fe.resp.valid.eq(fifo_resp.r_rdy),
                     fe.resp.payload.word.eq(fifo_resp.r_data[:INSTR_BYTES * 8]),
                     fe.resp.payload.error.eq(fifo_resp.r_data[-1]),
                     fifo_resp.r_en.eq(fe.resp.ready)]
        if beat > INSTR_BYTES:
            # A beat holds several instructions: read the whole beat, keep the right 32 bytes.
            f_off_bits = _log2(beat // INSTR_BYTES)
            fifo_off = m.submodules.fetch_off = fifo.SyncFIFO(width=f_off_bits, depth=fdepth)
        f_push = Signal()

        # ---------------------------------------------------------- AR channel
        ar_free = Signal()
        m.d.comb += ar_free.eq(~axi.arvalid | axi.arready)
        ld_can = Signal()
        m.d.comb += ld_can.eq(rplan.valid & ~slot_busy[iptr] & (ld_err == 0) & ~self.stop)
        with m.If(ar_free):
            with m.If(f_can):
                # Fetch first: the sequencer waits on it, and it is short.
                m.d.comb += fe.req.ready.eq(1)
                fetch_addr = fe.req.payload.addr
                if beat > INSTR_BYTES:
                    m.d.comb += [fifo_off.w_en.eq(1),
                                 fifo_off.w_data.eq(fetch_addr[_log2(INSTR_BYTES):lg_beat])]
                    fetch_addr = Cat(C(0, lg_beat), fetch_addr[lg_beat:])
                m.d.sync += [axi.arvalid.eq(1), axi.arid.eq(0), axi.araddr.eq(fetch_addr),
                             axi.arlen.eq(fbeats - 1)]
            with m.Elif(ld_can):
                m.d.comb += rplan.take.eq(1)
                m.d.sync += [axi.arvalid.eq(1), axi.arid.eq(iptr + 1), axi.araddr.eq(rplan.addr),
                             axi.arlen.eq(rplan.len - 1),
                             slot_busy[iptr].eq(1), slot_last[iptr].eq(rplan.len - 1),
                             slot_cnt[iptr].eq(0), slot_err[iptr].eq(0),
                             iptr.eq(Mux(iptr == n_slots - 1, 0, iptr + 1))]
            with m.Else():
                m.d.sync += axi.arvalid.eq(0)
        m.d.sync += f_inflight.eq(f_inflight + (fe.req.valid & fe.req.ready) - f_push)

        # --------------------------------------------------- R beat dispatch
        fword = Signal(INSTR_BYTES * 8)
        ferr = Signal()
        fbeat = Signal(range(fbeats)) if fbeats > 1 else None    # a zero-width wire fails lint
        q_fetch = Signal()
        q_load = Signal()
        q_slot = Signal(range(max(2, n_slots)))
        # (with every ID in use, "q_id <= n_slots" is always true: Verilator's CMPCONST)
        id_in_use = (q_id <= n_slots) if n_slots < (1 << cfg.axi_id_bits) - 1 else C(1)
        m.d.comb += [q_fetch.eq(q_valid & (q_id == 0)),
                     q_load.eq(q_valid & (q_id != 0) & id_in_use),
                     q_slot.eq(q_id - 1)]
        with m.If(q_fetch):
            if beat > INSTR_BYTES:
                word = q_data.word_select(fifo_off.r_data, INSTR_BYTES * 8)
                m.d.comb += fifo_off.r_en.eq(q_last)
            else:
                word = Cat(fword[:(fbeats - 1) * bb], q_data)
                if fbeats > 1:
                    m.d.sync += fword.word_select(fbeat, bb).eq(q_data)
            this_err = q_resp[1]
            with m.If(q_last):
                m.d.comb += [f_push.eq(1), fifo_resp.w_en.eq(1),
                             fifo_resp.w_data.eq(Cat(word, ferr | this_err))]
                m.d.sync += ferr.eq(0)
                if fbeats > 1:
                    m.d.sync += fbeat.eq(0)
            with m.Else():
                m.d.sync += ferr.eq(ferr | this_err)
                if fbeats > 1:
                    m.d.sync += fbeat.eq(fbeat + 1)
        with m.If(q_load):
            m.d.comb += [rob_w.en.eq(1), rob_w.data.eq(q_data),
                         rob_w.addr.eq(Cat(slot_cnt[q_slot][:slot_lg], q_slot)),
                         self.bytes_read_inc.eq(beat)]
            m.d.sync += slot_cnt[q_slot].eq(slot_cnt[q_slot] + 1)
            with m.If((slot_err[q_slot] == 0) & q_resp[1]):
                m.d.sync += slot_err[q_slot].eq(_resp_error(q_resp))

        # ------------------------------------------------- in-order retirement
        avail = Signal()
        m.d.comb += avail.eq(slot_busy[rptr] & (rbeat < slot_cnt[rptr]))
        m.d.comb += [rob_r.en.eq(avail), rob_r.addr.eq(Cat(rbeat[:slot_lg], rptr))]
        t1_valid = Signal()
        t1_err = Signal(ERROR_SHAPE)
        m.d.sync += [t1_valid.eq(avail), t1_err.eq(Mux(avail, slot_err[rptr], 0))]
        with m.If((t1_err != 0) & (ld_err == 0)):
            m.d.sync += ld_err.eq(t1_err)
        with m.If(avail):
            with m.If(rbeat == slot_last[rptr]):
                m.d.sync += [rbeat.eq(0), slot_busy[rptr].eq(0),
                             rptr.eq(Mux(rptr == n_slots - 1, 0, rptr + 1))]
            with m.Else():
                m.d.sync += rbeat.eq(rbeat + 1)

        # Assemble SRAM rows; a row is written whole on its last beat.
        lw = _RowWalker("ld", sub_bits=sub_bits)
        lw.elaborate_into(m)
        row_buf = Signal(dim * 32)
        m.d.sync += [self.spad_wr.en.eq(0), self.acc_wr.en.eq(0), ld_done.eq(0)]
        lw_loaded = Signal()
        ld_final = Signal()
        m.d.comb += ld_final.eq(t1_valid & lw.final)
        m.d.sync += ld_inflight.eq(ld_inflight + ld_start - ld_final)
        with m.If(t1_valid):
            if sub_bits:
                m.d.sync += row_buf.word_select(lw.sub, bb).eq(rob_r.data)
            lw.step(m)
            with m.If(lw.last_sub):
                ok = (ld_err == 0) & (t1_err == 0)
                spad_row = Cat(row_buf[:(bpr[Mem.SPAD] - 1) * bb], rob_r.data)
                acc_row = Cat(row_buf[:(bpr[Mem.ACC] - 1) * bb], rob_r.data)
                m.d.sync += [
                    self.spad_wr.en.eq(ok & ~ld_mem), self.spad_wr.addr.eq(lw.cur),
                    self.spad_wr.data.eq(spad_row),
                    self.acc_wr.en.eq(ok & ld_mem), self.acc_wr.addr.eq(lw.cur),
                    self.acc_wr.data.eq(acc_row),
                ]
                with m.If(lw.final):
                    m.d.sync += ld_done.eq(ok)
        # The walker takes the next instruction's parameters when it is idle or
        # finishing one (a beat needs at least 6 cycles from accept to here).
        with m.If(~lw_loaded | ld_final):
            m.d.sync += lw_loaded.eq(ld_q.r_rdy)
            with m.If(ld_q.r_rdy):
                m.d.comb += ld_q.r_en.eq(1)
                m.d.sync += ld_mem.eq(ld_q_out.mem)
                lw.init(m, sub_max=Mux(ld_q_out.mem, bpr[Mem.ACC] - 1, bpr[Mem.SPAD] - 1),
                        sram_addr=ld_q_out.sram_addr, stride=ld_q_out.sram_chunk_stride,
                        rows=ld_q_out.rows, chunks=ld_q_out.chunks)
        # After an error: stop issuing, let every requested beat arrive, then go idle.
        with m.If((ld_err != 0) & ~any_busy):
            m.d.sync += ld_inflight.eq(0)
            m.d.comb += rplan.abort.eq(1)

        # =========================================================== WRITE side
        # STOREs are pipelined like LOADs: the write planner takes the next one
        # once it has issued every AW of the previous one. The W producer finds
        # each STORE's SRAM parameters in st_q, and the B side the number of
        # bursts of each STORE in st_nb, both in order. An instruction waiting
        # in st_q (but the one being planned) holds a wlen entry, so
        # wlen depth + 2 entries never fill up.
        st = self.store
        st_p = st.instr.payload.body.dma
        wlen_depth = 4
        st_inflight = Signal(range(wlen_depth + 4))
        st_err = Signal(ERROR_SHAPE)
        st_mem = Signal()
        st_done = Signal()
        b_out = Signal(32)     # bursts whose AW is issued and whose B has not arrived
        wplan = m.submodules.wplan = _BurstPlanner(
            beat_bytes=beat, burst_len=burst_len,
            spad_row_bytes=cfg.spad_row_bytes, acc_row_bytes=cfg.acc_row_bytes)
        st_q = m.submodules.st_q = fifo.SyncFIFO(width=ld_q_layout.size, depth=wlen_depth + 2)
        st_nb = m.submodules.st_nb = fifo.SyncFIFO(width=32, depth=wlen_depth + 2)
        m.d.comb += [st.instr.ready.eq(~wplan.busy & st_q.w_rdy & st_nb.w_rdy & (st_err == 0)),
                     st.busy.eq(st_inflight != 0), st.error.eq(st_err), st.done.eq(st_done)]
        st_start = Signal()
        m.d.comb += st_start.eq(st.instr.valid & st.instr.ready)
        st_q_in = Signal(ld_q_layout)
        st_q_out = Signal(ld_q_layout)
        m.d.comb += [*(getattr(st_q_in, f).eq(getattr(st_p, f)) for f in sram_fields),
                     st_q.w_en.eq(st_start), st_q.w_data.eq(st_q_in), st_q_out.eq(st_q.r_data)]
        m.d.comb += [wplan.start.eq(st_start), wplan.mem.eq(st_p.mem),
                     wplan.dram_addr.eq(st_p.dram_addr), wplan.dram_stride.eq(st_p.dram_stride),
                     wplan.rows.eq(st_p.rows), wplan.chunks.eq(st_p.chunks)]

        # AW: each burst's length also goes to the W side, which sets wlast from it.
        wlen = m.submodules.wlen = fifo.SyncFIFO(width=8, depth=wlen_depth)
        aw_take = Signal()
        aw_count = Signal(32)  # AWs of the STORE being planned
        with m.If(~axi.awvalid | axi.awready):
            with m.If(wplan.valid & wlen.w_rdy & (st_err == 0) & ~self.stop):
                m.d.comb += [aw_take.eq(1), wplan.take.eq(1),
                             wlen.w_en.eq(1), wlen.w_data.eq(wplan.len - 1)]
                m.d.sync += [axi.awvalid.eq(1), axi.awaddr.eq(wplan.addr),
                             axi.awlen.eq(wplan.len - 1)]
                with m.If(wplan.last):
                    m.d.comb += [st_nb.w_en.eq(1), st_nb.w_data.eq(aw_count + 1)]
                    m.d.sync += aw_count.eq(0)
                with m.Else():
                    m.d.sync += aw_count.eq(aw_count + 1)
            with m.Else():
                m.d.sync += axi.awvalid.eq(0)

        # W producer, stage 0: SRAM read address (once per row) and beat bookkeeping.
        wdepth = 4
        wbuf = m.submodules.wbuf = fifo.SyncFIFO(width=bb + 1, depth=wdepth)
        sw = _RowWalker("st", sub_bits=sub_bits)
        sw.elaborate_into(m)
        sw_loaded = Signal()
        bcnt = Signal(8)
        p1_valid = Signal()
        p1_sub = Signal(max(sub_bits, 1))
        p1_mem = Signal()
        p1_last = Signal()
        p0_go = Signal()
        m.d.comb += p0_go.eq(sw_loaded & wlen.r_rdy & (wbuf.level + p1_valid < wdepth))
        m.d.comb += [self.spad_rd.addr.eq(sw.cur), self.acc_rd.addr.eq(sw.cur)]
        m.d.sync += p1_valid.eq(p0_go)
        with m.If(p0_go):
            with m.If(sw.sub == 0):
                m.d.comb += [self.spad_rd.en.eq(~st_mem), self.acc_rd.en.eq(st_mem)]
            m.d.sync += [p1_sub.eq(sw.sub), p1_mem.eq(st_mem), p1_last.eq(bcnt == wlen.r_data)]
            with m.If(bcnt == wlen.r_data):
                m.d.comb += wlen.r_en.eq(1)
                m.d.sync += bcnt.eq(0)
            with m.Else():
                m.d.sync += bcnt.eq(bcnt + 1)
            sw.step(m)
        # The walker takes the next STORE's parameters when idle or on its last beat.
        with m.If(~sw_loaded | (p0_go & sw.final)):
            m.d.sync += sw_loaded.eq(st_q.r_rdy)
            with m.If(st_q.r_rdy):
                m.d.comb += st_q.r_en.eq(1)
                m.d.sync += st_mem.eq(st_q_out.mem)
                sw.init(m, sub_max=Mux(st_q_out.mem, bpr[Mem.ACC] - 1, bpr[Mem.SPAD] - 1),
                        sram_addr=st_q_out.sram_addr, stride=st_q_out.sram_chunk_stride,
                        rows=st_q_out.rows, chunks=st_q_out.chunks)

        # Stage 1: the SRAM row is on the read port (it holds while en is low); pick the beat.
        def pick(data, n):
            if n == 1:
                return data
            return data.word_select(p1_sub[:_log2(n)], bb)
        m.d.comb += [wbuf.w_en.eq(p1_valid),
                     wbuf.w_data.eq(Cat(Mux(p1_mem, pick(self.acc_rd.data, bpr[Mem.ACC]),
                                            pick(self.spad_rd.data, bpr[Mem.SPAD])), p1_last))]

        # W channel register.
        with m.If(~axi.wvalid | axi.wready):
            m.d.comb += wbuf.r_en.eq(1)
            m.d.sync += [axi.wvalid.eq(wbuf.r_rdy), axi.wdata.eq(wbuf.r_data[:bb]),
                         axi.wlast.eq(wbuf.r_data[bb])]
        m.d.comb += self.bytes_written_inc.eq(Mux(axi.wvalid & axi.wready, beat, 0))

        # B responses, registered; a STORE is done when its last burst's B is in.
        bq_valid = Signal()
        bq_resp = Signal(2)
        m.d.sync += [bq_valid.eq(axi.bvalid), bq_resp.eq(axi.bresp)]
        m.d.sync += b_out.eq(b_out + aw_take - bq_valid)
        with m.If(bq_valid & (st_err == 0) & bq_resp[1]):
            m.d.sync += st_err.eq(_resp_error(bq_resp))
        b_count = Signal(32)   # B responses of the oldest STORE not done
        st_final = Signal()
        m.d.comb += st_final.eq(st_nb.r_rdy & (b_count == st_nb.r_data))
        m.d.comb += st_nb.r_en.eq(st_final)
        m.d.sync += [b_count.eq(Mux(st_final, 0, b_count) + bq_valid),
                     st_done.eq(st_final & (st_err == 0)),
                     st_inflight.eq(st_inflight + st_start - st_final)]
        # After an error: no new AW; finish the bursts already announced, then go idle.
        with m.If((st_err != 0) & (b_out == 0) & ~bq_valid & ~wlen.r_rdy & ~axi.awvalid):
            m.d.sync += st_inflight.eq(0)
            m.d.comb += wplan.abort.eq(1)

        # ============================================================ bus state
        m.d.comb += self.bus_busy.eq(
            axi.arvalid | any_busy | (f_inflight != 0) | q_valid
            | axi.awvalid | wlen.r_rdy | p1_valid | wbuf.r_rdy | axi.wvalid
            | (b_out != 0) | bq_valid)
        return m
