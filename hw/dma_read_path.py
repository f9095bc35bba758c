"""The DMA's read path: LOAD bursts through read slots and a reorder buffer into SRAM rows."""

from amaranth import *
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.spec.isa import Mem
from flashnpu.spec.timing import timing
from flashnpu.hw.dma_burst_planner import BurstPlanSignature
from flashnpu.hw.dma_common import (SRAM_ADDR_WIDTH, SRAM_SIDE_LAYOUT, RowWalker, ar_layout, log2,
                                    r_beat_layout, resp_error)
from flashnpu.hw.signatures import ERROR_SHAPE, SramWriteSignature, UnitSignature

__all__ = ["load_beat_layout", "LoadRowWriter", "DmaReadPath"]


def load_beat_layout(config):
    """A LOAD beat leaving the reorder buffer in order, with its burst's first error response."""
    return data.StructLayout({"data": unsigned(config.dma_data_bits), "err": ERROR_SHAPE})


class LoadRowWriter(wiring.Component):
    """Assemble in-order LOAD beats into SRAM rows; write each row whole on its last beat.

    ``params`` gives each LOAD's SRAM side, in order; the writer takes the next one
    when it is idle or on the last beat of the current one. ``done`` pulses (registered)
    with the write of a LOAD's last row; ``final`` is that last beat (combinational).
    A row is not written if its beats carry an error or ``error`` is set.
    """

    def __init__(self, config):
        self._cfg = config
        dim = config.dim
        super().__init__({
            "params": In(stream.Signature(SRAM_SIDE_LAYOUT)),
            "beats": In(stream.Signature(load_beat_layout(config), always_ready=True)),
            "error": In(ERROR_SHAPE),
            "spad_wr": Out(SramWriteSignature(addr_width=SRAM_ADDR_WIDTH, data_width=dim * 8)),
            "acc_wr": Out(SramWriteSignature(addr_width=SRAM_ADDR_WIDTH, data_width=dim * 32)),
            "done": Out(1),
            "final": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        bb = cfg.dma_data_bits
        bpr = {Mem.SPAD: cfg.dim // cfg.dma_beat_bytes, Mem.ACC: 4 * cfg.dim // cfg.dma_beat_bytes}
        sub_bits = log2(bpr[Mem.ACC])
        beats, params = self.beats, self.params

        walk = RowWalker("ld", sub_bits=sub_bits)
        walk.elaborate_into(m)
        row_buf = Signal(cfg.dim * 32)
        loaded = Signal()
        mem = Signal()
        m.d.comb += self.final.eq(beats.valid & walk.final)
        m.d.sync += [self.spad_wr.en.eq(0), self.acc_wr.en.eq(0), self.done.eq(0)]
        with m.If(beats.valid):
            beat_data = beats.payload.data
            if sub_bits:
                m.d.sync += row_buf.word_select(walk.sub, bb).eq(beat_data)
            walk.step(m)
            with m.If(walk.last_sub):
                ok = (self.error == 0) & (beats.payload.err == 0)
                m.d.sync += [
                    self.spad_wr.en.eq(ok & ~mem), self.spad_wr.addr.eq(walk.cur),
                    self.spad_wr.data.eq(Cat(row_buf[:(bpr[Mem.SPAD] - 1) * bb], beat_data)),
                    self.acc_wr.en.eq(ok & mem), self.acc_wr.addr.eq(walk.cur),
                    self.acc_wr.data.eq(Cat(row_buf[:(bpr[Mem.ACC] - 1) * bb], beat_data)),
                ]
                with m.If(walk.final):
                    m.d.sync += self.done.eq(ok)
        # The next LOAD's parameters, when idle or finishing one (a beat needs at least
        # 6 cycles from the take of its LOAD to here, so they are queued by then).
        m.d.comb += params.ready.eq(~loaded | self.final)
        with m.If(params.ready):
            m.d.sync += loaded.eq(params.valid)
            with m.If(params.valid):
                p = params.payload
                m.d.sync += mem.eq(p.mem)
                walk.init(m, sub_max=Mux(p.mem, bpr[Mem.ACC] - 1, bpr[Mem.SPAD] - 1),
                          sram_addr=p.sram_addr, stride=p.sram_chunk_stride,
                          rows=p.rows, chunks=p.chunks)
        return m


class DmaReadPath(wiring.Component):
    """The LOAD unit: bursts from its planner become reads in ``read_slots`` slots, answered
    into a reorder buffer and retired in order into a :class:`LoadRowWriter`.

    Parameters
    ----------
    config : NPUConfig
        ``timing(config).read_slots`` read slots; slot *s* is AXI ID *s+1* and owns
        ``2**ceil(log2 dma_burst_len)`` beats of the reorder buffer.

    Attributes
    ----------
    load : In(UnitSignature)
        LOADs; one is taken as soon as the planner has issued every burst of the previous one.
    plan : Out(BurstPlanSignature)
        The read burst planner.
    ar : Out(stream(ar_layout))
        LOAD bursts to the AR register (fetch has priority there: ``ready`` says).
    r : In(stream(r_beat_layout), always_ready)
        The registered R beats of IDs ``1..read_slots``.
    spad_wr, acc_wr : Out(SramWriteSignature)
        Whole SRAM rows.
    stop : In(1)
        Offer no new burst.
    bus_busy : Out(1)
        A read slot is busy (beats requested and not yet retired).
    """

    def __init__(self, config):
        self._cfg = config
        dim = config.dim
        super().__init__({
            "load": In(UnitSignature()),
            "plan": Out(BurstPlanSignature(burst_len=config.dma_burst_len)),
            "ar": Out(stream.Signature(ar_layout(config))),
            "r": In(stream.Signature(r_beat_layout(config), always_ready=True)),
            "spad_wr": Out(SramWriteSignature(addr_width=SRAM_ADDR_WIDTH, data_width=dim * 8)),
            "acc_wr": Out(SramWriteSignature(addr_width=SRAM_ADDR_WIDTH, data_width=dim * 32)),
            "stop": In(1),
            "bus_busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        burst_len = cfg.dma_burst_len
        n_slots = timing(cfg).read_slots
        slot_lg = max(1, (burst_len - 1).bit_length())          # beats of one slot, as a power of two
        ld, plan, ar, r = self.load, self.plan, self.ar, self.r
        p = ld.instr.payload.body.dma

        # LOADs are pipelined: the planner takes the next instruction once it has issued
        # every burst of the previous one; the row writer finds each instruction's SRAM side
        # in `params`, in order. Every instruction in it but the one being planned holds
        # at least one read slot, so n_slots + 1 entries never fill up.
        err = Signal(ERROR_SHAPE)
        inflight = Signal(range(n_slots + 3))
        params = m.submodules.params = fifo.SyncFIFO(width=SRAM_SIDE_LAYOUT.size, depth=n_slots + 1)
        writer = m.submodules.rows = LoadRowWriter(cfg)
        take = Signal()
        params_in = Signal(SRAM_SIDE_LAYOUT)
        m.d.comb += [
            plan.cmd.valid.eq(ld.instr.valid & params.w_rdy & (err == 0)),
            ld.instr.ready.eq(plan.cmd.ready & params.w_rdy & (err == 0)),
            *(getattr(plan.cmd.payload, f).eq(getattr(p, f))
              for f in ("mem", "dram_addr", "dram_stride", "rows", "chunks")),
            take.eq(ld.instr.valid & ld.instr.ready),
            *(getattr(params_in, f).eq(getattr(p, f)) for f in SRAM_SIDE_LAYOUT.members),
            params.w_en.eq(take), params.w_data.eq(params_in),
            writer.params.valid.eq(params.r_rdy), writer.params.payload.eq(params.r_data),
            params.r_en.eq(writer.params.ready),
            ld.busy.eq(inflight != 0), ld.error.eq(err), ld.done.eq(writer.done),
        ]
        wiring.connect(m, wiring.flipped(self.spad_wr), writer.spad_wr)
        wiring.connect(m, wiring.flipped(self.acc_wr), writer.acc_wr)

        # Read slots, used round robin and retired in the same order, so the SRAM sees
        # beats in order whatever order the slave answers in.
        slot_busy = Array(Signal(name=f"slot{i}_busy") for i in range(n_slots))
        # (range(max(2, n)): a one-value counter would be a zero-width wire, which fails lint)
        slot_last = Array(Signal(range(max(2, burst_len)), name=f"slot{i}_last") for i in range(n_slots))
        slot_cnt = Array(Signal(range(burst_len + 1), name=f"slot{i}_cnt") for i in range(n_slots))
        # The first error response of each slot's burst. It is reported when the beat
        # retires, not when it arrives, so that every older LOAD has signalled done by
        # then and the sequencer blames the LOAD the beat belongs to.
        slot_err = Array(Signal(ERROR_SHAPE, name=f"slot{i}_err") for i in range(n_slots))
        iptr = Signal(range(max(2, n_slots)))
        rptr = Signal(range(max(2, n_slots)))
        rbeat = Signal(range(max(2, burst_len)))
        m.d.comb += self.bus_busy.eq(Cat(*slot_busy).any())
        rob = m.submodules.rob = memory.Memory(shape=unsigned(cfg.dma_data_bits),
                                               depth=n_slots << slot_lg, init=[])
        rob_w, rob_r = rob.write_port(), rob.read_port()

        # AR: the next burst, if its slot is free; the planner's take is the AR's.
        burst = plan.burst
        m.d.comb += [
            ar.valid.eq(burst.valid & ~slot_busy[iptr] & (err == 0) & ~self.stop),
            burst.ready.eq(ar.valid & ar.ready),
            ar.payload.id.eq(iptr + 1), ar.payload.addr.eq(burst.payload.addr),
            ar.payload.len.eq(burst.payload.len - 1),
        ]
        with m.If(ar.valid & ar.ready):
            m.d.sync += [slot_busy[iptr].eq(1), slot_last[iptr].eq(burst.payload.len - 1),
                         slot_cnt[iptr].eq(0), slot_err[iptr].eq(0),
                         iptr.eq(Mux(iptr == n_slots - 1, 0, iptr + 1))]

        # R: each beat into its slot's part of the reorder buffer.
        slot = Signal(range(max(2, n_slots)))
        resp = r.payload.resp
        m.d.comb += slot.eq(r.payload.id - 1)
        with m.If(r.valid):
            m.d.comb += [rob_w.en.eq(1), rob_w.data.eq(r.payload.data),
                         rob_w.addr.eq(Cat(slot_cnt[slot][:slot_lg], slot))]
            m.d.sync += slot_cnt[slot].eq(slot_cnt[slot] + 1)
            with m.If((slot_err[slot] == 0) & resp[1]):
                m.d.sync += slot_err[slot].eq(resp_error(resp))

        # Retire in slot order: the next beat in order, once it has arrived (1 cycle to read).
        avail = Signal()
        m.d.comb += [avail.eq(slot_busy[rptr] & (rbeat < slot_cnt[rptr])),
                     rob_r.en.eq(avail), rob_r.addr.eq(Cat(rbeat[:slot_lg], rptr))]
        beats = writer.beats
        m.d.sync += [beats.valid.eq(avail), beats.payload.err.eq(Mux(avail, slot_err[rptr], 0))]
        m.d.comb += beats.payload.data.eq(rob_r.data)
        with m.If((beats.payload.err != 0) & (err == 0)):
            m.d.sync += err.eq(beats.payload.err)
        with m.If(avail):
            with m.If(rbeat == slot_last[rptr]):
                m.d.sync += [rbeat.eq(0), slot_busy[rptr].eq(0),
                             rptr.eq(Mux(rptr == n_slots - 1, 0, rptr + 1))]
            with m.Else():
                m.d.sync += rbeat.eq(rbeat + 1)
        m.d.comb += writer.error.eq(err)

        m.d.sync += inflight.eq(inflight + take - writer.final)
        # After an error: stop issuing, let every requested beat arrive, then go idle.
        with m.If((err != 0) & ~self.bus_busy):
            m.d.sync += inflight.eq(0)
            m.d.comb += plan.abort.eq(1)
        return m
