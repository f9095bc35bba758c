"""The sequencer's issue stage: run-time token counters, in-flight FIFOs, queue heads to the units.

See ``docs/sequencer.md`` ("Token counters", "Issue rules").
"""

from amaranth import *
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.hw.sequencer_dispatch import QUEUE_ENTRY_LAYOUT, UNIT_NAMES
from flashnpu.hw.signatures import UnitSignature
from flashnpu.spec.isa import Queue
from flashnpu.spec.timing import timing

__all__ = ["SequencerTokens", "HEAD_LAYOUT", "OLDEST_LAYOUT"]

#: A queue head as the stop logic sees it: may it issue (older than the stop), are its tokens there.
HEAD_LAYOUT = data.StructLayout({"eligible": unsigned(1), "tokens_ok": unsigned(1), "pc": unsigned(32)})

#: A unit's oldest instruction taken and not done.
OLDEST_LAYOUT = data.StructLayout({"valid": unsigned(1), "pc": unsigned(32)})


class SequencerTokens(wiring.Component):
    """Issue each queue's head to its unit when its wait tokens are there; push tokens at ``done``.

    Counter ``s -> d`` is popped by queue ``d``'s head at its handshake and
    pushed by unit ``s``'s ``done`` (signal bit ``d`` of its oldest in-flight
    instruction). A head issues when its tokens are there, its unit's in-flight
    FIFO (``inflight_depth``) has room, it is older than a pending stop, and,
    for a STORE, no STORE is in flight and no older LOAD is incomplete.

    Members
    -------
    go : In(1)
        A start taken: clear the counters and the in-flight FIFOs.
    busy : In(1)
        A run is in progress (nothing is issued otherwise).
    halt : In(1)
        An abort: nothing is issued.
    stopping : In(1), stop_pc : In(32)
        A stop is pending at ``stop_pc``: only older heads issue.
    load_q, store_q, matrix_q, vector_q : In(stream.Signature(QUEUE_ENTRY_LAYOUT))
        The queue heads.
    load, store, matrix, vector : Out(UnitSignature())
    heads : Out(ArrayLayout(HEAD_LAYOUT, 4)), oldest : Out(ArrayLayout(OLDEST_LAYOUT, 4))
        By ``Queue``.
    stall : Out(4)
        Bit *q*: queue *q* has a head waiting for a token.
    """

    def __init__(self, config):
        self._cfg = config
        self._inflight_depth = timing(config).inflight_depth
        super().__init__({
            "go": In(1),
            "busy": In(1),
            "halt": In(1),
            "stopping": In(1),
            "stop_pc": In(32),
            **{f"{name}_q": In(stream.Signature(QUEUE_ENTRY_LAYOUT)) for name in UNIT_NAMES.values()},
            **{name: Out(UnitSignature()) for name in UNIT_NAMES.values()},
            "heads": Out(data.ArrayLayout(HEAD_LAYOUT, len(Queue))),
            "oldest": Out(data.ArrayLayout(OLDEST_LAYOUT, len(Queue))),
            "stall": Out(len(Queue)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        queues = list(Queue)
        tok_max = (1 << cfg.token_bits) - 1
        units = [getattr(self, UNIT_NAMES[q]) for q in queues]
        qs = [getattr(self, f"{UNIT_NAMES[q]}_q") for q in queues]
        pairs = [(s, d) for s in queues for d in queues if s != d]
        # Never wraps: a run-time counter runs ahead of its program-order count only by the pops
        # still waiting in its queue.
        tok = {(s, d): Signal(range(tok_max + cfg.queue_depth + 1), name=f"tok_{s.name.lower()}_{d.name.lower()}")
               for s, d in pairs}
        infl = []
        for q in queues:
            h, hd = qs[q].payload, self.heads[q]
            i = ResetInserter(self.go)(fifo.SyncFIFO(width=4 + 32, depth=self._inflight_depth))
            m.submodules[f"inflight_{UNIT_NAMES[q]}"] = i
            m.d.comb += [
                hd.pc.eq(h.pc),
                hd.tokens_ok.eq(Cat(*(~h.word.wait[s] | (tok[s, q] != 0) for s in queues if s != q)).all()),
                hd.eligible.eq(qs[q].valid & (~self.stopping | (h.pc < self.stop_pc)) & ~self.halt),
                self.oldest[q].valid.eq(i.r_rdy),
                self.oldest[q].pc.eq(i.r_data[4:]),
            ]
            infl.append(i)
        # The oldest LOAD not yet complete (LOADs complete in order).
        load_pending = Signal()
        load_pc = Signal(32)
        m.d.comb += [
            load_pending.eq(infl[Queue.LOAD].r_rdy | qs[Queue.LOAD].valid),
            load_pc.eq(Mux(infl[Queue.LOAD].r_rdy, infl[Queue.LOAD].r_data[4:], self.heads[Queue.LOAD].pc)),
        ]
        store_ordered = Signal()
        m.d.comb += store_ordered.eq(~infl[Queue.STORE].r_rdy
                                     & (~load_pending | (load_pc > self.heads[Queue.STORE].pc)))
        take = []
        for q, unit in zip(queues, units):
            i, hd = infl[q], self.heads[q]
            order = store_ordered if q == Queue.STORE else C(1)
            t = Signal(name=f"take_{q.name.lower()}")
            m.d.comb += [
                unit.instr.payload.eq(qs[q].payload.word),
                unit.instr.valid.eq(self.busy & hd.eligible & hd.tokens_ok & order & i.w_rdy),
                t.eq(unit.instr.valid & unit.instr.ready),
                qs[q].ready.eq(t),
                i.w_en.eq(t), i.w_data.eq(Cat(unit.instr.payload.signal, hd.pc)),
                i.r_en.eq(unit.done),
                self.stall[q].eq(self.busy & qs[q].valid & ~hd.tokens_ok),
            ]
            take.append(t)

        for (s, d), c in tok.items():
            pop = Signal(name=f"pop_{s.name.lower()}_{d.name.lower()}")
            push = Signal(name=f"push_{s.name.lower()}_{d.name.lower()}")
            m.d.comb += [
                pop.eq(take[d] & units[d].instr.payload.wait[s]),
                push.eq(units[s].done & infl[s].r_rdy & infl[s].r_data[d]),
            ]
            m.d.sync += c.eq(Mux(self.go, 0, c + push - pop))
        return m
