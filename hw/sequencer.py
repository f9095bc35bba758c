"""The sequencer: fetch, check, dispatch into four queues, dependency tokens, HALT, errors.

See ``docs/sequencer.md`` for the pipeline, the token counters, the error
rules and the measured cycle costs; the execution model is the docstring of
``sw/isa.py``.
"""

from amaranth import *
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.sw.isa import INSTR_BYTES, INSTR_LAYOUT, OPCODE_QUEUE, ErrorCode, Opcode, Queue
from flashnpu.hw.decoder import InstrChecker
from flashnpu.hw.signatures import ERROR_SHAPE, FetchSignature, UnitSignature

__all__ = ["Sequencer", "UNIT_NAMES"]

#: Member name of each queue's unit port, by ``Queue``.
UNIT_NAMES = {Queue.LOAD: "load", Queue.STORE: "store", Queue.MATRIX: "matrix", Queue.VECTOR: "vector"}


class Sequencer(wiring.Component):
    """Fetch a program, check each word, dispatch it to its queue and issue it to its unit.

    Parameters
    ----------
    config : NPUConfig
        ``queue_depth`` (entries of each instruction queue), ``token_bits``
        (width of each token counter) and the checker's limits.
    inflight_depth : int
        Instructions a unit may have taken and not yet completed; the
        sequencer keeps the signal mask and pc of each, in order.
    max_fetch : int
        Fetch requests the sequencer keeps outstanding (the DMA engine accepts
        as many as its own ``fetch_depth``).
    deadlock_cycles : int
        Consecutive cycles of the deadlock condition before ``DEADLOCK``.

    Members
    -------
    start : In(1)
        Pulse: run the program at ``prog_addr`` (ignored while ``busy``).
    prog_addr : In(32)
        Byte address of instruction 0; instruction *k* is at ``prog_addr + 32*k``.
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
        The first ``ErrorCode`` (0: none), held until the next ``start``.
    error_pc : Out(32)
        Index of the instruction that failed.
    stall : Out(4)
        Bit *q*: queue *q* has a head instruction waiting for a token.
    dispatch_stall : Out(1)
        A checked instruction is held because its queue is full.
    dispatched : Out(1)
        One pulse per instruction dispatched (HALT included).
    """

    def __init__(self, config, *, inflight_depth=8, max_fetch=8, deadlock_cycles=16):
        self._cfg = config
        self._inflight_depth = inflight_depth
        self._max_fetch = max_fetch
        self._deadlock_cycles = deadlock_cycles
        super().__init__({
            "start": In(1),
            "prog_addr": In(32),
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

        # ---------------------------------------------------------------- fetch
        # Requests run ahead of dispatch; their responses wait in the DMA's
        # response buffer. Responses that belong to no current program (past a
        # HALT or an error, or left from an earlier run) are taken and dropped,
        # so the fetch path never holds stale words.
        fetching = Signal()    # this run still wants instruction words
        base = Signal(32)
        req_pc = Signal(32)
        resp_pc = Signal(32)
        outstanding = Signal(range(self._max_fetch + 1))
        stale = Signal(range(self._max_fetch + 1))   # outstanding responses of an earlier run
        fe = self.fetch
        req_hs = Signal()
        resp_hs = Signal()
        m.d.comb += [
            fe.req.valid.eq(fetching & (outstanding < self._max_fetch)),
            fe.req.payload.addr.eq(base + req_pc * INSTR_BYTES),
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
        checker = m.submodules.checker = InstrChecker(cfg)
        m.d.comb += checker.word.eq(f_word)
        f_code = Signal(ERROR_SHAPE)
        m.d.comb += f_code.eq(Mux(f_ferr, ErrorCode.FETCH_ERROR, checker.error))
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
        m.d.comb += active.eq(self.busy & ~stopping)
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
                         f_ferr.eq(fe.resp.payload.error), resp_pc.eq(resp_pc + 1)]
        with m.Elif(f_take | ~fetching):
            m.d.sync += f_valid.eq(0)

        # ------------------------------------------------------ token counters
        tok = {(s, d): Signal(cfg.token_bits, name=f"tok_{s.name.lower()}_{d.name.lower()}")
               for s in queues for d in queues if s != d}

        # ------------------------------------------------------ issue to units
        infl = []
        head_pc = []
        tokens_ok = []
        take = []
        for q, unit in zip(queues, units):
            f = qf[q]
            head = Signal(INSTR_LAYOUT, name=f"head_{q.name.lower()}")
            hpc = Signal(32, name=f"head_pc_{q.name.lower()}")
            m.d.comb += Cat(head, hpc).eq(f.r_data)
            ok = Signal(name=f"tokens_ok_{q.name.lower()}")
            m.d.comb += ok.eq(Cat(*(~head.wait[s] | (tok[s, q] != 0) for s in queues if s != q)).all())
            i = ResetInserter(go)(fifo.SyncFIFO(width=4 + 32, depth=self._inflight_depth))
            m.submodules[f"inflight_{UNIT_NAMES[q]}"] = i
            t = Signal(name=f"take_{q.name.lower()}")
            m.d.comb += [
                unit.instr.payload.eq(head),
                unit.instr.valid.eq(self.busy & f.r_rdy & ok & i.w_rdy),
                t.eq(unit.instr.valid & unit.instr.ready),
                f.r_en.eq(t),
                i.w_en.eq(t), i.w_data.eq(Cat(head.signal, hpc)),
                i.r_en.eq(unit.done),
                self.stall[q].eq(self.busy & f.r_rdy & ~ok),
            ]
            infl.append(i)
            head_pc.append(hpc)
            tokens_ok.append(ok)
            take.append(t)

        # Counter s -> d: popped when d's head is taken with wait bit s, pushed
        # when s completes an instruction with signal bit d. At most one of each per cycle.
        overflow = Signal(4)   # bit s: unit s's completion overflows a counter
        for (s, d), c in tok.items():
            i = infl[s]
            pop = Signal(name=f"pop_{s.name.lower()}_{d.name.lower()}")
            push = Signal(name=f"push_{s.name.lower()}_{d.name.lower()}")
            m.d.comb += [
                pop.eq(take[d] & units[d].instr.payload.wait[s]),
                push.eq(units[s].done & i.r_rdy & i.r_data[d]),
            ]
            with m.If(push & ~pop & (c == tok_max)):
                m.d.comb += overflow[s].eq(1)
            with m.Else():
                m.d.sync += c.eq(c + push - pop)
        tokens_left = Signal()
        m.d.comb += tokens_left.eq(Cat(*(c != 0 for c in tok.values())).any())

        # ------------------------------------------------------------ deadlock
        # Nothing runs, nothing is in flight, every queue head waits for a token
        # and dispatch cannot add anything: no token can ever arrive.
        units_idle = Signal()
        m.d.comb += units_idle.eq(Cat(*(~u.busy & ~i.r_rdy for u, i in zip(units, infl))).all())
        heads_blocked = Cat(*(~f.r_rdy | ~ok for f, ok in zip(qf, tokens_ok))).all()
        any_head = Cat(*(f.r_rdy for f in qf)).any()
        dl_cond = Signal()
        m.d.comb += dl_cond.eq(self.busy & units_idle & heads_blocked & any_head
                               & (stopping | self.dispatch_stall))
        dl_count = Signal(range(self._deadlock_cycles + 1))
        m.d.sync += dl_count.eq(Mux(dl_cond, dl_count + 1, 0))
        # The oldest blocked head: every older instruction has completed, so it
        # is the instruction whose token was never pushed in program order.
        dl_pc = Signal(32)
        have = C(0)
        pc_acc = C(0, 32)
        for f, hpc in zip(qf, head_pc):
            better = f.r_rdy & (~have | (hpc < pc_acc))
            pc_acc = Mux(better, hpc, pc_acc)
            have = have | f.r_rdy
        m.d.comb += dl_pc.eq(pc_acc)

        # -------------------------------------------------------------- errors
        # Errors of instructions already issued stop the NPU at once; the first
        # (in this priority, for errors of the same cycle) wins.
        def oldest_pc(q):
            return Mux(infl[q].r_rdy, infl[q].r_data[4:], head_pc[q])

        err = Signal(ERROR_SHAPE)
        err_pc = Signal(32)
        with m.If(units[0].error != 0):
            m.d.comb += [err.eq(units[0].error), err_pc.eq(oldest_pc(0))]
        for q in queues[1:]:
            with m.Elif(units[q].error != 0):
                m.d.comb += [err.eq(units[q].error), err_pc.eq(oldest_pc(q))]
        for q in queues:
            with m.Elif(overflow[q]):
                m.d.comb += [err.eq(ErrorCode.TOKEN_OVERFLOW), err_pc.eq(infl[q].r_data[4:])]
        with m.Elif(dl_cond & (dl_count == self._deadlock_cycles - 1)):
            m.d.comb += [err.eq(ErrorCode.DEADLOCK), err_pc.eq(dl_pc)]

        drained = Signal()
        m.d.comb += drained.eq(units_idle & ~any_head)
        with m.If(self.busy):
            with m.If(err != 0):
                m.d.sync += [self.error_code.eq(err), self.error_pc.eq(err_pc),
                             self.busy.eq(0), fetching.eq(0)]
            with m.Elif(stopping & drained):
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
                fetching.eq(1), base.eq(self.prog_addr), req_pc.eq(0), resp_pc.eq(0),
                stale.eq(outstanding_next), f_valid.eq(0),
                stopping.eq(0), stop_code.eq(0), stop_pc.eq(0), dl_count.eq(0),
                *(c.eq(0) for c in tok.values()),
            ]
        return m
