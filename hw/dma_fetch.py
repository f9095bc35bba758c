"""The DMA's instruction fetch: the sequencer's 32-byte reads as AXI bursts with ID 0."""

from amaranth import *
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.spec.isa import INSTR_BYTES
from flashnpu.spec.timing import timing
from flashnpu.hw.dma_common import ar_layout, log2, r_beat_layout
from flashnpu.hw.signatures import FetchSignature

__all__ = ["DmaFetch"]


class DmaFetch(wiring.Component):
    """Serve ``fetch`` requests: one read burst each, responses in order.

    Parameters
    ----------
    config : NPUConfig
        ``dma_beat_bytes``; ``timing(config).fetch_depth`` sizes the response FIFO and
        ``timing(config).fetch_beats`` is the burst length.

    Attributes
    ----------
    fetch : In(FetchSignature)
        The sequencer. A request is taken when its AR is, and only while requests in flight
        plus queued responses are fewer than ``fetch_depth``, so the R beats of ID 0 are
        never stalled.
    ar : Out(stream(ar_layout))
        Read requests (ID 0) to the AR register; ``ready`` is the AR register being free.
    r : In(stream(r_beat_layout), always_ready)
        The registered R beats of ID 0.
    stop : In(1)
        Offer no new request.
    busy : Out(1)
        A request is in flight (its last beat not yet received).
    """

    def __init__(self, config):
        self._cfg = config
        super().__init__({
            "fetch": In(FetchSignature()),
            "ar": Out(stream.Signature(ar_layout(config))),
            "r": In(stream.Signature(r_beat_layout(config), always_ready=True)),
            "stop": In(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        beat = self._cfg.dma_beat_bytes
        bb = self._cfg.dma_data_bits
        lg_beat = log2(beat)
        t = timing(self._cfg)
        depth, fbeats = t.fetch_depth, t.fetch_beats
        fe, ar, r = self.fetch, self.ar, self.r

        resp_fifo = m.submodules.resp = fifo.SyncFIFO(width=INSTR_BYTES * 8 + 1, depth=depth)
        inflight = Signal(range(depth + 1))
        push = Signal()
        m.d.comb += [
            ar.valid.eq(fe.req.valid & (inflight + resp_fifo.level < depth) & ~self.stop),
            fe.req.ready.eq(ar.valid & ar.ready),
            fe.resp.valid.eq(resp_fifo.r_rdy),
            fe.resp.payload.word.eq(resp_fifo.r_data[:INSTR_BYTES * 8]),
            fe.resp.payload.error.eq(resp_fifo.r_data[-1]),
            resp_fifo.r_en.eq(fe.resp.ready),
            self.busy.eq(inflight != 0),
        ]
        addr = fe.req.payload.addr
        if beat > INSTR_BYTES:
            # A beat holds several instructions: read the whole beat, keep the right 32 bytes.
            off_fifo = m.submodules.off = fifo.SyncFIFO(width=log2(beat // INSTR_BYTES), depth=depth)
            m.d.comb += [off_fifo.w_en.eq(fe.req.valid & fe.req.ready),
                         off_fifo.w_data.eq(addr[log2(INSTR_BYTES):lg_beat])]
            addr = Cat(C(0, lg_beat), addr[lg_beat:])
        m.d.comb += [ar.payload.id.eq(0), ar.payload.addr.eq(addr), ar.payload.len.eq(fbeats - 1)]
        m.d.sync += inflight.eq(inflight + (fe.req.valid & fe.req.ready) - push)

        # Assemble the word from its beats; error if any beat answered SLVERR or DECERR.
        word_buf = Signal(INSTR_BYTES * 8)
        err = Signal()
        beat_idx = Signal(range(fbeats)) if fbeats > 1 else None   # a zero-width wire fails lint
        data = r.payload.data
        with m.If(r.valid):
            if beat > INSTR_BYTES:
                word = data.word_select(off_fifo.r_data, INSTR_BYTES * 8)
                m.d.comb += off_fifo.r_en.eq(r.payload.last)
            else:
                word = Cat(word_buf[:(fbeats - 1) * bb], data)
                if fbeats > 1:
                    m.d.sync += word_buf.word_select(beat_idx, bb).eq(data)
            this_err = r.payload.resp[1]
            with m.If(r.payload.last):
                m.d.comb += [push.eq(1), resp_fifo.w_en.eq(1),
                             resp_fifo.w_data.eq(Cat(word, err | this_err))]
                m.d.sync += err.eq(0)
                if fbeats > 1:
                    m.d.sync += beat_idx.eq(0)
            with m.Else():
                m.d.sync += err.eq(err | this_err)
                if fbeats > 1:
                    m.d.sync += beat_idx.eq(beat_idx + 1)
        return m
