"""The sequencer's dispatch stage: check the word in F, count tokens in program order, fill the queues.

See ``docs/sequencer.md`` ("Fetch / dispatch pipeline", "Token counters").
"""

from amaranth import *
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.hw.decoder import InstrChecker
from flashnpu.hw.sequencer_fetch import FETCHED_LAYOUT
from flashnpu.hw.signatures import ERROR_SHAPE, GRANT_LAYOUT
from flashnpu.hw.window_checker import DramWindowChecker
from flashnpu.spec.isa import INSTR_LAYOUT, OPCODE_QUEUE, ErrorCode, Opcode, Queue

__all__ = ["SequencerDispatch", "QUEUE_ENTRY_LAYOUT", "STOP_LAYOUT", "UNIT_NAMES"]

#: Member name of each queue's unit port, by ``Queue``.
UNIT_NAMES = {Queue.LOAD: "load", Queue.STORE: "store", Queue.MATRIX: "matrix", Queue.VECTOR: "vector"}

#: An instruction in its queue.
QUEUE_ENTRY_LAYOUT = data.StructLayout({"word": INSTR_LAYOUT, "pc": unsigned(32)})

#: Dispatch stops at a word: its ErrorCode (0: HALT) and pc.
STOP_LAYOUT = data.StructLayout({"code": ERROR_SHAPE, "pc": unsigned(32)})


class SequencerDispatch(wiring.Component):
    """Check the word in F and, in program order, write it into its queue or stop at it.

    Checks, the first failure wins: fetch error, code window, ``InstrChecker``,
    DMA windows, then the program-order token counters (a pop of an empty one is
    TOKEN_UNDERFLOW, a push of a full one TOKEN_OVERFLOW). A legal word is
    written into its queue in the cycle it is checked if the queue has room.

    Members
    -------
    go : In(1)
        A start taken: empty the queues, clear the counters.
    active : In(1)
        Dispatch may proceed (busy, not stopping, not aborting).
    grant : In(GRANT_LAYOUT)
        The latched grant (DMA windows).
    word : In(stream.Signature(FETCHED_LAYOUT))
    load, store, matrix, vector : Out(stream.Signature(QUEUE_ENTRY_LAYOUT))
        Each queue's head.
    stop : Out(stream.Signature(STOP_LAYOUT, always_ready=True))
        HALT (code 0) or an error reached dispatch (one cycle).
    dispatched, dispatch_stall, tokens_left : Out(1)
        A word entered a queue or HALT retired; a legal word waits for a full queue;
        a program-order counter is non-zero (TOKENS_LEFT at HALT).
    """

    def __init__(self, config):
        self._cfg = config
        super().__init__({
            "go": In(1),
            "active": In(1),
            "grant": In(GRANT_LAYOUT),
            "word": In(stream.Signature(FETCHED_LAYOUT)),
            **{name: Out(stream.Signature(QUEUE_ENTRY_LAYOUT)) for name in UNIT_NAMES.values()},
            "stop": Out(stream.Signature(STOP_LAYOUT, always_ready=True)),
            "dispatched": Out(1),
            "dispatch_stall": Out(1),
            "tokens_left": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        queues = list(Queue)
        tok_max = (1 << cfg.token_bits) - 1
        f = self.word.payload
        checker = m.submodules.checker = InstrChecker(cfg)
        windows = m.submodules.windows = DramWindowChecker(cfg)
        m.d.comb += [checker.word.eq(f.word), windows.word.eq(f.word), windows.grant.eq(self.grant)]
        f_code = Signal(ERROR_SHAPE)
        f_tok_code = Signal(ERROR_SHAPE)   # the program-order token check (below)
        m.d.comb += f_code.eq(Mux(f.fetch_error, ErrorCode.FETCH_ERROR,
                                  Mux(f.window_error, ErrorCode.FETCH_WINDOW,
                                      Mux(checker.error != 0, checker.error,
                                          Mux(windows.error != 0, windows.error, f_tok_code)))))
        f_halt = Signal()
        m.d.comb += f_halt.eq(f.word.opcode == Opcode.HALT)
        f_queue = Signal(range(4))
        with m.Switch(f.word.opcode):
            for op, q in OPCODE_QUEUE.items():
                with m.Case(op):
                    m.d.comb += f_queue.eq(q)

        qf = []
        for q in queues:
            fq = ResetInserter(self.go)(fifo.SyncFIFO(width=QUEUE_ENTRY_LAYOUT.size, depth=cfg.queue_depth))
            m.submodules[f"q_{UNIT_NAMES[q]}"] = fq
            head = getattr(self, UNIT_NAMES[q])
            m.d.comb += [fq.w_data.eq(Cat(f.word, f.pc)), head.payload.eq(fq.r_data),
                         head.valid.eq(fq.r_rdy), fq.r_en.eq(head.ready)]
            qf.append(fq)
        q_wrdy = Signal(4)
        m.d.comb += q_wrdy.eq(Cat(*(fq.w_rdy for fq in qf)))

        m.d.comb += [self.stop.payload.code.eq(f_code), self.stop.payload.pc.eq(f.pc)]
        with m.If(self.word.valid & self.active):
            with m.If(f_code != 0):
                m.d.comb += [self.word.ready.eq(1), self.stop.valid.eq(1)]
            with m.Elif(f_halt):
                m.d.comb += [self.word.ready.eq(1), self.stop.valid.eq(1), self.dispatched.eq(1)]
            with m.Elif(q_wrdy.bit_select(f_queue, 1)):
                m.d.comb += [self.word.ready.eq(1), self.dispatched.eq(1)]
                with m.Switch(f_queue):
                    for q in queues:
                        with m.Case(q):
                            m.d.comb += qf[q].w_en.eq(1)
            with m.Else():
                m.d.comb += self.dispatch_stall.eq(1)

        # Program-order counters, updated at dispatch: a program that passes their checks can
        # neither deadlock nor push a run-time counter past tok_max + queue_depth.
        pairs = [(s, d) for s in queues for d in queues if s != d]
        dtok = {(s, d): Signal(cfg.token_bits, name=f"dtok_{s.name.lower()}_{d.name.lower()}")
                for s, d in pairs}
        f_under = Signal()
        f_over = Signal()
        m.d.comb += [
            f_under.eq(Cat(*(f.word.wait[s] & (f_queue == d) & (dtok[s, d] == 0) for s, d in pairs)).any()),
            f_over.eq(Cat(*(f.word.signal[d] & (f_queue == s) & (dtok[s, d] == tok_max)
                            for s, d in pairs)).any()),
            f_tok_code.eq(Mux(f_halt, 0, Mux(f_under, ErrorCode.TOKEN_UNDERFLOW,
                                             Mux(f_over, ErrorCode.TOKEN_OVERFLOW, 0)))),
        ]
        f_dispatch = Signal()   # a legal non-HALT word enters its queue
        m.d.comb += f_dispatch.eq(Cat(*(fq.w_en for fq in qf)).any())
        for (s, d), c in dtok.items():
            with m.If(f_dispatch & (f_queue == d) & f.word.wait[s]):
                m.d.sync += c.eq(c - 1)
            with m.If(f_dispatch & (f_queue == s) & f.word.signal[d]):
                m.d.sync += c.eq(c + 1)
            with m.If(self.go):
                m.d.sync += c.eq(0)
        m.d.comb += self.tokens_left.eq(Cat(*(c != 0 for c in dtok.values())).any())
        return m
