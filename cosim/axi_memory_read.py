"""The read side of ``AxiMemory``: AR queue with timestamps, one R beat per cycle from the word array.

See ``docs/axi_memory.md`` ("Design").
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.cosim.axi_memory_common import (STAMP_BITS, StorageReadSignature, burst_layout, due,
                                              stamped_burst_queue, window_layout)

__all__ = ["AxiMemoryRead", "r_layout"]


def r_layout(geometry):
    """An R beat."""
    return data.StructLayout({"id": geometry.id_width, "data": geometry.data_width, "resp": 2, "last": 1})


class AxiMemoryRead(wiring.Component):
    """Answer read bursts in AR order: a burst whose AR handshake is in cycle ``h`` has its first beat
    on ``r`` in ``h + 1 + lat`` (later while ``r`` is busy), then one beat per cycle while ``r.ready``.

    With ``r_gap_every = k >= 2`` (``spec/memory_timing.py``) the beats of a burst come ``k - 1`` at a
    time, with one cycle without a beat between (``MemoryTiming.r_cycles``).

    ``ar.ready`` is high unless the queue of ``queue_depth`` bursts is full. ``r``'s ``valid``,
    ``id``, ``resp`` and ``last`` are registers; ``data`` is ``mem.data`` (0 for an error beat).

    Members
    -------
    ar : In(stream.Signature(burst_layout(geometry)))
    r : Out(stream.Signature(r_layout(geometry)))
    now : In(STAMP_BITS)
        The free-running cycle counter.
    window : In(window_layout(geometry))
        The SLVERR window.
    mem : Out(StorageReadSignature(geometry))
    """

    def __init__(self, geometry, *, lat, queue_depth, r_gap_every=0):
        self._geo = geometry
        self._lat = lat
        self._qdepth = queue_depth
        self._gap_every = r_gap_every
        super().__init__({
            "ar": In(stream.Signature(burst_layout(geometry))),
            "r": Out(stream.Signature(r_layout(geometry))),
            "now": In(STAMP_BITS),
            "window": In(window_layout(geometry)),
            "mem": Out(StorageReadSignature(geometry)),
        })

    def elaborate(self, platform):
        m = Module()
        geo, now, r, rd = self._geo, self.now, self.r, self.mem
        # Each burst's stamp is the cycle its first beat is due.
        head, arq = stamped_burst_queue(m, "arq", self.ar, geo, now + 1 + self._lat, self._qdepth)
        ar = head.burst

        r_beat = Signal(8)
        r_last = Signal()
        m.d.comb += r_last.eq(r_beat == ar.len)
        r_err = Signal()
        r_addr = Signal(geo.addr_width + 1)
        m.d.comb += r_addr.eq(geo.beat_addr(ar.addr, r_beat))
        r_resp = Signal(2)
        m.d.comb += r_resp.eq(geo.resp(m, r_addr, self.window))
        # The next beat is read in the cycle before it is shown: the read port
        # is the R data register, and it holds while R waits for ready.
        r_can = Signal()            # a beat could be decided now
        m.d.comb += r_can.eq((~r.valid | r.ready) & arq.r_rdy & due(head.stamp, now))
        r_gap = Signal()            # ... but this cycle is the burst's gap
        r_go = Signal()
        m.d.comb += r_go.eq(r_can & ~r_gap)
        if self._gap_every:
            since_gap = Signal(range(self._gap_every))     # beats of the burst since its start or last gap
            m.d.comb += r_gap.eq(since_gap == self._gap_every - 1)
            with m.If(r_can & r_gap):
                m.d.sync += since_gap.eq(0)
            with m.Elif(r_go):
                m.d.sync += since_gap.eq(Mux(r_last, 0, since_gap + 1))
        m.d.comb += [rd.addr.eq(geo.index(r_addr)), rd.en.eq(r_go),
                     r.payload.data.eq(Mux(r_err, 0, rd.data))]
        with m.If(r_go):
            m.d.sync += [r.valid.eq(1), r.payload.id.eq(ar.id), r.payload.resp.eq(r_resp),
                         r.payload.last.eq(r_last), r_err.eq(r_resp != 0)]
            with m.If(r_last):
                m.d.comb += arq.r_en.eq(1)
                m.d.sync += r_beat.eq(0)
            with m.Else():
                m.d.sync += r_beat.eq(r_beat + 1)
        with m.Elif(r.ready):
            m.d.sync += r.valid.eq(0)
        return m
