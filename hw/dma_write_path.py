"""The DMA's write path: STORE bursts on AW, SRAM rows read out as W beats, B counted."""

from amaranth import *
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.spec.isa import Mem
from flashnpu.spec.timing import timing
from flashnpu.hw.dma_burst_planner import BurstPlanSignature
from flashnpu.hw.dma_common import SRAM_ADDR_WIDTH, SRAM_SIDE_LAYOUT, RowWalker, log2, resp_error
from flashnpu.hw.signatures import ERROR_SHAPE, SramReadSignature, UnitSignature

__all__ = ["AW_LAYOUT", "B_LAYOUT", "w_beat_layout", "StoreRowReader", "DmaWritePath"]

#: A write request: AXI ``awaddr``, ``awlen``.
AW_LAYOUT = data.StructLayout({"addr": unsigned(32), "len": unsigned(8)})
#: A write response: AXI ``bresp``.
B_LAYOUT = data.StructLayout({"resp": unsigned(2)})


def w_beat_layout(config):
    """One W beat: AXI ``wdata``, ``wlast``."""
    return data.StructLayout({"data": unsigned(config.dma_data_bits), "last": unsigned(1)})


class StoreRowReader(wiring.Component):
    """Read the SRAM rows of each STORE and cut them into W beats.

    ``params`` gives each STORE's SRAM side and ``burst_lens`` each burst's ``awlen``, in
    order. Stage 0 reads an SRAM row on its first beat (``en`` for one cycle) and counts
    the beats of the burst; stage 1 picks the beat from the read data (which holds while
    ``en`` is low) into a ``store_w_buffer_depth``-entry FIFO, ``w``. Stage 0 moves only
    when the FIFO has room for what stage 1 holds too, so it never overruns.
    """

    def __init__(self, config):
        self._cfg = config
        dim = config.dim
        super().__init__({
            "params": In(stream.Signature(SRAM_SIDE_LAYOUT)),
            "burst_lens": In(stream.Signature(unsigned(8))),
            "spad_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=dim * 8)),
            "acc_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=dim * 32)),
            "w": Out(stream.Signature(w_beat_layout(config))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        bb = cfg.dma_data_bits
        bpr = {Mem.SPAD: cfg.dim // cfg.dma_beat_bytes, Mem.ACC: 4 * cfg.dim // cfg.dma_beat_bytes}
        sub_bits = log2(bpr[Mem.ACC])
        depth = timing(cfg).store_w_buffer_depth
        params, lens = self.params, self.burst_lens

        wbuf = m.submodules.wbuf = fifo.SyncFIFO(width=bb + 1, depth=depth)
        walk = RowWalker("st", sub_bits=sub_bits)
        walk.elaborate_into(m)
        loaded = Signal()
        mem = Signal()
        bcnt = Signal(8)       # beat of the current burst
        p1_valid = Signal()
        p1_sub = Signal(max(sub_bits, 1))
        p1_mem = Signal()
        p1_last = Signal()
        go = Signal()
        m.d.comb += go.eq(loaded & lens.valid & (wbuf.level + p1_valid < depth))
        m.d.comb += [self.spad_rd.addr.eq(walk.cur), self.acc_rd.addr.eq(walk.cur)]
        m.d.sync += p1_valid.eq(go)
        # Stage 0: the SRAM read address (once per row) and the beat count of the burst.
        with m.If(go):
            with m.If(walk.sub == 0):
                m.d.comb += [self.spad_rd.en.eq(~mem), self.acc_rd.en.eq(mem)]
            m.d.sync += [p1_sub.eq(walk.sub), p1_mem.eq(mem), p1_last.eq(bcnt == lens.payload)]
            with m.If(bcnt == lens.payload):
                m.d.comb += lens.ready.eq(1)
                m.d.sync += bcnt.eq(0)
            with m.Else():
                m.d.sync += bcnt.eq(bcnt + 1)
            walk.step(m)
        # The next STORE's parameters, when idle or on the last beat of the current one.
        m.d.comb += params.ready.eq(~loaded | (go & walk.final))
        with m.If(params.ready):
            m.d.sync += loaded.eq(params.valid)
            with m.If(params.valid):
                p = params.payload
                m.d.sync += mem.eq(p.mem)
                walk.init(m, sub_max=Mux(p.mem, bpr[Mem.ACC] - 1, bpr[Mem.SPAD] - 1),
                          sram_addr=p.sram_addr, stride=p.sram_chunk_stride,
                          rows=p.rows, chunks=p.chunks)

        # Stage 1: the SRAM row is on the read port; pick the beat (lane 0 at the lowest byte).
        def pick(row, n):
            return row if n == 1 else row.word_select(p1_sub[:log2(n)], bb)
        m.d.comb += [wbuf.w_en.eq(p1_valid),
                     wbuf.w_data.eq(Cat(Mux(p1_mem, pick(self.acc_rd.data, bpr[Mem.ACC]),
                                            pick(self.spad_rd.data, bpr[Mem.SPAD])), p1_last)),
                     self.w.valid.eq(wbuf.r_rdy), self.w.payload.eq(wbuf.r_data),
                     wbuf.r_en.eq(self.w.ready),
                     self.busy.eq(p1_valid | wbuf.r_rdy)]
        return m


class DmaWritePath(wiring.Component):
    """The STORE unit: bursts from its planner on the AW register, their W beats from a
    :class:`StoreRowReader` on the W register, B responses counted per STORE.

    Parameters
    ----------
    config : NPUConfig
        ``timing(config)``: ``store_burst_fifo_depth`` (burst lengths between AW and the
        last W beat), ``store_count_depth`` (STOREs between their first AW and last B),
        ``store_w_buffer_depth`` (in the row reader).

    Attributes
    ----------
    store : In(UnitSignature)
        STOREs; one is taken as soon as the planner has issued every AW of the previous one.
    plan : Out(BurstPlanSignature)
        The write burst planner.
    aw, w : Out(stream)
        The AW and W registers (``valid`` is AXI ``awvalid``/``wvalid``, ``ready`` the slave's).
    b : In(stream(B_LAYOUT), always_ready)
        The bus's B channel; registered here before use.
    spad_rd, acc_rd : Out(SramReadSignature)
        SRAM reads.
    stop : In(1)
        Offer no new AW (the W beats of every AW issued are still sent).
    bus_busy : Out(1)
        An AW, W beats or B responses are still due.
    """

    def __init__(self, config):
        self._cfg = config
        dim = config.dim
        super().__init__({
            "store": In(UnitSignature()),
            "plan": Out(BurstPlanSignature(burst_len=config.dma_burst_len)),
            "aw": Out(stream.Signature(AW_LAYOUT)),
            "w": Out(stream.Signature(w_beat_layout(config))),
            "b": In(stream.Signature(B_LAYOUT, always_ready=True)),
            "spad_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=dim * 8)),
            "acc_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=dim * 32)),
            "stop": In(1),
            "bus_busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        t = timing(self._cfg)
        st, plan, aw, w = self.store, self.plan, self.aw, self.w
        p = st.instr.payload.body.dma

        # STOREs are pipelined like LOADs. The row reader finds each STORE's SRAM side in
        # `params`, the B side the number of bursts of each STORE in `counts`, both in
        # order. A STORE waiting in `params` (but the one being planned) holds a burst
        # length entry, so store_burst_fifo_depth + 2 entries never fill up.
        err = Signal(ERROR_SHAPE)
        inflight = Signal(range(t.store_count_depth + 2))
        b_out = Signal(32)     # bursts whose AW is issued and whose B has not arrived
        params = m.submodules.params = fifo.SyncFIFO(width=SRAM_SIDE_LAYOUT.size,
                                                     depth=t.store_burst_fifo_depth + 2)
        counts = m.submodules.counts = fifo.SyncFIFO(width=32, depth=t.store_count_depth)
        lens = m.submodules.lens = fifo.SyncFIFO(width=8, depth=t.store_burst_fifo_depth)
        reader = m.submodules.rows = StoreRowReader(self._cfg)
        wiring.connect(m, wiring.flipped(self.spad_rd), reader.spad_rd)
        wiring.connect(m, wiring.flipped(self.acc_rd), reader.acc_rd)
        room = params.w_rdy & counts.w_rdy & (err == 0)
        take = Signal()
        params_in = Signal(SRAM_SIDE_LAYOUT)
        m.d.comb += [
            plan.cmd.valid.eq(st.instr.valid & room),
            st.instr.ready.eq(plan.cmd.ready & room),
            *(getattr(plan.cmd.payload, f).eq(getattr(p, f))
              for f in ("mem", "dram_addr", "dram_stride", "rows", "chunks")),
            take.eq(st.instr.valid & st.instr.ready),
            *(getattr(params_in, f).eq(getattr(p, f)) for f in SRAM_SIDE_LAYOUT.members),
            params.w_en.eq(take), params.w_data.eq(params_in),
            reader.params.valid.eq(params.r_rdy), reader.params.payload.eq(params.r_data),
            params.r_en.eq(reader.params.ready),
            reader.burst_lens.valid.eq(lens.r_rdy), reader.burst_lens.payload.eq(lens.r_data),
            lens.r_en.eq(reader.burst_lens.ready),
            st.busy.eq(inflight != 0), st.error.eq(err),
        ]

        # AW register: each burst's length also goes to the row reader, which sets wlast
        # from it (AW waits only when that FIFO is full; W never leads AW).
        burst = plan.burst
        aw_take = Signal()
        aw_count = Signal(32)  # AWs of the STORE being planned
        with m.If(~aw.valid | aw.ready):
            with m.If(burst.valid & lens.w_rdy & (err == 0) & ~self.stop):
                m.d.comb += [aw_take.eq(1), burst.ready.eq(1),
                             lens.w_en.eq(1), lens.w_data.eq(burst.payload.len - 1)]
                m.d.sync += [aw.valid.eq(1), aw.payload.addr.eq(burst.payload.addr),
                             aw.payload.len.eq(burst.payload.len - 1)]
                with m.If(burst.payload.last):
                    m.d.comb += [counts.w_en.eq(1), counts.w_data.eq(aw_count + 1)]
                    m.d.sync += aw_count.eq(0)
                with m.Else():
                    m.d.sync += aw_count.eq(aw_count + 1)
            with m.Else():
                m.d.sync += aw.valid.eq(0)

        # W register.
        m.d.comb += reader.w.ready.eq(~w.valid | w.ready)
        with m.If(reader.w.ready):
            m.d.sync += [w.valid.eq(reader.w.valid), w.payload.eq(reader.w.payload)]

        # B, registered; a STORE is done when its last burst's B is in.
        bq_valid = Signal()
        bq_resp = Signal(2)
        m.d.sync += [bq_valid.eq(self.b.valid), bq_resp.eq(self.b.payload.resp)]
        m.d.sync += b_out.eq(b_out + aw_take - bq_valid)
        with m.If(bq_valid & (err == 0) & bq_resp[1]):
            m.d.sync += err.eq(resp_error(bq_resp))
        b_count = Signal(32)   # B responses of the oldest STORE not done
        final = Signal()
        m.d.comb += [final.eq(counts.r_rdy & (b_count == counts.r_data)), counts.r_en.eq(final)]
        m.d.sync += [b_count.eq(Mux(final, 0, b_count) + bq_valid),
                     st.done.eq(final & (err == 0)),
                     inflight.eq(inflight + take - final)]
        # After an error: no new AW; finish the bursts already announced, then go idle.
        with m.If((err != 0) & (b_out == 0) & ~bq_valid & ~lens.r_rdy & ~aw.valid):
            m.d.sync += inflight.eq(0)
            m.d.comb += plan.abort.eq(1)
        m.d.comb += self.bus_busy.eq(aw.valid | lens.r_rdy | reader.busy | w.valid
                                     | (b_out != 0) | bq_valid)
        return m
