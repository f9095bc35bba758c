"""The sequencer: fetch, check, dispatch into four queues, dependency tokens, HALT, errors.

See ``docs/sequencer.md`` for the pipeline, the token counters, the error
rules and the measured cycle costs; the execution model is the docstring of
``spec/isa.py``.
"""

from amaranth import *
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.spec.isa import INSTR_BYTES, INSTR_LAYOUT, OPCODE_QUEUE, ErrorCode, Opcode, Queue
from flashnpu.spec.timing import timing
from flashnpu.hw.decoder import InstrChecker
from flashnpu.hw.signatures import ERROR_SHAPE, GRANT_LAYOUT, FetchSignature, UnitSignature
from flashnpu.hw.window_checker import DramWindowChecker

__all__ = ["Sequencer", "UNIT_NAMES"]

#: Member name of each queue's unit port, by ``Queue``.
UNIT_NAMES = {Queue.LOAD: "load", Queue.STORE: "store", Queue.MATRIX: "matrix", Queue.VECTOR: "vector"}


class Sequencer(wiring.Component):
    """Fetch a program, check each word, dispatch it to its queue and issue it to its unit.

    Parameters
    ----------
    config : NPUConfig
        ``queue_depth`` (entries of each instruction queue), ``token_bits``
        (width of each token counter) and the checker's limits. Its
        ``spec.timing.timing(config)`` gives ``inflight_depth`` (instructions a
        unit may have taken and not yet completed; the sequencer keeps the
        signal mask and pc of each, in order), ``fetch_depth`` (fetch requests
        kept outstanding; the DMA engine's response buffer holds as many) and
        ``deadlock_cycles`` (cycles of the deadlock condition before ``DEADLOCK``).

    Members
    -------
    start : In(1)
        Pulse: run the program at ``grant.prog_addr`` (ignored while ``busy``).
    grant : In(GRANT_LAYOUT)
        The host's grant, latched at ``start``: instruction *k* is at
        ``prog_addr + 32*k`` and is fetched only inside ``[prog_addr, prog_end)``;
        LOAD/STORE extents are checked against the DMA windows at dispatch.
    abort : In(1)
        Level: stop at once, without finishing anything; the run ends with
        ``ABORTED`` once the bus is quiet and the matrix and vector units idle.
    bus_busy : In(1)
        The DMA has AXI transactions outstanding; a run ends (done or error)
        only when it is low, so the host never sees a stopped NPU with bus
        traffic in flight.
    bus_stop : Out(1)
        Level: the DMA must start no new AXI transaction (an abort).
    fetch : Out(FetchSignature())
        Instruction reads; responses in request order.
    load, store, matrix, vector : Out(UnitSignature())
        The units of queues ``LOAD``, ``STORE``, ``MATRIX``, ``VECTOR``.
    busy : Out(1)
        High from the cycle after ``start`` until ``done`` or an error.
    done : Out(1)
        HALT retired with every queue drained and every counter at zero; held
        until the next ``start``.
    error_code : Out(ERROR_SHAPE)
        The ``ErrorCode`` of the oldest failing instruction (0: none), held
        until the next ``start``. Errors are precise: every older instruction
        completes first, no younger one is issued, and a STORE is issued only
        when every older LOAD and STORE has completed, so that no younger
        STORE has written DRAM.
    error_pc : Out(32)
        Index of the instruction that failed (for ``ABORTED``: the first one
        not dispatched).
    stall : Out(4)
        Bit *q*: queue *q* has a head instruction waiting for a token.
    dispatch_stall : Out(1)
        A checked instruction is held because its queue is full.
    dispatched : Out(1)
        One pulse per instruction dispatched (HALT included).
    """

    def __init__(self, config):
        self._cfg = config
        t = timing(config)
        self._inflight_depth = t.inflight_depth
        self._max_fetch = t.fetch_depth
        self._deadlock_cycles = t.deadlock_cycles
        super().__init__({
            "start": In(1),
            "grant": In(GRANT_LAYOUT),
            "abort": In(1),
            "bus_busy": In(1),
            "bus_stop": Out(1),
            "fetch": Out(FetchSignature()),
            **{name: Out(UnitSignature()) for name in UNIT_NAMES.values()},
            "busy": Out(1),
            "done": Out(1),
            "error_code": Out(ERROR_SHAPE),
            "error_pc": Out(32),
            "stall": Out(4),
            "dispatch_stall": Out(1),
            "dispatched": Out(1),
        })

    @property
    def max_fetch(self):
        """Fetch requests kept outstanding; the DMA's fetch buffer should hold as many."""
        return self._max_fetch

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        queues = list(Queue)
        units = [getattr(self, UNIT_NAMES[q]) for q in queues]
        tok_max = (1 << cfg.token_bits) - 1

        go = Signal()          # a start that is taken
        m.d.comb += go.eq(self.start & ~self.busy)
        aborting = Signal()    # an abort was taken: nothing more is dispatched or issued
        halt_all = Signal()
        m.d.comb += halt_all.eq(aborting | self.abort)

        # ---------------------------------------------------------------- fetch
        # Requests run ahead of dispatch; their responses wait in the DMA's
        # response buffer. Responses that belong to no current program (past a
        # HALT or an error, or left from an earlier run) are taken and dropped,
        # so the fetch path never holds stale words.
        fetching = Signal()    # this run still wants instruction words
        grant = Signal(GRANT_LAYOUT)
        base = grant.prog_addr
        req_pc = Signal(32)
        resp_pc = Signal(32)
        outstanding = Signal(range(self._max_fetch + 1))
        stale = Signal(range(self._max_fetch + 1))   # outstanding responses of an earlier run
        fe = self.fetch
        req_hs = Signal()
        resp_hs = Signal()
        # Words are requested only inside the code window and the AXI range.
        req_addr = Signal(34)
        req_in_window = Signal()
        m.d.comb += [
            req_addr.eq(base + req_pc * INSTR_BYTES),
            req_in_window.eq((req_addr + INSTR_BYTES <= grant.prog_end)
                             & (req_addr + INSTR_BYTES <= (1 << cfg.axi_addr_bits))),
        ]
        m.d.comb += [
            fe.req.valid.eq(fetching & req_in_window & (outstanding < self._max_fetch) & ~halt_all),
            fe.req.payload.addr.eq(req_addr),
            req_hs.eq(fe.req.valid & fe.req.ready),
            resp_hs.eq(fe.resp.valid & fe.resp.ready),
        ]
        outstanding_next = Signal.like(outstanding)
        m.d.comb += outstanding_next.eq(outstanding + req_hs - resp_hs)
        m.d.sync += outstanding.eq(outstanding_next)
        with m.If(req_hs):
            m.d.sync += req_pc.eq(req_pc + 1)

        # ------------------------------------------------- check/dispatch stage
        # F holds one fetched word; the checker looks at it and, if it is
        # legal and its queue has room, it is written to the queue this cycle.
        f_valid = Signal()
        f_word = Signal(INSTR_LAYOUT)
        f_pc = Signal(32)
        f_ferr = Signal()
        f_werr = Signal()      # the word is outside the code window (never fetched)
        checker = m.submodules.checker = InstrChecker(cfg)
        windows = m.submodules.windows = DramWindowChecker(cfg)
        m.d.comb += [checker.word.eq(f_word), windows.word.eq(f_word), windows.grant.eq(grant)]
        f_code = Signal(ERROR_SHAPE)
        f_tok_code = Signal(ERROR_SHAPE)   # the program-order token check (below)
        m.d.comb += f_code.eq(Mux(f_ferr, ErrorCode.FETCH_ERROR,
                                  Mux(f_werr, ErrorCode.FETCH_WINDOW,
                                      Mux(checker.error != 0, checker.error,
                                          Mux(windows.error != 0, windows.error, f_tok_code)))))
        f_halt = Signal()
        m.d.comb += f_halt.eq(f_word.opcode == Opcode.HALT)
        f_queue = Signal(range(4))
        with m.Switch(f_word.opcode):
            for op, q in OPCODE_QUEUE.items():
                with m.Case(op):
                    m.d.comb += f_queue.eq(q)

        # Stopping: HALT or a checker/fetch error reached dispatch. Dispatch has
        # stopped; older instructions run to completion; then done, TOKENS_LEFT
        # or the pending error (so an error is reported in program order).
        stopping = Signal()
        stop_code = Signal(ERROR_SHAPE)
        stop_pc = Signal(32)

        qf = []
        for q in queues:
            f = ResetInserter(go)(fifo.SyncFIFO(width=INSTR_LAYOUT.size + 32, depth=cfg.queue_depth))
            m.submodules[f"q_{UNIT_NAMES[q]}"] = f
            m.d.comb += f.w_data.eq(Cat(f_word, f_pc))
            qf.append(f)
        q_wrdy = Signal(4)
        m.d.comb += q_wrdy.eq(Cat(*(f.w_rdy for f in qf)))

        active = Signal()      # may dispatch
        m.d.comb += active.eq(self.busy & ~stopping & ~halt_all)
        f_take = Signal()      # F is emptied this cycle
        with m.If(f_valid & active):
            with m.If(f_code != 0):
                m.d.comb += f_take.eq(1)
                m.d.sync += [stopping.eq(1), stop_code.eq(f_code), stop_pc.eq(f_pc), fetching.eq(0)]
            with m.Elif(f_halt):
                m.d.comb += [f_take.eq(1), self.dispatched.eq(1)]
                m.d.sync += [stopping.eq(1), stop_code.eq(0), stop_pc.eq(f_pc), fetching.eq(0)]
            with m.Elif(q_wrdy.bit_select(f_queue, 1)):
                m.d.comb += [f_take.eq(1), self.dispatched.eq(1)]
                with m.Switch(f_queue):
                    for q in queues:
                        with m.Case(q):
                            m.d.comb += qf[q].w_en.eq(1)
            with m.Else():
                m.d.comb += self.dispatch_stall.eq(1)

        discard = Signal()
        m.d.comb += [
            discard.eq((stale != 0) | ~fetching),
            fe.resp.ready.eq(discard | ~f_valid | f_take),
        ]
        with m.If(resp_hs & discard):
            with m.If(stale != 0):
                m.d.sync += stale.eq(stale - 1)
        with m.If(resp_hs & ~discard):
            m.d.sync += [f_valid.eq(1), f_word.eq(fe.resp.payload.word), f_pc.eq(resp_pc),
                         f_ferr.eq(fe.resp.payload.error), f_werr.eq(0), resp_pc.eq(resp_pc + 1)]
        with m.Elif(fetching & ~req_in_window & (outstanding == 0) & (stale == 0)
                    & (resp_pc == req_pc) & (~f_valid | f_take)):
            # Every word inside the window is in; the next one is outside it.
            m.d.sync += [f_valid.eq(1), f_word.eq(0), f_pc.eq(resp_pc), f_ferr.eq(0), f_werr.eq(1),
                         resp_pc.eq(resp_pc + 1)]
        with m.Elif(f_take | ~fetching):
            m.d.sync += f_valid.eq(0)

        # ------------------------------------------------------ token counters
        # Program-order counters, updated at dispatch: a pop of an empty one is
        # TOKEN_UNDERFLOW, a push of a full one TOKEN_OVERFLOW, both at that
        # instruction (as the golden model). A program that passes can neither
        # deadlock nor push a run-time counter past tok_max + queue_depth (the
        # pops still queued), so the run-time counters are that wide and never wrap.
        pairs = [(s, d) for s in queues for d in queues if s != d]
        dtok = {(s, d): Signal(cfg.token_bits, name=f"dtok_{s.name.lower()}_{d.name.lower()}")
                for s, d in pairs}
        tok = {(s, d): Signal(range(tok_max + cfg.queue_depth + 1),
                              name=f"tok_{s.name.lower()}_{d.name.lower()}")
               for s, d in pairs}
        f_under = Signal()
        f_over = Signal()
        m.d.comb += [
            f_under.eq(Cat(*(f_word.wait[s] & (f_queue == d) & (dtok[s, d] == 0)
                             for s, d in pairs)).any()),
            f_over.eq(Cat(*(f_word.signal[d] & (f_queue == s) & (dtok[s, d] == tok_max)
                            for s, d in pairs)).any()),
            f_tok_code.eq(Mux(f_halt, 0, Mux(f_under, ErrorCode.TOKEN_UNDERFLOW,
                                             Mux(f_over, ErrorCode.TOKEN_OVERFLOW, 0)))),
        ]
        f_dispatch = Signal()   # a legal non-HALT word enters its queue
        m.d.comb += f_dispatch.eq(Cat(*(f.w_en for f in qf)).any())
        for (s, d), c in dtok.items():
            with m.If(f_dispatch & (f_queue == d) & f_word.wait[s]):
                m.d.sync += c.eq(c - 1)
            with m.If(f_dispatch & (f_queue == s) & f_word.signal[d]):
                m.d.sync += c.eq(c + 1)

        # ------------------------------------------------------ issue to units
        # A head is issued when its tokens are there, its unit's in-flight FIFO
        # has room, it is older than a pending stop, and (a STORE) no STORE is
        # in flight and no older LOAD is incomplete: then an error of any LOAD
        # or STORE leaves every younger STORE unissued (precise DRAM).
        infl = []
        head_pc = []
        tokens_ok = []
        take = []
        eligible = []
        for q in queues:
            f = qf[q]
            head = Signal(INSTR_LAYOUT, name=f"head_{q.name.lower()}")
            hpc = Signal(32, name=f"head_pc_{q.name.lower()}")
            m.d.comb += Cat(head, hpc).eq(f.r_data)
            ok = Signal(name=f"tokens_ok_{q.name.lower()}")
            m.d.comb += ok.eq(Cat(*(~head.wait[s] | (tok[s, q] != 0) for s in queues if s != q)).all())
            i = ResetInserter(go)(fifo.SyncFIFO(width=4 + 32, depth=self._inflight_depth))
            m.submodules[f"inflight_{UNIT_NAMES[q]}"] = i
            el = Signal(name=f"eligible_{q.name.lower()}")
            m.d.comb += el.eq(f.r_rdy & (~stopping | (hpc < stop_pc)) & ~halt_all)
            infl.append(i)
            head_pc.append(hpc)
            tokens_ok.append(ok)
            eligible.append(el)
        # The oldest LOAD not yet complete (LOADs complete in order).
        load_pending = Signal()
        load_pc = Signal(32)
        m.d.comb += [
            load_pending.eq(infl[Queue.LOAD].r_rdy | qf[Queue.LOAD].r_rdy),
            load_pc.eq(Mux(infl[Queue.LOAD].r_rdy, infl[Queue.LOAD].r_data[4:], head_pc[Queue.LOAD])),
        ]
        store_ordered = Signal()
        m.d.comb += store_ordered.eq(~infl[Queue.STORE].r_rdy
                                     & (~load_pending | (load_pc > head_pc[Queue.STORE])))
        for q, unit in zip(queues, units):
            f, i, ok, el, hpc = qf[q], infl[q], tokens_ok[q], eligible[q], head_pc[q]
            order = store_ordered if q == Queue.STORE else C(1)
            t = Signal(name=f"take_{q.name.lower()}")
            m.d.comb += [
                unit.instr.payload.eq(Cat(f.r_data[:INSTR_LAYOUT.size])),
                unit.instr.valid.eq(self.busy & el & ok & order & i.w_rdy),
                t.eq(unit.instr.valid & unit.instr.ready),
                f.r_en.eq(t),
                i.w_en.eq(t), i.w_data.eq(Cat(unit.instr.payload.signal, hpc)),
                i.r_en.eq(unit.done),
                self.stall[q].eq(self.busy & f.r_rdy & ~ok),
            ]
            take.append(t)

        # Counter s -> d: popped when d's head is taken with wait bit s, pushed
        # when s completes an instruction with signal bit d. At most one of each per cycle.
        for (s, d), c in tok.items():
            i = infl[s]
            pop = Signal(name=f"pop_{s.name.lower()}_{d.name.lower()}")
            push = Signal(name=f"push_{s.name.lower()}_{d.name.lower()}")
            m.d.comb += [
                pop.eq(take[d] & units[d].instr.payload.wait[s]),
                push.eq(units[s].done & i.r_rdy & i.r_data[d]),
            ]
            m.d.sync += c.eq(c + push - pop)
        tokens_left = Signal()
        m.d.comb += tokens_left.eq(Cat(*(c != 0 for c in dtok.values())).any())

        # ------------------------------------------------------------ idle
        # A unit is idle when nothing runs on it and nothing is in flight; a unit
        # with an error never completes its failing instruction, so only its busy counts.
        unit_idle = [~u.busy & (~i.r_rdy | (u.error != 0)) for u, i in zip(units, infl)]
        units_idle = Signal()
        m.d.comb += units_idle.eq(Cat(*unit_idle).all())
        any_eligible = Signal()
        m.d.comb += any_eligible.eq(Cat(*eligible).any())

        # ------------------------------------------------------------ deadlock
        # A safety net (the dispatch checks leave no program that deadlocks):
        # nothing runs, every eligible head waits for a token, dispatch cannot add anything.
        heads_blocked = Cat(*(~el | ~ok for el, ok in zip(eligible, tokens_ok))).all()
        dl_cond = Signal()
        m.d.comb += dl_cond.eq(self.busy & units_idle & heads_blocked & any_eligible
                               & (stopping | self.dispatch_stall))
        dl_count = Signal(range(self._deadlock_cycles + 1))
        m.d.sync += dl_count.eq(Mux(dl_cond, dl_count + 1, 0))
        dl_pc = Signal(32)
        have = C(0)
        pc_acc = C(0, 32)
        for el, hpc in zip(eligible, head_pc):
            better = el & (~have | (hpc < pc_acc))
            pc_acc = Mux(better, hpc, pc_acc)
            have = have | el
        m.d.comb += dl_pc.eq(pc_acc)

        # -------------------------------------------------------------- errors
        # A unit error stops dispatch and becomes the pending stop if it is
        # older than the one pending; older instructions still run to completion.
        err = Signal(ERROR_SHAPE)
        err_pc = Signal(32)
        for k, q in enumerate(queues):
            with (m.If if k == 0 else m.Elif)((units[q].error != 0) & infl[q].r_rdy
                                              & (~stopping | (infl[q].r_data[4:] < stop_pc))):
                m.d.comb += [err.eq(units[q].error), err_pc.eq(infl[q].r_data[4:])]
        with m.Elif(dl_cond & (dl_count == self._deadlock_cycles - 1)):
            m.d.comb += [err.eq(ErrorCode.DEADLOCK), err_pc.eq(dl_pc)]
        with m.If(self.busy & (err != 0)):
            m.d.sync += [stopping.eq(1), stop_code.eq(err), stop_pc.eq(err_pc), fetching.eq(0)]

        # --------------------------------------------------------------- stop
        # The run ends once everything older than the stop has completed (an
        # abort: at once) and the bus is quiet.
        abort_pc = Signal(32)
        with m.If(self.busy & self.abort & ~aborting):
            m.d.sync += [aborting.eq(1), abort_pc.eq(Mux(f_valid, f_pc, resp_pc)), fetching.eq(0)]
        m.d.comb += self.bus_stop.eq(halt_all)
        mv_idle = ~units[Queue.MATRIX].busy & ~units[Queue.VECTOR].busy
        with m.If(self.busy):
            with m.If(aborting):
                with m.If(mv_idle & ~self.bus_busy):
                    m.d.sync += [self.busy.eq(0), self.error_code.eq(ErrorCode.ABORTED),
                                 self.error_pc.eq(abort_pc), aborting.eq(0)]
            with m.Elif(stopping & units_idle & ~any_eligible & (err == 0) & ~self.bus_busy
                        & ~halt_all):
                m.d.sync += [self.busy.eq(0), fetching.eq(0)]
                with m.If(stop_code != 0):
                    m.d.sync += [self.error_code.eq(stop_code), self.error_pc.eq(stop_pc)]
                with m.Elif(tokens_left):
                    m.d.sync += [self.error_code.eq(ErrorCode.TOKENS_LEFT), self.error_pc.eq(stop_pc)]
                with m.Else():
                    m.d.sync += self.done.eq(1)

        # --------------------------------------------------------------- start
        with m.If(go):
            m.d.sync += [
                self.busy.eq(1), self.done.eq(0), self.error_code.eq(0), self.error_pc.eq(0),
                fetching.eq(1), grant.eq(self.grant), req_pc.eq(0), resp_pc.eq(0),
                stale.eq(outstanding_next), f_valid.eq(0),
                stopping.eq(0), stop_code.eq(0), stop_pc.eq(0), dl_count.eq(0), aborting.eq(0),
                *(c.eq(0) for c in tok.values()),
                *(c.eq(0) for c in dtok.values()),
            ]
        return m
