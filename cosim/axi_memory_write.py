"""The write side of ``AxiMemory``: AW and W queues, beats written in their handshake cycle, timed B.

See ``docs/axi_memory.md`` ("Design").
"""

from amaranth import *
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.cosim.axi_memory_common import (STAMP_BITS, StorageWriteSignature, burst_layout, due, later,
                                              stamped_burst_queue, window_layout)

__all__ = ["AxiMemoryWrite", "w_layout", "b_layout"]


def w_layout(geometry):
    """A W beat (``wlast`` is not looked at: a burst ends after ``len + 1`` beats)."""
    return data.StructLayout({"data": geometry.data_width, "strb": geometry.beat})


def b_layout(geometry):
    return data.StructLayout({"id": geometry.id_width, "resp": 2})


class AxiMemoryWrite(wiring.Component):
    """Write bursts: a burst whose last W handshake is in cycle ``w`` has its B in ``w + 1 + lat``
    (later if ``b`` is busy, or if its AW came after its data: then the AW's cycle counts).

    A W beat is written in its handshake cycle when its AW is at the head of the AW queue and no
    older beat waits; otherwise it waits in the W queue. B carries the worst response of the burst.
    ``aw.ready``, ``w.ready`` are high unless their queue of ``queue_depth`` entries is full; ``b``
    is registers.

    Members
    -------
    aw : In(stream.Signature(burst_layout(geometry)))
    w : In(stream.Signature(w_layout(geometry)))
    b : Out(stream.Signature(b_layout(geometry)))
    now : In(STAMP_BITS)
    window : In(window_layout(geometry))
    mem : Out(StorageWriteSignature(geometry))
    """

    def __init__(self, geometry, *, lat, queue_depth):
        self._geo = geometry
        self._lat = lat
        self._qdepth = queue_depth
        super().__init__({
            "aw": In(stream.Signature(burst_layout(geometry))),
            "w": In(stream.Signature(w_layout(geometry))),
            "b": Out(stream.Signature(b_layout(geometry))),
            "now": In(STAMP_BITS),
            "window": In(window_layout(geometry)),
            "mem": Out(StorageWriteSignature(geometry)),
        })

    def elaborate(self, platform):
        m = Module()
        geo, now, qd, wr = self._geo, self.now, self._qdepth, self.mem
        head, awq = stamped_burst_queue(m, "awq", self.aw, geo, now, qd)
        aw = head.burst

        # W beats that cannot be written at once (no AW yet, or older beats
        # waiting) queue here; otherwise a beat is written in its handshake
        # cycle, so B can follow it after exactly lat + 1 cycles.
        w_queued = data.StructLayout({"beat": w_layout(geo), "stamp": STAMP_BITS})
        wq = m.submodules.wq = fifo.SyncFIFO(width=w_queued.size, depth=qd)
        w_in = Signal(w_queued)
        w_hs, w_have = Signal(), Signal()
        w = Signal(w_queued)
        m.d.comb += [w_in.beat.eq(self.w.payload), w_in.stamp.eq(now), self.w.ready.eq(wq.w_rdy),
                     w_hs.eq(self.w.valid & wq.w_rdy), w.eq(Mux(wq.r_rdy, wq.r_data, w_in)),
                     w_have.eq(wq.r_rdy | w_hs)]

        bq_layout = data.StructLayout({"b": b_layout(geo), "ready": STAMP_BITS})
        bq = m.submodules.bq = fifo.SyncFIFO(width=bq_layout.size, depth=qd)
        w_beat = Signal(8)
        w_acc = Signal(2)            # worst response of the burst so far
        w_addr = Signal(geo.addr_width + 1)
        w_resp = Signal(2)
        w_go = Signal()
        m.d.comb += [w_addr.eq(geo.beat_addr(aw.addr, w_beat)), w_resp.eq(geo.resp(m, w_addr, self.window)),
                     w_go.eq(awq.r_rdy & w_have & bq.w_rdy)]
        m.d.comb += [wq.r_en.eq(w_go),
                     wq.w_en.eq(w_hs & ~(w_go & ~wq.r_rdy)), wq.w_data.eq(w_in),
                     wr.addr.eq(geo.index(w_addr)), wr.data.eq(w.beat.data),
                     wr.en.eq(Mux(w_go & (w_resp == 0), w.beat.strb, 0))]
        worst = Signal(2)
        m.d.comb += worst.eq(Mux(w_resp > w_acc, w_resp, w_acc))
        b_in = Signal(bq_layout)
        last_stamp = Mux(later(head.stamp, w.stamp), head.stamp, w.stamp)
        m.d.comb += [b_in.b.id.eq(aw.id), b_in.b.resp.eq(worst), b_in.ready.eq(last_stamp + 1 + self._lat),
                     bq.w_data.eq(b_in)]
        with m.If(w_go):
            with m.If(w_beat == aw.len):
                m.d.comb += [awq.r_en.eq(1), bq.w_en.eq(1)]
                m.d.sync += [w_beat.eq(0), w_acc.eq(0)]
            with m.Else():
                m.d.sync += [w_beat.eq(w_beat + 1), w_acc.eq(worst)]

        b = Signal(bq_layout)
        m.d.comb += b.eq(bq.r_data)
        with m.If(~self.b.valid | self.b.ready):
            b_go = bq.r_rdy & due(b.ready, now)
            m.d.comb += bq.r_en.eq(b_go)
            m.d.sync += [self.b.valid.eq(b_go), self.b.payload.eq(b.b)]
        return m
