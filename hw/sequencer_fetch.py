"""The sequencer's fetch stage: requests ahead of dispatch, and the F register of the next word.

See ``docs/sequencer.md`` ("Fetch / dispatch pipeline").
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.hw.signatures import GRANT_LAYOUT, FetchSignature
from flashnpu.spec.isa import INSTR_BYTES, INSTR_LAYOUT
from flashnpu.spec.timing import timing

__all__ = ["SequencerFetch", "FETCHED_LAYOUT"]

#: The word in F: its pc, a fetch error (SLVERR/DECERR), or ``window_error``: the next pc is
#: outside the code window (never fetched; the word is 0).
FETCHED_LAYOUT = data.StructLayout({
    "word": INSTR_LAYOUT,
    "pc": unsigned(32),
    "fetch_error": unsigned(1),
    "window_error": unsigned(1),
})


class SequencerFetch(wiring.Component):
    """Keep ``fetch_depth`` requests outstanding and offer the words in program order.

    Responses that belong to no current program (after ``stop``, or left from
    an earlier run: counted at ``go``) are taken and dropped.

    Members
    -------
    go : In(1)
        A start taken: restart at pc 0 of ``grant``.
    grant : In(GRANT_LAYOUT)
        The latched grant (``prog_addr``, ``prog_end``).
    hold : In(1)
        No new request (an abort).
    stop : In(1)
        This run wants no more words (HALT, an error, an abort, the end).
    fetch : Out(FetchSignature())
    word : Out(stream.Signature(FETCHED_LAYOUT))
        The F register.
    next_pc : Out(32)
        The pc of the next response to come.
    """

    def __init__(self, config):
        self._cfg = config
        self._depth = timing(config).fetch_depth
        super().__init__({
            "go": In(1),
            "grant": In(GRANT_LAYOUT),
            "hold": In(1),
            "stop": In(1),
            "fetch": Out(FetchSignature()),
            "word": Out(stream.Signature(FETCHED_LAYOUT)),
            "next_pc": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        fe, grant, w = self.fetch, self.grant, self.word
        fetching = Signal()    # this run still wants instruction words
        req_pc = Signal(32)
        resp_pc = self.next_pc
        outstanding = Signal(range(self._depth + 1))
        stale = Signal(range(self._depth + 1))   # outstanding responses of an earlier run
        req_hs = Signal()
        resp_hs = Signal()
        # Words are requested only inside the code window and the AXI range.
        req_addr = Signal(34)
        req_in_window = Signal()
        m.d.comb += [
            req_addr.eq(grant.prog_addr + req_pc * INSTR_BYTES),
            req_in_window.eq((req_addr + INSTR_BYTES <= grant.prog_end)
                             & (req_addr + INSTR_BYTES <= (1 << self._cfg.axi_addr_bits))),
            fe.req.valid.eq(fetching & req_in_window & (outstanding < self._depth) & ~self.hold),
            fe.req.payload.addr.eq(req_addr),
            req_hs.eq(fe.req.valid & fe.req.ready),
            resp_hs.eq(fe.resp.valid & fe.resp.ready),
        ]
        outstanding_next = Signal.like(outstanding)
        m.d.comb += outstanding_next.eq(outstanding + req_hs - resp_hs)
        m.d.sync += outstanding.eq(outstanding_next)
        with m.If(req_hs):
            m.d.sync += req_pc.eq(req_pc + 1)

        f_take = Signal()
        discard = Signal()
        m.d.comb += [
            f_take.eq(w.valid & w.ready),
            discard.eq((stale != 0) | ~fetching),
            fe.resp.ready.eq(discard | ~w.valid | f_take),
        ]
        with m.If(resp_hs & discard):
            with m.If(stale != 0):
                m.d.sync += stale.eq(stale - 1)
        with m.If(resp_hs & ~discard):
            m.d.sync += [w.valid.eq(1), w.payload.word.eq(fe.resp.payload.word), w.payload.pc.eq(resp_pc),
                         w.payload.fetch_error.eq(fe.resp.payload.error), w.payload.window_error.eq(0),
                         resp_pc.eq(resp_pc + 1)]
        with m.Elif(fetching & ~req_in_window & (outstanding == 0) & (stale == 0)
                    & (resp_pc == req_pc) & (~w.valid | f_take)):
            # Every word inside the window is in; the next one is outside it.
            m.d.sync += [w.valid.eq(1), w.payload.word.eq(0), w.payload.pc.eq(resp_pc),
                         w.payload.fetch_error.eq(0), w.payload.window_error.eq(1), resp_pc.eq(resp_pc + 1)]
        with m.Elif(f_take | ~fetching):
            m.d.sync += w.valid.eq(0)

        with m.If(self.stop):
            m.d.sync += fetching.eq(0)
        with m.If(self.go):
            m.d.sync += [fetching.eq(1), req_pc.eq(0), resp_pc.eq(0), stale.eq(outstanding_next),
                         w.valid.eq(0)]
        return m
