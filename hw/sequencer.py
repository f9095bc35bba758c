"""The sequencer: fetch, check, dispatch into four queues, dependency tokens, HALT, errors.

See ``docs/sequencer.md`` for the pipeline, the token counters, the error
rules and the measured cycle costs; the execution model is the docstring of
``spec/isa.py``.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flashnpu.hw.sequencer_dispatch import UNIT_NAMES, SequencerDispatch
from flashnpu.hw.sequencer_fetch import SequencerFetch
from flashnpu.hw.sequencer_tokens import SequencerTokens
from flashnpu.hw.signatures import ERROR_SHAPE, GRANT_LAYOUT, FetchSignature, UnitSignature
from flashnpu.spec.isa import ErrorCode, Queue
from flashnpu.spec.timing import timing

__all__ = ["Sequencer", "UNIT_NAMES"]


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
        queues = list(Queue)
        fetch = m.submodules.fetch = SequencerFetch(self._cfg)
        disp = m.submodules.dispatch = SequencerDispatch(self._cfg)
        issue = m.submodules.tokens = SequencerTokens(self._cfg)
        units = [getattr(self, UNIT_NAMES[q]) for q in queues]
        heads, oldest = issue.heads, issue.oldest

        go = Signal()          # a start that is taken
        m.d.comb += go.eq(self.start & ~self.busy)
        aborting = Signal()    # an abort was taken: nothing more is dispatched or issued
        halt_all = Signal()
        m.d.comb += halt_all.eq(aborting | self.abort)
        grant = Signal(GRANT_LAYOUT)
        # Stopping: HALT or an error reached dispatch, or a unit error. Dispatch has stopped; older
        # instructions run to completion; then done, TOKENS_LEFT or the error (in program order).
        stopping = Signal()
        stop_code = Signal(ERROR_SHAPE)
        stop_pc = Signal(32)
        stop_fetch = Signal()  # this run wants no more words

        wiring.connect(m, wiring.flipped(self.fetch), fetch.fetch)
        wiring.connect(m, fetch.word, disp.word)
        for q in queues:
            wiring.connect(m, getattr(disp, UNIT_NAMES[q]), getattr(issue, f"{UNIT_NAMES[q]}_q"))
            wiring.connect(m, wiring.flipped(units[q]), getattr(issue, UNIT_NAMES[q]))
        m.d.comb += [
            fetch.go.eq(go), fetch.grant.eq(grant), fetch.hold.eq(halt_all), fetch.stop.eq(stop_fetch),
            disp.go.eq(go), disp.grant.eq(grant), disp.active.eq(self.busy & ~stopping & ~halt_all),
            issue.go.eq(go), issue.busy.eq(self.busy), issue.halt.eq(halt_all),
            issue.stopping.eq(stopping), issue.stop_pc.eq(stop_pc),
            self.dispatched.eq(disp.dispatched), self.dispatch_stall.eq(disp.dispatch_stall),
            self.stall.eq(issue.stall),
        ]
        with m.If(disp.stop.valid):
            m.d.sync += [stopping.eq(1), stop_code.eq(disp.stop.payload.code), stop_pc.eq(disp.stop.payload.pc)]

        # A unit is idle when nothing runs on it and nothing is in flight; a unit
        # with an error never completes its failing instruction, so only its busy counts.
        units_idle = Signal()
        m.d.comb += units_idle.eq(Cat(*(~u.busy & (~oldest[q].valid | (u.error != 0))
                                        for q, u in zip(queues, units))).all())
        any_eligible = Signal()
        m.d.comb += any_eligible.eq(Cat(*(heads[q].eligible for q in queues)).any())

        # Deadlock, a safety net (the dispatch checks leave no program that deadlocks):
        # nothing runs, every eligible head waits for a token, dispatch cannot add anything.
        heads_blocked = Cat(*(~heads[q].eligible | ~heads[q].tokens_ok for q in queues)).all()
        dl_cond = Signal()
        m.d.comb += dl_cond.eq(self.busy & units_idle & heads_blocked & any_eligible
                               & (stopping | self.dispatch_stall))
        dl_count = Signal(range(self._deadlock_cycles + 1))
        m.d.sync += dl_count.eq(Mux(dl_cond, dl_count + 1, 0))
        have = C(0)
        dl_pc = C(0, 32)       # the oldest eligible head
        for q in queues:
            better = heads[q].eligible & (~have | (heads[q].pc < dl_pc))
            dl_pc = Mux(better, heads[q].pc, dl_pc)
            have = have | heads[q].eligible

        # A unit error becomes the pending stop if it is older than the one pending;
        # older instructions still run to completion.
        err = Signal(ERROR_SHAPE)
        err_pc = Signal(32)
        for k, q in enumerate(queues):
            with (m.If if k == 0 else m.Elif)((units[q].error != 0) & oldest[q].valid
                                              & (~stopping | (oldest[q].pc < stop_pc))):
                m.d.comb += [err.eq(units[q].error), err_pc.eq(oldest[q].pc)]
        with m.Elif(dl_cond & (dl_count == self._deadlock_cycles - 1)):
            m.d.comb += [err.eq(ErrorCode.DEADLOCK), err_pc.eq(dl_pc)]
        with m.If(self.busy & (err != 0)):
            m.d.sync += [stopping.eq(1), stop_code.eq(err), stop_pc.eq(err_pc)]

        # The run ends once everything older than the stop has completed (an
        # abort: at once) and the bus is quiet.
        abort_pc = Signal(32)
        abort_take = Signal()
        run_end = Signal()
        m.d.comb += [
            abort_take.eq(self.busy & self.abort & ~aborting),
            run_end.eq(self.busy & ~aborting & stopping & units_idle & ~any_eligible & (err == 0)
                       & ~self.bus_busy & ~halt_all),
            stop_fetch.eq(disp.stop.valid | (self.busy & (err != 0)) | abort_take | run_end),
            self.bus_stop.eq(halt_all),
        ]
        with m.If(abort_take):
            m.d.sync += [aborting.eq(1),
                         abort_pc.eq(Mux(fetch.word.valid, fetch.word.payload.pc, fetch.next_pc))]
        mv_idle = ~units[Queue.MATRIX].busy & ~units[Queue.VECTOR].busy
        with m.If(self.busy & aborting & mv_idle & ~self.bus_busy):
            m.d.sync += [self.busy.eq(0), self.error_code.eq(ErrorCode.ABORTED),
                         self.error_pc.eq(abort_pc), aborting.eq(0)]
        with m.If(run_end):
            m.d.sync += self.busy.eq(0)
            with m.If(stop_code != 0):
                m.d.sync += [self.error_code.eq(stop_code), self.error_pc.eq(stop_pc)]
            with m.Elif(disp.tokens_left):
                m.d.sync += [self.error_code.eq(ErrorCode.TOKENS_LEFT), self.error_pc.eq(stop_pc)]
            with m.Else():
                m.d.sync += self.done.eq(1)

        with m.If(go):
            m.d.sync += [
                self.busy.eq(1), self.done.eq(0), self.error_code.eq(0), self.error_pc.eq(0),
                grant.eq(self.grant), stopping.eq(0), stop_code.eq(0), stop_pc.eq(0), dl_count.eq(0),
                aborting.eq(0),
            ]
        return m
